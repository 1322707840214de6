//! Configuration: model configs, curricula and board profiles, read from the TOML files in
//! `configs/`. The bottom of the pipeline: it imports only `util`, and every stage reads it.

pub mod board;
mod curriculum;

pub use curriculum::*;
