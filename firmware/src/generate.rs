//! Answering a question: format it with the blob's template, run the prompt through the
//! engine, then sample until end-of-sequence or the token limit, streaming each piece of text
//! as soon as it is complete so the console and the speech can follow along.

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
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 64,
            sampler: SamplerConfig::default(),
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

/// What one answer cost.
#[derive(Debug, Clone, Copy)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub stop: StopReason,
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
/// (the separator's leading space removed) and `on_token` with each generated id.
#[allow(clippy::too_many_arguments)]
pub fn answer<W: Workers>(
    engine: &mut Engine<'_, W>,
    tok: &Tokenizer<'_>,
    template: &PromptTemplate<'_>,
    bos_id: u32,
    eos_id: u32,
    question: &str,
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<GenerateStats, ForwardError> {
    let prompt = prompt_ids(tok, template, bos_id, question);
    let seq_len = engine.config().seq_len as usize;
    let mut sampler = Sampler::new(opts.sampler, engine.config().vocab_size as usize);
    let mut decoder = StreamDecoder::new();
    // The separator's tail (e.g. the space after "A:") belongs to the answer's first token;
    // it is dropped from the text the user sees.
    let sep_tail = &template.between[template.prompt_suffix().len()..];
    let mut to_strip = sep_tail;
    let mut emit = |piece: &str| {
        let mut p = piece;
        while !to_strip.is_empty() && !p.is_empty() {
            let (a, b) = (to_strip.chars().next(), p.chars().next());
            if a != b {
                to_strip = "";
                break;
            }
            let n = a.map_or(0, char::len_utf8);
            to_strip = &to_strip[n..];
            p = &p[n..];
        }
        if !p.is_empty() {
            to_strip = "";
            on_text(p);
        }
    };

    if prompt.len() >= seq_len {
        return Ok(GenerateStats {
            prompt_tokens: prompt.len(),
            generated_tokens: 0,
            stop: StopReason::ContextFull,
        });
    }
    let mut logits_owned = alloc::vec![0.0f32; engine.config().vocab_size as usize];
    for (pos, &t) in prompt.iter().enumerate() {
        let logits = engine.forward(t, pos)?;
        if pos + 1 == prompt.len() {
            logits_owned.copy_from_slice(logits);
        }
    }
    let mut pos = prompt.len();
    let mut generated = 0;
    let stop = loop {
        if generated >= opts.max_new_tokens {
            break StopReason::TokenLimit;
        }
        let next = sampler.sample(&mut logits_owned);
        if next == eos_id || next == bos_id {
            break StopReason::EndOfSequence;
        }
        generated += 1;
        decoder.push(tok, next, &mut emit);
        if pos >= seq_len {
            break StopReason::ContextFull;
        }
        let logits = engine.forward(next, pos)?;
        logits_owned.copy_from_slice(logits);
        pos += 1;
    };
    decoder.finish(&mut emit);
    Ok(GenerateStats {
        prompt_tokens: prompt.len(),
        generated_tokens: generated,
        stop,
    })
}
