//! Parse time of the most expensive blob that fits the badge's model partition: every limit
//! pushed at once (1024 layers, so 9218 tensor entries), a quarter of a million bytes of token
//! index, long pieces that share a long prefix (so the ordering check compares as many bytes
//! as possible), and merges filling what is left. It must parse, and the time is printed next
//! to the time of one CRC32 pass over the same bytes (the least any loader must spend) as a
//! ratio; `scripts/bench_parse.sh` runs it at both widths. No timing assertion: machines vary.

mod common;

use badge_firmware::config::{limits, KvCacheKind};
use badge_firmware::format::{crc32, Blob, BlobWriter, TokenKind, HEADER_SIZE};
use common::*;
use std::time::Instant;

const PREFIX: usize = 116;

fn worst_case_blob() -> Vec<u8> {
    let vocab = 1u32 << 16;
    let c = config(16, 16, limits::MAX_LAYERS, 1, vocab, 256);
    let mut s = spec(c, 16, KvCacheKind::Int8, 11);
    // Pieces `x…x` + a 4-byte big-endian counter: all distinct, sorted by id, each ordering
    // comparison reads the whole shared prefix.
    let prefix = "x".repeat(PREFIX);
    s.tokenizer.tokens = (0..vocab)
        .map(|i| {
            let tail: String = i
                .to_be_bytes()
                .iter()
                .map(|b| char::from(b'a' + b % 16))
                .chain(i.to_be_bytes().iter().map(|b| char::from(b'a' + b / 16)))
                .collect();
            (format!("{prefix}{tail}"), TokenKind::Normal, 0)
        })
        .collect();
    let free = (MODEL_SIZE as usize)
        .saturating_sub(BlobWriter::write(&s).len())
        .saturating_sub(4096);
    let n_merges = free / 16;
    s.tokenizer.merges = (0..n_merges as u32)
        .map(|i| (i % vocab, (i / vocab) % vocab, (i * 7) % vocab))
        .collect();
    BlobWriter::write(&s)
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        out = Some(f());
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, out.unwrap())
}

#[test]
fn worst_case_blob_filling_the_partition_parses_in_linear_time() {
    let bytes = worst_case_blob();
    assert!(bytes.len() <= MODEL_SIZE as usize, "{} bytes", bytes.len());
    assert!(
        bytes.len() > MODEL_SIZE as usize * 9 / 10,
        "{} bytes",
        bytes.len()
    );
    let a = Aligned::new(&bytes);
    let (parse_s, ok) = best_of(3, || Blob::parse(a.bytes()).map(|b| b.tensor_count()));
    assert_eq!(ok, Ok(2 + 9 * limits::MAX_LAYERS as usize));
    let (crc_s, _) = best_of(3, || crc32(&a.bytes()[HEADER_SIZE..]));
    println!(
        "worst-case blob {} bytes ({}-bit usize): parse {:.1} ms, one CRC32 pass {:.1} ms, ratio {:.2}",
        bytes.len(),
        usize::BITS,
        parse_s * 1e3,
        crc_s * 1e3,
        parse_s / crc_s
    );
}
