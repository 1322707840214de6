//! Known answers on the host: the set of answers a run was taught (its Q&A and synthetic Q&A
//! sources), tokenized exactly as training saw them, for the blob's answers section; the
//! off-topic question lists; and the calibration of the confidence threshold.

use crate::config::{ResolvedCurriculum, SourceConfig};
use crate::data::tokenizer::BadgeTokenizer;
use anyhow::{bail, Context, Result};
use badge_firmware::answers::{AnswersSpec, Confidence, ConfidenceMeasure};
use badge_firmware::generate::Outcome;
use badge_firmware::question_match::{MatchQuestion, MatchWeights};
use badge_firmware::template::PromptTemplate;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

pub use crate::data::read_questions;

/// The taught answers and the questions held out of training, gathered from a curriculum.
#[derive(Debug, Clone, Default)]
pub struct TaughtAnswers {
    /// Every distinct answer text of the training Q&A (human and synthetic), sorted.
    pub answers: Vec<String>,
    /// Held-out questions, never trained on: the in-domain side of calibration. The synth
    /// holdout with a noisy copy of each, or the Q&A source's `valid` file where the
    /// curriculum holds no synth out.
    pub heldout_questions: Vec<String>,
    /// The owner's own Q&A pairs (without their training copies): a threshold may never
    /// refuse one of them that the model answers right.
    pub trained_pairs: Vec<crate::data::QaPair>,
    /// The words of every trained question about the owner (Q&A and synth, copies
    /// included), as the firmware's word hashes: what a stranger's question is measured
    /// against for [`ConfidenceMeasure::MeanLogProbNovelty`].
    pub question_words: Vec<u32>,
    /// Every trained question with its answer (off-topic ones with the fallback line; the
    /// sources' own questions, not their training copies; duplicates merged): the blob's
    /// question-match block.
    pub match_questions: Vec<(String, String)>,
}

/// Reads the Q&A and synth sources of a run's curriculum. `synth_root` is where the run's
/// synthetic data lives (`RUN/synth`); it is regenerated there deterministically.
pub fn taught_answers(rc: &ResolvedCurriculum, synth_root: &Path) -> Result<TaughtAnswers> {
    let template = PromptTemplate::parse(&rc.curriculum.template).map_err(anyhow::Error::msg)?;
    let mut answers = BTreeSet::new();
    let (mut synth_heldout, mut qa_heldout) = (Vec::new(), Vec::new());
    let mut trained_pairs = Vec::new();
    let mut question_words = BTreeSet::new();
    let mut match_questions = BTreeSet::new();
    let mut thesaurus = None;
    let held_out = crate::data::held_out::HeldOut::of_curriculum(&rc.curriculum)?;
    for (name, cfg) in &rc.curriculum.sources {
        if let SourceConfig::Synth {
            synonyms: Some(s), ..
        } = cfg
        {
            thesaurus = Some(crate::data::thesaurus::Thesaurus::load(&s.thesaurus)?);
        }
        let heldout = match cfg {
            SourceConfig::Synth { .. } => &mut synth_heldout,
            SourceConfig::Qa { .. } | SourceConfig::Offtopic { .. } => &mut qa_heldout,
            _ => continue,
        };
        let d = crate::data::load_source(cfg, &template, &synth_root.join(name), false, &held_out)
            .with_context(|| format!("source `{name}`"))?;
        answers.extend(d.train_pairs.iter().map(|p| p.answer.trim().to_string()));
        // The sources' own questions, not their training copies: a copy's made-up or
        // misspelt word only adds noise to the match, and the copies would make the block
        // four times larger (the tiny curriculum with twice the phase 2 and 3 steps, seeds
        // 1-4: 57 of 69 held-out right against 56, 46 KB against 183 KB).
        match_questions.extend(
            d.train_pairs
                .iter()
                .filter(|p| !crate::data::is_training_copy(p))
                .map(|p| (p.question.clone(), p.answer.trim().to_string())),
        );
        if !matches!(cfg, SourceConfig::Offtopic { .. }) {
            question_words.extend(
                d.train_pairs
                    .iter()
                    .flat_map(|p| badge_firmware::answers::question_words(&p.question)),
            );
        }
        if let SourceConfig::Qa { .. } = cfg {
            trained_pairs.extend(
                d.train_pairs
                    .iter()
                    .filter(|p| !crate::data::is_training_copy(p))
                    .cloned(),
            );
        }
        heldout.extend(d.valid_pairs.iter().map(|p| p.question.clone()));
    }
    // The synth holdout calibrates; a Q&A `valid` file only when there is none, since it is
    // the set the figures are measured on (calibrating on it would flatter them).
    // Strangers use words the owner never wrote: a noisy copy of each generated question
    // (one word dropped, made up or misspelt) and, where the synth source has a thesaurus, a
    // synonym copy stand for them, so the threshold is not set on phrasings as close to
    // training as the templates' own.
    let heldout = if synth_heldout.is_empty() {
        qa_heldout
    } else {
        let mut strangers: Vec<String> = synth_heldout
            .iter()
            .flat_map(|q| crate::data::noise::noisy_copies(q, 0, 1, crate::data::noise::Edits::Any))
            .collect();
        if let Some(t) = &thesaurus {
            strangers.extend(synth_heldout.iter().flat_map(|q| t.copies(q, 0, 1)));
        }
        synth_heldout.extend(strangers);
        synth_heldout
    };
    answers.retain(|a| !a.is_empty());
    Ok(TaughtAnswers {
        answers: answers.into_iter().collect(),
        heldout_questions: heldout,
        trained_pairs,
        question_words: question_words.into_iter().collect(),
        match_questions: match_questions.into_iter().collect(),
    })
}

/// `answer`'s token ids as training produced them after the prompt: the separator's tail,
/// e.g. the space after "A:", is part of the first token. The trie and the question match
/// must both use exactly these, or a matched question would name no answer.
fn answer_ids(
    tokenizer: &BadgeTokenizer,
    template: &PromptTemplate<'_>,
    answer: &str,
) -> Result<Vec<u32>> {
    tokenizer.encode(&template.render("", answer).1)
}

/// The answers section for `answers`, each tokenized by [`answer_ids`].
pub fn answers_spec(
    tokenizer: &BadgeTokenizer,
    template: &str,
    answers: &[String],
    fallback: &str,
    free_by_default: bool,
) -> Result<AnswersSpec> {
    let template = PromptTemplate::parse(template).map_err(anyhow::Error::msg)?;
    if answers.is_empty() {
        bail!("the curriculum teaches no answers (no Q&A or synth source): export with --free");
    }
    let encode = |a: &str| answer_ids(tokenizer, &template, a);
    // The fallback line among the answers was taught for off-topic questions: the trie marks
    // it, so choosing it counts as not knowing.
    let ids = answers
        .iter()
        .filter(|a| a.trim() != fallback.trim())
        .map(|a| encode(a))
        .collect::<Result<Vec<_>>>()?;
    let fallback_ids = answers
        .iter()
        .any(|a| a.trim() == fallback.trim())
        .then(|| encode(fallback.trim()))
        .transpose()?;
    if ids.is_empty() {
        bail!("the curriculum teaches no answer besides the fallback line");
    }
    Ok(AnswersSpec {
        answers: ids,
        fallback_ids,
        fallback: fallback.to_string(),
        free_by_default,
        novelty_penalty: NOVELTY_PENALTY,
        match_weights: MATCH_WEIGHTS,
        // No threshold yet (measure none), and no question words or match until
        // `add_question_signals`.
        ..Default::default()
    })
}

/// Adds what the badge measures a question against to `spec`: the words of the trained
/// questions about the owner (novelty) and every trained question with its answer's tokens
/// (question match), the answers tokenized by [`answer_ids`] as in [`answers_spec`].
pub fn add_question_signals(
    spec: &mut AnswersSpec,
    tokenizer: &BadgeTokenizer,
    template: &str,
    taught: &TaughtAnswers,
) -> Result<()> {
    let template = PromptTemplate::parse(template).map_err(anyhow::Error::msg)?;
    spec.question_words = taught.question_words.clone();
    let mut encoded = std::collections::BTreeMap::new();
    spec.match_questions.clear();
    for (question, answer) in &taught.match_questions {
        if !encoded.contains_key(answer) {
            encoded.insert(answer.clone(), answer_ids(tokenizer, &template, answer)?);
        }
        spec.match_questions
            .push(MatchQuestion::new(&encoded[answer], question));
    }
    Ok(())
}

/// One measure's best threshold on the calibration questions.
#[derive(Debug, Clone, Serialize)]
pub struct MeasureFit {
    pub measure: &'static str,
    pub threshold: f32,
    /// Share of in-domain questions answered (confidence ≥ threshold).
    pub known_kept: f64,
    /// Share of off-topic questions that get the fallback.
    pub offtopic_fallback: f64,
}

/// The measure the threshold is set on. Every measure is fitted and reported, but picking the
/// one that refuses the most of the few dozen calibration off-topic questions picks the one
/// that happens to fit those questions (over 31 tiny runs it got fewer held-out rephrasings
/// right and more wrong, and refused fewer off-topic questions than a fixed measure). The
/// mean log-probability less a penalty for the question's novel words, plus the question
/// match of the chosen answer: on the tiny demo (seeds 1-14, `keep_known` 0.96) 81.1% of the
/// held-out rephrasings right, 7.8% fallback, 83.6% of the off-topic questions refused; the
/// novelty measure without the match, and without steering, 70.4%, 11.2%, 79.0%.
pub const THRESHOLD_MEASURE: ConfidenceMeasure = ConfidenceMeasure::MeanLogProbNoveltyMatch;

/// What each word of a question that no trained question about the owner contains takes off
/// the mean log-probability ([`ConfidenceMeasure::MeanLogProbNovelty`]). A question about the
/// weather or someone's cousin is made of such words; a rephrasing of a known question mostly
/// is not, and the noisy copies among the calibration questions (a made-up word each) keep
/// the threshold from refusing every question with one new word. 0.1 and 0.3 did about as
/// well on the tiny demo (issue #14 note); the mean log-probabilities of answers that strangers
/// get right lie between 0 and -0.1.
pub const NOVELTY_PENALTY: f32 = 0.1;

/// How much the question match ([`badge_firmware::question_match`]) weighs: added, times the
/// match in [0, 1], to a token's logit where answers diverge, and to the confidence. Where
/// answers diverge the tiny model's logits lie far apart: steering 1 to 8 changed one answer
/// of 69 on one run. At 50 the match decides between answers whose trained questions differ
/// in it by a few tenths, and the model where it is sure.
/// Tiny demo, seeds 1-4, held-out right / fallback / off-topic refused: steer 0 71.4 / 10.9 /
/// 82.5%, 30 76.8 / 14.1 / 90.0%, 50 79.7 / 8.3 / 85.8%, 80 80.8 / 5.4 / 81.7% (confidence
/// weight 1; 0.5 gave 80.1 / 7.6 / 85.0% at 50). The match alone (steering 1000) got fewer
/// right than the two together: 52 against 56 of 69 on one run of a longer curriculum.
pub const MATCH_WEIGHTS: MatchWeights = MatchWeights {
    steer: 50.0,
    confidence: 1.0,
};

impl MeasureFit {
    /// Better: keeps at least `need` of the in-domain questions, then refuses the most
    /// off-topic ones, then keeps the most in-domain ones.
    fn key(&self, need: f64) -> (bool, f64, f64) {
        (
            self.known_kept >= need - 1e-9,
            self.offtopic_fallback,
            self.known_kept,
        )
    }
    fn better_than(&self, other: &MeasureFit, need: f64) -> bool {
        self.key(need).partial_cmp(&other.key(need)) == Some(std::cmp::Ordering::Greater)
    }
}

/// The comparison of every measure, and the one chosen for the blob.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// The share of in-domain questions the threshold had to keep answering.
    pub keep_known: f64,
    pub known_questions: usize,
    pub offtopic_questions: usize,
    /// Trained questions answered right, none of which the threshold may refuse.
    pub trained_questions: usize,
    pub fits: Vec<MeasureFit>,
    pub chosen: usize,
}

impl Calibration {
    pub fn measure(&self) -> ConfidenceMeasure {
        ConfidenceMeasure::ALL[self.chosen]
    }
    pub fn threshold(&self) -> f32 {
        self.fits[self.chosen].threshold
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "confidence calibration on {} held-out in-domain and {} off-topic questions, answering at least {:.0}% of the former (keep_known {}) and all {} trained questions answered right:\n{:<22} {:>10} {:>11} {:>18}\n",
            self.known_questions, self.offtopic_questions, 100.0 * self.keep_known, self.keep_known, self.trained_questions, "measure", "threshold", "answered", "off-topic fallback"
        );
        for (i, f) in self.fits.iter().enumerate() {
            s += &format!(
                "{:<22} {:>10.4} {:>10.1}% {:>17.1}%{}\n",
                f.measure,
                f.threshold,
                100.0 * f.known_kept,
                100.0 * f.offtopic_fallback,
                if i == self.chosen { "  <- chosen" } else { "" }
            );
        }
        s
    }
}

/// For every measure, the threshold that refuses the most off-topic questions while still
/// answering at least `keep_known` of the in-domain ones (the curriculum's
/// `[answers] keep_known`, by default [`crate::config::DEFAULT_KEEP_KNOWN`]), and never refuses a trained
/// question that the model answers right; ties go to the lower threshold. The blob's is the
/// fit of [`THRESHOLD_MEASURE`]; the others are there for the table.
///
/// A `None` is an answer the model already refused (it chose the taught fallback line): it
/// counts as a fallback whatever the threshold, so the known questions it costs come out of
/// the same budget. Where those alone exceed it, the threshold refuses nothing more.
pub fn calibrate(
    known: &[Option<Confidence>],
    offtopic: &[Option<Confidence>],
    trained: &[Confidence],
    keep_known: f64,
) -> Calibration {
    let answerable = known.iter().filter(|c| c.is_some()).count() as f64;
    let need = keep_known.min(answerable / known.len().max(1) as f64);
    let fits: Vec<MeasureFit> = ConfidenceMeasure::ALL
        .iter()
        .map(|&m| fit(m, known, offtopic, trained, need))
        .collect();
    let chosen = ConfidenceMeasure::ALL
        .iter()
        .position(|&m| m == THRESHOLD_MEASURE)
        .expect("the threshold measure is one of ALL");
    Calibration {
        keep_known,
        known_questions: known.len(),
        offtopic_questions: offtopic.len(),
        trained_questions: trained.len(),
        fits,
        chosen,
    }
}

fn fit(
    m: ConfidenceMeasure,
    known: &[Option<Confidence>],
    offtopic: &[Option<Confidence>],
    trained: &[Confidence],
    need: f64,
) -> MeasureFit {
    let value = |c: &Option<Confidence>| c.map_or(f32::NEG_INFINITY, |c| c.value(m));
    let k: Vec<f32> = known.iter().map(value).collect();
    let o: Vec<f32> = offtopic.iter().map(value).collect();
    let rate = |xs: &[f32], pred: &dyn Fn(f32) -> bool| {
        xs.iter().filter(|&&x| pred(x)).count() as f64 / xs.len().max(1) as f64
    };
    // Candidates: just above each observed value, and below all of them (never fall back).
    let finite = || k.iter().chain(&o).copied().filter(|x| x.is_finite());
    let mut cands: Vec<f32> = finite().map(next_up).collect();
    cands.push(finite().fold(f32::INFINITY, f32::min));
    // Never above the least confident trained question the model answers right.
    let floor = trained
        .iter()
        .map(|c| c.value(m))
        .fold(f32::INFINITY, f32::min);
    cands.push(floor);
    cands.retain(|&c| c.is_finite() && c <= floor);
    cands.sort_by(f32::total_cmp);
    let mut best: Option<MeasureFit> = None;
    for &t in &cands {
        let f = MeasureFit {
            measure: m.name(),
            threshold: t,
            known_kept: rate(&k, &|x| x >= t),
            offtopic_fallback: rate(&o, &|x| x < t),
        };
        if best.as_ref().is_none_or(|b| f.better_than(b, need)) {
            best = Some(f);
        }
    }
    best.unwrap_or(MeasureFit {
        measure: m.name(),
        threshold: f32::NEG_INFINITY,
        known_kept: 1.0,
        offtopic_fallback: 0.0,
    })
}

/// The smallest f32 above `x` (so `x` itself falls below a threshold placed there).
fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

/// The confidence of each constrained answer `answerer` gives to `questions`: `None` where it
/// chose the taught fallback line (or no whole answer), which no threshold can turn into an
/// answer. Ask with the measure `None`, so that no threshold has decided yet; an answerer in
/// open generation gives nothing.
pub fn confidences(
    answerer: &mut dyn crate::answer::Answerer,
    questions: &[String],
) -> Result<Vec<Option<Confidence>>> {
    let mut out = Vec::new();
    for q in questions {
        let stats = answerer.answer_streaming(q, &mut |_| {})?;
        if let Some(c) = stats.confidence {
            out.push((stats.outcome == Outcome::Known).then_some(c));
        }
    }
    Ok(out)
}

/// The confidences of the trained pairs that `answerer` (never falling back) answers right.
pub fn trained_confidences(
    answerer: &mut dyn crate::answer::Answerer,
    pairs: &[crate::data::QaPair],
) -> Result<Vec<Confidence>> {
    let mut out = Vec::new();
    for p in pairs {
        let mut said = String::new();
        let stats = answerer.answer_streaming(&p.question, &mut |t| said.push_str(t))?;
        if let (Outcome::Known, Some(c)) = (stats.outcome, stats.confidence) {
            if said.trim() == p.answer.trim() {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Asks `answerer` (known-answer decoding, never falling back) the held-out in-domain
/// questions, the off-topic ones and the trained pairs, and fits the threshold on them.
pub fn calibrate_answerer(
    answerer: &mut dyn crate::answer::Answerer,
    taught: &TaughtAnswers,
    offtopic: &[String],
    keep_known: f64,
) -> Result<Calibration> {
    let k = confidences(answerer, &taught.heldout_questions)?;
    let o = confidences(answerer, offtopic)?;
    let t = trained_confidences(answerer, &taught.trained_pairs)?;
    Ok(calibrate(&k, &o, &t, keep_known))
}

/// The f32 checkpoint of `run` decoding against the run's known answers, with its own
/// threshold calibrated the way `badge export` calibrates the blob's (when the curriculum has
/// off-topic questions), so both engines are compared in the same mode.
pub fn candle_known(
    run: &crate::run::Run,
    options: badge_firmware::generate::GenerateOptions,
) -> Result<crate::answer::CandleAnswerer> {
    let rc = &run.config;
    let taught = taught_answers(rc, &run.dir.root.join("synth"))?;
    let mut spec = answers_spec(
        &run.tokenizer,
        &rc.curriculum.template,
        &taught.answers,
        &rc.curriculum.answers.fallback,
        false,
    )?;
    add_question_signals(&mut spec, &run.tokenizer, &rc.curriculum.template, &taught)?;
    let mut a = crate::answer::CandleAnswerer::from_run(run, options.max_new_tokens)?;
    a.options = options;
    let mut a = a.with_answers(&spec);
    if let Some(path) = &rc.curriculum.answers.offtopic {
        if !taught.heldout_questions.is_empty() {
            let c = calibrate_answerer(
                &mut a,
                &taught,
                &read_questions(path)?,
                rc.curriculum.answers.keep_known,
            )?;
            spec.measure = c.measure();
            spec.threshold = c.threshold();
            a = a.with_answers(&spec);
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_KEEP_KNOWN;

    fn conf(v: f32) -> Option<Confidence> {
        Some(Confidence {
            mean_log_prob: v,
            first_branch_margin: 0.5,
            answer_log_prob: -v,
            mean_log_prob_novelty: v,
            answer_match: 0.0,
            novelty_plus_match: v,
        })
    }

    #[test]
    fn calibration_fits_every_measure_and_sets_the_threshold_measure() {
        let known: Vec<_> = [-0.1, -0.2, -0.3, -0.9].map(conf).to_vec();
        let off: Vec<_> = [-1.0, -1.5, -0.25].map(conf).to_vec();
        let c = calibrate(&known, &off, &[], DEFAULT_KEEP_KNOWN);
        assert_eq!(c.fits.len(), ConfidenceMeasure::ALL.len());
        assert_eq!(c.measure(), THRESHOLD_MEASURE);
        let f = &c.fits[c.chosen];
        // Keeping 92% of four means keeping all four: the threshold sits just above -1.0,
        // which refuses -1.0 and -1.5 but not -0.25.
        assert_eq!((f.known_kept, f.offtopic_fallback), (1.0, 2.0 / 3.0));
        assert!(f.threshold > -1.0 && f.threshold < -0.9);
        // The constant measure cannot refuse anything while keeping the in-domain questions.
        assert_eq!(
            (c.fits[1].known_kept, c.fits[1].offtopic_fallback),
            (1.0, 0.0)
        );
    }

    #[test]
    fn the_threshold_never_refuses_a_trained_question_answered_right() {
        // Without the trained questions the threshold sits just above -1.0; a trained
        // question answered at -1.2 holds it at or below -1.2, refusing only -1.5.
        let known: Vec<_> = [-0.1, -0.2, -0.3, -0.9].map(conf).to_vec();
        let off: Vec<_> = [-1.0, -1.5, -0.25].map(conf).to_vec();
        let trained: Vec<Confidence> = [-0.05, -1.2].map(|v| conf(v).unwrap()).to_vec();
        let c = calibrate(&known, &off, &trained, DEFAULT_KEEP_KNOWN);
        let f = &c.fits[c.chosen];
        assert!(f.threshold <= -1.2 && f.threshold > -1.5, "{f:?}");
        assert_eq!((f.known_kept, f.offtopic_fallback), (1.0, 1.0 / 3.0));
        assert_eq!(c.trained_questions, 2);
    }

    #[test]
    fn a_taught_fallback_spends_the_budget_and_counts_as_a_refusal() {
        // Ten in-domain questions, one already answered with the fallback line: the
        // threshold may refuse no other, so it sits at or below the lowest of the nine.
        let mut known: Vec<_> = (0..9).map(|i| conf(-0.1 * i as f32)).collect();
        known.push(None);
        let off = vec![None, conf(-0.85), conf(-0.05)];
        let c = calibrate(&known, &off, &[], DEFAULT_KEEP_KNOWN);
        let f = &c.fits[0];
        assert_eq!(f.measure, "mean-log-prob");
        assert!((f.known_kept - 0.9).abs() < 1e-9, "{f:?}");
        assert!((f.offtopic_fallback - 2.0 / 3.0).abs() < 1e-9, "{f:?}");
        assert!(f.threshold > -0.85 && f.threshold <= -0.8, "{f:?}");
        // Where the taught fallback alone spends more than the budget, nothing more is
        // refused: the threshold sits at the lowest confidence.
        let known = vec![None, None, conf(-0.2), conf(-0.4)];
        let c = calibrate(&known, &off, &[], DEFAULT_KEEP_KNOWN);
        let f = &c.fits[0];
        assert_eq!(f.known_kept, 0.5, "{f:?}");
        assert!(f.threshold <= -0.4, "{f:?}");
    }

    /// The bundled off-topic lists stay apart: the questions taught to say the fallback,
    /// those that calibrate the threshold and those behind the figures share none.
    #[test]
    fn bundled_offtopic_lists_are_disjoint() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/offtopic");
        let norm = crate::answer::eval::normalize;
        let read = |f: &str| -> BTreeSet<String> {
            let q = read_questions(&dir.join(f)).unwrap();
            q.iter().map(|q| norm(q)).collect()
        };
        let (train, cal, test) = (read("train.txt"), read("calibrate.txt"), read("test.txt"));
        assert!(train.len() >= 100 && cal.len() >= 20 && test.len() >= 20);
        for (a, b, what) in [
            (&train, &cal, "train/calibrate"),
            (&train, &test, "train/test"),
            (&cal, &test, "calibrate/test"),
        ] {
            let both: Vec<_> = a.intersection(b).collect();
            assert!(both.is_empty(), "{what} share {both:?}");
        }
    }
}
