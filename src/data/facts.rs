//! `facts.toml`: what the owner tells the badge about themself.
//!
//! Every section is optional and every list may have any length, because lives differ: a
//! student has no past jobs, a retiree may give no contact details, and some owners only write
//! free-form `[[fact]]` tables. What is absent is skipped by the generator (and reported), never
//! an error. What is *misspelt* is an error: an unknown key names the file, the line and the
//! nearest known key, so a typo never silently drops a fact.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// A year or any short value written either as a number or as a string.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Str(s) => f.write_str(s),
        }
    }
}

/// The whole file. Field names are the TOML keys (see `SCHEMA` below).
#[derive(Deserialize, Default, Debug)]
pub struct Facts {
    pub name: Option<String>,
    pub home_city: Option<String>,
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default)]
    pub skills: Vec<String>,
    #[serde(default)]
    pub interests: Vec<String>,
    #[serde(default)]
    pub contact: Contact,
    #[serde(default)]
    pub birth: Birth,
    #[serde(default)]
    pub current: Current,
    #[serde(default)]
    pub work_history: Vec<Job>,
    #[serde(default)]
    pub education: Vec<Education>,
    #[serde(default)]
    pub projects: Vec<Project>,
    /// User-defined placeholders for the templates.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
    /// Free-form facts: whatever the sections above lack.
    #[serde(default)]
    pub fact: Vec<FreeFact>,
}

#[derive(Deserialize, Default, Debug)]
pub struct Contact {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub website: Option<String>,
    pub preferred: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
pub struct Birth {
    pub month: Option<String>,
    pub year: Option<Scalar>,
}

#[derive(Deserialize, Default, Debug)]
pub struct Current {
    pub employer: Option<String>,
    pub role: Option<String>,
    pub start: Option<Scalar>,
    pub employer_summary: Option<String>,
    pub focus: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct Job {
    pub employer: Option<String>,
    pub role: Option<String>,
    pub from: Option<Scalar>,
    pub to: Option<Scalar>,
    pub summary: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct Education {
    pub school: Option<String>,
    pub degree: Option<String>,
    pub field: Option<String>,
    pub from: Option<Scalar>,
    pub to: Option<Scalar>,
}

#[derive(Deserialize, Debug)]
pub struct Project {
    pub name: Option<String>,
    pub summary: Option<String>,
    pub year: Option<Scalar>,
}

/// One free-form fact: an answer and the questions it answers.
#[derive(Deserialize, Debug, Clone)]
pub struct FreeFact {
    pub answer: String,
    pub questions: Vec<String>,
    /// Category for reports and evaluation (default `fact`).
    pub category: Option<String>,
}

/// What a key may hold.
enum Shape {
    Value,
    Table(&'static [(&'static str, Shape)]),
    /// An array of tables (`[[work_history]]`).
    Tables(&'static [(&'static str, Shape)]),
    /// Any keys, each a value (`[extra]`).
    AnyKeys,
}

use Shape::{AnyKeys, Table, Tables, Value};

/// Every key `facts.toml` knows, by section.
const SCHEMA: &[(&str, Shape)] = &[
    ("name", Value),
    ("home_city", Value),
    ("languages", Value),
    ("skills", Value),
    ("interests", Value),
    (
        "contact",
        Table(&[
            ("email", Value),
            ("phone", Value),
            ("website", Value),
            ("preferred", Value),
        ]),
    ),
    ("birth", Table(&[("month", Value), ("year", Value)])),
    (
        "current",
        Table(&[
            ("employer", Value),
            ("role", Value),
            ("start", Value),
            ("employer_summary", Value),
            ("focus", Value),
        ]),
    ),
    (
        "work_history",
        Tables(&[
            ("employer", Value),
            ("role", Value),
            ("from", Value),
            ("to", Value),
            ("summary", Value),
        ]),
    ),
    (
        "education",
        Tables(&[
            ("school", Value),
            ("degree", Value),
            ("field", Value),
            ("from", Value),
            ("to", Value),
        ]),
    ),
    (
        "projects",
        Tables(&[("name", Value), ("summary", Value), ("year", Value)]),
    ),
    ("extra", AnyKeys),
    (
        "fact",
        Tables(&[("answer", Value), ("questions", Value), ("category", Value)]),
    ),
];

/// Reads and checks `facts.toml`.
pub fn load(path: &Path) -> Result<Facts> {
    let text = crate::util::read_to_string(path)?;
    parse(&text, path)
}

/// Parses the text of a facts file; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Facts> {
    let at = path.display();
    let table: toml::Table =
        toml::from_str(text).map_err(|e| anyhow!("{at}: {}", e.to_string().trim_end()))?;
    if table.is_empty() {
        bail!(
            "{at}: line 1: the file holds no facts; fill in at least `name` or one [[fact]] \
             table (`badge init DIR` writes a commented example)"
        );
    }
    check_keys(&table, SCHEMA, &Place::Top, text, path)?;
    let facts: Facts = table
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{at}: {}", e.to_string().trim_end()))?;
    for (i, f) in facts.fact.iter().enumerate() {
        let line = header_line(text, "fact", i).unwrap_or(1);
        if f.answer.trim().is_empty() {
            bail!(
                "{at}: line {line}: [[fact]] number {} has an empty `answer`",
                i + 1
            );
        }
        if f.questions.iter().all(|q| q.trim().is_empty()) {
            bail!(
                "{at}: line {line}: [[fact]] number {} needs at least one entry in `questions`",
                i + 1
            );
        }
    }
    Ok(facts)
}

/// Where a table sits in the file, for finding lines.
enum Place<'a> {
    Top,
    Section(&'a str),
    Item(&'a str, usize),
}

fn check_keys(
    table: &toml::Table,
    allowed: &[(&str, Shape)],
    place: &Place<'_>,
    text: &str,
    path: &Path,
) -> Result<()> {
    for (key, value) in table {
        let Some((_, shape)) = allowed.iter().find(|(k, _)| k == key) else {
            return Err(unknown_key(key, allowed, place, text, path));
        };
        match (shape, value) {
            (Table(keys), toml::Value::Table(t)) => {
                check_keys(t, keys, &Place::Section(key), text, path)?
            }
            (Tables(keys), toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item {
                        check_keys(t, keys, &Place::Item(key, i), text, path)?;
                    }
                }
            }
            // Wrong types are reported by the typed read, which names the key.
            _ => {}
        }
    }
    Ok(())
}

fn unknown_key(
    key: &str,
    allowed: &[(&str, Shape)],
    place: &Place<'_>,
    text: &str,
    path: &Path,
) -> anyhow::Error {
    let line = key_line(text, place, key).unwrap_or(1);
    let section = match place {
        Place::Top => "at the top level".to_string(),
        Place::Section(s) => format!("in [{s}]"),
        Place::Item(s, _) => format!("in [[{s}]]"),
    };
    let nearest = allowed
        .iter()
        .map(|(k, _)| (edit_distance(key, k), *k))
        .min()
        .map(|(_, k)| k);
    // A key that exists, but in another section, is the likelier mistake.
    let elsewhere = SCHEMA.iter().find_map(|(s, shape)| match shape {
        Table(keys) | Tables(keys) if keys.iter().any(|(k, _)| *k == key) => Some(*s),
        _ => None,
    });
    let hint = match (elsewhere, nearest) {
        (Some(s), _) => format!("`{key}` belongs in [{s}]"),
        (None, Some(k)) => format!("did you mean `{k}`?"),
        (None, None) => "this section takes no keys".to_string(),
    };
    anyhow!(
        "{}: line {line}: unknown key `{key}` {section}; {hint}",
        path.display()
    )
}

/// The line of `[[name]]` number `index` (0-based), or of `[name]`.
fn header_line(text: &str, name: &str, index: usize) -> Option<usize> {
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        if header_name(line) == Some(name) {
            if seen == index {
                return Some(i + 1);
            }
            seen += 1;
        }
    }
    None
}

/// The table name of a `[name]` or `[[name]]` line.
fn header_name(line: &str) -> Option<&str> {
    let t = line.trim();
    let inner = t.strip_prefix("[[").and_then(|r| r.split("]]").next());
    let inner = inner.or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()))?;
    Some(inner.trim().trim_matches('"'))
}

/// The line where `key` is set inside `place`; `None` when it cannot be found (an inline
/// table, a dotted key).
fn key_line(text: &str, place: &Place<'_>, key: &str) -> Option<usize> {
    // `start` is the 1-based line of the header, so skipping it starts right after it.
    let start = match place {
        Place::Top => 0,
        Place::Section(s) => header_line(text, s, 0)?,
        Place::Item(s, i) => header_line(text, s, *i)?,
    };
    for (i, line) in text.lines().enumerate().skip(start) {
        if header_name(line).is_some() {
            break;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        if k.trim().trim_matches('"') == key {
            return Some(i + 1);
        }
    }
    // Fall back to the section header itself.
    match place {
        Place::Top => None,
        Place::Section(s) => header_line(text, s, 0),
        Place::Item(s, i) => header_line(text, s, *i),
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, Path::new("me/facts.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_keys_name_file_line_and_nearest_key() {
        let e = err("name = \"A\"\n\n[contact]\nphone = \"1\"\nemial = \"a@example.com\"\n");
        assert_eq!(
            e,
            "me/facts.toml: line 5: unknown key `emial` in [contact]; did you mean `email`?"
        );
        let e = err("name = \"A\"\nhome_cty = \"Oslo\"\n");
        assert!(e.contains("line 2") && e.contains("`home_city`"), "{e}");
        let e = err("name = \"A\"\nemail = \"a@example.com\"\n");
        assert!(
            e.contains("line 2") && e.contains("belongs in [contact]"),
            "{e}"
        );
        let text = "[[work_history]]\nemployer = \"X\"\n\n[[work_history]]\nemployer = \"Y\"\nrole_ = \"Z\"\n";
        let e = err(text);
        assert!(e.contains("line 6") && e.contains("`role`"), "{e}");
        let e = err("[[fact]]\nanswer = \"Rex.\"\nquestion = [\"Dog?\"]\n");
        assert!(e.contains("line 3") && e.contains("`questions`"), "{e}");
    }

    #[test]
    fn empty_and_bad_files_are_clear_errors() {
        assert!(err("").contains("me/facts.toml: line 1: the file holds no facts"));
        assert!(err("# only a comment\n").contains("holds no facts"));
        let e = err("name = \"A\"\nname = \"B\"\n");
        assert!(e.contains("me/facts.toml") && e.contains("line 2"), "{e}");
        let e = err("[[fact]]\nanswer = \"Rex.\"\nquestions = []\n");
        assert!(e.contains("line 1") && e.contains("at least one"), "{e}");
    }

    #[test]
    fn every_section_is_optional() {
        let f = parse("name = \"Ana Lúcia\"\n", Path::new("f.toml")).unwrap();
        assert_eq!(f.name.as_deref(), Some("Ana Lúcia"));
        assert!(f.work_history.is_empty() && f.contact.email.is_none());
        let f = parse(
            "[[fact]]\nanswer = \"Biscuit.\"\nquestions = [\"What is your dog called?\"]\n",
            Path::new("f.toml"),
        )
        .unwrap();
        assert!(f.name.is_none());
        assert_eq!(f.fact.len(), 1);
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("emial", "email"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
