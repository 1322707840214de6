//! badge: turn facts about one person into a tiny language model for an ESP32-S3 badge.
//!
//! One folder per stage, in pipeline order. A stage may import the stages below it, never one
//! above: `demo` → `device` → `export` → `answer` → `run` → `train` → `data` → `config`, with
//! `util` beside them all (it imports none of them). The `badge` binary's `cli` sits on top.

pub mod answer;
pub mod config;
pub mod data;
pub mod demo;
pub mod device;
pub mod export;
pub mod run;
pub mod train;
pub mod util;
