//! The badge: blob format, Q8_0 quantization, int8 inference engine, tokenizer, sampler and SAM.
//!
//! `no_std` + `alloc` so that the very same code runs on the ESP32-S3 and on the host (feature
//! `std`), where `badge ask`, `badge sim` and the tests use it. Hardware glue lives behind the
//! `esp32s3` feature.
#![cfg_attr(not(feature = "std"), no_std)]
// `asm!` on Xtensa (the PIE kernel, kernel::pie) is still an experimental architecture.
#![cfg_attr(
    all(feature = "esp32s3", target_arch = "xtensa", not(badge_check_no_asm)),
    feature(asm_experimental_arch)
)]
extern crate alloc;

pub mod answers;
pub mod app;
// The modules that read sizes, offsets and counts from untrusted bytes (a blob, a partition
// table) do all such arithmetic with checked operations: on the 32-bit badge a wrapped size
// would pass a bounds check and then crash or corrupt the heap.
#[deny(clippy::arithmetic_side_effects)]
pub mod buffers;
pub mod buttons;
pub mod config;
pub mod engine;
#[deny(clippy::arithmetic_side_effects)]
pub mod format;
pub mod generate;
pub mod half;
pub mod idle;
#[deny(clippy::arithmetic_side_effects)]
pub mod image;
pub mod kernel;
#[deny(clippy::arithmetic_side_effects)]
pub mod partition;
pub mod prompts;
pub mod quant;
pub mod question_match;
pub mod sam;
pub mod sampler;
pub mod template;
pub mod tokenizer;
pub mod workers;
