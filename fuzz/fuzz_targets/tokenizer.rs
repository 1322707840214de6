//! Encoding arbitrary text and decoding arbitrary ids with a real vocabulary (the seed blob's,
//! with merges): ids stay in range and decoding never panics. The vocabulary section itself is
//! fuzzed through `blob_engine`.
#![no_main]

#[path = "../../firmware/tests/common/mod.rs"]
mod common;

use badge_firmware::config::KvCacheKind;
use badge_firmware::format::Blob;
use badge_firmware::tokenizer::{StreamDecoder, Tokenizer};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The seed blob's tokenizer, built once (the tables are what `Tokenizer::new` computes).
fn tokenizer() -> &'static Tokenizer<'static> {
    static BLOB: OnceLock<common::Aligned> = OnceLock::new();
    static TOK: OnceLock<Tokenizer<'static>> = OnceLock::new();
    TOK.get_or_init(|| {
        let bytes =
            BLOB.get_or_init(|| common::Aligned::new(&common::small_blob(KvCacheKind::F32)));
        let blob = Blob::parse(bytes.bytes()).expect("the seed blob parses");
        Tokenizer::new(blob.tokenizer)
    })
}

fuzz_target!(|data: &[u8]| {
    let tok = tokenizer();
    let text = String::from_utf8_lossy(data);
    let ids = tok.encode(&text);
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    let _ = tok.decode(&ids);
    // Arbitrary ids, in range or not, through the streaming decoder.
    let mut d = StreamDecoder::new();
    let mut out = String::new();
    for c in data.chunks(2) {
        let id = u32::from(c[0]) | u32::from(*c.get(1).unwrap_or(&0)) << 8;
        d.push(tok, id % 80, &mut |s| out.push_str(s));
    }
    d.finish(&mut |s| out.push_str(s));
});
