//! Fetching the real TinyStories dataset through `hf-hub` into its cache (`--download`).

use anyhow::{Context, Result};
use std::path::PathBuf;

pub const TINYSTORIES_REPO: &str = "roneneldan/TinyStories";
pub const TRAIN_FILE: &str = "TinyStoriesV2-GPT4-train.txt";
pub const VALID_FILE: &str = "TinyStoriesV2-GPT4-valid.txt";

/// Downloads (or finds in the hf-hub cache) the TinyStories train and valid files.
pub fn tinystories() -> Result<(PathBuf, PathBuf)> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .context("setting up the Hugging Face hub client")?;
    let repo = api.dataset(TINYSTORIES_REPO.to_string());
    let get = |f: &str| {
        repo.get(f).with_context(|| {
            format!("downloading {f} from the dataset {TINYSTORIES_REPO} (check the network, or set HF_HOME to a cache that has it)")
        })
    };
    Ok((get(TRAIN_FILE)?, get(VALID_FILE)?))
}
