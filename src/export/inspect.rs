//! `badge inspect`: what is inside a blob, and whether it fits a board.

use crate::answer::BlobFile;
use crate::export::quant_report::{QuantReport, TensorError};
use anyhow::{anyhow, Result};
use badge_firmware::format::{Blob, TensorData};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct TensorRow {
    pub name: String,
    pub dtype: &'static str,
    pub rows: usize,
    pub cols: usize,
    pub offset: usize,
    pub bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub file: String,
    pub bytes: usize,
    pub crc32: String,
    pub crc_ok: bool,
    pub config: badge_firmware::config::ModelConfig,
    pub group_size: usize,
    pub kv_cache: String,
    pub voice: badge_firmware::config::Voice,
    pub vocab_tokens: usize,
    pub merges: usize,
    pub template: String,
    pub tensors: Vec<TensorRow>,
    pub answers: Option<AnswersRow>,
    pub run_state_bytes: usize,
    pub memory: Option<crate::config::board::MemoryPlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<QuantReport>,
}

/// The blob's known answers, as `inspect` reports them.
#[derive(Debug, Clone, Serialize)]
pub struct AnswersRow {
    pub answers: usize,
    pub trie_nodes: usize,
    /// Words of the trained questions stored for the novelty penalty.
    pub question_words: usize,
    pub novelty_penalty: f32,
    /// The question match, when the blob has one.
    pub question_match: Option<MatchRow>,
    pub bytes: usize,
    pub fallback: String,
    pub measure: &'static str,
    pub threshold: f32,
    pub free_by_default: bool,
}

/// The blob's question match (`badge_firmware::question_match`), as `inspect` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct MatchRow {
    pub questions: usize,
    pub words: usize,
    pub steer_weight: f32,
    pub confidence_weight: f32,
    pub bytes: usize,
}

fn tensor_name(t: &badge_firmware::format::TensorView<'_>) -> String {
    if t.kind.is_per_layer() {
        format!("layers.{}.{}", t.layer, t.kind.name())
    } else {
        t.kind.name().to_string()
    }
}

/// Reads and describes a blob; with `against` (a run directory) it also measures every
/// tensor's quantization error against that run's f32 checkpoint.
pub fn inspect(path: &Path, board: Option<&Path>, against: Option<&Path>) -> Result<Inspection> {
    let file = BlobFile::read(path)?;
    let blob: Blob<'_> = file.blob();
    let mut tensors = Vec::new();
    for i in 0..blob.tensor_count() {
        let t = blob.tensor_at(i).map_err(|e| anyhow!("{e}"))?;
        tensors.push(TensorRow {
            name: tensor_name(&t),
            dtype: if matches!(t.data, TensorData::F32(_)) {
                "f32"
            } else {
                "q8_0"
            },
            rows: t.rows,
            cols: t.cols,
            offset: t.offset,
            bytes: t.byte_len(),
        });
    }
    let state =
        badge_firmware::engine::RunStateSize::of(&blob.config, blob.group_size, blob.kv_cache);
    let answers = blob.answers.map(|a| AnswersRow {
        answers: a.answer_count,
        trie_nodes: a.node_count(),
        question_words: a.question_word_count(),
        novelty_penalty: a.novelty_penalty,
        question_match: a.question_match.map(|m| MatchRow {
            questions: m.question_count(),
            words: m.word_count(),
            steer_weight: m.steer_weight,
            confidence_weight: m.confidence_weight,
            bytes: m.byte_len(),
        }),
        bytes: a.byte_len(),
        fallback: a.fallback.to_string(),
        measure: a.measure.name(),
        threshold: a.threshold,
        free_by_default: a.free_by_default,
    });
    let memory = match board {
        Some(b) => {
            let mut plan = crate::config::board::MemoryPlan::new(
                &crate::config::board::Board::load(b)?,
                blob.bytes.len() as u64,
                state,
            )?;
            plan.answers_bytes = answers.as_ref().map_or(0, |a| a.bytes as u64);
            Some(plan)
        }
        None => None,
    };
    let report = match against {
        Some(run) => Some(error_against(&blob, run)?),
        None => None,
    };
    Ok(Inspection {
        file: path.display().to_string(),
        bytes: blob.bytes.len(),
        crc32: format!("{:08x}", blob.crc32),
        crc_ok: true,
        config: blob.config,
        group_size: blob.group_size,
        kv_cache: format!("{:?}", blob.kv_cache).to_lowercase(),
        voice: blob.voice,
        vocab_tokens: blob.tokenizer.n_tokens,
        merges: blob.tokenizer.n_merges,
        template: blob.template.to_string(),
        tensors,
        answers,
        run_state_bytes: state.total(),
        memory,
        report,
    })
}

fn error_against(blob: &Blob<'_>, run: &Path) -> Result<QuantReport> {
    let weights = crate::run::Run::load(run, None)?.flat_weights()?;
    let mut errors = Vec::new();
    for i in 0..blob.tensor_count() {
        let t = blob.tensor_at(i).map_err(|e| anyhow!("{e}"))?;
        if let TensorData::Q8 { q, scales } = t.data {
            let name = tensor_name(&t);
            let orig = weights
                .get(&name)
                .ok_or_else(|| anyhow!("the run has no tensor {name}"))?;
            let mut restored = vec![0f32; q.len()];
            badge_firmware::quant::dequantize(q, scales, blob.group_size, &mut restored);
            errors.push(TensorError::measure(
                &name,
                (t.rows, t.cols),
                blob.group_size,
                t.byte_len(),
                orig,
                &restored,
            ));
        }
    }
    Ok(QuantReport::new(blob.group_size, errors))
}

impl Inspection {
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut s = format!(
            "{}: {} bytes, CRC32 {} ({})\nmodel: dim {} hidden {} layers {} heads {}/{} vocab {} seq {} eps {} theta {}\nQ8_0 group size {}, KV cache {}, voice speed {} pitch {} mouth {} throat {}\ntokenizer: {} tokens, {} merges; template {:?}\nrun state on the badge: {} bytes\n\n",
            self.file, self.bytes, self.crc32, if self.crc_ok { "ok" } else { "BAD" },
            c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len, c.norm_eps, c.rope_theta,
            self.group_size, self.kv_cache, self.voice.speed, self.voice.pitch, self.voice.mouth, self.voice.throat,
            self.vocab_tokens, self.merges, self.template, self.run_state_bytes
        );
        s += &format!(
            "{:<22} {:>5} {:>11} {:>9} {:>9}\n",
            "tensor", "dtype", "shape", "offset", "bytes"
        );
        for t in &self.tensors {
            s += &format!(
                "{:<22} {:>5} {:>11} {:>9} {:>9}\n",
                t.name,
                t.dtype,
                format!("{}x{}", t.rows, t.cols),
                t.offset,
                t.bytes
            );
        }
        match &self.answers {
            Some(a) => {
                let matching = a.question_match.as_ref().map_or(
                    ", no question match".to_string(),
                    |m| {
                        format!(
                            ", question match on {} trained questions of {} words (steer {}, confidence {}; {} bytes)",
                            m.questions, m.words, m.steer_weight, m.confidence_weight, m.bytes
                        )
                    },
                );
                s += &format!(
                    "\nknown answers: {} ({} trie nodes, {} question words at novelty penalty {}{}, {} bytes); {}; fallback below {} {:.4}: {:?}\n",
                    a.answers,
                    a.trie_nodes,
                    a.question_words,
                    a.novelty_penalty,
                    matching,
                    a.bytes,
                    if a.free_by_default { "open generation by default" } else { "known-answer decoding by default" },
                    a.measure,
                    a.threshold,
                    a.fallback
                );
            }
            None => s += "\nknown answers: none (open generation only)\n",
        }
        if let Some(m) = &self.memory {
            s += "\n";
            s += &m.table();
        }
        if let Some(r) = &self.report {
            s += "\n";
            s += &r.table();
        }
        s
    }
}
