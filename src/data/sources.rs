//! Reading the curriculum's data sources and turning them into token streams.
//!
//! Every source becomes a list of samples (plain text, or a Q&A pair rendered through the
//! prompt template), then a token stream with a loss mask and the offset where each sample
//! starts. Training windows begin at sample starts, so position 0 of a window is a BOS token,
//! exactly as when the badge answers a question.

use crate::config::{LossOn, SourceConfig, Synonyms};
use crate::data::tokenizer::BadgeTokenizer;
use anyhow::{bail, Context, Result};
use badge_firmware::template::PromptTemplate;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::held_out::HeldOut;
use super::noise::Edits;
use super::stream::{self, StoryReader};
use super::thesaurus::Thesaurus;
use super::token_cache::{self, CachedStories};

/// One Q&A pair from a CSV file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QaPair {
    pub id: String,
    pub question: String,
    pub answer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

impl QaPair {
    /// The kind of fact this pair teaches, one rule for every report and list: the `category`
    /// column when it is filled in, else the id without a trailing `-NNN` (`work-history-012`
    /// is `work-history`), else the whole id.
    pub fn category_name(&self) -> String {
        if let Some(c) = self
            .category
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            return c.to_string();
        }
        match self.id.rsplit_once('-') {
            Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => {
                head.to_string()
            }
            _ => self.id.clone(),
        }
    }
}

/// Reads a Q&A CSV (header `id,question,answer`, optional `category`). A malformed row stops
/// with an error naming the file and line.
pub fn read_qa_csv(path: &Path) -> Result<Vec<QaPair>> {
    // Lines starting with `#` are comments (ids never start with one).
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .comment(Some(b'#'))
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let headers = rdr
        .headers()
        .with_context(|| format!("{}: cannot read the header line", path.display()))?
        .clone();
    for need in ["id", "question", "answer"] {
        if !headers.iter().any(|h| h == need) {
            bail!(
                "{}: line 1: the header must have columns id,question,answer (found: {})",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(",")
            );
        }
    }
    let mut out = Vec::new();
    for rec in rdr.deserialize::<QaPair>() {
        let pair = rec.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            anyhow::anyhow!("{}: line {line}: {e}", path.display())
        })?;
        if pair.question.trim().is_empty() || pair.answer.trim().is_empty() {
            let line = rdr.position().line().saturating_sub(1);
            bail!(
                "{}: line {line}: row with id `{}`: question and answer must not be empty",
                path.display(),
                pair.id
            );
        }
        out.push(pair);
    }
    if out.is_empty() {
        bail!("{}: no Q&A rows", path.display());
    }
    Ok(out)
}

/// Reads a question list: one question per line, `#` starts a comment line.
pub fn read_questions(path: &Path) -> Result<Vec<String>> {
    let text = crate::util::read_to_string(path)?;
    let q: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if q.is_empty() {
        bail!(
            "{}: no questions (one per line, # for comments)",
            path.display()
        );
    }
    Ok(q)
}

/// Reads stories: a text file with stories separated by lines equal to `<|endoftext|>`, or a
/// JSON array of objects with a `story` field. Holds them all; training streams big text files
/// instead (see [`StoriesFile`]).
pub fn read_stories(path: &Path) -> Result<Vec<String>> {
    let stories: Vec<String> = if stream::is_json(path)? {
        #[derive(serde::Deserialize)]
        struct Story {
            story: String,
        }
        let text = crate::util::read_to_string(path)?;
        let v: Vec<Story> = serde_json::from_str(&text).with_context(|| {
            format!("{}: not a JSON array of {{\"story\": ...}}", path.display())
        })?;
        v.into_iter()
            .map(|s| s.story.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        StoryReader::open(path, 0)?.collect::<Result<_>>()?
    };
    if stories.is_empty() {
        bail!("{}: no stories found", path.display());
    }
    Ok(stories)
}

/// The first `n` stories of a file (held-out stories: only a few are evaluated).
fn first_stories(path: &Path, n: usize) -> Result<Vec<String>> {
    let stories: Vec<String> = if stream::is_json(path)? {
        read_stories(path)?.into_iter().take(n).collect()
    } else {
        StoryReader::open(path, n)?.collect::<Result<_>>()?
    };
    if stories.is_empty() {
        bail!("{}: no stories found", path.display());
    }
    Ok(stories)
}

/// A stories text file used for training without holding it: its texts are streamed (for the
/// tokenizer) and its tokens come from the run's token cache, attached by
/// [`attach_token_caches`].
#[derive(Debug, Clone)]
pub struct StoriesFile {
    pub path: PathBuf,
    /// At most this many stories (0 = all).
    pub limit: usize,
    pub cache: Option<Arc<CachedStories>>,
}

/// Reads every `.txt`/`.md` file of a folder (sorted by name); paragraphs are separated by
/// blank lines.
pub fn read_prose_dir(dir: &Path) -> Result<Vec<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the prose folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("txt" | "md")))
        .collect();
    files.sort();
    let mut paragraphs = Vec::new();
    for f in &files {
        let text = crate::util::read_to_string(f)?;
        paragraphs.extend(
            text.split("\n\n")
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty()),
        );
    }
    if paragraphs.is_empty() {
        bail!("{}: no .txt or .md paragraphs found", dir.display());
    }
    Ok(paragraphs)
}

/// A training sample before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Text(String),
    Qa {
        prompt: String,
        answer: String,
        loss_on: LossOn,
    },
}

impl Sample {
    pub fn qa(template: &PromptTemplate<'_>, pair: &QaPair, loss_on: LossOn) -> Self {
        let (prompt, answer) = template.render(&pair.question, &pair.answer);
        Sample::Qa {
            prompt,
            answer,
            loss_on,
        }
    }
    /// All text of the sample (for tokenizer training).
    pub fn text(&self) -> String {
        match self {
            Sample::Text(t) => t.clone(),
            Sample::Qa { prompt, answer, .. } => format!("{prompt}{answer}"),
        }
    }
}

/// A source's samples, split into training and held-out parts.
#[derive(Debug, Clone, Default)]
pub struct SourceData {
    pub train: Vec<Sample>,
    pub valid: Vec<Sample>,
    /// The Q&A pairs behind the training samples (for exact-match checks).
    pub train_pairs: Vec<QaPair>,
    pub valid_pairs: Vec<QaPair>,
    /// A stories file streamed instead of `train` (which is then empty).
    pub stories: Option<StoriesFile>,
    /// Generated questions left out because they read as held-out ones (see data::held_out).
    pub held_out_dropped: usize,
}

impl SourceData {
    /// Whether the source has nothing to train on.
    pub fn has_no_train(&self) -> bool {
        self.train.is_empty() && self.stories.is_none()
    }

    /// The text of every training sample in order, streamed from disk for a stories file.
    pub fn train_texts(&self) -> Result<Box<dyn Iterator<Item = Result<String>> + Send + '_>> {
        Ok(match &self.stories {
            Some(f) => Box::new(StoryReader::open(&f.path, f.limit)?),
            None => Box::new(self.train.iter().map(|x| Ok(x.text()))),
        })
    }

    /// The training token stream (`repeat` times each sample, shuffled with `seed` when
    /// repeated). A stories file with `repeat = 1` reads straight from its token cache.
    pub fn train_stream(
        &self,
        tok: &BadgeTokenizer,
        repeat: usize,
        seed: u64,
    ) -> Result<TokenStream> {
        let Some(f) = &self.stories else {
            return TokenStream::build(tok, &self.train, repeat, seed);
        };
        let cache = f
            .cache
            .as_ref()
            .with_context(|| format!("{}: the token cache was not built", f.path.display()))?;
        let stream = TokenStream::from_cache(Arc::clone(cache));
        Ok(if repeat > 1 {
            stream.repeated(repeat, seed)
        } else {
            stream
        })
    }
}

/// Tokenizes every stories file among `sources` once into `dir` (or finds it there) and
/// attaches the cache to its source.
pub fn attach_token_caches(
    sources: &mut std::collections::BTreeMap<String, SourceData>,
    dir: &Path,
    tok: &BadgeTokenizer,
) -> Result<()> {
    for (name, d) in sources.iter_mut() {
        if let Some(f) = &mut d.stories {
            let c = token_cache::load_or_build(dir, name, &f.path, f.limit, tok)
                .with_context(|| format!("tokenizing data source `{name}`"))?;
            f.cache = Some(Arc::new(c));
        }
    }
    Ok(())
}

fn split_holdout<T: Clone>(items: &[T], holdout: f64) -> (Vec<T>, Vec<T>) {
    let n_valid =
        ((items.len() as f64 * holdout).round() as usize).min(items.len().saturating_sub(1));
    // Every k-th item is held out, so both parts cover the whole file.
    if n_valid == 0 {
        return (items.to_vec(), Vec::new());
    }
    let k = items.len() / n_valid;
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (i, it) in items.iter().enumerate() {
        if (i + 1) % k == 0 && valid.len() < n_valid {
            valid.push(it.clone());
        } else {
            train.push(it.clone());
        }
    }
    (train, valid)
}

/// Loads one source. `synth_dir` is where generated data goes; `download` fetches TinyStories;
/// generated questions that read as one of `held_out` are left out of training.
pub fn load_source(
    cfg: &SourceConfig,
    template: &PromptTemplate<'_>,
    synth_dir: &Path,
    download: bool,
    held_out: &HeldOut,
) -> Result<SourceData> {
    let qa_samples = |pairs: &[QaPair], loss_on| {
        pairs
            .iter()
            .map(|p| Sample::qa(template, p, loss_on))
            .collect::<Vec<_>>()
    };
    match cfg {
        SourceConfig::Stories {
            train,
            valid,
            download: can_download,
            limit,
        } => {
            let (train_path, valid_path) = if download && *can_download {
                let (t, v) = crate::data::download::tinystories()?;
                (Some(t), Some(v))
            } else {
                (train.clone(), valid.clone())
            };
            let Some(train_path) = train_path else {
                bail!("a stories source has no `train` file; give one, or run with --download");
            };
            let valid = match valid_path {
                Some(v) => first_stories(&v, 200)?
                    .into_iter()
                    .map(Sample::Text)
                    .collect(),
                None => Vec::new(),
            };
            if stream::is_json(&train_path)? {
                let mut stories = read_stories(&train_path)?;
                if *limit > 0 {
                    stories.truncate(*limit);
                }
                return Ok(SourceData {
                    train: stories.into_iter().map(Sample::Text).collect(),
                    valid,
                    ..Default::default()
                });
            }
            // Fail early, with the file's name, on a file that cannot be read or has no stories.
            if StoryReader::open(&train_path, 1)?.next_story()?.is_none() {
                bail!("{}: no stories found", train_path.display());
            }
            Ok(SourceData {
                valid,
                stories: Some(StoriesFile {
                    path: train_path,
                    limit: *limit,
                    cache: None,
                }),
                ..Default::default()
            })
        }
        SourceConfig::Prose { path, holdout } => {
            let (t, v) = split_holdout(&read_prose_dir(path)?, *holdout);
            Ok(SourceData {
                train: t.into_iter().map(Sample::Text).collect(),
                valid: v.into_iter().map(Sample::Text).collect(),
                ..Default::default()
            })
        }
        SourceConfig::Qa {
            train,
            valid,
            loss_on,
            limit,
            paraphrases,
            noise,
            synonyms,
        } => {
            let mut pairs = read_qa_csv(train)?;
            if *limit > 0 {
                pairs.truncate(*limit);
            }
            let valid_pairs = match valid {
                Some(v) => read_qa_csv(v)?,
                None => Vec::new(),
            };
            let held_out = held_out.with(valid_pairs.iter().map(|p| p.question.as_str()));
            let (pairs, held_out_dropped) =
                Augment::new(*paraphrases, *noise, Edits::Any, synonyms.as_ref())?
                    .apply(pairs, &held_out);
            Ok(SourceData {
                train: qa_samples(&pairs, *loss_on),
                valid: qa_samples(&valid_pairs, *loss_on),
                train_pairs: pairs,
                valid_pairs,
                stories: None,
                held_out_dropped,
            })
        }
        SourceConfig::Offtopic {
            questions,
            paraphrases,
            noise,
            synonyms,
            answer,
        } => {
            let pairs: Vec<QaPair> = read_questions(questions)?
                .into_iter()
                .enumerate()
                .map(|(i, question)| QaPair {
                    id: format!("offtopic-{:03}", i + 1),
                    question,
                    answer: answer.clone(),
                    category: None,
                })
                .collect();
            let (pairs, held_out_dropped) =
                Augment::new(*paraphrases, *noise, Edits::TyposOnly, synonyms.as_ref())?
                    .apply(pairs, held_out);
            Ok(SourceData {
                train: qa_samples(&pairs, LossOn::Answer),
                train_pairs: pairs,
                held_out_dropped,
                ..Default::default()
            })
        }
        SourceConfig::Synth {
            facts,
            templates,
            seed,
            holdout,
            loss_on,
            paraphrases,
            noise,
            synonyms,
        } => {
            let report = crate::data::synth::run(&crate::data::synth::SynthOptions {
                facts: facts.clone(),
                templates: templates.clone(),
                out: synth_dir.to_path_buf(),
                seed: *seed,
            })?;
            let prose = read_prose_dir(&synth_dir.join("prose"))?;
            let pairs = read_qa_csv(&synth_dir.join("qa-synth.csv"))?;
            let (pt, pv) = split_holdout(&prose, *holdout);
            let (qt, qv) = split_holdout(&pairs, *holdout);
            // Held-out pairs stay clean: they calibrate and measure, they do not train; nor
            // does a generated question or copy that reads as one of them.
            let held_out = held_out.with(qv.iter().map(|p| p.question.as_str()));
            let (qt, generated_dropped) = held_out.without_held_out(qt);
            let (qt, copies_dropped) =
                Augment::new(*paraphrases, *noise, Edits::Any, synonyms.as_ref())?
                    .apply(qt, &held_out);
            let _ = report;
            let mut train: Vec<Sample> = pt.into_iter().map(Sample::Text).collect();
            train.extend(qa_samples(&qt, *loss_on));
            let mut valid: Vec<Sample> = pv.into_iter().map(Sample::Text).collect();
            valid.extend(qa_samples(&qv, *loss_on));
            Ok(SourceData {
                train,
                valid,
                train_pairs: qt,
                valid_pairs: qv,
                stories: None,
                held_out_dropped: generated_dropped + copies_dropped,
            })
        }
    }
}

/// What joins a pair's id and a copy's number in the id of a training copy (`qa-007~2`).
const COPY_ID_MARK: char = '~';

/// Whether a pair is a training copy (paraphrase, noisy or synonym copy) rather than one of
/// the source's own pairs.
pub fn is_training_copy(p: &QaPair) -> bool {
    p.id.contains(COPY_ID_MARK)
}

/// The extra phrasings a source trains on besides its own questions.
struct Augment {
    paraphrases: usize,
    noise: usize,
    edits: Edits,
    synonyms: Option<(Thesaurus, usize)>,
}

impl Augment {
    /// Reads the thesaurus, when the source has synonym copies.
    fn new(
        paraphrases: usize,
        noise: usize,
        edits: Edits,
        synonyms: Option<&Synonyms>,
    ) -> Result<Augment> {
        let synonyms = match synonyms {
            Some(s) => Some((Thesaurus::load(&s.thesaurus)?, s.copies)),
            None => None,
        };
        Ok(Augment {
            paraphrases,
            noise,
            edits,
            synonyms,
        })
    }

    /// `pairs` followed by up to `paraphrases` generic paraphrases, `noise` noisy copies and
    /// the synonym copies of each question (same answer, id with a `~k` suffix),
    /// deterministic for the pair's id; without the copies that read as a `held_out`
    /// question, whose number comes second.
    fn apply(&self, pairs: Vec<QaPair>, held_out: &HeldOut) -> (Vec<QaPair>, usize) {
        let synonym_copies = self.synonym_copies(&pairs);
        let mut extra = Vec::new();
        for (p, synonyms) in pairs.iter().zip(synonym_copies) {
            let seed = crate::data::rng::hash_str(&p.id);
            let mut forms =
                crate::data::paraphrase::paraphrases(&p.question, seed, self.paraphrases);
            forms.extend(crate::data::noise::noisy_copies(
                &p.question,
                seed,
                self.noise,
                self.edits,
            ));
            forms.extend(synonyms);
            for (k, q) in forms.into_iter().enumerate() {
                extra.push(QaPair {
                    id: format!("{}{COPY_ID_MARK}{}", p.id, k + 1),
                    question: q,
                    ..p.clone()
                });
            }
        }
        let (extra, dropped) = held_out.without_held_out(extra);
        let mut all = pairs;
        all.extend(extra);
        (all, dropped)
    }

    /// The synonym copies of each pair's question (see [`Thesaurus::copies_of_pairs`]).
    fn synonym_copies(&self, pairs: &[QaPair]) -> Vec<Vec<String>> {
        match &self.synonyms {
            Some((thesaurus, copies)) => thesaurus.copies_of_pairs(pairs, *copies).copies,
            None => vec![Vec::new(); pairs.len()],
        }
    }
}

/// Samples as one token stream: `BOS sample EOS BOS sample EOS ...`, with a loss mask per
/// token (1 = predict this token) and the offset of every sample's BOS.
#[derive(Debug, Clone, Default)]
pub struct TokenStream {
    pub tokens: Vec<u32>,
    pub loss_mask: Vec<u8>,
    pub starts: Vec<usize>,
    /// Stories read from a token cache instead: `tokens` and `loss_mask` are then empty, and
    /// the mask is 0 on each story's BOS and 1 elsewhere, as `build` makes it for text.
    cached: Option<Arc<CachedStories>>,
}

/// The order samples go into a stream: each `repeat` times, shuffled with `seed` when repeated.
fn sample_order(samples: usize, repeat: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..samples)
        .flat_map(|i| std::iter::repeat_n(i, repeat))
        .collect();
    if repeat > 1 {
        order.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    order
}

impl TokenStream {
    /// Tokenizes `samples`, each repeated `repeat` times, shuffled with `seed` when repeated.
    pub fn build(
        tok: &BadgeTokenizer,
        samples: &[Sample],
        repeat: usize,
        seed: u64,
    ) -> Result<Self> {
        let mut encoded = Vec::with_capacity(samples.len());
        for s in samples {
            let mut ids = vec![tok.bos_id()];
            let mut mask = vec![0u8];
            match s {
                Sample::Text(t) => {
                    let e = tok.encode(t)?;
                    mask.extend(std::iter::repeat_n(1, e.len()));
                    ids.extend(e);
                }
                Sample::Qa {
                    prompt,
                    answer,
                    loss_on,
                } => {
                    let p = tok.encode(prompt)?;
                    let a = tok.encode(answer)?;
                    let on_prompt = u8::from(*loss_on == LossOn::All);
                    mask.extend(std::iter::repeat_n(on_prompt, p.len()));
                    mask.extend(std::iter::repeat_n(1, a.len()));
                    ids.extend(p);
                    ids.extend(a);
                }
            }
            ids.push(tok.eos_id());
            mask.push(1);
            encoded.push((ids, mask));
        }
        let mut out = TokenStream::default();
        for i in sample_order(encoded.len(), repeat, seed) {
            out.starts.push(out.tokens.len());
            out.tokens.extend_from_slice(&encoded[i].0);
            out.loss_mask.extend_from_slice(&encoded[i].1);
        }
        Ok(out)
    }

    /// The stories of a token cache, in file order.
    pub fn from_cache(cache: Arc<CachedStories>) -> Self {
        TokenStream {
            starts: cache.starts.clone(),
            cached: Some(cache),
            ..Default::default()
        }
    }

    /// This stream's samples, each `repeat` times, shuffled with `seed` (held in memory, as
    /// `build` makes it).
    pub fn repeated(&self, repeat: usize, seed: u64) -> Self {
        let mut out = TokenStream::default();
        let (mut t, mut m) = (Vec::new(), Vec::new());
        for i in sample_order(self.starts.len(), repeat, seed) {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.len());
            t.clear();
            m.clear();
            self.window(self.starts[i], end - self.starts[i], &mut t, &mut m);
            out.starts.push(out.tokens.len());
            out.tokens.extend_from_slice(&t);
            out.loss_mask.extend_from_slice(&m);
        }
        out
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.cached.as_ref().map_or(self.tokens.len(), |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A window of `len` tokens starting at `start`, wrapping around the end of the stream.
    pub fn window(&self, start: usize, len: usize, tokens: &mut Vec<u32>, mask: &mut Vec<u8>) {
        let n = self.len();
        match &self.cached {
            None => {
                for i in 0..len {
                    tokens.push(self.tokens[(start + i) % n]);
                    mask.push(self.loss_mask[(start + i) % n]);
                }
            }
            Some(c) => {
                for i in 0..len {
                    let p = (start + i) % n;
                    tokens.push(c.token(p));
                    mask.push(u8::from(self.starts.binary_search(&p).is_err()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn categories_from_ids_or_the_column() {
        let pair = |id: &str, column: Option<&str>| QaPair {
            id: id.into(),
            question: String::new(),
            answer: String::new(),
            category: column.map(String::from),
        };
        assert_eq!(pair("contact-001", None).category_name(), "contact");
        assert_eq!(
            pair("work-history-12", None).category_name(),
            "work-history"
        );
        assert_eq!(pair("odd", None).category_name(), "odd");
        assert_eq!(pair("x-1a", None).category_name(), "x-1a");
        assert_eq!(
            pair("skills-synth-003", Some(" skills ")).category_name(),
            "skills"
        );
        assert_eq!(pair("hobby-002", Some("  ")).category_name(), "hobby");
    }

    #[test]
    fn malformed_csv_row_names_file_and_line() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "id,question,answer\na,Who?,Me.\nb,\"broken,Me.\nc,x").unwrap();
        let err = format!("{:#}", read_qa_csv(f.path()).unwrap_err());
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn missing_header_is_reported() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "q,a\nWho?,Me.").unwrap();
        let err = format!("{:#}", read_qa_csv(f.path()).unwrap_err());
        assert!(err.contains("id,question,answer"), "{err}");
    }

    #[test]
    fn stories_split_on_end_of_text_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("s.txt");
        std::fs::write(&t, "One day.\n<|endoftext|>\nTwo.\n<|endoftext|>\n").unwrap();
        assert_eq!(read_stories(&t).unwrap(), vec!["One day.", "Two."]);
        let j = dir.path().join("s.json");
        std::fs::write(&j, r#"[{"story":"A."},{"story":"B."}]"#).unwrap();
        assert_eq!(read_stories(&j).unwrap(), vec!["A.", "B."]);
    }

    #[test]
    fn qa_synonym_copies_keep_the_answer_and_a_missing_thesaurus_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("qa.csv");
        std::fs::write(
            &csv,
            "id,question,answer\njob-1,What is your job?,I fix bikes.\nname-1,Who are you?,Ana.\n",
        )
        .unwrap();
        let thesaurus = dir.path().join("synonyms.txt");
        std::fs::write(&thesaurus, "job, occupation, line of work\n").unwrap();
        let cfg = |thesaurus: PathBuf| SourceConfig::Qa {
            train: csv.clone(),
            valid: None,
            loss_on: LossOn::Answer,
            limit: 0,
            paraphrases: 0,
            noise: 0,
            synonyms: Some(Synonyms {
                thesaurus,
                copies: 2,
            }),
        };
        let tpl = PromptTemplate::parse("Q: {question}\nA: {answer}").unwrap();
        let d = load_source(
            &cfg(thesaurus.clone()),
            &tpl,
            dir.path(),
            false,
            &HeldOut::default(),
        )
        .unwrap();
        let mut questions: Vec<&str> = d.train_pairs.iter().map(|p| p.question.as_str()).collect();
        questions.sort();
        assert_eq!(
            questions,
            [
                "What is your job?",
                "What is your line of work?",
                "What is your occupation?",
                "Who are you?"
            ]
        );
        for p in &d.train_pairs {
            let answer = if p.id.starts_with("job") {
                "I fix bikes."
            } else {
                "Ana."
            };
            assert_eq!(p.answer, answer, "{}", p.question);
        }
        // A copy that reads as a held-out question is left out, and counted.
        let held_out = HeldOut::default().with(["what is your OCCUPATION"]);
        let d = load_source(&cfg(thesaurus.clone()), &tpl, dir.path(), false, &held_out).unwrap();
        assert_eq!(d.held_out_dropped, 1);
        assert!(d
            .train_pairs
            .iter()
            .all(|p| p.question != "What is your occupation?"));
        assert_eq!(d.train_pairs.len(), 3);
        // A copy that reads as another answer's question, or as a copy of one, is dropped.
        std::fs::write(
            &csv,
            "id,question,answer\ns-1,What are you good at?,Rust and C.\ns-2,What are you best at?,Rust.\n",
        )
        .unwrap();
        std::fs::write(&thesaurus, "good at, best at, great at\n").unwrap();
        let d = load_source(
            &cfg(thesaurus.clone()),
            &tpl,
            dir.path(),
            false,
            &HeldOut::default(),
        )
        .unwrap();
        assert_eq!(d.train_pairs.len(), 2, "{:?}", d.train_pairs);
        let missing = dir.path().join("nope.txt");
        let err = format!(
            "{:#}",
            load_source(
                &cfg(missing.clone()),
                &tpl,
                dir.path(),
                false,
                &HeldOut::default()
            )
            .unwrap_err()
        );
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn offtopic_questions_are_taught_the_fallback_line_with_noisy_copies() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("train.txt");
        std::fs::write(
            &q,
            "# weather\nWill it rain on Sunday?\n\nWhat is nine plus one?\n",
        )
        .unwrap();
        let cfg = SourceConfig::Offtopic {
            questions: q,
            paraphrases: 0,
            noise: 2,
            synonyms: None,
            answer: "I don't know.".into(),
        };
        let tpl = PromptTemplate::parse("Q: {question}\nA: {answer}").unwrap();
        let d = load_source(&cfg, &tpl, dir.path(), false, &HeldOut::default()).unwrap();
        assert_eq!(
            d.train_pairs.len(),
            6,
            "two questions, two noisy copies each"
        );
        assert_eq!(d.train_pairs[0].question, "Will it rain on Sunday?");
        assert!(d.train_pairs.iter().all(|p| p.answer == "I don't know."));
        // Typos only: a dropped or made-up word could leave a question about the owner.
        let words = |s: &str| s.split_whitespace().count();
        assert_eq!(
            words(&d.train_pairs[1].question),
            words(&d.train_pairs[0].question)
        );
        assert_eq!(
            words(&d.train_pairs[2].question),
            words(&d.train_pairs[0].question)
        );
        assert!(d.valid_pairs.is_empty());
        assert!(matches!(
            d.train[0],
            Sample::Qa {
                loss_on: LossOn::Answer,
                ..
            }
        ));
    }

    #[test]
    fn holdout_keeps_every_item_once() {
        let items: Vec<usize> = (0..20).collect();
        let (t, v) = split_holdout(&items, 0.1);
        assert_eq!(v.len(), 2);
        assert_eq!(t.len() + v.len(), 20);
        assert!(v.iter().all(|x| !t.contains(x)));
    }
}
