//! Synonym copies of a training question: one word or phrase swapped for another of its group
//! in a thesaurus file ("job" for "occupation", "spare time" for "free time"), paired with the
//! same answer.
//!
//! Strangers ask in their own words. The noise copies (data::noise) teach a small model to
//! shrug off a word it does not know; synonym copies teach it what the word means, so "How do
//! you spend your leisure time?" lands on the answer the owner wrote for "free time". The
//! thesaurus is generic English, not about any owner, so it multiplies every owner's phrasings.
//!
//! File format: one group per line, its words or phrases separated by commas, all
//! interchangeable in a question (same part of speech, same tense); `#` starts a comment.
//! Matching ignores case and whole words only; a phrase may be several words.
//! Deterministic: the same question, seed and count give the same copies on every machine.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, Result};

use super::rng::{distinct_draws, hash_str, Rng};
use super::sources::QaPair;
use super::synth::normalize;

/// Groups of interchangeable words and phrases, each stored lower case as its words.
#[derive(Debug, Clone, Default)]
pub struct Thesaurus {
    groups: Vec<Vec<Vec<String>>>,
}

/// The synonym copies of a list of Q&A pairs.
#[derive(Debug, Clone, Default)]
pub struct PairCopies {
    /// The copies of each pair's question, in the pairs' order.
    pub copies: Vec<Vec<String>>,
    /// Copies left out because they read as the question of another answer.
    pub dropped: usize,
}

/// One place a question's words match a thesaurus entry.
struct Match {
    start: usize,
    len: usize,
    group: usize,
    entry: usize,
}

impl Thesaurus {
    /// Reads a thesaurus file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Thesaurus> {
        let text = crate::util::read_to_string(path)?;
        Thesaurus::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses the text of a thesaurus file.
    pub fn parse(text: &str) -> Result<Thesaurus> {
        let mut groups = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut group: Vec<Vec<String>> = Vec::new();
            for entry in line.split(',') {
                let words = words_of(entry);
                if words.is_empty() {
                    bail!("line {}: an empty entry (two commas in a row?)", n + 1);
                }
                if group.contains(&words) {
                    bail!("line {}: \"{}\" appears twice", n + 1, entry.trim());
                }
                group.push(words);
            }
            if group.len() < 2 {
                bail!(
                    "line {}: a group needs at least two entries separated by commas",
                    n + 1
                );
            }
            groups.push(group);
        }
        Ok(Thesaurus { groups })
    }

    /// How many groups the thesaurus holds.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether the thesaurus holds no groups.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Up to `n` distinct copies of `question`, each with one matched word or phrase replaced
    /// by another entry of its group, none equal to the question, chosen for `seed`.
    pub fn copies(&self, question: &str, seed: u64, n: usize) -> Vec<String> {
        let original = question.trim();
        let words: Vec<&str> = original.split_whitespace().collect();
        let matches = self.matches(&words);
        if matches.is_empty() || n == 0 {
            return Vec::new();
        }
        let mut rng = Rng::new(seed ^ hash_str(original).rotate_left(29));
        distinct_draws(original, n, || {
            let m = &matches[rng.below(matches.len())];
            let group = &self.groups[m.group];
            let mut pick = rng.below(group.len() - 1);
            if pick >= m.entry {
                pick += 1;
            }
            replaced(&words, m, &group[pick])
        })
    }

    /// Up to `copies` synonym copies of each pair's question (seeded by the pair's id),
    /// without those that read as a question of another answer, or as a copy of one: a line
    /// can join words the owner keeps apart ("What are you good at?" and "What are you best
    /// at?" may have different answers), and training both answers on one question would
    /// unteach the one the owner wrote.
    pub fn copies_of_pairs(&self, pairs: &[QaPair], copies: usize) -> PairCopies {
        let all: Vec<Vec<String>> = pairs
            .iter()
            .map(|p| self.copies(&p.question, hash_str(&p.id), copies))
            .collect();
        let mut answers: HashMap<String, HashSet<&str>> = HashMap::new();
        let questions = pairs.iter().map(|p| &p.question);
        let copies_of = all
            .iter()
            .zip(pairs)
            .flat_map(|(c, p)| c.iter().map(move |q| (q, p)));
        for (q, p) in questions.zip(pairs).chain(copies_of) {
            answers
                .entry(normalize(q))
                .or_default()
                .insert(p.answer.as_str());
        }
        let mut dropped = 0;
        let copies = all
            .into_iter()
            .map(|c| {
                let before = c.len();
                let kept: Vec<String> = c
                    .into_iter()
                    .filter(|q| answers[&normalize(q)].len() == 1)
                    .collect();
                dropped += before - kept.len();
                kept
            })
            .collect();
        PairCopies { copies, dropped }
    }

    /// Every place an entry matches the question's words, except a match inside a longer
    /// one: "email" inside "email address" would give "e-mail address address".
    fn matches(&self, words: &[&str]) -> Vec<Match> {
        let lower: Vec<String> = words.iter().map(|w| bare(w)).collect();
        let mut found = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            for (e, entry) in group.iter().enumerate() {
                for start in 0..lower.len() {
                    let end = start + entry.len();
                    // Punctuation may only close the last word of the span ("job?").
                    if end <= lower.len()
                        && lower[start..end] == entry[..]
                        && words[start..end - 1].iter().all(|w| closing(w).is_empty())
                    {
                        found.push(Match {
                            start,
                            len: entry.len(),
                            group: g,
                            entry: e,
                        });
                    }
                }
            }
        }
        let inside_longer = |m: &Match| {
            found
                .iter()
                .any(|n| n.len > m.len && n.start <= m.start && m.start + m.len <= n.start + n.len)
        };
        let keep: Vec<bool> = found.iter().map(|m| !inside_longer(m)).collect();
        found
            .into_iter()
            .zip(keep)
            .filter_map(|(m, k)| k.then_some(m))
            .collect()
    }
}

/// `words` with the span of `m` replaced by `entry`, keeping the span's closing punctuation and
/// a capital at the start of the question.
fn replaced(words: &[&str], m: &Match, entry: &[String]) -> String {
    let last = words[m.start + m.len - 1];
    let mut new: Vec<String> = entry.to_vec();
    if let Some(w) = new.last_mut() {
        w.push_str(closing(last));
    }
    let starts_upper = words[m.start].starts_with(|c: char| c.is_uppercase());
    if m.start == 0 && starts_upper {
        if let Some(w) = new.first_mut() {
            *w = capitalised(w);
        }
    }
    let mut out: Vec<String> = words[..m.start].iter().map(|s| s.to_string()).collect();
    out.extend(new);
    out.extend(words[m.start + m.len..].iter().map(|s| s.to_string()));
    out.join(" ")
}

/// The lower-case words of a thesaurus entry.
fn words_of(entry: &str) -> Vec<String> {
    entry.split_whitespace().map(str::to_lowercase).collect()
}

/// A question word lower case, without its closing punctuation.
fn bare(word: &str) -> String {
    word[..word.len() - closing(word).len()].to_lowercase()
}

/// The punctuation that closes a word ("job?" -> "?", "you," -> ",").
fn closing(word: &str) -> &str {
    let keep = word.trim_end_matches(|c: char| c.is_ascii_punctuation() && c != '\'');
    &word[keep.len()..]
}

fn capitalised(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(first) => first.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Thesaurus {
        Thesaurus::parse(
            "# work\njob, occupation, line of work\nfree time, spare time, leisure time\n\
             what is, what's\n",
        )
        .unwrap()
    }

    #[test]
    fn swaps_one_word_or_phrase_for_another_of_its_group() {
        let t = sample();
        let copies = t.copies("What is your job?", 3, 10);
        let mut sorted = copies.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "What is your line of work?",
                "What is your occupation?",
                "What's your job?",
            ]
        );
        // Deterministic for a seed.
        assert_eq!(copies, t.copies("What is your job?", 3, 10));
    }

    #[test]
    fn phrases_match_whole_words_across_case_and_punctuation() {
        let t = sample();
        let copies = t.copies("How do you spend your Free Time?", 1, 5);
        assert_eq!(copies.len(), 2, "{copies:?}");
        assert!(copies.contains(&"How do you spend your spare time?".to_string()));
        assert!(copies.contains(&"How do you spend your leisure time?".to_string()));
        // A word inside a longer match is left alone: no "spare free time".
        let t2 = Thesaurus::parse("time, hour\nfree time, spare time\n").unwrap();
        assert_eq!(t2.copies("Any free time?", 1, 5), ["Any spare time?"]);
        // "jobs" is not "job", and a comma inside a phrase breaks it.
        assert!(t.copies("Any jobs?", 1, 5).is_empty());
        assert!(t.copies("In my free, time?", 1, 5).is_empty());
    }

    #[test]
    fn a_replaced_first_word_keeps_its_capital() {
        let t = Thesaurus::parse("job, occupation\n").unwrap();
        assert_eq!(t.copies("Job?", 1, 3), ["Occupation?"]);
        assert_eq!(t.copies("job?", 1, 3), ["occupation?"]);
    }

    /// The shipped thesaurus reaches most of the bundled owner's questions, and its copies
    /// keep the question's shape.
    #[test]
    fn the_shipped_thesaurus_covers_the_bundled_questions() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let t = Thesaurus::load(&root.join("data/templates/synonyms.txt")).unwrap();
        assert!(t.len() >= 50, "{} groups", t.len());
        let pairs = crate::data::read_qa_csv(&root.join("data/profile/qa.csv")).unwrap();
        let mut reached = 0;
        for p in &pairs {
            let copies = t.copies(&p.question, 1, 2);
            reached += usize::from(!copies.is_empty());
            for c in &copies {
                assert_ne!(c, &p.question);
                assert_eq!(c.ends_with('?'), p.question.ends_with('?'), "{c}");
                assert!(c.starts_with(char::is_uppercase), "{c}");
            }
        }
        assert!(
            reached * 2 >= pairs.len(),
            "only {reached} of {} questions get a synonym copy",
            pairs.len()
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let err = Thesaurus::parse("job, occupation\nlonely\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = Thesaurus::parse("a, , b\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = Thesaurus::parse("a, b, A\n").unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
