//! The loader against blobs built by hand to break it: sizes that wrap a 32-bit `usize`, the
//! documented limits, tensor table bookkeeping, and one engine step on a valid blob. CI runs
//! this file on x86_64 and on i686 (32-bit `usize`, as on the badge), so every case here is
//! checked at both widths.

mod common;

use badge_firmware::app::{load_model, AppConfig, LoadError};
use badge_firmware::config::{limits, KvCacheKind};
use badge_firmware::engine::{Engine, RunStateSize};
use badge_firmware::format::{Blob, BlobError, BlobWriter, TensorKind, TENSOR_ENTRY_SIZE};
use badge_firmware::workers::SingleWorker;
use common::*;

fn parse(bytes: &[u8]) -> Result<(), BlobError> {
    let a = Aligned::new(bytes);
    Blob::parse(a.bytes()).map(|_| ())
}

/// Start of the token index, the merge entries and the tensor table of a blob.
fn tokenizer_offset(b: &[u8]) -> usize {
    u32_at(b, HDR_TOKENIZER) as usize
}

/// A blob whose KV cache is exactly 2^32 bytes per store with an f32 cache: 1024 layers ×
/// 65536 positions × kv_dim 16 × 4 bytes. On a 32-bit machine `n * 4` is 0: the memory
/// budget passed and the first step wrote outside the heap.
#[test]
fn kv_cache_of_exactly_4_gib_is_refused_not_wrapped() {
    let c = config(16, 16, limits::MAX_LAYERS, 1, 32, limits::MAX_SEQ_LEN);
    let bytes = BlobWriter::write(&spec(c, 16, KvCacheKind::F32, 3));
    let a = Aligned::new(&bytes);
    // Also the largest layer count the loader accepts: it parses (the tensor checks are linear).
    let blob = Blob::parse(a.bytes()).expect("a valid blob at the layer limit");
    let size = RunStateSize::of(&blob.config, blob.group_size, blob.kv_cache);
    let kv = size.kv_cache_bytes as u64;
    assert!(
        kv == 1 << 33 || (usize::BITS == 32 && size.kv_cache_bytes == usize::MAX),
        "KV cache bytes {kv} (2 × 2^32 expected, or saturated on 32-bit)"
    );
    assert!(size.total() >= size.kv_cache_bytes);

    let limit = 64 << 20;
    match Engine::with_memory_limit(&blob, SingleWorker, limit) {
        Err(BlobError::TooLarge {
            what: "run state",
            bytes,
            limit: l,
        }) => {
            assert_eq!(l, limit as u64);
            assert!(bytes > limit as u64);
        }
        other => panic!("expected TooLarge, got {:?}", other.err()),
    }
    // Without a limit, a 32-bit machine cannot even address it: an error, not a small buffer.
    #[cfg(target_pointer_width = "32")]
    assert!(matches!(
        Engine::new(&blob, SingleWorker),
        Err(BlobError::TooLarge { .. })
    ));

    // The badge's own start-up over a simulated flash refuses it with its budget (8 MB PSRAM).
    let mut flash = flash_with(&bytes);
    let cfg = AppConfig::new(8 << 20);
    match load_model(&mut flash, &cfg) {
        Err(LoadError::OverMemory { run_state, .. }) => assert!(run_state > 8 << 20),
        other => panic!("expected OverMemory, got {:?}", other.err()),
    }
}

/// The same shape with each KV representation: none of the sizes may wrap or saturate
/// differently from the exact u64 value (or `usize::MAX` where it does not fit).
#[test]
fn run_state_size_is_exact_or_saturated_at_every_width() {
    let c = config(16, 16, limits::MAX_LAYERS, 1, 32, limits::MAX_SEQ_LEN);
    let values: u64 = 1024 * 65536 * 16;
    for (kv, per_value, scales) in [
        (KvCacheKind::F32, 4u64, 0u64),
        (KvCacheKind::F16, 2, 0),
        (KvCacheKind::Int8, 1, values / 16 * 4),
    ] {
        let want = 2 * (values * per_value + scales);
        let got = RunStateSize::of(&c, 16, kv).kv_cache_bytes;
        match usize::try_from(want) {
            Ok(w) => assert_eq!(got, w, "{kv:?}"),
            Err(_) => assert_eq!(got, usize::MAX, "{kv:?}"),
        }
    }
}

/// A token's string offset near u32::MAX: `offset + len` wrapped past the bounds check on a
/// 32-bit machine and the next slice panicked inside `Blob::parse`.
#[test]
fn token_string_offset_near_u32_max_is_an_error() {
    let good = small_blob(KvCacheKind::F32);
    let index = tokenizer_offset(&good) + 16;
    for (token, offset) in [(0usize, u32::MAX), (5, 0xFFFF_FFF0), (63, u32::MAX - 1)] {
        let mut b = good.clone();
        patch_u32(&mut b, index + token * 8, offset);
        assert!(
            matches!(parse(&b), Err(BlobError::BadTokenizer { .. })),
            "token {token} at offset {offset:#x}: {:?}",
            parse(&b)
        );
    }
    // A length that runs one byte past the strings.
    let mut b = good.clone();
    let last = index + 63 * 8;
    let len = u16::from_le_bytes([b[last + 4], b[last + 5]]);
    b[last + 4..last + 6].copy_from_slice(&(len + 1).to_le_bytes());
    fix_crc(&mut b);
    assert!(matches!(parse(&b), Err(BlobError::BadTokenizer { .. })));
}

/// A merge count whose byte size wraps 32 bits (0x1000_0001 × 16 = 2^32 + 16): the section
/// layout summed to a small number and a slice panicked with start > end.
#[test]
fn huge_merge_count_is_an_error() {
    let good = small_blob(KvCacheKind::F32);
    let tok = tokenizer_offset(&good);
    for count in [0x1000_0000u32, 0x1000_0001, 0x0FFF_FFFF, u32::MAX] {
        let mut b = good.clone();
        patch_u32(&mut b, tok + 4, count);
        assert_eq!(
            parse(&b),
            Err(BlobError::BadTokenizer {
                reason: "token index, merges or sorted index run past the section"
            }),
            "merge count {count:#x}"
        );
    }
}

/// `rows × cols × 4` of a tensor past 2^32 (and past 2^64): a typed error at both widths.
#[test]
fn tensor_sizes_that_overflow_are_errors() {
    let good = small_blob(KvCacheKind::F32);
    let tt = u32_at(&good, HDR_TENSORS) as usize;
    // Entry 1 is layer 0's attn_norm (f32), entry 2 its wq (Q8_0).
    for (entry, rows, cols) in [
        (1usize, 0x8000u32, 0x8000u32),
        (1, u32::MAX, u32::MAX),
        (2, 0x1_0000, 0x1_0000),
        (2, u32::MAX, 16),
    ] {
        let mut b = good.clone();
        let e = tt + entry * TENSOR_ENTRY_SIZE;
        b[e + 4..e + 8].copy_from_slice(&rows.to_le_bytes());
        patch_u32(&mut b, e + 8, cols);
        let err = parse(&b).unwrap_err();
        assert!(
            matches!(
                err,
                BlobError::BadTensor { index, .. } if index == entry
            ) || matches!(err, BlobError::OutOfBounds { .. }),
            "{rows}×{cols}: {err:?}"
        );
    }
}

#[test]
fn limits_are_enforced_and_named() {
    let good = small_blob(KvCacheKind::F32);
    for (field, index, limit) in [
        ("dim", 0usize, limits::MAX_DIM),
        ("hidden_dim", 1, limits::MAX_HIDDEN_DIM),
        ("n_layers", 2, limits::MAX_LAYERS),
        ("vocab_size", 5, limits::MAX_VOCAB),
        ("seq_len", 6, limits::MAX_SEQ_LEN),
    ] {
        let mut b = good.clone();
        patch_u32(&mut b, HDR_CONFIG + 4 * index, limit + 1);
        let err = parse(&b).unwrap_err();
        assert_eq!(
            err,
            BlobError::BadConfig {
                field,
                value: limit + 1
            }
        );
        assert!(err.to_string().contains(&format!("1 to {limit}")), "{err}");
    }
}

#[test]
fn tensor_table_bookkeeping() {
    let good = small_blob(KvCacheKind::F32);
    let tt = u32_at(&good, HDR_TENSORS) as usize;
    let count = u32_at(&good, HDR_TENSORS + 4);
    assert_eq!(count, 2 + 9 * 2);
    // One tensor short: the final norm is missing.
    let mut b = good.clone();
    patch_u32(&mut b, HDR_TENSORS + 4, count - 1);
    assert_eq!(
        parse(&b),
        Err(BlobError::MissingTensor {
            kind: TensorKind::FinalNorm,
            layer: 0
        })
    );
    // Layer 1's attn_norm relabelled as layer 0's: a duplicate, and layer 1's is missing.
    let mut b = good.clone();
    let e = tt + 10 * TENSOR_ENTRY_SIZE;
    assert_eq!(b[e], TensorKind::AttnNorm as u8);
    b[e + 2..e + 4].copy_from_slice(&0u16.to_le_bytes());
    fix_crc(&mut b);
    assert_eq!(
        parse(&b),
        Err(BlobError::DuplicateTensor {
            kind: TensorKind::AttnNorm,
            layer: 0
        })
    );
    // A layer the config does not have.
    let mut b = good.clone();
    b[e + 2..e + 4].copy_from_slice(&2u16.to_le_bytes());
    fix_crc(&mut b);
    assert!(matches!(
        parse(&b),
        Err(BlobError::BadTensor {
            index: 10,
            reason: "layer index out of range"
        })
    ));
    // Lookups find each tensor where the writer put it.
    let a = Aligned::new(&good);
    let blob = Blob::parse(a.bytes()).unwrap();
    for i in 0..blob.tensor_count() {
        let t = blob.tensor_at(i).unwrap();
        assert_eq!(blob.find(t.kind, t.layer).unwrap().offset, t.offset);
    }
    assert!(blob.find(TensorKind::Wq, 2).is_err());
    assert!(blob.tensor_at(blob.tensor_count()).is_err());
}

/// One engine step per KV representation on a valid blob: finite logits, and the compressed
/// caches stay close to the exact one.
#[test]
fn engine_steps_at_this_width() {
    let mut runs = Vec::new();
    for kv in [KvCacheKind::F32, KvCacheKind::F16, KvCacheKind::Int8] {
        let bytes = small_blob(kv);
        let a = Aligned::new(&bytes);
        let blob = Blob::parse(a.bytes()).unwrap();
        let mut e = Engine::new(&blob, SingleWorker).unwrap();
        let mut last = Vec::new();
        for (pos, tok) in [1u32, 10, 20, 30].into_iter().enumerate() {
            last = e.forward(tok, pos).unwrap().to_vec();
        }
        assert_eq!(last.len(), 64);
        assert!(last.iter().all(|v| v.is_finite()), "{kv:?}: {last:?}");
        assert!(e.forward(64, 4).is_err());
        assert!(e.forward(1, 32).is_err());
        runs.push(last);
    }
    let peak = runs[0].iter().fold(0f32, |m, v| m.max(v.abs()));
    for (kv, r) in ["f16", "int8"].iter().zip(&runs[1..]) {
        let diff = r
            .iter()
            .zip(&runs[0])
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 0.1 * peak,
            "{kv} cache: logits differ by {diff} (peak {peak})"
        );
    }
}
