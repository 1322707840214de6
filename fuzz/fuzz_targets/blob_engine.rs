//! The blob loader, then (for a blob it accepts) the tokenizer tables, a memory-capped engine
//! and one forward step. The CRC is recomputed over the input first, so mutations reach the
//! checks behind it; the unchecked CRC path is the `Blob::parse` call on the raw input.
#![no_main]

#[path = "../../firmware/tests/common/mod.rs"]
mod common;

use badge_firmware::engine::Engine;
use badge_firmware::format::{Blob, HEADER_SIZE};
use badge_firmware::tokenizer::Tokenizer;
use badge_firmware::workers::SingleWorker;
use libfuzzer_sys::fuzz_target;

/// The run state a fuzzed blob may allocate: many times the seeds' (tens of KB), small enough that
/// zeroing it does not dominate an execution (the loader's limits are tested elsewhere).
const RUN_STATE_LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let raw = common::Aligned::new(data);
    let _ = Blob::parse(raw.bytes());
    let mut fixed = data.to_vec();
    if fixed.len() >= HEADER_SIZE {
        common::fix_crc(&mut fixed);
    }
    let a = common::Aligned::new(&fixed);
    let Ok(blob) = Blob::parse(a.bytes()) else {
        return;
    };
    let tok = Tokenizer::new(blob.tokenizer);
    let ids = tok.encode("Who are you? 42 ünïcode");
    let _ = tok.decode(&ids);
    let Ok(mut engine) = Engine::with_memory_limit(&blob, SingleWorker, RUN_STATE_LIMIT) else {
        return;
    };
    let first = ids.first().copied().unwrap_or(blob.bos_id);
    let logits = engine
        .forward(first, 0)
        .expect("a checked token at position 0");
    assert_eq!(logits.len(), blob.config.vocab_size as usize);
});
