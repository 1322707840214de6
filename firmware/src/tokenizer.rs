//! The badge's tokenizer: byte-fallback BPE over `▁`-prefixed words, reading its vocabulary and
//! merges straight from the blob. It reproduces the host `tokenizers` encoding id for id
//! (Metaspace pre-tokenizer without a dummy prefix, BPE with byte fallback), so a question typed
//! on the badge is tokenized exactly as in training.
//!
//! Encoding allocates nothing per token: the caller owns the output vector and the scratch
//! space is reused between calls.

use crate::format::{TokenKind, TokenizerSection};
use alloc::vec::Vec;

/// The piece that stands for a space (U+2581, "LOWER ONE EIGHTH BLOCK").
pub const SPACE_PIECE: &str = "\u{2581}";

/// Vocabulary lookups over a blob's tokenizer section.
#[derive(Clone)]
pub struct Tokenizer<'a> {
    sec: TokenizerSection<'a>,
    /// Token id of each byte-fallback token `<0xXX>`, or `u32::MAX` when absent.
    byte_ids: [u32; 256],
    /// Token id of each single ASCII character's piece (space mapped to `▁`), or `u32::MAX`.
    ascii_ids: [u32; 128],
    unk_id: u32,
}

impl<'a> Tokenizer<'a> {
    /// Builds the two small lookup tables; nothing else is copied out of the blob.
    pub fn new(sec: TokenizerSection<'a>) -> Self {
        let mut t = Tokenizer {
            sec,
            byte_ids: [u32::MAX; 256],
            ascii_ids: [u32::MAX; 128],
            unk_id: 0,
        };
        for id in 0..sec.n_tokens as u32 {
            if sec.kind(id) == TokenKind::Byte {
                t.byte_ids[usize::from(sec.byte(id))] = id;
            }
            if sec.piece(id) == b"<unk>" {
                t.unk_id = id;
            }
        }
        for c in 0u8..128 {
            let mut buf = [0u8; 4];
            let piece: &[u8] = if c == b' ' {
                SPACE_PIECE.as_bytes()
            } else {
                buf[0] = c;
                &buf[..1]
            };
            if let Some(id) = t.lookup(piece) {
                t.ascii_ids[usize::from(c)] = id;
            }
        }
        t
    }

    pub fn vocab_size(&self) -> usize {
        self.sec.n_tokens
    }

    /// Finds the token whose piece is exactly `piece` (binary search over the sorted index).
    pub fn lookup(&self, piece: &[u8]) -> Option<u32> {
        let (mut lo, mut hi) = (0usize, self.sec.n_tokens);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let id = self.sec.sorted_id(mid);
            match self.sec.piece(id).cmp(piece) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Some(id),
            }
        }
        None
    }

    /// `(rank, merged id)` of the pair, if the vocabulary merges it.
    fn merge_of(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        let (mut lo, mut hi) = (0usize, self.sec.n_merges);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (l, r, res, rank) = self.sec.merge(mid);
            match (l, r).cmp(&(left, right)) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Some((rank, res)),
            }
        }
        None
    }

    /// Appends the initial symbols of one character: its own token, else its UTF-8 bytes.
    fn push_char(&self, c: char, symbols: &mut Vec<u32>) {
        if (c as u32) < 128 {
            let id = self.ascii_ids[c as usize];
            if id != u32::MAX {
                symbols.push(id);
                return;
            }
        }
        let mut buf = [0u8; 4];
        let s: &str = if c == ' ' {
            SPACE_PIECE
        } else {
            c.encode_utf8(&mut buf)
        };
        if let Some(id) = self.lookup(s.as_bytes()) {
            symbols.push(id);
        } else if s.bytes().all(|b| self.byte_ids[usize::from(b)] != u32::MAX) {
            for b in s.bytes() {
                symbols.push(self.byte_ids[usize::from(b)]);
            }
        } else {
            symbols.push(self.unk_id);
        }
    }

    /// Applies merges to one word: always the lowest-ranked pair, leftmost first.
    fn merge_word(&self, symbols: &mut Vec<u32>) {
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..symbols.len().saturating_sub(1) {
                if let Some((rank, res)) = self.merge_of(symbols[i], symbols[i + 1]) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, res));
                    }
                }
            }
            match best {
                Some((_, i, res)) => {
                    symbols[i] = res;
                    symbols.remove(i + 1);
                }
                None => return,
            }
        }
    }

    /// Encodes `text` (without BOS/EOS) and appends the ids to `out`. `scratch` is reused
    /// between calls so that steady-state encoding allocates nothing.
    pub fn encode_with(&self, text: &str, out: &mut Vec<u32>, symbols: &mut Vec<u32>) {
        symbols.clear();
        let mut word_start = true;
        let split_digits = self.sec.split_digits;
        for c in text.chars() {
            // A space starts a new word (the `▁` is merged with what follows it); with digit
            // splitting, every numeric character is a word of its own.
            let digit = split_digits && c.is_numeric();
            if (c == ' ' || digit) && !word_start {
                self.merge_word(symbols);
                out.extend_from_slice(symbols);
                symbols.clear();
            }
            self.push_char(c, symbols);
            word_start = false;
            if digit {
                self.merge_word(symbols);
                out.extend_from_slice(symbols);
                symbols.clear();
                word_start = true;
            }
        }
        self.merge_word(symbols);
        out.extend_from_slice(symbols);
        symbols.clear();
    }

    /// Convenience form of [`Tokenizer::encode_with`].
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_with(text, &mut out, &mut Vec::new());
        out
    }

    /// The bytes token `id` stands for: `▁` becomes a space, byte tokens their byte, control
    /// tokens nothing.
    pub fn token_bytes(&self, id: u32, out: &mut impl FnMut(&[u8])) {
        if id as usize >= self.sec.n_tokens {
            return;
        }
        match self.sec.kind(id) {
            TokenKind::Control => {}
            TokenKind::Byte => out(&[self.sec.byte(id)]),
            TokenKind::Normal => {
                // Pieces that are not UTF-8 cannot come from the trainer; they print nothing.
                let Ok(piece) = core::str::from_utf8(self.sec.piece(id)) else {
                    return;
                };
                for (i, part) in piece.split(SPACE_PIECE).enumerate() {
                    if i > 0 {
                        out(b" ");
                    }
                    if !part.is_empty() {
                        out(part.as_bytes());
                    }
                }
            }
        }
    }

    pub fn is_byte_token(&self, id: u32) -> bool {
        (id as usize) < self.sec.n_tokens && self.sec.kind(id) == TokenKind::Byte
    }

    /// Decodes a whole sequence (as the host decoder does).
    pub fn decode(&self, ids: &[u32]) -> alloc::string::String {
        let mut s = alloc::string::String::new();
        let mut d = StreamDecoder::new();
        for &id in ids {
            d.push(self, id, &mut |t| s.push_str(t));
        }
        d.finish(&mut |t| s.push_str(t));
        s
    }
}

/// Turns a stream of token ids into text, emitting each piece as soon as it is complete UTF-8
/// (a character split over several byte tokens is held back until its last byte arrives).
/// Invalid byte sequences become U+FFFD, one per byte, as the host decoder does.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: [u8; 4],
    n_pending: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn flush_invalid(&mut self, emit: &mut impl FnMut(&str)) {
        for _ in 0..self.n_pending {
            emit("\u{FFFD}");
        }
        self.n_pending = 0;
    }

    /// Feeds one token; `emit` receives zero or more complete text pieces.
    pub fn push(&mut self, tok: &Tokenizer<'_>, id: u32, emit: &mut impl FnMut(&str)) {
        if tok.is_byte_token(id) {
            let b = tok.sec.byte(id);
            if self.n_pending == 4 || (self.n_pending > 0 && b & 0xC0 != 0x80) {
                self.flush_invalid(emit);
            }
            self.pending[self.n_pending] = b;
            self.n_pending += 1;
            match core::str::from_utf8(&self.pending[..self.n_pending]) {
                Ok(s) => {
                    emit(s);
                    self.n_pending = 0;
                }
                Err(e) if e.error_len().is_some() => self.flush_invalid(emit),
                Err(_) => {} // incomplete: wait for the next byte
            }
            return;
        }
        self.flush_invalid(emit);
        tok.token_bytes(id, &mut |bytes| {
            // Pieces come from a validated UTF-8 vocabulary split at `▁` boundaries.
            if let Ok(s) = core::str::from_utf8(bytes) {
                emit(s);
            }
        });
    }

    /// Ends the stream: an unfinished character becomes U+FFFD.
    pub fn finish(&mut self, emit: &mut impl FnMut(&str)) {
        self.flush_invalid(emit);
    }
}
