//! Export: a loaded run → Q8_0 → the blob the badge loads (or llama2.c's file), with the
//! per-tensor error report, the f32-vs-int8 quality measurement, `inspect` and `info`.
//! Imports `answer` (quality uses the answerers), `run`, `train`, `data`, `config` and `util`.

mod blob;
pub mod button_prompts;
pub mod info;
pub mod inspect;
pub mod llama2c;
pub mod quality;
pub mod quant_report;

pub use blob::*;
