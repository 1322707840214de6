//! The known answers: every answer the model was taught, as a trie of token ids, with the
//! confidence threshold below which the badge says its fallback line instead. Stored in the
//! blob's answers section (layout in `firmware/FORMAT.md`), read in place like the rest.
//!
//! Known-answer decoding walks this trie: at each step only a token that continues some known
//! answer (or EOS where a whole answer ends) may be chosen, so the badge can only ever say one
//! of its answers, or the fallback; which one, the model's logits and the question match
//! ([`crate::question_match`]) decide together. The trie is canonical (breadth-first, edge `k`
//! leads to node `k + 1`, children sorted by token), which makes it a tree by construction and
//! lets the loader check it in one linear pass with checked arithmetic.

use crate::question_match::{MatchQuestion, MatchWeights, NodeMatch, QuestionMatch};
use alloc::vec::Vec;

/// Bytes of the section header.
pub const ANSWERS_HEADER_SIZE: usize = 32;
/// Bytes of one node entry: first edge, edge count, flags.
pub const NODE_SIZE: usize = 12;
/// Bytes of one edge entry: token id, child node.
pub const EDGE_SIZE: usize = 8;
/// Section flag: the badge generates freely by default (`badge export --free`).
pub const FLAG_FREE: u32 = 1;
/// Section flag: a question-match block ([`QuestionMatch`]) follows the question words.
pub const FLAG_MATCH: u32 = 2;
/// Node flag: a known answer ends here (EOS may follow).
pub const NODE_TERMINAL: u32 = 1;
/// Node flag (with [`NODE_TERMINAL`]): the answer ending here is the fallback line itself,
/// taught for off-topic questions; choosing it counts as not knowing.
pub const NODE_FALLBACK: u32 = 2;
/// Most nodes a section may hold (far above any owner's answers; keeps sizes in u32).
pub const MAX_NODES: usize = 1 << 20;
/// Longest fallback line in bytes.
pub const MAX_FALLBACK_BYTES: usize = 1024;
/// Most question words a section may hold (keeps sizes in u32).
pub const MAX_QUESTION_WORDS: usize = 1 << 20;

/// Which number along the chosen path measures the model's confidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum ConfidenceMeasure {
    /// Never fall back.
    #[default]
    None = 0,
    /// Mean log-probability (whole vocabulary) of the chosen tokens, EOS included.
    MeanLogProb = 1,
    /// Probability margin between the best and second-best branch at the first token where
    /// known answers diverge (probabilities renormalised over the allowed tokens).
    FirstBranchMargin = 2,
    /// Log-probability of the whole answer among the known answers (allowed tokens
    /// renormalised at every branch point).
    AnswerLogProb = 3,
    /// [`Self::MeanLogProb`] less the section's novelty penalty for each word of the question
    /// that no trained question about the owner contains (see [`AnswerSet::novel_words`]).
    MeanLogProbNovelty = 4,
    /// [`Self::MeanLogProbNovelty`] plus the question-match block's confidence weight times
    /// the chosen answer's match ([`QuestionMatch`]): how much the question reads like the
    /// ones that answer was taught for.
    MeanLogProbNoveltyMatch = 5,
}

impl ConfidenceMeasure {
    pub const ALL: [ConfidenceMeasure; 5] = [
        Self::MeanLogProb,
        Self::FirstBranchMargin,
        Self::AnswerLogProb,
        Self::MeanLogProbNovelty,
        Self::MeanLogProbNoveltyMatch,
    ];
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::None),
            1 => Some(Self::MeanLogProb),
            2 => Some(Self::FirstBranchMargin),
            3 => Some(Self::AnswerLogProb),
            4 => Some(Self::MeanLogProbNovelty),
            5 => Some(Self::MeanLogProbNoveltyMatch),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::MeanLogProb => "mean-log-prob",
            Self::FirstBranchMargin => "first-branch-margin",
            Self::AnswerLogProb => "answer-log-prob",
            Self::MeanLogProbNovelty => "mean-log-prob-novelty",
            Self::MeanLogProbNoveltyMatch => "novelty-plus-match",
        }
    }
}

/// The confidence numbers of one constrained answer (all measured in the same pass).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Confidence {
    pub mean_log_prob: f32,
    /// 1.0 when the path never branches (only one answer could follow the question).
    pub first_branch_margin: f32,
    pub answer_log_prob: f32,
    /// [`Self::mean_log_prob`] less the novelty penalty of the question's unseen words.
    pub mean_log_prob_novelty: f32,
    /// The question's match with the chosen answer's trained questions, in [0, 1] (0 without
    /// a question-match block).
    pub answer_match: f32,
    /// [`Self::mean_log_prob_novelty`] plus the block's confidence weight times
    /// [`Self::answer_match`].
    pub novelty_plus_match: f32,
}

impl Confidence {
    pub fn value(&self, m: ConfidenceMeasure) -> f32 {
        match m {
            ConfidenceMeasure::None => f32::INFINITY,
            ConfidenceMeasure::MeanLogProb => self.mean_log_prob,
            ConfidenceMeasure::FirstBranchMargin => self.first_branch_margin,
            ConfidenceMeasure::AnswerLogProb => self.answer_log_prob,
            ConfidenceMeasure::MeanLogProbNovelty => self.mean_log_prob_novelty,
            ConfidenceMeasure::MeanLogProbNoveltyMatch => self.novelty_plus_match,
        }
    }
}

/// The words of a question as [`word_hash`]es: maximal runs of letters, digits and
/// apostrophes, lower-cased, so "Where's", "where's" and "WHERE'S" are one word.
pub fn question_words(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(word_hash)
}

/// FNV-1a (32 bits) of a word's lower-case UTF-8 bytes. A hash rather than the word: the
/// section stays a flat sorted array of u32 that the badge binary-searches in place.
pub fn word_hash(word: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut buf = [0u8; 4];
    for c in word.chars().flat_map(char::to_lowercase) {
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Why the answers section was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswersError(pub &'static str);

/// The answers section, borrowed from the blob.
#[derive(Debug, Clone, Copy)]
pub struct AnswerSet<'a> {
    nodes: &'a [u8],
    edges: &'a [u8],
    pub fallback: &'a str,
    pub measure: ConfidenceMeasure,
    pub threshold: f32,
    /// The badge generates freely unless asked for known answers.
    pub free_by_default: bool,
    pub answer_count: usize,
    /// Sorted [`word_hash`]es of every word of the trained questions about the owner (empty
    /// in a section without them).
    question_words: &'a [u8],
    /// What each question word outside [`Self::question_words`] takes off the
    /// [`ConfidenceMeasure::MeanLogProbNovelty`] confidence.
    pub novelty_penalty: f32,
    /// The trained questions per answer, when the section has them ([`FLAG_MATCH`]).
    pub question_match: Option<QuestionMatch<'a>>,
}

/// What known-answer decoding needs to know about the question itself, besides the model's
/// logits: computed once per question by [`AnswerSet::signals`].
#[derive(Debug, Clone, Default)]
pub struct QuestionSignals {
    /// See [`AnswerSet::novel_words`].
    pub novel_words: u32,
    /// The question's match per trie node (empty without a question-match block).
    pub node_match: NodeMatch,
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether `words`, little-endian u32s read in place, are strictly ascending (sorted and
/// distinct, as [`find_sorted_u32`] needs).
pub(crate) fn strictly_ascending_u32(words: &[u8]) -> bool {
    words
        .chunks_exact(4)
        .zip(words.chunks_exact(4).skip(1))
        .all(|(a, b)| u32_at(a, 0) < u32_at(b, 0))
}

/// The position of `value` in `sorted`, strictly ascending little-endian u32s read in place
/// (the question words of the section and of the question-match block).
pub(crate) fn find_sorted_u32(sorted: &[u8], value: u32) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, sorted.len() / 4);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match u32_at(sorted, mid * 4).cmp(&value) {
            core::cmp::Ordering::Less => lo = mid + 1,
            core::cmp::Ordering::Greater => hi = mid,
            core::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

impl<'a> AnswerSet<'a> {
    /// Validates a section: `vocab_size`, `bos` and `eos` bound the tokens it may name.
    pub fn parse(sec: &'a [u8], vocab_size: u32, bos: u32, eos: u32) -> Result<Self, AnswersError> {
        let bad = AnswersError;
        if sec.len() < ANSWERS_HEADER_SIZE {
            return Err(bad("section shorter than its 32-byte header"));
        }
        let flags = u32_at(sec, 0);
        if flags & !(FLAG_FREE | FLAG_MATCH) != 0 {
            return Err(bad("unknown flags"));
        }
        let n_nodes = u32_at(sec, 4) as usize;
        let n_edges = u32_at(sec, 8) as usize;
        let answer_count = u32_at(sec, 12) as usize;
        let measure = ConfidenceMeasure::from_u32(u32_at(sec, 16))
            .ok_or(bad("unknown confidence measure"))?;
        let threshold = f32::from_bits(u32_at(sec, 20));
        let fallback_len = u32_at(sec, 24) as usize;
        let n_words = u32_at(sec, 28) as usize;
        if n_words > MAX_QUESTION_WORDS {
            return Err(bad("more than 2^20 question words"));
        }
        if threshold.is_nan() {
            return Err(bad("confidence threshold is NaN"));
        }
        if !(2..=MAX_NODES).contains(&n_nodes) {
            return Err(bad(
                "node count must be 2 ..= 2^20 (a root and at least one answer)",
            ));
        }
        if n_edges != n_nodes - 1 {
            return Err(bad("edge count must be node count - 1 (a tree)"));
        }
        if fallback_len > MAX_FALLBACK_BYTES {
            return Err(bad("fallback line longer than 1024 bytes"));
        }
        // n_nodes ≤ 2^20, so these products and sums fit in 32 bits.
        let nodes_len = n_nodes * NODE_SIZE;
        let edges_len = n_edges * EDGE_SIZE;
        let fallback_off = ANSWERS_HEADER_SIZE + nodes_len + edges_len;
        let end = fallback_off
            .checked_add(fallback_len)
            .ok_or(bad("section size overflows"))?;
        // The novelty penalty and the words follow the fallback line when there are words;
        // n_words ≤ 2^20, so 4 + 4 · n_words fits in 32 bits.
        let words_len = if n_words == 0 { 0 } else { 4 + 4 * n_words };
        let words_end = end
            .checked_add(words_len)
            .ok_or(bad("section size overflows"))?;
        if words_end > sec.len() {
            return Err(bad(
                "nodes, edges, fallback line or question words run past the section",
            ));
        }
        let fallback = core::str::from_utf8(&sec[fallback_off..end])
            .map_err(|_| bad("fallback line is not UTF-8"))?;
        if fallback.trim().is_empty() {
            return Err(bad("fallback line is empty"));
        }
        let (novelty_penalty, question_words) = if n_words == 0 {
            (0.0, &sec[end..end])
        } else {
            (f32::from_bits(u32_at(sec, end)), &sec[end + 4..words_end])
        };
        if !(novelty_penalty.is_finite() && novelty_penalty >= 0.0) {
            return Err(bad("novelty penalty is not a finite number ≥ 0"));
        }
        if !strictly_ascending_u32(question_words) {
            return Err(bad("question words are not sorted and distinct"));
        }
        let mut set = AnswerSet {
            nodes: &sec[ANSWERS_HEADER_SIZE..ANSWERS_HEADER_SIZE + nodes_len],
            edges: &sec[ANSWERS_HEADER_SIZE + nodes_len..fallback_off],
            fallback,
            measure,
            threshold,
            free_by_default: flags & FLAG_FREE != 0,
            answer_count,
            question_words,
            novelty_penalty,
            question_match: None,
        };
        let mut next_edge = 0usize;
        let mut terminals = 0usize;
        for i in 0..n_nodes {
            let (first, count, nflags) = set.node(i);
            if nflags & !(NODE_TERMINAL | NODE_FALLBACK) != 0 {
                return Err(bad("unknown node flags"));
            }
            if nflags & NODE_FALLBACK != 0 && nflags & NODE_TERMINAL == 0 {
                return Err(bad("a fallback node must end an answer"));
            }
            if first != next_edge || count > n_edges - first {
                return Err(bad(
                    "node edges are not the next contiguous run of the edge list",
                ));
            }
            next_edge = first + count;
            let terminal = nflags & NODE_TERMINAL != 0;
            terminals += usize::from(terminal);
            if i == 0 && terminal {
                return Err(bad("the empty answer is not an answer"));
            }
            if count == 0 && !terminal {
                return Err(bad("a leaf node ends no answer"));
            }
            let mut prev = None;
            for k in first..first + count {
                let (token, child) = set.edge(k);
                if token >= vocab_size || token == bos || token == eos {
                    return Err(bad(
                        "an edge names a token outside the vocabulary, or BOS/EOS",
                    ));
                }
                if prev.is_some_and(|p| p >= token) {
                    return Err(bad("a node's edges are not sorted by token"));
                }
                prev = Some(token);
                if child as usize != k + 1 || child as usize <= i {
                    return Err(bad("edge k must lead to node k + 1, after its parent"));
                }
            }
        }
        if terminals != answer_count {
            return Err(bad("answer count differs from the terminal nodes"));
        }
        if flags & FLAG_MATCH != 0 {
            let m = QuestionMatch::parse(&sec[words_end..], n_nodes, &|n| set.is_terminal(n))?;
            set.question_match = Some(m);
        }
        Ok(set)
    }

    /// `(first edge, edge count, flags)` of node `i`.
    fn node(&self, i: usize) -> (usize, usize, u32) {
        let e = &self.nodes[i * NODE_SIZE..][..NODE_SIZE];
        (u32_at(e, 0) as usize, u32_at(e, 4) as usize, u32_at(e, 8))
    }

    /// `(token, child)` of edge `k`.
    fn edge(&self, k: usize) -> (u32, u32) {
        let e = &self.edges[k * EDGE_SIZE..][..EDGE_SIZE];
        (u32_at(e, 0), u32_at(e, 4))
    }

    /// The root node (before the answer's first token).
    pub const ROOT: usize = 0;

    /// Whether a known answer ends at `node`.
    pub fn is_terminal(&self, node: usize) -> bool {
        self.node(node).2 & NODE_TERMINAL != 0
    }

    /// Whether the answer ending at `node` is the fallback line (taught for off-topic
    /// questions).
    pub fn is_fallback(&self, node: usize) -> bool {
        self.node(node).2 & NODE_FALLBACK != 0
    }

    /// The tokens that may follow `node`, with the node each leads to, in token order.
    pub fn children(&self, node: usize) -> impl Iterator<Item = (u32, usize)> + '_ {
        let (first, count, _) = self.node(node);
        (first..first + count).map(move |k| {
            let (t, c) = self.edge(k);
            (t, c as usize)
        })
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len() / NODE_SIZE
    }

    /// How many question words the section stores (see [`Self::novel_words`]).
    pub fn question_word_count(&self) -> usize {
        self.question_words.len() / 4
    }

    /// Bytes the section occupies in the blob (header, nodes, edges, fallback line, and the
    /// novelty penalty and question words when there are any).
    pub fn byte_len(&self) -> usize {
        let words = match self.question_words.len() {
            0 => 0,
            n => 4 + n,
        };
        let matching = self.question_match.map_or(0, |m| m.byte_len());
        ANSWERS_HEADER_SIZE
            + self.nodes.len()
            + self.edges.len()
            + self.fallback.len()
            + words
            + matching
    }

    /// How many words of `question` no trained question about the owner contains: a
    /// stranger's question about the weather or someone's cousin is made of words the badge
    /// was never asked about, while a rephrasing of a known question mostly is not. 0 when
    /// the section stores no words.
    pub fn novel_words(&self, question: &str) -> u32 {
        if self.question_words.is_empty() {
            return 0;
        }
        question_words(question)
            .filter(|&h| find_sorted_u32(self.question_words, h).is_none())
            .count() as u32
    }

    /// The novel words of `question` and its match per trie node.
    pub fn signals(&self, question: &str) -> QuestionSignals {
        QuestionSignals {
            novel_words: self.novel_words(question),
            node_match: self
                .question_match
                .map_or_else(NodeMatch::default, |m| m.node_match(question, self)),
        }
    }

    /// The confidence of the answer ending at `node` for a question with `signals`, every
    /// measure filled in from the path's own numbers.
    pub fn with_signals(
        &self,
        mut c: Confidence,
        signals: &QuestionSignals,
        node: usize,
    ) -> Confidence {
        c.mean_log_prob_novelty =
            c.mean_log_prob - self.novelty_penalty * signals.novel_words as f32;
        c.answer_match = signals.node_match.own.get(node).copied().unwrap_or(0.0);
        let weight = self.question_match.map_or(0.0, |m| m.confidence_weight);
        c.novelty_plus_match = c.mean_log_prob_novelty + weight * c.answer_match;
        c
    }

    /// What the question match adds to the logit of a step into `node`: the steering weight
    /// times the best match among the answers below it (0 without a block).
    pub fn steer(&self, signals: &QuestionSignals, node: usize) -> f32 {
        match (self.question_match, signals.node_match.best_below.get(node)) {
            (Some(m), Some(&best)) => m.steer_weight * best,
            _ => 0.0,
        }
    }

    /// What the question match adds to ending the answer at `node` (EOS).
    pub fn steer_end(&self, signals: &QuestionSignals, node: usize) -> f32 {
        match (self.question_match, signals.node_match.own.get(node)) {
            (Some(m), Some(&own)) => m.steer_weight * own,
            _ => 0.0,
        }
    }

    /// Every known answer's token ids, in trie order (for reports and tests).
    pub fn all_answers(&self) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        let mut stack: Vec<(usize, Vec<u32>)> = alloc::vec![(Self::ROOT, Vec::new())];
        while let Some((n, path)) = stack.pop() {
            if self.is_terminal(n) {
                out.push(path.clone());
            }
            let kids: Vec<(u32, usize)> = self.children(n).collect();
            for (t, c) in kids.into_iter().rev() {
                let mut p = path.clone();
                p.push(t);
                stack.push((c, p));
            }
        }
        out
    }
}

/// What the writer stores: the answers as token ids, and the fallback settings. The default
/// is an empty spec that never falls back and stores no question words and no match: set
/// the answers and the fallback line, and what else a blob needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnswersSpec {
    /// Token ids of each known answer as the model produces it (separator tail included),
    /// without EOS. Duplicates are merged; order does not matter.
    pub answers: Vec<Vec<u32>>,
    /// The fallback line's tokens when it was taught as an answer (off-topic questions).
    pub fallback_ids: Option<Vec<u32>>,
    pub fallback: alloc::string::String,
    pub measure: ConfidenceMeasure,
    pub threshold: f32,
    pub free_by_default: bool,
    /// [`word_hash`]es of the words of every trained question about the owner (any order,
    /// duplicates merged); empty stores none and the novelty measure equals the mean
    /// log-probability.
    pub question_words: Vec<u32>,
    /// See [`AnswerSet::novelty_penalty`].
    pub novelty_penalty: f32,
    /// Every trained question (off-topic ones included, answered with the fallback line)
    /// for the question-match block; empty writes none. A question whose answer is not
    /// among `answers` or `fallback_ids` is left out.
    pub match_questions: Vec<MatchQuestion>,
    pub match_weights: MatchWeights,
}

/// Serialises an answers section (deterministic: the same answers give the same bytes).
pub fn write_answers(spec: &AnswersSpec) -> Vec<u8> {
    // Build the trie with sorted children, then number it breadth-first.
    struct Node {
        kids: alloc::collections::BTreeMap<u32, usize>,
        terminal: bool,
        fallback: bool,
    }
    let mut tree = alloc::vec![Node {
        kids: Default::default(),
        terminal: false,
        fallback: false,
    }];
    let answers = spec.answers.iter().map(|a| (a, false));
    for (a, is_fallback) in answers.chain(spec.fallback_ids.iter().map(|a| (a, true))) {
        let mut n = 0;
        for &t in a {
            n = match tree[n].kids.get(&t) {
                Some(&c) => c,
                None => {
                    let c = tree.len();
                    tree.push(Node {
                        kids: Default::default(),
                        terminal: false,
                        fallback: false,
                    });
                    tree[n].kids.insert(t, c);
                    c
                }
            };
        }
        tree[n].terminal |= n != 0;
        tree[n].fallback |= n != 0 && is_fallback;
    }
    let mut order = alloc::vec![0usize];
    let mut i = 0;
    while i < order.len() {
        order.extend(tree[order[i]].kids.values().copied());
        i += 1;
    }
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let mut next_edge = 0u32;
    let mut answers = 0u32;
    for &n in &order {
        let node = &tree[n];
        let count = node.kids.len() as u32;
        let flags = u32::from(node.terminal) | if node.fallback { NODE_FALLBACK } else { 0 };
        for v in [next_edge, count, flags] {
            nodes.extend_from_slice(&v.to_le_bytes());
        }
        answers += u32::from(node.terminal);
        for &t in node.kids.keys() {
            next_edge += 1;
            edges.extend_from_slice(&t.to_le_bytes());
            // Breadth-first numbering: the k-th edge (0-based) leads to node k + 1.
            edges.extend_from_slice(&next_edge.to_le_bytes());
        }
    }
    let mut words = spec.question_words.clone();
    words.sort_unstable();
    words.dedup();
    let mut number = alloc::vec![0u32; tree.len()];
    for (k, &n) in order.iter().enumerate() {
        number[n] = k as u32;
    }
    let terminal_of = |answer: &[u32]| {
        let mut n = 0;
        for t in answer {
            n = *tree[n].kids.get(t)?;
        }
        tree[n].terminal.then_some(number[n])
    };
    let matched: Vec<(u32, Vec<u32>)> = spec
        .match_questions
        .iter()
        .filter_map(|q| Some((terminal_of(&q.answer)?, q.words.clone())))
        .collect();
    let mut out = Vec::new();
    let mut flags = if spec.free_by_default { FLAG_FREE } else { 0 };
    if !matched.is_empty() {
        flags |= FLAG_MATCH;
    }
    for v in [
        flags,
        order.len() as u32,
        next_edge,
        answers,
        spec.measure as u32,
        spec.threshold.to_bits(),
        spec.fallback.len() as u32,
        words.len() as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&nodes);
    out.extend_from_slice(&edges);
    out.extend_from_slice(spec.fallback.as_bytes());
    if !words.is_empty() {
        out.extend_from_slice(&spec.novelty_penalty.to_bits().to_le_bytes());
        words
            .iter()
            .for_each(|w| out.extend_from_slice(&w.to_le_bytes()));
    }
    if !matched.is_empty() {
        out.extend(crate::question_match::write_match(
            &matched,
            spec.match_weights,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn spec(answers: &[&[u32]]) -> AnswersSpec {
        AnswersSpec {
            answers: answers.iter().map(|a| a.to_vec()).collect(),
            fallback: "Sorry.".into(),
            measure: ConfidenceMeasure::MeanLogProb,
            threshold: -1.5,
            ..Default::default()
        }
    }

    #[test]
    fn question_words_count_the_words_no_trained_question_has() {
        let mut s = spec(&[&[4]]);
        s.question_words = ["Where do you live?", "What's your job?"]
            .iter()
            .flat_map(|q| question_words(q))
            .collect();
        s.novelty_penalty = 0.25;
        let bytes = write_answers(&s);
        let set = AnswerSet::parse(&bytes, 16, 1, 2).unwrap();
        assert_eq!(set.byte_len(), bytes.len());
        assert_eq!(
            set.novel_words("WHERE do you LIVE"),
            0,
            "case and punctuation"
        );
        assert_eq!(set.novel_words("what's your cousin's job?"), 1);
        assert_eq!(set.novel_words("Is it sunny where you are?"), 4);
        let c = set.with_signals(
            Confidence {
                mean_log_prob: -0.5,
                ..Default::default()
            },
            &QuestionSignals {
                novel_words: 2,
                ..Default::default()
            },
            0,
        );
        assert_eq!(c.value(ConfidenceMeasure::MeanLogProbNovelty), -1.0);
        // Without words, nothing is novel and the section ends at the fallback line.
        let plain_bytes = write_answers(&spec(&[&[4]]));
        let plain = AnswerSet::parse(&plain_bytes, 16, 1, 2).unwrap();
        assert_eq!(plain.novel_words("Is it sunny where you are?"), 0);
        // Unsorted words, a word past the end, a negative penalty: refused.
        let words_at = bytes.len() - set.question_words.len();
        let mut b = bytes.clone();
        b[words_at..words_at + 8].rotate_left(4); // swap the first two words
        assert!(AnswerSet::parse(&b, 16, 1, 2).is_err(), "unsorted words");
        assert!(AnswerSet::parse(&bytes[..bytes.len() - 1], 16, 1, 2).is_err());
        let mut b = bytes.clone();
        b[words_at - 4..words_at].copy_from_slice(&(-1.0f32).to_bits().to_le_bytes());
        assert!(AnswerSet::parse(&b, 16, 1, 2).is_err(), "negative penalty");
        let mut b = bytes.clone();
        b[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            AnswerSet::parse(&b, 16, 1, 2).is_err(),
            "word count overflow"
        );
    }

    #[test]
    fn round_trips_answers_in_token_order() {
        let bytes = write_answers(&spec(&[&[9, 5, 7], &[9, 5], &[4], &[9, 6], &[4]]));
        let set = AnswerSet::parse(&bytes, 16, 1, 2).unwrap();
        assert_eq!(
            set.all_answers(),
            vec![vec![4], vec![9, 5], vec![9, 5, 7], vec![9, 6]]
        );
        assert_eq!(set.answer_count, 4);
        assert_eq!((set.fallback, set.threshold), ("Sorry.", -1.5));
        assert_eq!(set.byte_len(), bytes.len());
    }

    #[test]
    fn rejects_tokens_outside_the_vocabulary_and_cycles() {
        let bytes = write_answers(&spec(&[&[9, 5], &[3]]));
        assert!(
            AnswerSet::parse(&bytes, 9, 1, 2).is_err(),
            "token 9 ≥ vocab 9"
        );
        assert!(
            AnswerSet::parse(&bytes, 16, 1, 5).is_err(),
            "EOS inside an answer"
        );
        // Point the first edge back at the root.
        let edges_at = ANSWERS_HEADER_SIZE + 4 * NODE_SIZE;
        let mut b = bytes.clone();
        b[edges_at + 4..edges_at + 8].copy_from_slice(&0u32.to_le_bytes());
        assert!(AnswerSet::parse(&b, 16, 1, 2).is_err());
    }
}
