//! The questions a curriculum measures or calibrates on, kept out of its generated training data.
//!
//! A curriculum's figures (held-out rephrasings right, off-topic questions refused) and the
//! export's threshold are only worth something if no training sample asks the same question.
//! Hand-written files are the owner's to keep apart (`badge data check` and the tests guard the
//! bundled ones), but generated questions can land on a held-out one by chance: a synonym copy
//! of "Where do you live?" reads "Where do you reside?", which the bundled held-out file asks.
//! So every generated question (a synth pair, a paraphrase, a noisy or synonym copy) that
//! reads, normalised, as a held-out question is left out of training.

use std::collections::HashSet;

use anyhow::Result;

use super::sources::{read_qa_csv, read_questions, QaPair};
use super::synth::normalize;
use crate::config::{Curriculum, SourceConfig};

/// Normalised held-out questions (see [`normalize`]: case, punctuation and spacing ignored).
#[derive(Debug, Clone, Default)]
pub struct HeldOut {
    questions: HashSet<String>,
}

impl HeldOut {
    /// The curriculum's held-out questions: every Q&A source's `valid` file and the
    /// `[answers]` off-topic calibration and test lists. (A synth source's own holdout is
    /// added where it is drawn, see [`HeldOut::with`].)
    pub fn of_curriculum(c: &Curriculum) -> Result<HeldOut> {
        let mut questions = HashSet::new();
        for cfg in c.sources.values() {
            if let SourceConfig::Qa { valid: Some(v), .. } = cfg {
                questions.extend(read_qa_csv(v)?.iter().map(|p| normalize(&p.question)));
            }
        }
        for list in [&c.answers.offtopic, &c.answers.offtopic_test]
            .into_iter()
            .flatten()
        {
            questions.extend(read_questions(list)?.iter().map(|q| normalize(q)));
        }
        Ok(HeldOut { questions })
    }

    /// These held-out questions and `more`.
    pub fn with<'q>(&self, more: impl IntoIterator<Item = &'q str>) -> HeldOut {
        let mut questions = self.questions.clone();
        questions.extend(more.into_iter().map(normalize));
        HeldOut { questions }
    }

    /// Whether `question` reads as a held-out question.
    pub fn contains(&self, question: &str) -> bool {
        !self.questions.is_empty() && self.questions.contains(&normalize(question))
    }

    /// `pairs` without those that read as a held-out question, and how many were left out.
    pub fn without_held_out(&self, pairs: Vec<QaPair>) -> (Vec<QaPair>, usize) {
        let before = pairs.len();
        let kept: Vec<QaPair> = pairs
            .into_iter()
            .filter(|p| !self.contains(&p.question))
            .collect();
        let dropped = before - kept.len();
        (kept, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(id: &str, q: &str) -> QaPair {
        QaPair {
            id: id.into(),
            question: q.into(),
            answer: "A.".into(),
            category: None,
        }
    }

    #[test]
    fn held_out_questions_match_whatever_the_case_and_punctuation() {
        let h = HeldOut::default().with(["Where do you reside?"]);
        assert!(h.contains("where do you  reside"));
        assert!(!h.contains("Where do you live?"));
        let (kept, dropped) = h.without_held_out(vec![
            pair("a~1", "Where do you live?"),
            pair("a~2", "WHERE do you reside?!"),
        ]);
        assert_eq!(dropped, 1);
        assert_eq!(kept, vec![pair("a~1", "Where do you live?")]);
    }

    #[test]
    fn nothing_is_held_out_by_default() {
        let (kept, dropped) = HeldOut::default().without_held_out(vec![pair("a", "")]);
        assert_eq!((kept.len(), dropped), (1, 0));
    }
}
