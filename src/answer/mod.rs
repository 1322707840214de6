//! Answering on the host: the badge's int8 engine over a blob and candle over a loaded run,
//! scoring answers against Q&A files (`eval`), and SAM speech to WAV (`say`).
//! Imports `run`, `train`, `data`, `config` and `util`.

mod answerers;
pub mod eval;
pub mod known;
pub mod say;

pub use answerers::*;
