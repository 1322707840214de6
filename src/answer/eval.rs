//! `badge eval`: ask every question of a Q&A file and score the answers.

use crate::answer::Answerer;
use crate::data::QaPair;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// Lower-case, drop punctuation, collapse whitespace: "My email is X." ≈ "my email is x".
pub fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_ascii_punctuation())
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    pub id: String,
    pub question: String,
    pub expected: String,
    pub got: String,
    /// The badge said its fallback line (it did not know).
    pub fallback: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    pub total: usize,
    pub exact: usize,
    pub normalized: usize,
    /// Answered with the fallback line (known-answer decoding, low confidence).
    pub fallback: usize,
}

impl Score {
    pub fn exact_rate(&self) -> f64 {
        self.exact as f64 / self.total.max(1) as f64
    }
    pub fn normalized_rate(&self) -> f64 {
        self.normalized as f64 / self.total.max(1) as f64
    }
    pub fn fallback_rate(&self) -> f64 {
        self.fallback as f64 / self.total.max(1) as f64
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub overall: Score,
    pub per_category: BTreeMap<String, Score>,
    pub misses: Vec<Miss>,
}

/// Asks each off-topic question (one the badge cannot know) and counts the fallbacks; the
/// other answers are listed.
pub fn offtopic(model: &mut dyn Answerer, questions: &[String]) -> Result<(Score, Vec<Miss>)> {
    let mut score = Score::default();
    let mut answered = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let mut got = String::new();
        let stats = model.answer_streaming(q, &mut |t| got.push_str(t))?;
        score.total += 1;
        if stats.outcome == badge_firmware::generate::Outcome::Fallback {
            score.fallback += 1;
        } else {
            answered.push(Miss {
                id: format!("offtopic-{:03}", i + 1),
                question: q.clone(),
                expected: String::new(),
                got,
                fallback: false,
            });
        }
    }
    Ok((score, answered))
}

/// Asks every question and scores exact and normalized matches.
pub fn evaluate(
    model: &mut dyn Answerer,
    pairs: &[QaPair],
    mut progress: impl FnMut(usize),
) -> Result<EvalReport> {
    let mut overall = Score::default();
    let mut per_category: BTreeMap<String, Score> = BTreeMap::new();
    let mut misses = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let mut got = String::new();
        let stats = model.answer_streaming(&p.question, &mut |t| got.push_str(t))?;
        let fallback = stats.outcome == badge_firmware::generate::Outcome::Fallback;
        let exact = got.trim() == p.answer.trim();
        let norm = normalize(&got) == normalize(&p.answer);
        for s in [
            &mut overall,
            per_category.entry(p.category_name()).or_default(),
        ] {
            s.total += 1;
            s.exact += usize::from(exact);
            s.normalized += usize::from(norm);
            s.fallback += usize::from(fallback);
        }
        if !exact {
            misses.push(Miss {
                id: p.id.clone(),
                question: p.question.clone(),
                expected: p.answer.clone(),
                got,
                fallback,
            });
        }
        progress(i + 1);
    }
    Ok(EvalReport {
        overall,
        per_category,
        misses,
    })
}

impl EvalReport {
    pub fn table(&self, show_misses: usize) -> String {
        let mut s = format!(
            "{:<14} {:>6} {:>8} {:>11} {:>9}\n",
            "category", "asked", "exact", "normalized", "fallback"
        );
        let row = |name: &str, sc: &Score| {
            format!(
                "{:<14} {:>6} {:>7.1}% {:>10.1}% {:>8.1}%\n",
                name,
                sc.total,
                100.0 * sc.exact_rate(),
                100.0 * sc.normalized_rate(),
                100.0 * sc.fallback_rate()
            )
        };
        for (c, sc) in &self.per_category {
            s += &row(c, sc);
        }
        s += &row("overall", &self.overall);
        if !self.misses.is_empty() && show_misses > 0 {
            s += &format!(
                "\nmisses ({} of {}):\n",
                self.misses.len(),
                self.overall.total
            );
            for m in self.misses.iter().take(show_misses) {
                s += &format!(
                    "  [{}] {}\n      expected: {}\n      got:      {}\n",
                    m.id, m.question, m.expected, m.got
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_ignores_case_punctuation_and_spaces() {
        assert_eq!(
            normalize("My email is  Wren@Example.com."),
            normalize("my email is wrenexamplecom")
        );
        assert_ne!(
            normalize("I live in Halifax."),
            normalize("I live in Paris.")
        );
    }

    /// An answerer with known answers: a lookup table that gets one question wrong.
    struct Table;
    impl Answerer for Table {
        fn answer_streaming(
            &mut self,
            q: &str,
            on_text: &mut dyn FnMut(&str),
        ) -> Result<badge_firmware::generate::GenerateStats> {
            on_text(match q {
                "Where?" => "I live in Halifax.",
                "Email?" => "my email is w@example.com",
                _ => "I do not know.",
            });
            Ok(badge_firmware::generate::GenerateStats {
                prompt_tokens: 0,
                generated_tokens: 0,
                stop: badge_firmware::generate::StopReason::EndOfSequence,
                outcome: badge_firmware::generate::Outcome::Free,
                confidence: None,
            })
        }
    }

    #[test]
    fn scores_exact_normalized_and_categories() {
        let pair = |id: &str, q: &str, a: &str| QaPair {
            id: id.into(),
            question: q.into(),
            answer: a.into(),
            category: None,
        };
        let pairs = vec![
            pair("home-1", "Where?", "I live in Halifax."),
            pair("contact-1", "Email?", "My email is w@example.com."),
            pair("contact-2", "Phone?", "My phone is 555."),
        ];
        let r = evaluate(&mut Table, &pairs, |_| {}).unwrap();
        assert_eq!(
            (r.overall.total, r.overall.exact, r.overall.normalized),
            (3, 1, 2)
        );
        assert_eq!(r.per_category["contact"].normalized, 1);
        assert_eq!(r.per_category["home"].exact, 1);
        assert_eq!(r.misses.len(), 2);
        assert_eq!(r.misses[1].got, "I do not know.");
    }
}
