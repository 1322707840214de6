//! Model configs and curricula (TOML files in `configs/`).
//!
//! A curriculum names the model, the tokenizer, the data sources and one `[[phase]]` table per
//! phase. Paths inside it are relative to the curriculum file, so a config and its data move
//! together.

use crate::util::{read_to_string, relative_to};
use anyhow::{bail, Context, Result};
use badge_firmware::config::{ModelConfig, Voice};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default prompt template: the badge formats questions the same way.
pub const DEFAULT_TEMPLATE: &str = "Q: {question}\nA: {answer}";

/// Reads a model config file (the fields of [`ModelConfig`]).
pub fn load_model_config(path: &Path) -> Result<ModelConfig> {
    let text = read_to_string(path)?;
    let c: ModelConfig = toml::from_str(&text)
        .with_context(|| format!("{}: not a valid model config", path.display()))?;
    c.validate().map_err(|(field, value)| {
        anyhow::anyhow!(
            "{}: field `{field}` has invalid value {value}",
            path.display()
        )
    })?;
    Ok(c)
}

/// Where the model shape comes from: a file next to the curriculum, or inline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelRef {
    File(PathBuf),
    Inline(ModelConfig),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSection {
    /// An existing `tokenizer.json`; when absent, `badge train` trains one.
    pub path: Option<PathBuf>,
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Split numbers into single digits (each digit its own word).
    #[serde(default)]
    pub split_digits: bool,
    /// Sources whose text trains the tokenizer (default: all).
    pub train_on: Option<Vec<String>>,
    /// The most text, in bytes, that each source gives the tokenizer's training (its
    /// beginning). A 512- or 1024-piece vocabulary is settled long before 2 GB of stories:
    /// counting every word of the full TinyStories would take minutes and change nothing.
    #[serde(default = "default_sample_bytes")]
    pub sample_bytes: u64,
}

fn default_vocab() -> usize {
    512
}

/// 100 MB: about 110,000 TinyStories, far more than the bundled sample.
pub const DEFAULT_TOKENIZER_SAMPLE_BYTES: u64 = 100_000_000;

fn default_sample_bytes() -> u64 {
    DEFAULT_TOKENIZER_SAMPLE_BYTES
}

/// Which tokens of a Q&A sample carry loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LossOn {
    /// Only the answer and its end-of-sequence token.
    #[default]
    Answer,
    All,
}

/// One data source. Paths are relative to the curriculum file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// Stories separated by `<|endoftext|>` lines, or a JSON array of `{"story": ...}`.
    Stories {
        train: Option<PathBuf>,
        valid: Option<PathBuf>,
        /// Download TinyStories through hf-hub when `--download` is given.
        #[serde(default)]
        download: bool,
        /// Use at most this many stories (0 = all).
        #[serde(default)]
        limit: usize,
    },
    /// A folder of `.txt`/`.md` paragraphs; `holdout` of them are kept for evaluation.
    Prose {
        path: PathBuf,
        #[serde(default = "default_holdout")]
        holdout: f64,
    },
    /// Q&A CSV with header `id,question,answer` (an optional `category` column).
    Qa {
        train: PathBuf,
        valid: Option<PathBuf>,
        #[serde(default)]
        loss_on: LossOn,
        /// Keep only the first N pairs (0 = all), for quick runs.
        #[serde(default)]
        limit: usize,
        /// Also train on this many generic paraphrases of each question (data::paraphrase),
        /// with the same answer, so the model learns the answer rather than one phrasing.
        #[serde(default)]
        paraphrases: usize,
        /// Also train on this many noisy copies of each question (data::noise: one word
        /// dropped, made up or misspelt), so one unfamiliar word does not derail the answer.
        #[serde(default)]
        noise: usize,
        /// Also train on copies of each question with one word or phrase swapped for a
        /// synonym from a thesaurus (data::thesaurus), so a stranger's word is one it knows.
        synonyms: Option<Synonyms>,
    },
    /// Questions the badge cannot answer from its owner's facts (one per line, `#` comments),
    /// each taught with the `[answers]` fallback line as its answer, so that the model learns
    /// to say it rather than a fact. Keep them apart from the `[answers]` calibration and test
    /// lists.
    Offtopic {
        questions: PathBuf,
        /// Generic paraphrases per question, as for a Q&A source.
        #[serde(default)]
        paraphrases: usize,
        /// Noisy copies per question, misspellings only: dropping or replacing a word could
        /// leave a question about the owner, taught the fallback.
        #[serde(default)]
        noise: usize,
        /// Synonym copies per question, as for a Q&A source: they keep its meaning.
        synonyms: Option<Synonyms>,
        /// The answer taught: always the `[answers]` fallback line, set when the curriculum
        /// loads (a value written here is replaced), so the two never drift apart.
        #[serde(default)]
        answer: String,
    },
    /// Prose and Q&A generated from a facts file by `badge data synth`'s generator.
    Synth {
        facts: PathBuf,
        templates: PathBuf,
        #[serde(default)]
        seed: u64,
        #[serde(default = "default_holdout")]
        holdout: f64,
        #[serde(default)]
        loss_on: LossOn,
        /// Generic paraphrases per generated question, as for a Q&A source.
        #[serde(default)]
        paraphrases: usize,
        /// Noisy copies per generated question, as for a Q&A source.
        #[serde(default)]
        noise: usize,
        /// Synonym copies per generated question, as for a Q&A source.
        synonyms: Option<Synonyms>,
    },
}

/// A source's synonym copies: `synonyms = { thesaurus = "...", copies = 2 }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Synonyms {
    /// The thesaurus file (one group of interchangeable words per line, commas between).
    pub thesaurus: PathBuf,
    /// Copies per question, each with one word or phrase swapped.
    pub copies: usize,
}

fn default_holdout() -> f64 {
    0.1
}

/// One entry of a phase's data mix.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixEntry {
    pub source: String,
    pub weight: f64,
    /// How many times the source's samples are repeated (shuffled) in its stream.
    #[serde(default = "one")]
    pub repeat: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseConfig {
    pub name: String,
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate, reached after `warmup_steps`, then cosine decay to `min_lr`.
    pub lr: f64,
    pub min_lr: Option<f64>,
    #[serde(default)]
    pub warmup_steps: usize,
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    #[serde(default)]
    pub grad_clip: f64,
    pub mix: Vec<MixEntry>,
    #[serde(default = "default_every")]
    pub eval_every: usize,
    #[serde(default = "default_every")]
    pub checkpoint_every: usize,
    /// Success criterion: the phase's final train loss must be below this.
    pub max_loss: Option<f64>,
}

fn default_every() -> usize {
    100
}

impl PhaseConfig {
    /// Learning rate at `step` (0-based): linear warm-up, then cosine to `min_lr`.
    pub fn lr_at(&self, step: usize) -> f64 {
        let min_lr = self.min_lr.unwrap_or(self.lr / 10.0);
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        min_lr + 0.5 * (1.0 + (std::f64::consts::PI * t).cos()) * (self.lr - min_lr)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curriculum {
    pub name: String,
    pub model: ModelRef,
    #[serde(default = "default_template")]
    pub template: String,
    #[serde(default)]
    pub seed: u64,
    pub tokenizer: TokenizerSection,
    pub sources: BTreeMap<String, SourceConfig>,
    pub phase: Vec<PhaseConfig>,
    #[serde(default)]
    pub voice: Option<Voice>,
    /// What the badge's button asks (see `export::button_prompts`).
    #[serde(default)]
    pub buttons: ButtonsSection,
    /// Known-answer decoding: the fallback line and the questions that calibrate it.
    #[serde(default)]
    pub answers: AnswersConfig,
}

/// The curriculum's `[buttons]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonsSection {
    /// Asked by the first short press.
    #[serde(default)]
    pub intro: Option<String>,
    /// Asked in turn by further short presses.
    #[serde(default)]
    pub ask_me_about: Option<Vec<String>>,
}

/// The `[answers]` table: what the badge says when it does not know, and the off-topic
/// questions (one per line, `#` comments) that calibrate when it should say so.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswersConfig {
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// Off-topic questions for calibrating the confidence threshold at export.
    #[serde(default)]
    pub offtopic: Option<PathBuf>,
    /// Other off-topic questions, never calibrated on, for the figures (demo, benchmark).
    #[serde(default)]
    pub offtopic_test: Option<PathBuf>,
    /// How cautious the badge is: the share of held-out in-domain questions that the
    /// calibrated threshold must still answer (`badge export --keep-known` overrides it).
    #[serde(default = "default_keep_known")]
    pub keep_known: f64,
}

/// The default [`AnswersConfig::keep_known`]. Not 0.9 (the 10% fallback budget): the
/// calibration questions are the synth holdout, phrased like training, and a stranger's
/// questions lose more to the same threshold. On the tiny demo (bundled owner, seeds 1-14,
/// issue #14, with the question match), held-out rephrasings right / fallback / wrong, and
/// off-topic test questions refused: 0.90: 78.6 / 12.9 / 8.5%, 89.3%; 0.93: 79.8 / 11.2 /
/// 9.0%, 88.3%; 0.95: 80.3 / 9.6 / 10.1%, 85.2%; 0.96: 81.1 / 7.8 / 11.1%, 83.6%; 0.97: 81.9 /
/// 5.8 / 12.3%, 81.9%. 0.96 keeps both of the bars (at most 10% fallback, at least
/// 80% refused) with about two points to spare. Lower is more cautious: fewer wrong answers,
/// more "I don't know".
pub const DEFAULT_KEEP_KNOWN: f64 = 0.96;

fn default_keep_known() -> f64 {
    DEFAULT_KEEP_KNOWN
}

/// Checks a `keep_known` share (from a curriculum or `badge export --keep-known`).
pub fn check_keep_known(value: f64) -> Result<f64> {
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        bail!("keep_known is {value}, but must be a share above 0 and at most 1 (e.g. 0.95: answer at least 95% of the held-out in-domain questions)")
    }
}

/// The fallback line when a curriculum names none.
pub const DEFAULT_FALLBACK: &str =
    "Sorry, I don't know that. Ask me about my work, my projects or my hobbies.";

fn default_fallback() -> String {
    DEFAULT_FALLBACK.to_string()
}

impl Default for AnswersConfig {
    fn default() -> Self {
        AnswersConfig {
            fallback: default_fallback(),
            offtopic: None,
            offtopic_test: None,
            keep_known: DEFAULT_KEEP_KNOWN,
        }
    }
}

fn default_template() -> String {
    DEFAULT_TEMPLATE.to_string()
}

/// A curriculum with its model resolved and its paths made absolute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolvedCurriculum {
    pub curriculum: Curriculum,
    pub model: ModelConfig,
}

impl Curriculum {
    /// Loads and checks a curriculum; paths inside become relative to the current directory.
    pub fn load(path: &Path) -> Result<ResolvedCurriculum> {
        let text = read_to_string(path)?;
        let mut c: Curriculum = toml::from_str(&text)
            .with_context(|| format!("{}: not a valid curriculum", path.display()))?;
        let model = match &c.model {
            ModelRef::File(p) => {
                let p = relative_to(path, p);
                c.model = ModelRef::File(p.clone());
                load_model_config(&p)?
            }
            ModelRef::Inline(m) => *m,
        };
        c.resolve_paths(path);
        c.check(path, &model)?;
        Ok(ResolvedCurriculum {
            curriculum: c,
            model,
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| *p = relative_to(base, p);
        if let Some(p) = self.tokenizer.path.as_mut() {
            fix(p);
        }
        let a = &mut self.answers;
        a.offtopic
            .iter_mut()
            .chain(a.offtopic_test.iter_mut())
            .for_each(fix);
        for s in self.sources.values_mut() {
            match s {
                SourceConfig::Stories { train, valid, .. } => {
                    train.iter_mut().chain(valid.iter_mut()).for_each(fix);
                }
                SourceConfig::Prose { path, .. } => fix(path),
                SourceConfig::Qa {
                    train,
                    valid,
                    synonyms,
                    ..
                } => {
                    fix(train);
                    valid.iter_mut().for_each(fix);
                    synonyms.iter_mut().for_each(|s| fix(&mut s.thesaurus));
                }
                SourceConfig::Synth {
                    facts,
                    templates,
                    synonyms,
                    ..
                } => {
                    fix(facts);
                    fix(templates);
                    synonyms.iter_mut().for_each(|s| fix(&mut s.thesaurus));
                }
                SourceConfig::Offtopic {
                    questions,
                    answer,
                    synonyms,
                    ..
                } => {
                    fix(questions);
                    answer.clone_from(&self.answers.fallback);
                    synonyms.iter_mut().for_each(|s| fix(&mut s.thesaurus));
                }
            }
        }
    }

    fn check(&self, path: &Path, model: &ModelConfig) -> Result<()> {
        let at = path.display();
        if self.phase.is_empty() {
            bail!("{at}: the curriculum has no [[phase]] table");
        }
        badge_firmware::template::PromptTemplate::parse(&self.template)
            .map_err(|e| anyhow::anyhow!("{at}: field `template`: {e}"))?;
        let fallback = &self.answers.fallback;
        if fallback.trim().is_empty()
            || fallback.len() > badge_firmware::answers::MAX_FALLBACK_BYTES
        {
            bail!(
                "{at}: answers.fallback must be 1 to {} bytes of text",
                badge_firmware::answers::MAX_FALLBACK_BYTES
            );
        }
        check_keep_known(self.answers.keep_known)
            .map_err(|e| anyhow::anyhow!("{at}: answers.{e}"))?;
        if self.tokenizer.vocab_size != model.vocab_size as usize {
            bail!(
                "{at}: tokenizer.vocab_size is {} but the model's vocab_size is {}: make them equal",
                self.tokenizer.vocab_size,
                model.vocab_size
            );
        }
        for (i, p) in self.phase.iter().enumerate() {
            let name = &p.name;
            if p.steps == 0 || p.batch_size == 0 {
                bail!("{at}: phase {i} ({name}): steps and batch_size must be at least 1");
            }
            if p.lr.is_nan() || p.lr <= 0.0 {
                bail!("{at}: phase {i} ({name}): lr must be positive");
            }
            if p.mix.is_empty() {
                bail!("{at}: phase {i} ({name}): the data mix is empty");
            }
            for m in &p.mix {
                if !self.sources.contains_key(&m.source) {
                    bail!(
                        "{at}: phase {i} ({name}): mix names source `{}`, which is not in [sources] (have: {})",
                        m.source,
                        self.sources.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
                if m.weight.is_nan() || m.weight <= 0.0 || m.repeat == 0 {
                    bail!(
                        "{at}: phase {i} ({name}): source `{}` needs weight > 0 and repeat ≥ 1",
                        m.source
                    );
                }
            }
            if p.eval_every == 0 || p.checkpoint_every == 0 {
                bail!(
                    "{at}: phase {i} ({name}): eval_every and checkpoint_every must be at least 1"
                );
            }
        }
        Ok(())
    }
}

/// Reads either a model config or a curriculum (for `badge info`).
pub fn load_any_model_config(path: &Path) -> Result<ModelConfig> {
    let text = read_to_string(path)?;
    if text.contains("[[phase]]") {
        Ok(Curriculum::load(path)?.model)
    } else {
        load_model_config(path)
    }
}
