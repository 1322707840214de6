//! How much a stranger's question reads like the questions each known answer was taught
//! for: a word-overlap similarity (cosine over rare-word weights) to every trained question,
//! kept per answer as the best match. Known-answer decoding adds it to the model's scores
//! where answers diverge, and to the confidence.
//!
//! Why: a tiny model generalises from a few hundred phrasings to new ones only so far, and
//! most of its misses on a stranger's rephrasing pick an answer whose trained questions share
//! none of the question's telling words ("Who employed you *in the past*?" answered with the
//! current job). The overlap is cheap (no forward pass, a few thousand integer comparisons)
//! and never adds an answer: it only weighs the ones the trie allows. Stored in the blob's
//! answers section (layout in `firmware/FORMAT.md`), read in place.

use crate::answers::{
    find_sorted_u32, question_words, strictly_ascending_u32, u32_at, AnswerSet, AnswersError,
};
use alloc::vec::Vec;

/// Bytes of the block header: word count, question count, word-index count, unseen-word
/// weight, steering weight, confidence weight.
pub const MATCH_HEADER_SIZE: usize = 24;
/// Most questions and word indices a block may hold (keeps sizes in u32).
pub const MAX_MATCH_ITEMS: usize = 1 << 20;
/// Most distinct words a block may hold: word numbers are u16.
pub const MAX_MATCH_WORDS: usize = 1 << 16;
/// Most words one stored question may have.
pub const MAX_WORDS_PER_QUESTION: usize = 64;

fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Bytes of one stored question: u32 terminal node, u16 word count.
const QUESTION_SIZE: usize = 6;

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_bits(u32_at(b, at))
}

/// The question-match block, borrowed from the answers section.
#[derive(Debug, Clone, Copy)]
pub struct QuestionMatch<'a> {
    /// Sorted distinct word hashes of every trained question (off-topic ones included).
    words: &'a [u8],
    /// One f32 weight per word: how telling it is (rare words weigh more).
    weights: &'a [u8],
    /// Per question: its answer's terminal node and its word count.
    questions: &'a [u8],
    /// Every question's word indices (ascending within a question), one after another.
    indices: &'a [u8],
    /// The weight of a question word no trained question has (it dilutes the match).
    pub unseen_weight: f32,
    /// How much the match adds to a token's logit where answers diverge.
    pub steer_weight: f32,
    /// How much the chosen answer's match adds to the confidence.
    pub confidence_weight: f32,
}

/// The match of one question against every node of the trie.
#[derive(Debug, Clone, Default)]
pub struct NodeMatch {
    /// Per node: the similarity of the question to the answer ending there (0 elsewhere).
    pub own: Vec<f32>,
    /// Per node: the best similarity among the answers below it (itself included).
    pub best_below: Vec<f32>,
}

impl<'a> QuestionMatch<'a> {
    /// Validates the block at the start of `b` (its length is then [`Self::byte_len`]).
    /// `is_terminal(node)` says whether `node` (< `n_nodes`) ends an answer.
    pub fn parse(
        b: &'a [u8],
        n_nodes: usize,
        is_terminal: &dyn Fn(usize) -> bool,
    ) -> Result<Self, AnswersError> {
        let bad = AnswersError;
        if b.len() < MATCH_HEADER_SIZE {
            return Err(bad("question-match block shorter than its 24-byte header"));
        }
        let n_words = u32_at(b, 0) as usize;
        let n_questions = u32_at(b, 4) as usize;
        let n_indices = u32_at(b, 8) as usize;
        if n_words > MAX_MATCH_WORDS || n_questions > MAX_MATCH_ITEMS || n_indices > MAX_MATCH_ITEMS
        {
            return Err(bad(
                "question-match block holds more than 2^16 words or 2^20 questions or indices",
            ));
        }
        let (unseen_weight, steer_weight, confidence_weight) =
            (f32_at(b, 12), f32_at(b, 16), f32_at(b, 20));
        let sane = |w: f32| w.is_finite() && w >= 0.0;
        if !(sane(unseen_weight) && sane(steer_weight) && sane(confidence_weight)) {
            return Err(bad("question-match weights are not finite numbers ≥ 0"));
        }
        // Each count ≤ 2^20, so every length below fits in 32 bits.
        let words_end = MATCH_HEADER_SIZE + 4 * n_words;
        let weights_end = words_end + 4 * n_words;
        let questions_end = weights_end + QUESTION_SIZE * n_questions;
        let end = questions_end + 2 * n_indices;
        if end > b.len() {
            return Err(bad("question-match block runs past the section"));
        }
        let m = QuestionMatch {
            words: &b[MATCH_HEADER_SIZE..words_end],
            weights: &b[words_end..weights_end],
            questions: &b[weights_end..questions_end],
            indices: &b[questions_end..end],
            unseen_weight,
            steer_weight,
            confidence_weight,
        };
        if !strictly_ascending_u32(m.words) {
            return Err(bad("question-match words are not sorted and distinct"));
        }
        if !(0..n_words).all(|i| sane(m.weight(i))) {
            return Err(bad(
                "a question-match word weight is not a finite number ≥ 0",
            ));
        }
        let mut next = 0usize;
        for q in 0..n_questions {
            let (node, count) = m.question(q);
            if node >= n_nodes || !is_terminal(node) {
                return Err(bad("a matched question names a node that ends no answer"));
            }
            if count == 0 || count > MAX_WORDS_PER_QUESTION || count > n_indices - next {
                return Err(bad(
                    "a matched question has no words, more than 64, or runs past the indices",
                ));
            }
            for k in next..next + count {
                let w = u16_at(m.indices, 2 * k);
                if w >= n_words || (k > next && u16_at(m.indices, 2 * (k - 1)) >= w) {
                    return Err(bad(
                        "a matched question's word indices are not ascending word numbers",
                    ));
                }
            }
            next += count;
        }
        if next != n_indices {
            return Err(bad(
                "question-match index count differs from the questions' words",
            ));
        }
        Ok(m)
    }

    fn weight(&self, word: usize) -> f32 {
        f32_at(self.weights, 4 * word)
    }

    /// `(terminal node, word count)` of stored question `q`.
    fn question(&self, q: usize) -> (usize, usize) {
        let at = QUESTION_SIZE * q;
        (
            u32_at(self.questions, at) as usize,
            u16_at(self.questions, at + 4),
        )
    }

    pub fn word_count(&self) -> usize {
        self.words.len() / 4
    }

    pub fn question_count(&self) -> usize {
        self.questions.len() / QUESTION_SIZE
    }

    /// Bytes the block occupies.
    pub fn byte_len(&self) -> usize {
        MATCH_HEADER_SIZE
            + self.words.len()
            + self.weights.len()
            + self.questions.len()
            + self.indices.len()
    }

    /// The number of `hash` in the word table, if a trained question has it.
    fn word_number(&self, hash: u32) -> Option<usize> {
        find_sorted_u32(self.words, hash)
    }

    /// The similarity of `question` to each stored question, kept per node of `trie`.
    /// Similarity: the cosine of the two questions' word sets, each word weighted by how
    /// rare it is among the trained questions, so "in the past" counts and "what is your"
    /// barely does; in [0, 1].
    pub fn node_match(&self, question: &str, trie: &AnswerSet<'_>) -> NodeMatch {
        let n_nodes = trie.node_count();
        let mut asked: Vec<usize> = Vec::new();
        let mut unseen = 0u32;
        for h in question_words(question) {
            match self.word_number(h) {
                Some(w) => asked.push(w),
                None => unseen += 1,
            }
        }
        asked.sort_unstable();
        asked.dedup();
        let square = |w: f32| w * w;
        let asked_norm2: f32 = asked.iter().map(|&w| square(self.weight(w))).sum::<f32>()
            + unseen as f32 * square(self.unseen_weight);
        let mut own = alloc::vec![0.0f32; n_nodes];
        let mut next = 0usize;
        for q in 0..self.question_count() {
            let (node, count) = self.question(q);
            let (mut dot, mut norm2) = (0.0f32, 0.0f32);
            for k in next..next + count {
                let w = u16_at(self.indices, 2 * k);
                let w2 = square(self.weight(w));
                norm2 += w2;
                if asked.binary_search(&w).is_ok() {
                    dot += w2;
                }
            }
            next += count;
            if dot > 0.0 {
                let cos = dot / libm::sqrtf(norm2 * asked_norm2);
                own[node] = own[node].max(cos);
            }
        }
        // Children come after their parents, so one pass from the end carries each
        // subtree's best up to its root.
        let mut best_below = own.clone();
        for n in (0..n_nodes).rev() {
            let mut best = best_below[n];
            for (_, c) in trie.children(n) {
                best = best.max(best_below[c]);
            }
            best_below[n] = best;
        }
        NodeMatch { own, best_below }
    }
}

/// One trained question for the writer: its answer's token ids (as in the trie) and its
/// words as [`crate::answers::word_hash`]es.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchQuestion {
    pub answer: Vec<u32>,
    pub words: Vec<u32>,
}

impl MatchQuestion {
    /// `question`, taught with the answer whose token ids are `answer`.
    pub fn new(answer: &[u32], question: &str) -> Self {
        MatchQuestion {
            answer: answer.to_vec(),
            words: question_words(question).collect(),
        }
    }
}

/// The weights the writer stores with the questions (default: no steering, no confidence).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MatchWeights {
    pub steer: f32,
    pub confidence: f32,
}

/// Serialises a block for `questions`, each already resolved to its terminal node
/// (duplicates merged, words beyond [`MAX_WORDS_PER_QUESTION`] dropped, and questions whose
/// words would take the table past [`MAX_MATCH_WORDS`]). Word weights are
/// inverse document frequencies over the stored questions: ln((Q + 1) / (df + 1)), and
/// ln(Q + 1) for an unseen word.
pub fn write_match(questions: &[(u32, Vec<u32>)], weights: MatchWeights) -> Vec<u8> {
    let mut qs: Vec<(u32, Vec<u32>)> = questions
        .iter()
        .map(|(node, words)| {
            let mut w = words.clone();
            w.sort_unstable();
            w.dedup();
            w.truncate(MAX_WORDS_PER_QUESTION);
            (*node, w)
        })
        .filter(|(_, w)| !w.is_empty())
        .collect();
    qs.sort();
    qs.dedup();
    let mut table = alloc::collections::BTreeSet::new();
    qs.retain(|(_, w)| {
        let new = w.iter().filter(|h| !table.contains(*h)).count();
        let fits = table.len() + new <= MAX_MATCH_WORDS;
        if fits {
            table.extend(w.iter().copied());
        }
        fits
    });
    let table: Vec<u32> = table.into_iter().collect();
    let mut df = alloc::vec![0u32; table.len()];
    let number = |h: &u32| table.binary_search(h).expect("every word is in the table");
    for (_, w) in &qs {
        w.iter().for_each(|h| df[number(h)] += 1);
    }
    let n = qs.len() as f32;
    let idf = |d: u32| libm::logf((n + 1.0) / (d as f32 + 1.0));
    let n_indices: usize = qs.iter().map(|(_, w)| w.len()).sum();
    let mut out = Vec::new();
    for v in [table.len() as u32, qs.len() as u32, n_indices as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [idf(0), weights.steer, weights.confidence] {
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    table
        .iter()
        .for_each(|h| out.extend_from_slice(&h.to_le_bytes()));
    df.iter()
        .for_each(|&d| out.extend_from_slice(&idf(d).to_bits().to_le_bytes()));
    for (node, w) in &qs {
        out.extend_from_slice(&node.to_le_bytes());
        out.extend_from_slice(&(w.len() as u16).to_le_bytes());
    }
    for (_, w) in &qs {
        // The table is sorted and each question's hashes too, so the indices ascend.
        w.iter()
            .for_each(|h| out.extend_from_slice(&(number(h) as u16).to_le_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::{write_answers, AnswerSet, AnswersSpec, ConfidenceMeasure};
    use alloc::vec;

    /// Three answers (token ids 4, [5, 6], [5, 7]), each taught for one or two questions.
    fn section(questions: &[(&[u32], &str)]) -> Vec<u8> {
        write_answers(&AnswersSpec {
            answers: vec![vec![4], vec![5, 6], vec![5, 7]],
            fallback: "Sorry.".into(),
            match_questions: questions
                .iter()
                .map(|(a, q)| MatchQuestion::new(a, q))
                .collect(),
            match_weights: MatchWeights {
                steer: 3.0,
                confidence: 0.5,
            },
            ..Default::default()
        })
    }

    const TAUGHT: [(&[u32], &str); 4] = [
        (&[4], "Where do you live?"),
        (&[5, 6], "Where did you work in the past?"),
        (&[5, 7], "Where do you work now?"),
        (&[5, 7], "What is your job?"),
    ];

    /// The node each answer ends at, by walking the trie.
    fn end(set: &AnswerSet<'_>, answer: &[u32]) -> usize {
        answer.iter().fold(AnswerSet::ROOT, |n, &t| {
            set.children(n).find(|&(c, _)| c == t).unwrap().1
        })
    }

    #[test]
    fn matches_a_question_to_the_answers_taught_for_similar_ones() {
        let bytes = section(&TAUGHT);
        let set = AnswerSet::parse(&bytes, 16, 1, 2).unwrap();
        let m = set.question_match.expect("a question-match block");
        assert_eq!(
            (m.question_count(), m.steer_weight, m.confidence_weight),
            (4, 3.0, 0.5)
        );
        assert_eq!(set.byte_len(), bytes.len());
        let (live, past, now) = (end(&set, &[4]), end(&set, &[5, 6]), end(&set, &[5, 7]));
        let s = set.signals("Who employed you in the past?");
        let own = &s.node_match.own;
        assert!(
            own[past] > own[now] && own[now] > 0.0 && own[live] > 0.0,
            "{own:?}"
        );
        // Word weights ln((4 + 1) / (df + 1)) over the four questions: "you" is in three,
        // "in", "the", "past" in one. The cosine is the shared words' squared weights over
        // the two norms; "who" and "employed" are unseen and only dilute it.
        let w2 = |df: f32| libm::powf(libm::logf(5.0 / (df + 1.0)), 2.0);
        let unseen = libm::powf(libm::logf(5.0), 2.0);
        let asked = 2.0 * unseen + w2(3.0) + 3.0 * w2(1.0);
        // where, you (3 questions each), work (2), did, in, the, past (1 each).
        let trained = 2.0 * w2(3.0) + w2(2.0) + 4.0 * w2(1.0);
        let expected = (w2(3.0) + 3.0 * w2(1.0)) / libm::sqrtf(asked * trained);
        assert!(
            (own[past] - expected).abs() < 1e-6,
            "{} vs {expected}",
            own[past]
        );
        // Each node carries the best answer below it; the root the best of all.
        let shared = set
            .children(AnswerSet::ROOT)
            .find(|&(t, _)| t == 5)
            .unwrap()
            .1;
        assert_eq!(s.node_match.best_below[shared], own[past]);
        assert_eq!(s.node_match.best_below[AnswerSet::ROOT], own[past]);
        assert_eq!(set.steer(&s, shared), 3.0 * own[past]);
        assert_eq!(set.steer_end(&s, live), 3.0 * own[live]);
        // Identical words, any case and punctuation: a perfect match.
        let same = set.signals("WHERE do you live");
        assert!((same.node_match.own[live] - 1.0).abs() < 1e-6);
        // No word in common: no match.
        assert_eq!(
            set.signals("Sunny today?").node_match.best_below[AnswerSet::ROOT],
            0.0
        );
        // The confidence adds the weighted match of the answer it ends at.
        let c = set.with_signals(Default::default(), &same, live);
        assert!((c.value(ConfidenceMeasure::MeanLogProbNoveltyMatch) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn a_section_without_questions_has_no_block_and_no_match() {
        let bytes = section(&[]);
        let set = AnswerSet::parse(&bytes, 16, 1, 2).unwrap();
        assert!(set.question_match.is_none());
        let s = set.signals("Where do you live?");
        assert!(s.node_match.own.is_empty());
        assert_eq!(set.steer(&s, 1), 0.0);
        // A question for an answer the trie lacks is left out.
        let bytes = section(&[(&[9], "Where do you live?")]);
        assert!(AnswerSet::parse(&bytes, 16, 1, 2)
            .unwrap()
            .question_match
            .is_none());
    }

    #[test]
    fn rejects_a_corrupt_block_by_name() {
        let good = section(&TAUGHT);
        let set = AnswerSet::parse(&good, 16, 1, 2).unwrap();
        let block = good.len() - set.question_match.unwrap().byte_len();
        let (n_words, n_q) = (
            u32_at(&good, block) as usize,
            u32_at(&good, block + 4) as usize,
        );
        let questions = block + MATCH_HEADER_SIZE + 8 * n_words;
        let indices = questions + QUESTION_SIZE * n_q;
        let patch = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            AnswerSet::parse(&b, 16, 1, 2).unwrap_err().0
        };
        let cases: [(&str, usize, &[u8]); 8] = [
            ("more than 2^16 words", block, &(1u32 << 17).to_le_bytes()),
            (
                "runs past the section",
                block + 4,
                &(n_q as u32 + 1).to_le_bytes(),
            ),
            (
                "weights are not finite",
                block + 16,
                &f32::NAN.to_bits().to_le_bytes(),
            ),
            (
                "not sorted",
                block + MATCH_HEADER_SIZE,
                &u32::MAX.to_le_bytes(),
            ),
            (
                "word weight",
                block + MATCH_HEADER_SIZE + 4 * n_words,
                &(-1.0f32).to_bits().to_le_bytes(),
            ),
            ("ends no answer", questions, &0u32.to_le_bytes()),
            (
                "runs past the indices",
                questions + 4,
                &u16::MAX.to_le_bytes(),
            ),
            ("not ascending", indices, &u16::MAX.to_le_bytes()),
        ];
        for (what, at, bytes) in cases {
            let err = patch(at, bytes);
            assert!(err.contains(what), "{what}: {err}");
        }
        // Truncated anywhere inside the block: refused, never a panic.
        for cut in block..good.len() {
            assert!(
                AnswerSet::parse(&good[..cut], 16, 1, 2).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn any_byte_of_the_block_corrupted_is_refused_or_matched_without_a_panic() {
        let good = section(&TAUGHT);
        let set = AnswerSet::parse(&good, 16, 1, 2).unwrap();
        let block = good.len() - set.question_match.unwrap().byte_len();
        // Every byte of the block set to each of a few values; what the loader accepts must
        // then match questions without panicking, one number per node.
        let mut accepted = 0;
        for at in block..good.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                let Ok(set) = AnswerSet::parse(&b, 16, 1, 2) else {
                    continue;
                };
                accepted += 1;
                for q in ["Who employed you in the past?", "", "where where WHERE"] {
                    let s = set.signals(q);
                    assert_eq!(s.node_match.own.len(), set.node_count());
                    let _ = set.steer(&s, AnswerSet::ROOT);
                }
            }
        }
        assert!(
            accepted > 0,
            "some corruptions (weights) are still valid blocks"
        );
    }
}
