//! What quantization costs where the user notices it: the f32 checkpoint (candle) and the
//! exported blob (the badge's int8 engine) side by side on held-out text and on the Q&A set.

use crate::answer::{Answerer, BlobAnswerer, BlobFile, CandleAnswerer};
use crate::config::SourceConfig;
use crate::run::Run;
use anyhow::{anyhow, Result};
use badge_firmware::engine::Engine;
use badge_firmware::sampler::argmax;
use badge_firmware::workers::SingleWorker;
use serde::Serialize;
use std::path::Path;

/// f32 versus int8, measured on the same inputs.
#[derive(Debug, Clone, Serialize)]
pub struct QualityReport {
    /// Held-out texts and the next-token positions compared over them.
    pub texts: usize,
    pub positions: usize,
    /// Fraction of positions where both models pick the same most likely next token.
    pub top1_agreement: f64,
    /// Mean KL(p_f32 ‖ p_int8) of the next-token distributions, in nats.
    pub mean_kl: f64,
    pub qa_questions: usize,
    pub qa_exact_f32: f64,
    pub qa_exact_int8: f64,
}

impl QualityReport {
    pub fn table(&self) -> String {
        format!(
            "f32 vs int8 on {} held-out texts ({} positions): top-1 agreement {:.2}%, mean KL {:.5} nats\n\
             Q&A exact match on {} trained questions: f32 {:.1}%, int8 blob {:.1}%\n",
            self.texts,
            self.positions,
            100.0 * self.top1_agreement,
            self.mean_kl,
            self.qa_questions,
            100.0 * self.qa_exact_f32,
            100.0 * self.qa_exact_int8
        )
    }
}

/// Softmax in f64 (the KL of two nearly equal distributions needs the precision).
fn softmax64(x: &[f32]) -> Vec<f64> {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let e: Vec<f64> = x.iter().map(|&v| f64::from(v - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(&a, _)| a > 0.0)
        .map(|(&a, &b)| a * (a / b.max(1e-300)).ln())
        .sum()
}

/// Held-out texts the run knows about: its stories' valid file and its Q&A held-out pairs
/// rendered through the template.
fn heldout_texts(rc: &crate::config::ResolvedCurriculum, max: usize) -> Result<Vec<String>> {
    let tpl = badge_firmware::template::PromptTemplate::parse(&rc.curriculum.template)
        .map_err(|e| anyhow!("{e}"))?;
    let mut texts = Vec::new();
    for s in rc.curriculum.sources.values() {
        match s {
            SourceConfig::Stories { valid: Some(v), .. } if v.exists() => {
                texts.extend(crate::data::read_stories(v)?.into_iter().take(max / 2))
            }
            SourceConfig::Qa { valid: Some(v), .. } if v.exists() => {
                texts.extend(crate::data::read_qa_csv(v)?.iter().take(max / 2).map(|p| {
                    let (a, b) = tpl.render(&p.question, &p.answer);
                    a + &b
                }))
            }
            _ => {}
        }
    }
    texts.truncate(max);
    Ok(texts)
}

/// The trained Q&A pairs of the run (its first Q&A source).
fn trained_pairs(rc: &crate::config::ResolvedCurriculum) -> Result<Vec<crate::data::QaPair>> {
    for s in rc.curriculum.sources.values() {
        if let SourceConfig::Qa { train, limit, .. } = s {
            let mut p = crate::data::read_qa_csv(train)?;
            if *limit > 0 {
                p.truncate(*limit);
            }
            return Ok(p);
        }
    }
    Ok(Vec::new())
}

/// Compares the run's f32 checkpoint `checkpoint` with the blob at `blob_path`.
pub fn measure(
    run: &Run,
    blob_path: &Path,
    max_texts: usize,
    max_questions: usize,
) -> Result<QualityReport> {
    let rc = &run.config;
    let file = BlobFile::read(blob_path)?;
    let blob = file.blob();
    let mut f32_model = CandleAnswerer::from_run(run, 64)?;
    let seq_len = rc.model.seq_len as usize;

    let texts = heldout_texts(rc, max_texts)?;
    let (mut positions, mut agree, mut kl_sum) = (0usize, 0usize, 0.0f64);
    for text in &texts {
        let mut ids = vec![f32_model.tokenizer.bos_id()];
        ids.extend(f32_model.tokenizer.encode(text)?);
        ids.truncate(seq_len);
        let device = candle_core::Device::Cpu;
        let f32_logits = f32_model
            .model
            .forward(&candle_core::Tensor::from_vec(
                ids.clone(),
                (1, ids.len()),
                &device,
            )?)?
            .get(0)?
            .to_vec2::<f32>()?;
        let mut engine = Engine::new(&blob, SingleWorker).map_err(|e| anyhow!("{e}"))?;
        for (pos, &t) in ids.iter().enumerate() {
            let q = engine.forward(t, pos).map_err(|e| anyhow!("{e}"))?;
            agree += usize::from(argmax(q) == argmax(&f32_logits[pos]));
            kl_sum += kl(&softmax64(&f32_logits[pos]), &softmax64(q));
            positions += 1;
        }
    }

    let pairs: Vec<_> = trained_pairs(rc)?.into_iter().take(max_questions).collect();
    // Both in open generation: this measures what quantization changes, not the decoding.
    let free = badge_firmware::generate::GenerateOptions {
        free: true,
        ..Default::default()
    };
    let mut int8_model = BlobAnswerer::new(&file, 1, free)?;
    let (mut f32_right, mut int8_right) = (0, 0);
    for p in &pairs {
        f32_right += usize::from(f32_model.answer(&p.question)?.trim() == p.answer.trim());
        int8_right += usize::from(int8_model.answer(&p.question)?.trim() == p.answer.trim());
    }
    let n = pairs.len().max(1) as f64;
    Ok(QualityReport {
        texts: texts.len(),
        positions,
        top1_agreement: agree as f64 / positions.max(1) as f64,
        mean_kl: kl_sum / positions.max(1) as f64,
        qa_questions: pairs.len(),
        qa_exact_f32: f32_right as f64 / n,
        qa_exact_int8: int8_right as f64 / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_equal_and_positive_for_different_distributions() {
        let p = softmax64(&[1.0, 2.0, 3.0]);
        assert!(kl(&p, &p).abs() < 1e-12);
        let q = softmax64(&[1.0, 2.5, 3.0]);
        assert!(kl(&p, &q) > 1e-4);
    }
}
