//! badge: turn facts about one person into a tiny language model for an ESP32-S3 badge.
//!
//! One module per stage; `main.rs`/`cli.rs` only parse arguments and call into them.

pub mod answer;
pub mod board;
pub mod button_prompts;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod demo;
pub mod download;
pub mod eval;
pub mod export;
pub mod flash;
pub mod info;
pub mod inspect;
pub mod llama2c;
pub mod model;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod quality;
pub mod quant_report;
pub mod say;
pub mod sim;
pub mod synth;
pub mod tokenizer;
pub mod train;
pub mod util;
