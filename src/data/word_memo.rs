//! Encoding a large corpus word by word, each distinct word encoded once.
//!
//! The tokenizer's pre-tokenizer (Metaspace, no dummy prefix) cuts a text before every space,
//! and BPE never merges across that cut: the ids of a text are the ids of its space-delimited
//! pieces, one after the other. The 2.7 M TinyStories use a few tens of thousands of distinct
//! pieces, so looking each piece up in a memo is many times faster than running the whole
//! tokenizer pipeline on every story (`scripts/measure-stories.sh` shows the figure).
//!
//! A text holding a literal `▁` (the space's stand-in, also a cut) is encoded whole.
//! Special tokens in the text (`<s>`, `<0x41>`, ...) contain no space, so they never straddle a
//! cut and are found inside their piece exactly as in the whole text. The result is id for id
//! [`BadgeTokenizer::encode`]; the tests compare both on real stories and on awkward text.

use crate::data::tokenizer::BadgeTokenizer;
use anyhow::Result;
use std::cell::RefCell;
use std::collections::HashMap;

/// A memo that grows past this many pieces is cleared: memory stays bounded on a corpus
/// with a long tail of distinct words (numbers, names, typos).
const MAX_PIECES: usize = 1 << 20;

/// Ids of each piece seen so far, per thread, for the tokenizer with this hash.
#[derive(Default)]
struct Memo {
    tokenizer: u64,
    pieces: HashMap<Box<str>, Box<[u32]>>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// The pieces the pre-tokenizer cuts `text` into: a cut before every space.
pub fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // The piece's own first character (maybe a space) never ends it.
        let first = rest.chars().next().map_or(1, char::len_utf8);
        let end = rest[first..].find(' ').map_or(rest.len(), |i| i + first);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// [`BadgeTokenizer::encode`] of `text`, appended to `out`, through this thread's memo.
/// `tokenizer_hash` names the tokenizer (see [`crate::data::token_cache::tokenizer_hash`]), so a
/// thread that encodes for two tokenizers never mixes their ids.
pub fn encode_into(
    tok: &BadgeTokenizer,
    tokenizer_hash: u64,
    text: &str,
    out: &mut Vec<u32>,
) -> Result<()> {
    if text.contains('\u{2581}') {
        // The pre-tokenizer also cuts before a literal `▁` (it stands for the space): rare
        // enough to encode whole.
        out.extend(tok.encode(text)?);
        return Ok(());
    }
    MEMO.with_borrow_mut(|memo| {
        if memo.tokenizer != tokenizer_hash || memo.pieces.len() >= MAX_PIECES {
            memo.pieces.clear();
            memo.tokenizer = tokenizer_hash;
        }
        for piece in pieces(text) {
            if let Some(ids) = memo.pieces.get(piece) {
                out.extend_from_slice(ids);
                continue;
            }
            let ids = tok.encode(piece)?;
            out.extend_from_slice(&ids);
            memo.pieces.insert(piece.into(), ids.into_boxed_slice());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cut_before_every_space_and_keep_every_byte() {
        let text = "  Tom ran\n to  the park. ";
        let got: Vec<&str> = pieces(text).collect();
        assert_eq!(
            got,
            [" ", " Tom", " ran\n", " to", " ", " the", " park.", " "]
        );
        assert_eq!(got.concat(), text);
        assert_eq!(pieces("").count(), 0);
        assert_eq!(pieces("one").collect::<Vec<_>>(), ["one"]);
        assert_eq!(pieces("é ü").collect::<Vec<_>>(), ["é", " ü"]);
    }
}
