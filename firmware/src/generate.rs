//! Answering a question: format it with the blob's template, run the prompt through the
//! engine, then sample until end-of-sequence or the token limit, streaming each piece of text
//! as soon as it is complete so the console and the speech can follow along.
//!
//! With the blob's known answers ([`AnswerSet`]) generation is constrained: each step may only
//! pick a token that continues some known answer, so the badge says one of them, or, when the
//! model's confidence along the chosen path is below the blob's threshold, its fallback line.
//! Where answers diverge, the question match raises the tokens towards answers taught for
//! questions like this one. The constraint reuses the logits of the forward passes open
//! generation makes anyway.

use crate::answers::{AnswerSet, Confidence, ConfidenceMeasure, QuestionSignals};
use crate::engine::{Engine, ForwardError};
use crate::sampler::{Sampler, SamplerConfig};
use crate::template::PromptTemplate;
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::workers::Workers;
use alloc::vec::Vec;

/// Limits and sampling for one answer.
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampler: SamplerConfig,
    /// Open generation even when the blob has known answers (`--free`).
    pub free: bool,
}

impl GenerateOptions {
    /// The known answers that constrain decoding: `answers`, unless these options (`--free`)
    /// or the blob itself (`badge export --free`) ask for open generation.
    pub fn known_answers<'s, 'a>(
        &self,
        answers: Option<&'s AnswerSet<'a>>,
    ) -> Option<&'s AnswerSet<'a>> {
        answers.filter(|a| !self.free && !a.free_by_default)
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 64,
            sampler: SamplerConfig::default(),
            free: false,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    EndOfSequence,
    TokenLimit,
    ContextFull,
}

/// How the answer was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Open generation: any token could follow.
    Free,
    /// One of the known answers, with enough confidence.
    Known,
    /// The fallback line: the model was not confident enough (or ran out of room).
    Fallback,
}

/// What one answer cost, and how it was chosen.
#[derive(Debug, Clone, Copy)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub stop: StopReason,
    pub outcome: Outcome,
    /// The confidence numbers of a constrained answer (None in open generation).
    pub confidence: Option<Confidence>,
}

/// Anything that turns (token, position) into next-token logits: the badge's engine, or the
/// host's f32 checkpoint, so both decode through exactly this code.
pub trait LogitsModel {
    type Error;
    fn vocab_size(&self) -> usize;
    fn seq_len(&self) -> usize;
    /// Logits after feeding `token` at `pos` (positions arrive in order from 0).
    fn forward(&mut self, token: u32, pos: usize) -> Result<&[f32], Self::Error>;
    /// Feeds a prompt token whose logits are not needed (a model may skip computing them).
    fn feed(&mut self, token: u32, pos: usize) -> Result<(), Self::Error> {
        self.forward(token, pos).map(|_| ())
    }
}

impl<W: Workers> LogitsModel for Engine<'_, W> {
    type Error = ForwardError;
    fn vocab_size(&self) -> usize {
        self.config().vocab_size as usize
    }
    fn seq_len(&self) -> usize {
        self.config().seq_len as usize
    }
    fn forward(&mut self, token: u32, pos: usize) -> Result<&[f32], ForwardError> {
        Engine::forward(self, token, pos)
    }
}

/// Ids of the whole prompt for `question`: BOS, then the formatted question.
pub fn prompt_ids(
    tok: &Tokenizer<'_>,
    template: &PromptTemplate<'_>,
    bos_id: u32,
    question: &str,
) -> Vec<u32> {
    let mut text = alloc::string::String::new();
    template.write_prompt(question, &mut |s| text.push_str(s));
    let mut ids = alloc::vec![bos_id];
    tok.encode_with(&text, &mut ids, &mut Vec::new());
    ids
}

/// Generates the answer to `question`, calling `on_text` with each new piece of answer text
/// (the separator's leading space removed). With `answers` (and without `opts.free` or the
/// blob's free flag) the answer is one of the known answers or the fallback line; it is then
/// emitted once decided, since a fallback can only be known at the end of the path.
#[allow(clippy::too_many_arguments)]
pub fn answer<M: LogitsModel>(
    model: &mut M,
    tok: &Tokenizer<'_>,
    template: &PromptTemplate<'_>,
    bos_id: u32,
    eos_id: u32,
    question: &str,
    opts: &GenerateOptions,
    answers: Option<&AnswerSet<'_>>,
    on_text: &mut dyn FnMut(&str),
) -> Result<GenerateStats, M::Error> {
    let prompt = prompt_ids(tok, template, bos_id, question);
    // The separator's tail (e.g. the space after "A:") belongs to the answer's first token;
    // it is dropped from the text the user sees.
    let sep_tail = &template.between[template.prompt_suffix().len()..];
    let mut streamer = TextStreamer::new(sep_tail);
    // Open generation never looks at them.
    let signals = opts
        .known_answers(answers)
        .map_or_else(QuestionSignals::default, |a| a.signals(question));
    let stats = decode(
        model,
        &prompt,
        &signals,
        bos_id,
        eos_id,
        opts,
        answers,
        &mut |id| streamer.push(tok, id, on_text),
    )?;
    streamer.finish(on_text);
    if stats.outcome == Outcome::Fallback {
        if let Some(a) = answers {
            on_text(a.fallback);
        }
    }
    Ok(stats)
}

/// The token-level core of [`answer`]: runs `prompt` (BOS included), then generates, calling
/// `on_token` with each answer token: as it comes in open generation, all at once after the
/// decision in known-answer mode, and never for a fallback (the caller says the line).
/// `signals` are [`AnswerSet::signals`] of the question behind `prompt`.
#[allow(clippy::too_many_arguments)]
pub fn decode<M: LogitsModel>(
    model: &mut M,
    prompt: &[u32],
    signals: &QuestionSignals,
    bos_id: u32,
    eos_id: u32,
    opts: &GenerateOptions,
    answers: Option<&AnswerSet<'_>>,
    on_token: &mut dyn FnMut(u32),
) -> Result<GenerateStats, M::Error> {
    let seq_len = model.seq_len();
    let vocab = model.vocab_size();
    let constrained = opts.known_answers(answers);
    let mut sampler = Sampler::new(opts.sampler, vocab);
    let mut stats = GenerateStats {
        prompt_tokens: prompt.len(),
        generated_tokens: 0,
        stop: StopReason::ContextFull,
        outcome: if constrained.is_some() {
            Outcome::Fallback
        } else {
            Outcome::Free
        },
        confidence: None,
    };
    if prompt.is_empty() || prompt.len() >= seq_len {
        return Ok(stats);
    }
    let mut logits = alloc::vec![0.0f32; vocab];
    for (pos, &t) in prompt.iter().enumerate() {
        if pos + 1 == prompt.len() {
            logits.copy_from_slice(model.forward(t, pos)?);
        } else {
            model.feed(t, pos)?;
        }
    }
    let mut pos = prompt.len();
    let mut generated = Vec::new();
    let mut node = AnswerSet::ROOT;
    let mut path = PathConfidence::default();
    let mut masked = if constrained.is_some() {
        alloc::vec![f32::NEG_INFINITY; vocab]
    } else {
        Vec::new()
    };
    let stop = loop {
        if generated.len() >= opts.max_new_tokens {
            break StopReason::TokenLimit;
        }
        let next = match constrained {
            None => sampler.sample(&mut logits),
            Some(a) => {
                let next = pick_known(a, signals, node, eos_id, &logits, &mut masked, &mut sampler);
                path.step(a, node, eos_id, &logits, next);
                next
            }
        };
        if next == eos_id || next == bos_id {
            break StopReason::EndOfSequence;
        }
        match constrained {
            Some(a) => {
                node = a
                    .children(node)
                    .find(|&(t, _)| t == next)
                    .map_or(node, |(_, c)| c)
            }
            None => on_token(next),
        }
        generated.push(next);
        if pos >= seq_len {
            break StopReason::ContextFull;
        }
        logits.copy_from_slice(model.forward(next, pos)?);
        pos += 1;
    };
    stats.generated_tokens = generated.len();
    stats.stop = stop;
    if let Some(a) = constrained {
        let conf = a.with_signals(path.finish(), signals, node);
        stats.confidence = Some(conf);
        let complete =
            stop == StopReason::EndOfSequence && a.is_terminal(node) && !a.is_fallback(node);
        let confident =
            a.measure == ConfidenceMeasure::None || conf.value(a.measure) >= a.threshold;
        if complete && confident {
            stats.outcome = Outcome::Known;
            generated.iter().for_each(|&t| on_token(t));
        }
    }
    Ok(stats)
}

/// The allowed token with the best logit (or a sample among the allowed ones): the children
/// of `node`, and EOS where a known answer ends, each logit raised by the question's match
/// with the answers it leads to ([`AnswerSet::steer`]). `masked` is a vocabulary-sized
/// scratch row of -inf, restored before returning.
fn pick_known(
    a: &AnswerSet<'_>,
    signals: &QuestionSignals,
    node: usize,
    eos_id: u32,
    logits: &[f32],
    masked: &mut [f32],
    sampler: &mut Sampler,
) -> u32 {
    let allowed = || {
        a.children(node)
            .map(|(t, _)| t)
            .chain(a.is_terminal(node).then_some(eos_id))
    };
    for (t, child) in a.children(node) {
        masked[t as usize] = logits[t as usize] + a.steer(signals, child);
    }
    if a.is_terminal(node) {
        masked[eos_id as usize] = logits[eos_id as usize] + a.steer_end(signals, node);
    }
    let next = sampler.sample(masked);
    for t in allowed() {
        masked[t as usize] = f32::NEG_INFINITY;
    }
    // Every allowed logit is finite, so the pick is allowed; NaN logits fall back to the first.
    if allowed().any(|t| t == next) {
        next
    } else {
        allowed().next().unwrap_or(eos_id)
    }
}

/// Confidence accumulated along a constrained path.
#[derive(Debug, Default)]
struct PathConfidence {
    log_prob_sum: f32,
    steps: u32,
    first_margin: Option<f32>,
    answer_log_prob: f32,
}

impl PathConfidence {
    fn step(&mut self, a: &AnswerSet<'_>, node: usize, eos_id: u32, logits: &[f32], chosen: u32) {
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f32 = logits.iter().map(|&v| libm::expf(v - max)).sum();
        let lse = max + libm::logf(sum);
        self.log_prob_sum += logits[chosen as usize] - lse;
        self.steps += 1;
        // Among the allowed tokens only.
        let mut n = 0;
        let (mut best, mut second, mut total) = (0.0f32, 0.0f32, 0.0f32);
        let chosen_p = libm::expf(logits[chosen as usize] - max);
        let allowed = a
            .children(node)
            .map(|(t, _)| t)
            .chain(a.is_terminal(node).then_some(eos_id));
        for t in allowed {
            let p = libm::expf(logits[t as usize] - max);
            total += p;
            n += 1;
            if p > best {
                second = best;
                best = p;
            } else if p > second {
                second = p;
            }
        }
        if n >= 2 && total > 0.0 {
            self.answer_log_prob += libm::logf(chosen_p / total);
            if self.first_margin.is_none() {
                self.first_margin = Some((best - second) / total);
            }
        }
    }

    fn finish(&self) -> Confidence {
        let mean_log_prob = self.log_prob_sum / self.steps.max(1) as f32;
        Confidence {
            mean_log_prob,
            first_branch_margin: self.first_margin.unwrap_or(1.0),
            answer_log_prob: self.answer_log_prob,
            // No novel words and no match until `AnswerSet::with_signals` adds them.
            mean_log_prob_novelty: mean_log_prob,
            answer_match: 0.0,
            novelty_plus_match: mean_log_prob,
        }
    }
}

/// Streams decoded text, dropping the separator's tail from the front of the answer.
struct TextStreamer<'s> {
    decoder: StreamDecoder,
    to_strip: &'s str,
}

impl<'s> TextStreamer<'s> {
    fn new(sep_tail: &'s str) -> Self {
        TextStreamer {
            decoder: StreamDecoder::new(),
            to_strip: sep_tail,
        }
    }

    fn push(&mut self, tok: &Tokenizer<'_>, id: u32, on_text: &mut dyn FnMut(&str)) {
        let to_strip = &mut self.to_strip;
        self.decoder
            .push(tok, id, &mut |piece| emit(to_strip, piece, on_text));
    }

    fn finish(&mut self, on_text: &mut dyn FnMut(&str)) {
        let to_strip = &mut self.to_strip;
        self.decoder
            .finish(&mut |piece| emit(to_strip, piece, on_text));
    }
}

fn emit(to_strip: &mut &str, piece: &str, on_text: &mut dyn FnMut(&str)) {
    let mut p = piece;
    while !to_strip.is_empty() && !p.is_empty() {
        let (a, b) = (to_strip.chars().next(), p.chars().next());
        if a != b {
            *to_strip = "";
            break;
        }
        let n = a.map_or(0, char::len_utf8);
        *to_strip = &to_strip[n..];
        p = &p[n..];
    }
    if !p.is_empty() {
        *to_strip = "";
        on_text(p);
    }
}
