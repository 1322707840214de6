//! Answering questions on the host, with either engine: the badge's int8 engine over a blob
//! (exactly what the badge computes), or candle running a run's f32 checkpoint.

use crate::data::tokenizer::BadgeTokenizer;
use crate::run::Run;
use crate::util::AlignedBytes;
use anyhow::{anyhow, Result};
use badge_firmware::engine::Engine;
use badge_firmware::format::{Blob, BlobError};
use badge_firmware::generate::{self, GenerateOptions, GenerateStats};
use badge_firmware::template::PromptTemplate;
use badge_firmware::tokenizer::Tokenizer;
use badge_firmware::workers::{RowJob, SingleWorker, ThreadWorkers, Workers};
use candle_core::{Device, Tensor};
use std::path::Path;

/// Anything that answers a question (for `badge eval`, `badge ask`, the demo).
pub trait Answerer {
    /// Answers greedily (or as configured), streaming text pieces to `on_text`.
    fn answer_streaming(
        &mut self,
        question: &str,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerateStats>;

    fn answer(&mut self, question: &str) -> Result<String> {
        let mut s = String::new();
        self.answer_streaming(question, &mut |t| s.push_str(t))?;
        Ok(s)
    }
}

/// One or two workers, chosen at run time.
pub enum HostWorkers {
    One(SingleWorker),
    Two(ThreadWorkers),
}

impl HostWorkers {
    pub fn new(n: usize) -> Self {
        if n >= 2 {
            Self::Two(ThreadWorkers::new())
        } else {
            Self::One(SingleWorker)
        }
    }
}

impl Workers for HostWorkers {
    fn run_rows(&self, out: &mut [f32], job: &RowJob<'_>) {
        match self {
            Self::One(w) => w.run_rows(out, job),
            Self::Two(w) => w.run_rows(out, job),
        }
    }
    fn count(&self) -> usize {
        match self {
            Self::One(w) => w.count(),
            Self::Two(w) => w.count(),
        }
    }
}

/// A blob file read into aligned memory and validated.
pub struct BlobFile {
    pub bytes: AlignedBytes,
}

impl BlobFile {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = AlignedBytes::read(path)?;
        Blob::parse(bytes.as_slice()).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(BlobFile { bytes })
    }
    /// A blob held in memory (one `badge export` has just built), checked like a file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bytes = AlignedBytes::from_slice(bytes);
        Blob::parse(bytes.as_slice()).map_err(|e| anyhow!("exported blob: {e}"))?;
        Ok(BlobFile { bytes })
    }
    pub fn blob(&self) -> Blob<'_> {
        Blob::parse_crc_checked(self.bytes.as_slice())
            .expect("validated in BlobFile::read or from_bytes")
    }
}

/// The badge's engine on the host.
pub struct BlobAnswerer<'a> {
    pub blob: Blob<'a>,
    pub engine: Engine<'a, HostWorkers>,
    pub tokenizer: Tokenizer<'a>,
    pub options: GenerateOptions,
}

impl<'a> BlobAnswerer<'a> {
    /// The engine over a blob the pipeline itself exported (and checked against the board).
    pub fn new(file: &'a BlobFile, workers: usize, options: GenerateOptions) -> Result<Self> {
        Self::with_memory_limit(file, workers, options, usize::MAX)
    }

    /// The engine over a blob from anywhere, refusing before any allocation a run state (KV
    /// cache and activations) above `max_run_state` bytes: a small file can claim a context
    /// that would take gigabytes, and that must be an error, not an allocator abort.
    pub fn with_memory_limit(
        file: &'a BlobFile,
        workers: usize,
        options: GenerateOptions,
        max_run_state: usize,
    ) -> Result<Self> {
        let blob = file.blob();
        let engine = Engine::with_memory_limit(&blob, HostWorkers::new(workers), max_run_state)
            .map_err(|e| match e {
                BlobError::TooLarge { .. } => anyhow!(
                    "{e}: the limit is the board profile's PSRAM budget; raise it with --max-memory BYTES \
                     (K and M suffixes accepted) to run this model on the host anyway"
                ),
                e => anyhow!("{e}"),
            })?;
        let tokenizer = Tokenizer::new(blob.tokenizer);
        Ok(BlobAnswerer {
            blob,
            engine,
            tokenizer,
            options,
        })
    }
}

impl Answerer for BlobAnswerer<'_> {
    fn answer_streaming(
        &mut self,
        question: &str,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerateStats> {
        let template = PromptTemplate::parse(self.blob.template).map_err(|e| anyhow!("{e}"))?;
        generate::answer(
            &mut self.engine,
            &self.tokenizer,
            &template,
            self.blob.bos_id,
            self.blob.eos_id,
            question,
            &self.options,
            self.blob.answers.as_ref(),
            on_text,
        )
        .map_err(|e| anyhow!("{e}"))
    }
}

/// candle running a run's f32 checkpoint, decoded by the badge's own generation code (so
/// known-answer decoding and the fallback behave exactly as on the badge); each step re-runs
/// the whole sequence (slow, exact).
pub struct CandleAnswerer {
    pub model: crate::train::model::Transformer,
    pub tokenizer: BadgeTokenizer,
    pub template: String,
    pub options: GenerateOptions,
    /// The answers section (as the exporter writes it) for known-answer decoding.
    answers: Option<Vec<u8>>,
    device: Device,
}

impl CandleAnswerer {
    /// candle over the weights of an already loaded run (they are shared, not copied), with
    /// open generation.
    pub fn from_run(run: &Run, max_new_tokens: usize) -> Result<Self> {
        let device = Device::Cpu;
        Ok(CandleAnswerer {
            model: crate::train::model::build(&run.config.model, &run.params, &device)?,
            tokenizer: run.tokenizer.clone(),
            template: run.config.curriculum.template.clone(),
            options: GenerateOptions {
                max_new_tokens,
                ..GenerateOptions::default()
            },
            answers: None,
            device,
        })
    }

    /// Decodes against these known answers (the section bytes of a blob, or built from the
    /// run by [`crate::answer::known`]).
    pub fn with_answers(mut self, spec: &badge_firmware::answers::AnswersSpec) -> Self {
        self.answers = Some(badge_firmware::answers::write_answers(spec));
        self
    }

    /// Next-token logits after `ids` (the last position of one forward pass).
    pub fn next_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let t = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &self.device)?;
        let logits = self.model.forward(&t)?;
        Ok(logits.get(0)?.get(ids.len() - 1)?.to_vec1::<f32>()?)
    }
}

/// The f32 model as the generation code sees it: the sequence so far, re-run on each step.
struct CandleSteps<'m> {
    answerer: &'m CandleAnswerer,
    ids: Vec<u32>,
    logits: Vec<f32>,
}

impl generate::LogitsModel for CandleSteps<'_> {
    type Error = anyhow::Error;
    fn vocab_size(&self) -> usize {
        self.answerer.model.config.vocab_size as usize
    }
    fn seq_len(&self) -> usize {
        self.answerer.model.config.seq_len as usize
    }
    fn forward(&mut self, token: u32, pos: usize) -> Result<&[f32]> {
        self.feed(token, pos)?;
        self.logits = self.answerer.next_logits(&self.ids)?;
        Ok(&self.logits)
    }
    fn feed(&mut self, token: u32, pos: usize) -> Result<()> {
        self.ids.truncate(pos);
        self.ids.push(token);
        Ok(())
    }
}

impl Answerer for CandleAnswerer {
    fn answer_streaming(
        &mut self,
        question: &str,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerateStats> {
        let template = PromptTemplate::parse(&self.template).map_err(|e| anyhow!("{e}"))?;
        let (prompt, _) = template.render(question, "");
        let mut ids = vec![self.tokenizer.bos_id()];
        ids.extend(self.tokenizer.encode(&prompt)?);
        let answers = match &self.answers {
            Some(b) => Some(
                badge_firmware::answers::AnswerSet::parse(
                    b,
                    self.model.config.vocab_size,
                    self.tokenizer.bos_id(),
                    self.tokenizer.eos_id(),
                )
                .map_err(|e| anyhow!("known answers: {}", e.0))?,
            ),
            None => None,
        };
        let mut steps = CandleSteps {
            answerer: self,
            ids: Vec::new(),
            logits: Vec::new(),
        };
        let mut out = Vec::new();
        let signals = self
            .options
            .known_answers(answers.as_ref())
            .map_or_else(Default::default, |a| a.signals(question));
        let stats = generate::decode(
            &mut steps,
            &ids,
            &signals,
            self.tokenizer.bos_id(),
            self.tokenizer.eos_id(),
            &self.options,
            answers.as_ref(),
            &mut |t| out.push(t),
        )?;
        if stats.outcome == generate::Outcome::Fallback {
            on_text(answers.map_or("", |a| a.fallback));
        } else {
            let text = self.tokenizer.decode(&out)?;
            let sep_tail = &template.between[template.prompt_suffix().len()..];
            on_text(text.strip_prefix(sep_tail).unwrap_or(&text));
        }
        Ok(stats)
    }
}
