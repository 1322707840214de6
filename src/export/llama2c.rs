//! llama2.c's "version 2" Q8_0 checkpoint and `tokenizer.bin`, so a badge model also runs in
//! that ecosystem (and can be compared side by side with `runq`). Layout: see
//! `../shared/reference/llama2c-v2-format.md` (magic "ak42", header padded to 256 bytes, norms
//! in f32, then every Q8_0 tensor as its int8 values followed by its scales).

use crate::data::tokenizer::BadgeTokenizer;
use crate::export::quant_report::{quantize_measured, QuantReport};
use crate::run::FlatParams;
use anyhow::{Context, Result};
use badge_firmware::config::ModelConfig;
use std::path::Path;

pub const MAGIC: u32 = 0x616b_3432;
pub const VERSION: i32 = 2;

fn get<'a>(w: &'a FlatParams, name: &str) -> Result<&'a Vec<f32>> {
    w.get(name)
        .with_context(|| format!("the checkpoint has no tensor {name}"))
}

/// Writes the model to `out` and `tokenizer.bin` beside it; returns the model file's size.
pub fn write(
    out: &Path,
    c: &ModelConfig,
    w: &FlatParams,
    tok: &BadgeTokenizer,
    gs: usize,
) -> Result<(usize, QuantReport)> {
    let mut b = Vec::new();
    b.extend_from_slice(&MAGIC.to_le_bytes());
    b.extend_from_slice(&VERSION.to_le_bytes());
    for v in c.header_fields() {
        b.extend_from_slice(&(v as i32).to_le_bytes());
    }
    b.push(1); // the classifier shares the token embedding
    b.extend_from_slice(&(gs as i32).to_le_bytes());
    b.resize(256, 0);
    let layers = 0..c.n_layers;
    for kind in ["attn_norm", "ffn_norm"] {
        for l in layers.clone() {
            get(w, &format!("layers.{l}.{kind}"))?
                .iter()
                .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
        }
    }
    get(w, "norm")?
        .iter()
        .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    let mut names = vec!["tok_embeddings".to_string()];
    for kind in ["wq", "wk", "wv", "wo", "w1", "w2", "w3"] {
        names.extend(layers.clone().map(|l| format!("layers.{l}.{kind}")));
    }
    // Report shapes as the model has them (`[out, in]`), by parameter name.
    let shapes: std::collections::HashMap<String, (usize, usize)> =
        crate::train::model::parameter_shapes(c)
            .into_iter()
            .filter(|(_, s)| s.len() == 2)
            .map(|(n, s)| (n, (s[0], s[1])))
            .collect();
    let mut errors = Vec::new();
    for name in names {
        let v = get(w, &name)?;
        let (q, s, error) = quantize_measured(&name, shapes[&name], v, gs);
        errors.push(error);
        b.extend(q.iter().map(|&x| x as u8));
        s.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    }
    crate::util::write_atomic(out, &b)?;
    let tok_path = out.with_file_name("tokenizer.bin");
    crate::util::write_atomic(&tok_path, &tokenizer_bin(tok)?)?;
    Ok((b.len(), QuantReport::new(gs, errors)))
}

/// `tokenizer.bin`: max token length, then per token its score, byte length and bytes. Merge
/// results score `-rank` (llama2.c merges the best-scoring pair first, as BPE merges the
/// lowest rank); `▁` is written as a space, which llama2.c's decoder expects.
pub fn tokenizer_bin(tok: &BadgeTokenizer) -> Result<Vec<u8>> {
    let (vocab, merges) = tok.parts()?;
    let mut score = vec![-1e9f32; vocab.len()];
    let index: std::collections::HashMap<&str, usize> = vocab
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    for (rank, (a, b)) in merges.iter().enumerate() {
        if let Some(&id) = index.get(format!("{a}{b}").as_str()) {
            score[id] = -(rank as f32);
        }
    }
    let pieces: Vec<String> = vocab.iter().map(|p| p.replace('▁', " ")).collect();
    let max_len = pieces.iter().map(String::len).max().unwrap_or(0) as u32;
    let mut out = max_len.to_le_bytes().to_vec();
    for (p, s) in pieces.iter().zip(&score) {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&(p.len() as i32).to_le_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    Ok(out)
}
