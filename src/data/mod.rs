//! Data: the curriculum's sources (stories, prose, Q&A CSV, synthetic Q&A), the TinyStories
//! download, the tokenizer that turns them into token streams, an owner's facts file, the
//! `badge init` folder and the `badge data check` report. Imports `config` and `util`.

pub mod check;
pub mod download;
pub mod facts;
pub mod held_out;
pub mod init;
pub mod noise;
pub mod paraphrase;
mod rng;
mod sources;
pub mod stream;
pub mod synth;
pub mod thesaurus;
pub mod token_cache;
pub mod tokenizer;
pub mod word_memo;

pub use sources::*;
