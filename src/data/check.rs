//! `badge data check`: what the badge will know, before any training.
//!
//! Reads a curriculum's Q&A sources (the human CSV files and the pairs the generator makes
//! from `facts.toml`) and reports per category: the distinct answers, how many phrasings each
//! answer has from each source, the answers with a single phrasing (which will not
//! generalise to other wordings), the questions that map to two different answers, and the
//! characters of the answers that SAM cannot speak even after transliteration.

use super::sources::{read_qa_csv, QaPair};
use super::synth::{self, normalize, SynthOptions};
use super::thesaurus::Thesaurus;
use crate::config::{Curriculum, SourceConfig, Synonyms};
use anyhow::{Context, Result};
use badge_firmware::sam::translit::speakable;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Where a phrasing comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A Q&A CSV written by a person.
    Human,
    /// A template of the generator filled with facts.
    Synth,
    /// A free-form `[[fact]]` and its paraphrases.
    Free,
}

/// Phrasings of one answer, by source.
#[derive(Debug, Default, Serialize)]
pub struct AnswerPhrasings {
    pub human: usize,
    pub synth: usize,
    pub free: usize,
}

impl AnswerPhrasings {
    pub fn total(&self) -> usize {
        self.human + self.synth + self.free
    }
}

/// One question that leads to more than one answer.
#[derive(Debug, Serialize)]
pub struct Conflict {
    pub question: String,
    pub answers: Vec<String>,
}

/// The report of one category.
#[derive(Debug, Default, Serialize)]
pub struct CategoryCheck {
    /// answer -> phrasings per source.
    pub answers: BTreeMap<String, AnswerPhrasings>,
    /// Answers with exactly one phrasing.
    pub single_phrasing: Vec<String>,
    pub conflicts: Vec<Conflict>,
}

/// How far a source's thesaurus reaches its questions (`synonyms = {...}` on the source).
#[derive(Debug, Serialize)]
pub struct SynonymCoverage {
    pub source: String,
    pub questions: usize,
    /// Questions that got at least one synonym copy.
    pub reached: usize,
    pub copies: usize,
    /// Copies left out because they read as the question of another answer.
    pub dropped: usize,
}

impl SynonymCoverage {
    fn of(source: &str, pairs: &[QaPair], synonyms: &Synonyms) -> Result<SynonymCoverage> {
        let c = Thesaurus::load(&synonyms.thesaurus)?.copies_of_pairs(pairs, synonyms.copies);
        Ok(SynonymCoverage {
            source: source.to_string(),
            questions: pairs.len(),
            reached: c.copies.iter().filter(|c| !c.is_empty()).count(),
            copies: c.copies.iter().map(Vec::len).sum(),
            dropped: c.dropped,
        })
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub curriculum: String,
    pub categories: BTreeMap<String, CategoryCheck>,
    /// Characters of answers that SAM cannot speak, with how often they occur.
    pub unspeakable: BTreeMap<char, usize>,
    /// The generator's per-category absent fields (see `badge data synth`).
    pub absent: BTreeMap<String, BTreeSet<String>>,
    /// Per source with synonym copies, how many of its questions the thesaurus reaches.
    pub synonyms: Vec<SynonymCoverage>,
}

/// Checks the curriculum at `path` (or `DIR/badge.toml` when `path` is a folder).
pub fn run(path: &Path) -> Result<CheckReport> {
    let file = if path.is_dir() {
        path.join("badge.toml")
    } else {
        path.to_path_buf()
    };
    let resolved = Curriculum::load(&file)?;
    let mut rows: Vec<(QaPair, Origin)> = Vec::new();
    let mut absent = BTreeMap::new();
    let mut synonyms = Vec::new();
    let scratch = tempfile::tempdir().context("cannot create a temporary folder")?;
    for (name, src) in &resolved.curriculum.sources {
        match src {
            SourceConfig::Qa {
                train,
                synonyms: syn,
                ..
            } => {
                let pairs = read_qa_csv(train)?;
                if let Some(syn) = syn {
                    synonyms.push(SynonymCoverage::of(name, &pairs, syn)?);
                }
                rows.extend(pairs.into_iter().map(|p| (p, Origin::Human)));
            }
            SourceConfig::Synth {
                facts,
                templates,
                seed,
                synonyms: syn,
                ..
            } => {
                let out = scratch.path().join(name);
                let report = synth::run(&SynthOptions {
                    facts: facts.clone(),
                    templates: templates.clone(),
                    out: out.clone(),
                    seed: *seed,
                })?;
                for (cat, fields) in report.absent {
                    absent
                        .entry(cat)
                        .or_insert_with(BTreeSet::new)
                        .extend(fields);
                }
                let pairs = read_qa_csv(&out.join("qa-synth.csv"))?;
                if let Some(syn) = syn {
                    synonyms.push(SynonymCoverage::of(name, &pairs, syn)?);
                }
                for p in pairs {
                    let origin = if p.id.contains("-free-") {
                        Origin::Free
                    } else {
                        Origin::Synth
                    };
                    rows.push((p, origin));
                }
            }
            _ => {}
        }
    }
    let mut report = analyse(&file.display().to_string(), &rows, absent);
    report.synonyms = synonyms;
    Ok(report)
}

fn analyse(
    curriculum: &str,
    rows: &[(QaPair, Origin)],
    absent: BTreeMap<String, BTreeSet<String>>,
) -> CheckReport {
    let mut categories: BTreeMap<String, CategoryCheck> = BTreeMap::new();
    let mut by_question: BTreeMap<String, (String, String, BTreeSet<String>)> = BTreeMap::new();
    let mut unspeakable = BTreeMap::new();
    // Phrasings are counted once per distinct (normalised) question per answer.
    let mut counted: BTreeSet<(String, String)> = BTreeSet::new();
    for (p, origin) in rows {
        let cat = p.category_name();
        let q = normalize(&p.question);
        let entry = categories.entry(cat.clone()).or_default();
        let ph = entry.answers.entry(p.answer.clone()).or_default();
        if counted.insert((q.clone(), p.answer.clone())) {
            match origin {
                Origin::Human => ph.human += 1,
                Origin::Synth => ph.synth += 1,
                Origin::Free => ph.free += 1,
            }
        }
        by_question
            .entry(q)
            .or_insert_with(|| (cat.clone(), p.question.clone(), BTreeSet::new()))
            .2
            .insert(p.answer.clone());
        for c in p.answer.chars().filter(|c| !speakable(*c)) {
            *unspeakable.entry(c).or_insert(0) += 1;
        }
    }
    for (cat, question, answers) in by_question.into_values() {
        if answers.len() > 1 {
            categories.entry(cat).or_default().conflicts.push(Conflict {
                question,
                answers: answers.into_iter().collect(),
            });
        }
    }
    for c in categories.values_mut() {
        c.single_phrasing = c
            .answers
            .iter()
            .filter(|(_, ph)| ph.total() == 1)
            .map(|(a, _)| a.clone())
            .collect();
    }
    CheckReport {
        curriculum: curriculum.to_string(),
        categories,
        unspeakable,
        absent,
        synonyms: Vec::new(),
    }
}

impl CheckReport {
    /// The report as readable tables.
    pub fn table(&self) -> String {
        let mut out = format!("What the badge will know ({})\n\n", self.curriculum);
        out.push_str(&format!(
            "{:<12} {:>7} {:>6} {:>6} {:>5} {:>7} {:>9}\n",
            "category", "answers", "human", "synth", "free", "single", "conflicts"
        ));
        for (name, c) in &self.categories {
            let sum = |f: fn(&AnswerPhrasings) -> usize| c.answers.values().map(f).sum::<usize>();
            out.push_str(&format!(
                "{:<12} {:>7} {:>6} {:>6} {:>5} {:>7} {:>9}\n",
                name,
                c.answers.len(),
                sum(|p| p.human),
                sum(|p| p.synth),
                sum(|p| p.free),
                c.single_phrasing.len(),
                c.conflicts.len()
            ));
        }
        for (name, c) in &self.categories {
            out.push_str(&format!(
                "\n[{name}] phrasings per answer (human/synth/free)\n"
            ));
            for (a, p) in &c.answers {
                out.push_str(&format!(
                    "  {:>3}/{:>3}/{:>3}  {}\n",
                    p.human,
                    p.synth,
                    p.free,
                    short(a)
                ));
            }
            for a in &c.single_phrasing {
                out.push_str(&format!(
                    "  only one phrasing (will not generalise): {}\n",
                    short(a)
                ));
            }
            for k in &c.conflicts {
                out.push_str(&format!(
                    "  conflict: {:?} has {} answers: {}\n",
                    k.question,
                    k.answers.len(),
                    k.answers
                        .iter()
                        .map(|a| format!("{:?}", short(a)))
                        .collect::<Vec<_>>()
                        .join(" / ")
                ));
            }
        }
        if self.unspeakable.is_empty() {
            out.push_str("\nSAM can speak every character of the answers.\n");
        } else {
            let list: Vec<String> = self
                .unspeakable
                .iter()
                .map(|(c, n)| format!("{c:?} (U+{:04X}) ×{n}", *c as u32))
                .collect();
            out.push_str(&format!(
                "\nCharacters SAM cannot speak (shown on screen, skipped aloud): {}\n",
                list.join(", ")
            ));
        }
        let absent: Vec<String> = self
            .absent
            .iter()
            .filter(|(_, f)| !f.is_empty())
            .map(|(c, f)| format!("{c}: {}", f.iter().cloned().collect::<Vec<_>>().join(", ")))
            .collect();
        if !absent.is_empty() {
            out.push_str(&format!(
                "Templates skipped for absent facts: {}\n",
                absent.join("; ")
            ));
        }
        for s in &self.synonyms {
            out.push_str(&format!(
                "Synonym copies, source `{}`: {} of {} questions reached, {} copies, {} left out as another answer's question\n",
                s.source, s.reached, s.questions, s.copies, s.dropped
            ));
        }
        out
    }
}

/// An answer cut for a table row.
fn short(a: &str) -> String {
    const MAX: usize = 70;
    if a.chars().count() <= MAX {
        a.to_string()
    } else {
        a.chars().take(MAX - 1).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(id: &str, q: &str, a: &str, cat: Option<&str>) -> QaPair {
        QaPair {
            id: id.into(),
            question: q.into(),
            answer: a.into(),
            category: cat.map(Into::into),
        }
    }

    #[test]
    fn counts_phrasings_single_answers_conflicts_and_unspeakable() {
        let rows = vec![
            (
                pair("pets-1", "What is your dog called?", "Rex.", None),
                Origin::Human,
            ),
            (
                pair("x", "what is your dog called", "Rex.", Some("pets")),
                Origin::Synth,
            ),
            (pair("y", "Dog's name?", "Rex.", Some("pets")), Origin::Free),
            (
                pair("z", "Where do you live?", "Tromsø.", Some("home")),
                Origin::Human,
            ),
            (
                pair("w", "Where do you live?", "Oslo.", Some("home")),
                Origin::Synth,
            ),
            (
                pair("v", "Favourite word?", "李", Some("home")),
                Origin::Free,
            ),
        ];
        let r = analyse("c.toml", &rows, BTreeMap::new());
        let pets = &r.categories["pets"];
        let rex = &pets.answers["Rex."];
        // The synth question is the human one in other case: one phrasing, not two.
        assert_eq!((rex.human, rex.synth, rex.free), (1, 0, 1));
        assert!(pets.single_phrasing.is_empty());
        let home = &r.categories["home"];
        assert_eq!(home.conflicts.len(), 1);
        assert_eq!(home.conflicts[0].answers, vec!["Oslo.", "Tromsø."]);
        assert_eq!(home.single_phrasing.len(), 3);
        assert_eq!(r.unspeakable.get(&'李'), Some(&1));
        assert!(!r.unspeakable.contains_key(&'ø'));
        let t = r.table();
        assert!(t.contains("conflict") && t.contains("U+674E"), "{t}");
    }
}
