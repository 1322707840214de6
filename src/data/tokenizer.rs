//! Training and using the SentencePiece-style vocabulary on the host, with the `tokenizers`
//! crate: BPE over words split at spaces (Metaspace, `▁` for a space, no dummy prefix so that
//! any text round-trips exactly), byte fallback, and a fixed id layout shared with llama2.c:
//! 0 `<unk>`, 1 `<s>`, 2 `</s>`, 3..=258 the byte tokens `<0x00>`..`<0xFF>`.

use anyhow::{anyhow, bail, Context, Result};
use badge_firmware::format::{TokenKind, TokenizerSpec};
use std::path::Path;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, Tokenizer};

pub const UNK: &str = "<unk>";
pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";
/// Specials plus the 256 byte tokens: the smallest vocabulary that can encode anything.
pub const RESERVED_TOKENS: usize = 3 + 256;

/// Pieces in id order, and merges (left, right) in rank order.
pub type VocabAndMerges = (Vec<String>, Vec<(String, String)>);

/// The host tokenizer: a `tokenizers::Tokenizer` with our conventions checked.
#[derive(Clone)]
pub struct BadgeTokenizer {
    inner: Tokenizer,
    split_digits: bool,
}

fn byte_piece(b: u8) -> String {
    format!("<0x{b:02X}>")
}

fn metaspace() -> Metaspace {
    Metaspace::new('▁', PrependScheme::Never, true)
}

/// Words split at spaces; with `split_digits`, every numeric character a word of its own.
fn pre_tokenizer(split_digits: bool) -> PreTokenizerWrapper {
    if split_digits {
        PreTokenizerSequence::new(vec![
            PreTokenizerWrapper::Metaspace(metaspace()),
            PreTokenizerWrapper::Digits(Digits::new(true)),
        ])
        .into()
    } else {
        metaspace().into()
    }
}

fn decoder() -> DecoderWrapper {
    DecoderSequence::new(vec![
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Metaspace(metaspace()),
        DecoderWrapper::Fuse(Fuse::new()),
    ])
    .into()
}

impl BadgeTokenizer {
    /// Trains a BPE vocabulary of exactly `vocab_size` tokens (fewer learned merges on a tiny
    /// corpus are padded with unused control tokens so the model's vocab size always matches).
    pub fn train(texts: &[String], vocab_size: usize) -> Result<Self> {
        Self::train_with(texts, vocab_size, false)
    }

    /// [`BadgeTokenizer::train`], optionally splitting numbers into single digits (phone
    /// numbers and years then share the digit tokens instead of memorised chunks).
    pub fn train_with(texts: &[String], vocab_size: usize, split_digits: bool) -> Result<Self> {
        Self::train_streamed(texts.iter().cloned().map(Ok), vocab_size, split_digits)
    }

    /// [`BadgeTokenizer::train_with`] over texts that arrive one at a time (a stories file
    /// streamed from disk): only the word counts are held, never the corpus.
    pub fn train_streamed(
        texts: impl Iterator<Item = Result<String>> + Send,
        vocab_size: usize,
        split_digits: bool,
    ) -> Result<Self> {
        if vocab_size < RESERVED_TOKENS + 1 {
            bail!(
                "vocab size {vocab_size} is too small: it needs at least {} (3 special tokens, 256 byte tokens and one more)",
                RESERVED_TOKENS + 1
            );
        }
        let mut specials: Vec<AddedToken> = [UNK, BOS, EOS]
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect();
        specials.extend((0..=255u8).map(|b| AddedToken::from(byte_piece(b), true)));
        // Room for the alphabet: rare characters beyond it use byte fallback.
        let limit_alphabet = (vocab_size - RESERVED_TOKENS) / 2;
        let mut trainer: tokenizers::models::TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .limit_alphabet(limit_alphabet)
            .build()
            .into();
        let model = BPE::builder()
            .unk_token(UNK.into())
            .byte_fallback(true)
            .build()
            .map_err(|e| anyhow!("building an empty BPE model: {e}"))?;
        let mut tk = Tokenizer::new(model);
        tk.with_pre_tokenizer(Some(pre_tokenizer(split_digits)));
        // The first read error ends the stream and is reported once training returns.
        let failed = std::sync::Mutex::new(None);
        let any_text = std::sync::atomic::AtomicBool::new(false);
        let texts = texts
            .map_while(|t| match t {
                Ok(t) => Some(t),
                Err(e) => {
                    *failed.lock().unwrap() = Some(e);
                    None
                }
            })
            .inspect(|t| {
                if !t.trim().is_empty() {
                    any_text.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            });
        let trained = tk.train(&mut trainer, texts);
        if let Some(e) = failed.into_inner().unwrap() {
            return Err(e.context("reading the tokenizer corpus"));
        }
        if !any_text.into_inner() {
            bail!("the tokenizer corpus is empty: give it at least one file with text");
        }
        trained.map_err(|e| anyhow!("training the tokenizer: {e}"))?;
        // Rebuild with only the three specials as added tokens: the byte tokens were given to
        // the trainer only to fix their ids; as added tokens they would match literal "<0x41>".
        let json: serde_json::Value =
            serde_json::from_str(&tk.to_string(false).map_err(|e| anyhow!("{e}"))?)?;
        let (vocab, merges) = vocab_and_merges(&json)?;
        let mut vocab = vocab;
        let mut next = vocab.len() as u32;
        while (next as usize) < vocab_size {
            vocab.push(format!("<unused{next}>"));
            next += 1;
        }
        if vocab.len() > vocab_size {
            bail!(
                "the trained vocabulary has {} tokens, more than the {vocab_size} asked for",
                vocab.len()
            );
        }
        Self::from_parts(&vocab, &merges, split_digits)
    }

    /// Builds the tokenizer from pieces in id order and merges in rank order.
    pub fn from_parts(
        vocab: &[String],
        merges: &[(String, String)],
        split_digits: bool,
    ) -> Result<Self> {
        let map: ahash::AHashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        let model = BPE::builder()
            .vocab_and_merges(map, merges.to_vec())
            .unk_token(UNK.into())
            .byte_fallback(true)
            .build()
            .map_err(|e| anyhow!("building the BPE model: {e}"))?;
        let mut tk = Tokenizer::new(model);
        tk.with_pre_tokenizer(Some(pre_tokenizer(split_digits)));
        tk.with_decoder(Some(decoder()));
        let unused: Vec<AddedToken> = vocab
            .iter()
            .filter(|p| p.starts_with("<unused"))
            .map(|p| AddedToken::from(p.clone(), true))
            .collect();
        tk.add_special_tokens([
            AddedToken::from(UNK, true),
            AddedToken::from(BOS, true),
            AddedToken::from(EOS, true),
        ])
        .map_err(|e| anyhow!("adding special tokens: {e}"))?;
        tk.add_special_tokens(unused)
            .map_err(|e| anyhow!("adding unused tokens: {e}"))?;
        // Text that happens to spell "<s>" is text: control tokens come only from the code.
        tk.set_encode_special_tokens(true);
        let t = BadgeTokenizer {
            inner: tk,
            split_digits,
        };
        t.check_layout()?;
        Ok(t)
    }

    fn check_layout(&self) -> Result<()> {
        for (i, p) in [UNK, BOS, EOS].iter().enumerate() {
            if self.inner.token_to_id(p) != Some(i as u32) {
                bail!("token {p} must have id {i}");
            }
        }
        for b in 0..=255u8 {
            if self.inner.token_to_id(&byte_piece(b)) != Some(3 + u32::from(b)) {
                bail!(
                    "byte token {} must have id {}",
                    byte_piece(b),
                    3 + u32::from(b)
                );
            }
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::util::read_to_string(path)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let (vocab, merges) = vocab_and_merges(&json)
            .with_context(|| format!("{}: not a badge tokenizer", path.display()))?;
        // Digit splitting shows in the saved pre-tokenizer as a `Digits` step.
        let split_digits = json["pre_tokenizer"]["pretokenizers"]
            .as_array()
            .is_some_and(|steps| steps.iter().any(|p| p["type"] == "Digits"));
        Self::from_parts(&vocab, &merges, split_digits)
            .with_context(|| format!("{}: not a badge tokenizer", path.display()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = self
            .inner
            .to_string(true)
            .map_err(|e| anyhow!("serialising the tokenizer: {e}"))?;
        crate::util::write_atomic(path, text.as_bytes())
    }

    /// Whether numbers are split into single digits.
    pub fn splits_digits(&self) -> bool {
        self.split_digits
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    pub fn bos_id(&self) -> u32 {
        1
    }
    pub fn eos_id(&self) -> u32 {
        2
    }

    /// Token ids of `text`, without BOS/EOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("encoding: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("decoding: {e}"))
    }

    /// Pieces in id order and merges in rank order, for the blob and for llama2.c.
    pub fn parts(&self) -> Result<VocabAndMerges> {
        let json: serde_json::Value =
            serde_json::from_str(&self.inner.to_string(false).map_err(|e| anyhow!("{e}"))?)?;
        vocab_and_merges(&json)
    }

    /// The section the badge's tokenizer reads.
    pub fn to_spec(&self) -> Result<TokenizerSpec> {
        let (vocab, merges) = self.parts()?;
        let id = |p: &str| {
            self.inner
                .token_to_id(p)
                .ok_or_else(|| anyhow!("merge result {p} is not in the vocabulary"))
        };
        let tokens = vocab
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if (3..RESERVED_TOKENS).contains(&i) {
                    (p.clone(), TokenKind::Byte, (i - 3) as u8)
                } else if i < 3 || p.starts_with("<unused") {
                    (p.clone(), TokenKind::Control, 0)
                } else {
                    (p.clone(), TokenKind::Normal, 0)
                }
            })
            .collect();
        let merges = merges
            .iter()
            .map(|(a, b)| Ok((id(a)?, id(b)?, id(&format!("{a}{b}"))?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(TokenizerSpec {
            tokens,
            merges,
            split_digits: self.split_digits,
        })
    }
}

/// Reads `model.vocab` (id order) and `model.merges` from a tokenizer.json value.
fn vocab_and_merges(json: &serde_json::Value) -> Result<VocabAndMerges> {
    let model = &json["model"];
    if model["type"] != "BPE" {
        bail!("model type is {}, expected BPE", model["type"]);
    }
    let vocab_obj = model["vocab"]
        .as_object()
        .ok_or_else(|| anyhow!("model.vocab is missing"))?;
    let mut vocab = vec![None; vocab_obj.len()];
    for (piece, id) in vocab_obj {
        let id = id
            .as_u64()
            .ok_or_else(|| anyhow!("vocab id of {piece:?} is not a number"))?
            as usize;
        let slot = vocab
            .get_mut(id)
            .ok_or_else(|| anyhow!("vocab ids are not contiguous (id {id})"))?;
        *slot = Some(piece.clone());
    }
    let vocab = vocab
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow!("vocab ids are not contiguous"))?;
    let mut merges = Vec::new();
    for m in model["merges"]
        .as_array()
        .ok_or_else(|| anyhow!("model.merges is missing"))?
    {
        let pair = match m {
            serde_json::Value::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string())),
            serde_json::Value::Array(a) if a.len() == 2 => Some((
                a[0].as_str().unwrap_or_default().to_string(),
                a[1].as_str().unwrap_or_default().to_string(),
            )),
            _ => None,
        };
        merges.push(pair.ok_or_else(|| anyhow!("malformed merge {m}"))?);
    }
    Ok((vocab, merges))
}

/// Tokens per character and byte-fallback use of `texts` (each encoded separately).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenizerStats {
    pub vocab_size: usize,
    pub texts: usize,
    pub chars: usize,
    pub tokens: usize,
    pub tokens_per_char: f64,
    pub byte_fallback_tokens: usize,
}

pub fn stats(tok: &BadgeTokenizer, texts: &[String]) -> Result<TokenizerStats> {
    let (mut chars, mut tokens, mut fallback) = (0, 0, 0);
    for t in texts {
        let ids = tok.encode(t)?;
        chars += t.chars().count();
        tokens += ids.len();
        fallback += ids
            .iter()
            .filter(|&&i| (3..RESERVED_TOKENS as u32).contains(&i))
            .count();
    }
    Ok(TokenizerStats {
        vocab_size: tok.vocab_size(),
        texts: texts.len(),
        chars,
        tokens,
        tokens_per_char: tokens as f64 / chars.max(1) as f64,
        byte_fallback_tokens: fallback,
    })
}
