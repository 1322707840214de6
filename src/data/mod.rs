//! Data: the curriculum's sources (stories, prose, Q&A CSV, synthetic Q&A), the TinyStories
//! download, and the tokenizer that turns them into token streams. Imports `config` and `util`.

pub mod download;
mod sources;
pub mod stream;
pub mod synth;
pub mod token_cache;
pub mod tokenizer;

pub use sources::*;
