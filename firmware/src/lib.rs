//! The badge: blob format, Q8_0 quantization, int8 inference engine, tokenizer, sampler and SAM.
//!
//! `no_std` + `alloc` so that the very same code runs on the ESP32-S3 and on the host (feature
//! `std`), where `badge ask`, `badge sim` and the tests use it. Hardware glue lives behind the
//! `esp32s3` feature.
#![cfg_attr(not(feature = "std"), no_std)]
// `asm!` on Xtensa (the PIE kernel, kernel::pie) is still an experimental architecture.
#![cfg_attr(
    all(feature = "esp32s3", target_arch = "xtensa"),
    feature(asm_experimental_arch)
)]
extern crate alloc;

pub mod answers;
pub mod app;
pub mod buffers;
pub mod config;
pub mod engine;
pub mod format;
pub mod generate;
pub mod half;
pub mod image;
pub mod kernel;
pub mod partition;
pub mod quant;
pub mod sam;
pub mod sampler;
pub mod template;
pub mod tokenizer;
pub mod workers;
