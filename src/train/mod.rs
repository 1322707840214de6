//! Training: the three-phase curriculum loop in candle, the model, its fused CPU ops, AdamW,
//! checkpoints and the run directory's layout, the metrics file and the loss plot.
//! Imports `data`, `config` and `util`.

pub mod checkpoint;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod optim;
pub mod plot;
mod trainer;

pub use trainer::*;
