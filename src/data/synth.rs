//! `badge data synth`: turn `facts.toml` into extra training data.
//!
//! The generator reads the owner's facts (see [`super::facts`]) and two template files
//! (`data/templates/prose.toml`, `data/templates/qa.toml`) and writes, under the output folder:
//!
//! * `prose/synth-NNN.txt`: one paragraph about the owner per file;
//! * `qa-synth.csv`: `id,question,answer,category` rows. Ids are `CATEGORY-synth-NNN` for
//!   template pairs and `CATEGORY-free-NNN` for pairs from free-form `[[fact]]` tables.
//!
//! All wording lives in the template files, so users can add phrasings without
//! touching code. Templates use `{placeholder}` names (see the header of
//! `qa.toml`); `{{` and `}}` are literal braces. A template with
//! `each = "<list>"` is repeated once per item of that list. A template whose facts are absent
//! is skipped, and the report lists the absent fields per category.
//!
//! Free-form facts are multiplied with the generic paraphrases of
//! [`super::paraphrase`]; the ones whose answer is a sentence also become paragraphs.
//!
//! Output is deterministic: the same facts, templates and seed give
//! byte-identical files (a small SplitMix64 generator is used, and only
//! ordered maps reach the output). Files are written atomically.

use super::facts::{FreeFact, Scalar};
use super::paraphrase::paraphrases;
use super::rng::Rng;
use crate::util::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Facts = super::facts::Facts;

/// What `badge data synth` needs.
pub struct SynthOptions {
    /// `facts.toml` of the owner.
    pub facts: std::path::PathBuf,
    /// Folder holding `prose.toml` and `qa.toml`.
    pub templates: std::path::PathBuf,
    /// Output folder; receives `prose/synth-NNN.txt` and `qa-synth.csv`.
    pub out: std::path::PathBuf,
    /// Seed for every random choice.
    pub seed: u64,
}

/// What was generated.
#[derive(Debug, serde::Serialize)]
pub struct SynthReport {
    /// Paragraph files written.
    pub prose_paragraphs: usize,
    /// `[[paragraph]]` templates that produced at least one paragraph.
    pub distinct_prose_templates: usize,
    /// Rows of `qa-synth.csv`.
    pub qa_pairs: usize,
    /// Rows of `qa-synth.csv` per category.
    pub per_category: BTreeMap<String, usize>,
    /// Rows that came from free-form `[[fact]]` tables (included in `qa_pairs`).
    pub free_form_pairs: usize,
    /// Per category (`prose` for paragraphs), the facts fields whose absence skipped
    /// templates or list items.
    pub absent: BTreeMap<String, BTreeSet<String>>,
    /// Every file written, CSV last.
    pub files: Vec<std::path::PathBuf>,
}

impl SynthReport {
    /// One line per category: pairs and absent fields, for the terminal.
    pub fn table(&self) -> String {
        let mut cats: BTreeSet<&String> = self.per_category.keys().collect();
        cats.extend(self.absent.keys());
        let width = cats.iter().map(|c| c.len()).max().unwrap_or(0).max(8);
        let mut out = format!("{:width$}  {:>5}  absent fields\n", "category", "pairs");
        for c in cats {
            let n = if c == PROSE {
                self.prose_paragraphs
            } else {
                self.per_category.get(c).copied().unwrap_or(0)
            };
            let absent: Vec<&str> = self
                .absent
                .get(c)
                .map(|s| s.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let absent = if absent.is_empty() {
                "-".to_string()
            } else {
                absent.join(", ")
            };
            out.push_str(&format!("{c:width$}  {n:>5}  {absent}\n"));
        }
        out
    }
}

/// Generate prose and Q&A from the facts and templates in `opts`.
pub fn run(opts: &SynthOptions) -> anyhow::Result<SynthReport> {
    let facts = super::facts::load(&opts.facts)?;
    let vars = Vars::new(&facts);
    let prose_path = opts.templates.join("prose.toml");
    let qa_path = opts.templates.join("qa.toml");
    let prose_t: ProseFile = load_toml(&prose_path)?;
    let qa_t: QaFile = load_toml(&qa_path)?;
    let mut rng = Rng::new(opts.seed);
    let mut absent = Absent::new();
    let (mut paragraphs, distinct) =
        gen_prose(&prose_t, &prose_path, &vars, &mut rng, &mut absent)?;
    paragraphs.extend(free_prose(&facts.fact, &mut rng));
    // The owner's own questions come first: they own a question a template also asks.
    let mut seen = BTreeSet::new();
    let mut rows = gen_free(&facts.fact, &opts.facts, opts.seed, &mut seen)?;
    rows.extend(gen_qa(&qa_t, &qa_path, &vars, &mut seen, &mut absent)?);
    rng.shuffle(&mut rows);
    if paragraphs.is_empty() && rows.is_empty() {
        bail!(
            "{}: no template could use these facts and there is no [[fact]] table; \
             fill in more of the file (absent: {})",
            opts.facts.display(),
            absent
                .values()
                .flatten()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let prose_dir = opts.out.join("prose");
    std::fs::create_dir_all(&prose_dir)
        .with_context(|| format!("{}: cannot create folder", prose_dir.display()))?;
    let mut files = Vec::new();
    let mut written = BTreeSet::new();
    let width = paragraphs.len().to_string().len().max(3);
    for (i, p) in paragraphs.iter().enumerate() {
        let name = format!("synth-{:0width$}.txt", i + 1, width = width);
        let path = prose_dir.join(&name);
        write_atomic(&path, format!("{p}\n").as_bytes())?;
        written.insert(name);
        files.push(path);
    }
    remove_stale(&prose_dir, &written)?;

    let mut per_category = BTreeMap::new();
    let mut per_id: BTreeMap<(String, &str), usize> = BTreeMap::new();
    let mut wtr = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    wtr.write_record(["id", "question", "answer", "category"])?;
    for r in &rows {
        *per_category.entry(r.category.clone()).or_insert(0usize) += 1;
        let kind = match r.origin {
            Origin::Template => "synth",
            Origin::Free => "free",
        };
        let n = per_id.entry((r.category.clone(), kind)).or_insert(0);
        *n += 1;
        let id = format!("{}-{kind}-{:03}", r.category, n);
        wtr.write_record([id.as_str(), &r.question, &r.answer, &r.category])?;
    }
    let csv_bytes = wtr
        .into_inner()
        .map_err(|e| anyhow!("cannot build qa-synth.csv: {e}"))?;
    let csv_path = opts.out.join("qa-synth.csv");
    write_atomic(&csv_path, &csv_bytes)?;
    files.push(csv_path);

    Ok(SynthReport {
        prose_paragraphs: paragraphs.len(),
        distinct_prose_templates: distinct,
        qa_pairs: rows.len(),
        per_category,
        free_form_pairs: rows.iter().filter(|r| r.origin == Origin::Free).count(),
        absent,
        files,
    })
}

fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read file", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
}

// ------------------------------------------------------------------ templates

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProseFile {
    #[serde(default)]
    settings: ProseSettings,
    #[serde(default)]
    paragraph: Vec<ParagraphT>,
    /// voice -> topic -> sentence templates.
    #[serde(default)]
    sentences: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProseSettings {
    #[serde(default)]
    composed: usize,
    #[serde(default = "default_min_sentences")]
    min_sentences: usize,
    #[serde(default = "default_max_sentences")]
    max_sentences: usize,
}

impl Default for ProseSettings {
    fn default() -> Self {
        ProseSettings {
            composed: 0,
            min_sentences: default_min_sentences(),
            max_sentences: default_max_sentences(),
        }
    }
}

fn default_min_sentences() -> usize {
    3
}

fn default_max_sentences() -> usize {
    5
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParagraphT {
    text: String,
    each: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QaFile {
    #[serde(default)]
    template: Vec<QaT>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QaT {
    category: String,
    answer: String,
    questions: Vec<String>,
    each: Option<String>,
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Var(String),
}

/// Split a template into text and `{placeholder}` pieces.
fn parse_template(t: &str) -> std::result::Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) if ch.is_ascii_alphanumeric() || ch == '_' => name.push(ch),
                        Some(ch) => {
                            return Err(format!(
                                "has an invalid character '{ch}' in placeholder {{{name}"
                            ))
                        }
                        None => return Err(format!("has an unclosed placeholder {{{name}")),
                    }
                }
                if name.is_empty() {
                    return Err("has an empty placeholder {}".to_string());
                }
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Var(name));
            }
            '}' => return Err("has a stray '}' (write }} for a literal brace)".to_string()),
            _ => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

// ------------------------------------------------------------------ placeholder values

/// The lists a template may iterate with `each`: per list, each item placeholder and the facts
/// field it comes from.
const GROUPS: &[(&str, &[(&str, &str)])] = &[
    ("languages", &[("language", "")]),
    ("skills", &[("skill", "")]),
    ("interests", &[("interest", "")]),
    (
        "work_history",
        &[
            ("job_employer", "employer"),
            ("job_role", "role"),
            ("a_job_role", "role"),
            ("job_from", "from"),
            ("job_to", "to"),
            ("job_summary", "summary"),
        ],
    ),
    (
        "education",
        &[
            ("school", "school"),
            ("degree", "degree"),
            ("field", "field"),
            ("edu_from", "from"),
            ("edu_to", "to"),
        ],
    ),
    (
        "projects",
        &[
            ("project", "name"),
            ("project_summary", "summary"),
            ("project_year", "year"),
        ],
    ),
];

fn group_of(var: &str) -> Option<&'static str> {
    GROUPS
        .iter()
        .find(|(_, vars)| vars.iter().any(|(v, _)| *v == var))
        .map(|(g, _)| *g)
}

/// The facts field behind an item placeholder, as a report names it (`work_history.summary`).
fn item_field(group: &str, var: &str) -> String {
    let field = GROUPS
        .iter()
        .find(|(g, _)| *g == group)
        .and_then(|(_, vars)| vars.iter().find(|(v, _)| *v == var))
        .map(|(_, f)| *f)
        .unwrap_or("");
    if field.is_empty() {
        group.to_string()
    } else {
        format!("{group}.{field}")
    }
}

/// One item of a list: its placeholders that have a value.
type Item = BTreeMap<&'static str, String>;

/// All placeholder values derived from the facts.
struct Vars {
    /// name -> value, or the facts field that is absent.
    global: BTreeMap<String, std::result::Result<String, String>>,
    /// list name -> items.
    groups: BTreeMap<&'static str, Vec<Item>>,
}

fn join_list(items: &[String]) -> Option<String> {
    match items {
        [] => None,
        [one] => Some(one.clone()),
        [init @ .., last] => Some(format!("{} and {}", init.join(", "), last)),
    }
}

fn with_article(s: &str) -> String {
    let vowel = s
        .chars()
        .next()
        .map(|c| "aeiouAEIOU".contains(c))
        .unwrap_or(false);
    format!("{} {}", if vowel { "an" } else { "a" }, s)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The item's placeholders that have a value; `fields` pairs a placeholder with its value.
fn item(fields: &[(&'static str, Option<String>)]) -> Item {
    fields
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
        .collect()
}

impl Vars {
    fn new(f: &Facts) -> Vars {
        let mut g: BTreeMap<String, std::result::Result<String, String>> = BTreeMap::new();
        let mut set = |k: &str, v: Option<String>, field: &str| {
            g.insert(k.to_string(), v.ok_or_else(|| field.to_string()));
        };
        let s = |v: &Option<Scalar>| v.as_ref().map(|x| x.to_string());
        let name = f.name.clone().filter(|n| !n.trim().is_empty());
        set("name", name.clone(), "name");
        let words: Vec<&str> = name.as_deref().unwrap_or("").split_whitespace().collect();
        set("first_name", words.first().map(|w| w.to_string()), "name");
        set("last_name", words.last().map(|w| w.to_string()), "name");
        let c = &f.contact;
        set("email", c.email.clone(), "contact.email");
        set("phone", c.phone.clone(), "contact.phone");
        set("website", c.website.clone(), "contact.website");
        set(
            "preferred_contact",
            c.preferred.clone(),
            "contact.preferred",
        );
        set("birth_month", f.birth.month.clone(), "birth.month");
        set("birth_year", s(&f.birth.year), "birth.year");
        set("home_city", f.home_city.clone(), "home_city");
        let cur = &f.current;
        set("employer", cur.employer.clone(), "current.employer");
        set("role", cur.role.clone(), "current.role");
        set(
            "a_role",
            cur.role.as_deref().map(with_article),
            "current.role",
        );
        set("start", s(&cur.start), "current.start");
        set(
            "employer_summary",
            cur.employer_summary.clone(),
            "current.employer_summary",
        );
        set("focus", cur.focus.clone(), "current.focus");
        set("languages", join_list(&f.languages), "languages");
        set("skills", join_list(&f.skills), "skills");
        let top = &f.skills[..f.skills.len().min(3)];
        set("top_skills", join_list(top), "skills");
        set("top_skill", f.skills.first().cloned(), "skills");
        set("interests", join_list(&f.interests), "interests");

        // A list-wide placeholder needs the field in every item, so no item reads oddly.
        fn all<T>(items: &[T], get: impl Fn(&T) -> Option<String>) -> Option<String> {
            let v: Option<Vec<String>> = items.iter().map(get).collect();
            v.and_then(|v| join_list(&v))
        }
        let wh = &f.work_history;
        set(
            "past_employers",
            all(wh, |j| j.employer.clone()),
            "work_history.employer",
        );
        let (prev, first_job) = (wh.last(), wh.first());
        set(
            "prev_employer",
            prev.and_then(|j| j.employer.clone()),
            "work_history.employer",
        );
        set(
            "prev_role",
            prev.and_then(|j| j.role.clone()),
            "work_history.role",
        );
        set(
            "a_prev_role",
            prev.and_then(|j| j.role.as_deref().map(with_article)),
            "work_history.role",
        );
        set(
            "first_job_employer",
            first_job.and_then(|j| j.employer.clone()),
            "work_history.employer",
        );
        set(
            "first_job_role",
            first_job.and_then(|j| j.role.clone()),
            "work_history.role",
        );
        set(
            "a_first_job_role",
            first_job.and_then(|j| j.role.as_deref().map(with_article)),
            "work_history.role",
        );

        let ed = &f.education;
        set("schools", all(ed, |e| e.school.clone()), "education.school");
        set("fields", all(ed, |e| e.field.clone()), "education.field");
        let last_edu = ed.last();
        set(
            "last_school",
            last_edu.and_then(|e| e.school.clone()),
            "education.school",
        );
        set(
            "last_degree",
            last_edu.and_then(|e| e.degree.clone()),
            "education.degree",
        );
        set(
            "last_field",
            last_edu.and_then(|e| e.field.clone()),
            "education.field",
        );
        set(
            "last_edu_to",
            last_edu.and_then(|e| s(&e.to)),
            "education.to",
        );

        let pr = &f.projects;
        set("projects", all(pr, |p| p.name.clone()), "projects.name");
        let last_p = pr.last();
        set(
            "last_project",
            last_p.and_then(|p| p.name.clone()),
            "projects.name",
        );
        set(
            "last_project_summary",
            last_p.and_then(|p| p.summary.clone()),
            "projects.summary",
        );
        set(
            "last_project_year",
            last_p.and_then(|p| s(&p.year)),
            "projects.year",
        );

        // User placeholders never replace built-in ones.
        for (k, v) in &f.extra {
            g.entry(k.clone()).or_insert_with(|| Ok(v.clone()));
        }

        let simple = |key: &'static str, items: &[String]| {
            items
                .iter()
                .map(|s| BTreeMap::from([(key, s.clone())]))
                .collect::<Vec<_>>()
        };
        let mut groups = BTreeMap::new();
        groups.insert("languages", simple("language", &f.languages));
        groups.insert("skills", simple("skill", &f.skills));
        groups.insert("interests", simple("interest", &f.interests));
        groups.insert(
            "work_history",
            wh.iter()
                .map(|j| {
                    item(&[
                        ("job_employer", j.employer.clone()),
                        ("job_role", j.role.clone()),
                        ("a_job_role", j.role.as_deref().map(with_article)),
                        ("job_from", s(&j.from)),
                        ("job_to", s(&j.to)),
                        ("job_summary", j.summary.clone()),
                    ])
                })
                .collect(),
        );
        groups.insert(
            "education",
            ed.iter()
                .map(|e| {
                    item(&[
                        ("school", e.school.clone()),
                        ("degree", e.degree.clone()),
                        ("field", e.field.clone()),
                        ("edu_from", s(&e.from)),
                        ("edu_to", s(&e.to)),
                    ])
                })
                .collect(),
        );
        groups.insert(
            "projects",
            pr.iter()
                .map(|p| {
                    item(&[
                        ("project", p.name.clone()),
                        ("project_summary", p.summary.clone()),
                        ("project_year", s(&p.year)),
                    ])
                })
                .collect(),
        );
        Vars { global: g, groups }
    }

    /// The placeholder name without a leading capital (`Skill` -> `skill`),
    /// and whether the value should be capitalised.
    fn base(name: &str) -> (String, bool) {
        let mut c = name.chars();
        match c.next() {
            Some(f) if f.is_ascii_uppercase() => {
                (f.to_ascii_lowercase().to_string() + c.as_str(), true)
            }
            _ => (name.to_string(), false),
        }
    }

    fn is_known(&self, name: &str) -> bool {
        let (b, _) = Self::base(name);
        self.global.contains_key(&b) || group_of(&b).is_some()
    }
}

/// A template checked against the known placeholders.
struct Compiled {
    pieces: Vec<Piece>,
    /// Lists whose item placeholders the template uses.
    groups: BTreeSet<&'static str>,
    /// Facts fields the template needs that the facts file does not have.
    absent: BTreeSet<String>,
}

/// Parse and check one template; `what` names it in errors
/// (e.g. "data/templates/qa.toml: category 'contact' template 3 (answer)").
fn compile(t: &str, vars: &Vars, what: &str) -> Result<Compiled> {
    let pieces = parse_template(t).map_err(|e| anyhow!("{what} {e}"))?;
    let mut groups = BTreeSet::new();
    let mut absent = BTreeSet::new();
    for p in &pieces {
        if let Piece::Var(name) = p {
            if !vars.is_known(name) {
                bail!("{what} uses unknown placeholder {{{name}}}");
            }
            let (b, _) = Vars::base(name);
            if let Some(Err(field)) = vars.global.get(&b) {
                absent.insert(field.clone());
            }
            if let Some(g) = group_of(&b) {
                groups.insert(g);
            }
        }
    }
    Ok(Compiled {
        pieces,
        groups,
        absent,
    })
}

fn check_each(each: &Option<String>, what: &str) -> Result<Option<&'static str>> {
    match each {
        None => Ok(None),
        Some(e) => match GROUPS.iter().find(|(g, _)| g == e) {
            Some((g, _)) => Ok(Some(*g)),
            None => {
                let names: Vec<&str> = GROUPS.iter().map(|(g, _)| *g).collect();
                bail!(
                    "{what} has each = \"{e}\", which is not a list (use one of: {})",
                    names.join(", ")
                )
            }
        },
    }
}

/// Fill a compiled template; `items` holds the chosen item of each list used. `Err` names the
/// facts field an item lacks (`work_history.summary`).
fn render(
    c: &Compiled,
    vars: &Vars,
    items: &BTreeMap<&str, usize>,
) -> std::result::Result<String, String> {
    let mut out = String::new();
    for p in &c.pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(name) => {
                let (b, cap) = Vars::base(name);
                let value = match group_of(&b) {
                    Some(g) => vars.groups[g]
                        .get(items.get(g).copied().unwrap_or(0))
                        .and_then(|item| item.get(b.as_str()))
                        .cloned()
                        .ok_or_else(|| item_field(g, &b))?,
                    None => vars
                        .global
                        .get(&b)
                        .cloned()
                        .unwrap_or_else(|| Err(b.clone()))?,
                };
                if cap {
                    out.push_str(&capitalize(&value));
                } else {
                    out.push_str(&value);
                }
            }
        }
    }
    Ok(out)
}

/// Pick a random item for every list in `groups`; `None` when some needed
/// list is empty.
fn pick_items(
    groups: &BTreeSet<&'static str>,
    vars: &Vars,
    rng: &mut Rng,
) -> Option<BTreeMap<&'static str, usize>> {
    let mut items = BTreeMap::new();
    for g in groups {
        let n = vars.groups[g].len();
        if n == 0 {
            return None;
        }
        items.insert(*g, rng.below(n));
    }
    Some(items)
}

/// The facts fields that were absent, per category (`prose` for paragraphs).
type Absent = BTreeMap<String, BTreeSet<String>>;

fn note_absent(absent: &mut Absent, category: &str, fields: impl IntoIterator<Item = String>) {
    absent
        .entry(category.to_string())
        .or_default()
        .extend(fields);
}

/// The empty list behind each group, as an absent field.
fn empty_groups(c: &Compiled, vars: &Vars) -> Vec<String> {
    c.groups
        .iter()
        .filter(|g| vars.groups[*g].is_empty())
        .map(|g| g.to_string())
        .collect()
}

// ------------------------------------------------------------------ prose

/// One topic of composed sentences: its name and its compiled sentences.
type Topic<'a> = (&'a String, Vec<Compiled>);

fn gen_prose(
    t: &ProseFile,
    file: &Path,
    vars: &Vars,
    rng: &mut Rng,
    absent: &mut Absent,
) -> Result<(Vec<String>, usize)> {
    let file = file.display().to_string();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut distinct = 0;
    for (i, p) in t.paragraph.iter().enumerate() {
        let what = format!("{file}: paragraph {}", i + 1);
        let each = check_each(&p.each, &what)?;
        let c = compile(&p.text, vars, &what)?;
        if !c.absent.is_empty() {
            note_absent(absent, PROSE, c.absent.iter().cloned());
            continue;
        }
        note_absent(absent, PROSE, empty_groups(&c, vars));
        let runs = match each {
            Some(g) => vars.groups[g].len(),
            None => 1,
        };
        let mut produced = false;
        for k in 0..runs {
            let mut others = c.groups.clone();
            if let Some(g) = each {
                others.remove(g);
            }
            let Some(mut items) = pick_items(&others, vars, rng) else {
                continue;
            };
            if let Some(g) = each {
                items.insert(g, k);
            }
            match render(&c, vars, &items) {
                Ok(text) => {
                    if seen.insert(text.clone()) {
                        out.push(text);
                        produced = true;
                    }
                }
                Err(field) => note_absent(absent, PROSE, [field]),
            }
        }
        if produced {
            distinct += 1;
        }
    }

    // Composed paragraphs: intro sentence + sentences from other topics.
    // voice -> [(topic, sentences)]; sentences whose facts are absent, empty topics and
    // empty voices dropped.
    let mut voices: Vec<Vec<Topic>> = Vec::new();
    for (voice, topics) in &t.sentences {
        let mut ts = Vec::new();
        for (topic, sents) in topics {
            let mut cs = Vec::new();
            for (i, s) in sents.iter().enumerate() {
                let what = format!("{file}: sentences.{voice}.{topic} item {}", i + 1);
                let c = compile(s, vars, &what)?;
                let empty = empty_groups(&c, vars);
                if c.absent.is_empty() && empty.is_empty() {
                    cs.push(c);
                } else {
                    note_absent(absent, PROSE, c.absent.into_iter().chain(empty));
                }
            }
            if !cs.is_empty() {
                ts.push((topic, cs));
            }
        }
        if !ts.is_empty() {
            voices.push(ts);
        }
    }
    let s = &t.settings;
    if s.composed > 0 && (s.min_sentences == 0 || s.min_sentences > s.max_sentences) {
        bail!(
            "{file}: settings.min_sentences ({}) must be at least 1 and at most settings.max_sentences ({})",
            s.min_sentences,
            s.max_sentences
        );
    }
    let mut made = 0;
    let mut tries = 0;
    while !voices.is_empty() && made < s.composed && tries < s.composed * 20 {
        tries += 1;
        let topics = &voices[rng.below(voices.len())];
        let mut order: Vec<usize> = (0..topics.len()).collect();
        let intro = topics.iter().position(|(name, _)| name.as_str() == "intro");
        if let Some(i) = intro {
            order.retain(|&k| k != i);
        }
        rng.shuffle(&mut order);
        let want = s.min_sentences + rng.below(s.max_sentences - s.min_sentences + 1);
        let mut chosen: Vec<usize> = intro.into_iter().collect();
        chosen.extend(order.into_iter().take(want.saturating_sub(chosen.len())));
        let mut sentences = Vec::new();
        for k in chosen {
            let cs = &topics[k].1;
            let c = &cs[rng.below(cs.len())];
            if let Some(items) = pick_items(&c.groups, vars, rng) {
                match render(c, vars, &items) {
                    Ok(text) => sentences.push(text),
                    Err(field) => note_absent(absent, PROSE, [field]),
                }
            }
        }
        if sentences.is_empty() {
            continue;
        }
        let text = sentences.join(" ");
        if seen.insert(text.clone()) {
            out.push(text);
            made += 1;
        }
    }
    rng.shuffle(&mut out);
    Ok((out, distinct))
}

/// The report's category for paragraphs.
const PROSE: &str = "prose";

/// Paragraphs made of the free-form answers that are sentences: each alone, and in small
/// shuffled groups, so the model also reads the facts as running text.
fn free_prose(facts: &[FreeFact], rng: &mut Rng) -> Vec<String> {
    let sentences: Vec<String> = facts
        .iter()
        .map(|f| f.answer.trim().to_string())
        .filter(|a| is_sentence(a))
        .collect();
    let mut out = sentences.clone();
    for _ in 0..2 {
        let mut order = sentences.clone();
        rng.shuffle(&mut order);
        out.extend(order.chunks(3).filter(|c| c.len() > 1).map(|c| c.join(" ")));
    }
    let mut seen = BTreeSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// Whether an answer reads as a sentence (and so belongs in prose) rather than a bare value
/// such as a name or "Biscuit.".
fn is_sentence(answer: &str) -> bool {
    answer.ends_with(['.', '!', '?']) && answer.split_whitespace().count() >= 3
}

// ------------------------------------------------------------------ Q&A

/// Where a synthetic pair comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A template of `qa.toml` filled with the facts.
    Template,
    /// A `[[fact]]` table, with its questions paraphrased.
    Free,
}

struct QaRow {
    question: String,
    answer: String,
    category: String,
    origin: Origin,
}

/// A question with case, punctuation and spacing removed: two questions that differ only in
/// those are the same question.
pub(crate) fn normalize(q: &str) -> String {
    q.chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Paraphrases made of each free-form question (besides the question itself).
pub const PARAPHRASES_PER_QUESTION: usize = 12;

/// The category of free-form facts that name none.
pub const FREE_CATEGORY: &str = "fact";

/// Q&A from `[[fact]]` tables: every question as written, then its paraphrases.
fn gen_free(
    facts: &[FreeFact],
    facts_file: &Path,
    seed: u64,
    seen: &mut BTreeSet<String>,
) -> Result<Vec<QaRow>> {
    let mut rows = Vec::new();
    for (i, f) in facts.iter().enumerate() {
        let category = f.category.as_deref().unwrap_or(FREE_CATEGORY);
        check_category(category, || {
            format!("{}: [[fact]] number {}", facts_file.display(), i + 1)
        })?;
        for (qi, q) in f.questions.iter().enumerate() {
            let q = q.trim();
            if q.is_empty() {
                continue;
            }
            let forms = std::iter::once(q.to_string()).chain(paraphrases(
                q,
                seed ^ ((i as u64) << 32 | qi as u64),
                PARAPHRASES_PER_QUESTION,
            ));
            for question in forms {
                if seen.insert(normalize(&question)) {
                    rows.push(QaRow {
                        question,
                        answer: f.answer.trim().to_string(),
                        category: category.to_string(),
                        origin: Origin::Free,
                    });
                }
            }
        }
    }
    Ok(rows)
}

fn check_category(cat: &str, what: impl Fn() -> String) -> Result<()> {
    if cat.is_empty()
        || !cat
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        bail!(
            "{} has category '{cat}'; use lowercase letters, digits, '-' or '_'",
            what()
        );
    }
    Ok(())
}

fn gen_qa(
    t: &QaFile,
    file: &Path,
    vars: &Vars,
    seen: &mut BTreeSet<String>,
    absent: &mut Absent,
) -> Result<Vec<QaRow>> {
    let file = file.display().to_string();
    let mut per_cat_index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rows = Vec::new();
    for (ti, qt) in t.template.iter().enumerate() {
        let cat = qt.category.as_str();
        check_category(cat, || format!("{file}: template {}", ti + 1))?;
        let n = per_cat_index.entry(cat).or_insert(0);
        *n += 1;
        let base = format!("{file}: category '{cat}' template {n}");
        if qt.questions.is_empty() {
            bail!("{base} has no questions");
        }
        let each = check_each(&qt.each, &base)?;
        let answer = compile(&qt.answer, vars, &format!("{base} (answer)"))?;
        let mut questions = Vec::new();
        for (qi, q) in qt.questions.iter().enumerate() {
            questions.push(compile(q, vars, &format!("{base} (question {})", qi + 1))?);
        }
        for (c, part) in std::iter::once((&answer, "answer".to_string())).chain(
            questions
                .iter()
                .enumerate()
                .map(|(i, c)| (c, format!("question {}", i + 1))),
        ) {
            if let Some(g) = c.groups.iter().find(|g| Some(**g) != each) {
                let (_, names) = GROUPS.iter().find(|(n, _)| n == g).expect("known group");
                bail!(
                    "{base} ({part}) uses {{{}}}-style placeholders of list '{g}' but does not have each = \"{g}\"",
                    names[0].0
                );
            }
        }
        // A template whose facts are absent is skipped, and the report says which.
        if !answer.absent.is_empty() {
            note_absent(absent, cat, answer.absent.iter().cloned());
            continue;
        }
        if let Some(g) = each.filter(|g| vars.groups[g].is_empty()) {
            note_absent(absent, cat, [g.to_string()]);
            continue;
        }
        let runs = match each {
            Some(g) => vars.groups[g].len(),
            None => 1,
        };
        for k in 0..runs {
            let items: BTreeMap<&str, usize> = each.map(|g| (g, k)).into_iter().collect();
            let a = match render(&answer, vars, &items) {
                Ok(a) => a,
                Err(field) => {
                    note_absent(absent, cat, [field]);
                    continue;
                }
            };
            for q in &questions {
                if !q.absent.is_empty() {
                    note_absent(absent, cat, q.absent.iter().cloned());
                    continue;
                }
                let qtext = match render(q, vars, &items) {
                    Ok(q) => q,
                    Err(field) => {
                        note_absent(absent, cat, [field]);
                        continue;
                    }
                };
                // The first template to ask a question owns it.
                if seen.insert(normalize(&qtext)) {
                    rows.push(QaRow {
                        question: qtext,
                        answer: a.clone(),
                        category: cat.to_string(),
                        origin: Origin::Template,
                    });
                }
            }
        }
    }
    Ok(rows)
}

// ------------------------------------------------------------------ output

/// Remove `synth-NNN.txt` files left by an earlier, larger run.
fn remove_stale(dir: &Path, keep: &BTreeSet<String>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    let mut stale = BTreeSet::new();
    for e in entries {
        let e = e.with_context(|| format!("{}: cannot list", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let numbered = name
            .strip_prefix("synth-")
            .and_then(|r| r.strip_suffix(".txt"))
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
        if numbered && !keep.contains(&name) {
            stale.insert(e.path());
        }
    }
    for p in stale {
        std::fs::remove_file(&p).with_context(|| format!("{}: cannot remove", p.display()))?;
    }
    Ok(())
}

// ------------------------------------------------------------------ tests

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn data_root() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data"))
    }

    fn opts(out: &Path, seed: u64) -> SynthOptions {
        SynthOptions {
            facts: data_root().join("profile/facts.toml"),
            templates: data_root().join("templates"),
            out: out.to_path_buf(),
            seed,
        }
    }

    fn read_all(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut m = BTreeMap::new();
        m.insert(
            "qa-synth.csv".to_string(),
            std::fs::read(dir.join("qa-synth.csv")).unwrap(),
        );
        for e in std::fs::read_dir(dir.join("prose")).unwrap() {
            let e = e.unwrap();
            m.insert(
                format!("prose/{}", e.file_name().to_string_lossy()),
                std::fs::read(e.path()).unwrap(),
            );
        }
        m
    }

    /// (question, answer) rows of a CSV with a header.
    fn csv_rows(path: &Path) -> Vec<(String, String)> {
        let mut r = csv::Reader::from_path(path).unwrap();
        r.records()
            .map(|rec| {
                let rec = rec.unwrap();
                (rec[1].to_string(), rec[2].to_string())
            })
            .collect()
    }

    #[test]
    fn counts_meet_targets() {
        let dir = tempfile::tempdir().unwrap();
        let rep = run(&opts(dir.path(), 1)).unwrap();
        assert!(
            rep.distinct_prose_templates >= 50,
            "{}",
            rep.distinct_prose_templates
        );
        assert!(rep.prose_paragraphs >= rep.distinct_prose_templates);
        assert!(rep.qa_pairs >= 240, "{}", rep.qa_pairs);
        for cat in [
            "contact",
            "work",
            "skills",
            "history",
            "education",
            "projects",
            "interests",
        ] {
            assert!(rep.per_category.get(cat).copied().unwrap_or(0) > 0, "{cat}");
        }
        assert_eq!(rep.per_category.values().sum::<usize>(), rep.qa_pairs);
        assert_eq!(rep.files.len(), rep.prose_paragraphs + 1);
        for f in &rep.files {
            assert!(f.is_file(), "{}", f.display());
        }
        // The CSV parses, has the expected header and unique ids/questions.
        let mut r = csv::Reader::from_path(dir.path().join("qa-synth.csv")).unwrap();
        assert_eq!(
            r.headers().unwrap(),
            vec!["id", "question", "answer", "category"]
        );
        let mut ids = BTreeSet::new();
        let mut qs = BTreeSet::new();
        let mut n = 0;
        for rec in r.records() {
            let rec = rec.unwrap();
            assert!(rec[0].starts_with(&format!("{}-", &rec[3])));
            assert!(ids.insert(rec[0].to_string()));
            assert!(qs.insert(normalize(&rec[1])), "duplicate {}", &rec[1]);
            assert!(rec[1].is_ascii() && rec[2].is_ascii());
            assert!(!rec[2].contains('{'), "unfilled {}", &rec[2]);
            n += 1;
        }
        assert_eq!(n, rep.qa_pairs);
    }

    #[test]
    fn same_seed_same_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        run(&opts(a.path(), 42)).unwrap();
        run(&opts(b.path(), 42)).unwrap();
        assert_eq!(read_all(a.path()), read_all(b.path()));
        // A second run into the same folder gives the same files, no leftovers.
        run(&opts(a.path(), 42)).unwrap();
        assert_eq!(read_all(a.path()), read_all(b.path()));
    }

    #[test]
    fn different_seed_changes_output() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        run(&opts(a.path(), 1)).unwrap();
        run(&opts(b.path(), 2)).unwrap();
        let (fa, fb) = (read_all(a.path()), read_all(b.path()));
        assert_ne!(fa["qa-synth.csv"], fb["qa-synth.csv"]);
        assert_ne!(fa, fb);
    }

    #[test]
    fn unknown_placeholder_names_file_and_placeholder() {
        let t = tempfile::tempdir().unwrap();
        let src = data_root().join("templates");
        std::fs::copy(src.join("prose.toml"), t.path().join("prose.toml")).unwrap();
        let mut qa = std::fs::read_to_string(src.join("qa.toml")).unwrap();
        qa.push_str(
            "\n[[template]]\ncategory = \"contact\"\nanswer = \"My fax is {fax}.\"\nquestions = [\"What is your fax?\"]\n",
        );
        std::fs::write(t.path().join("qa.toml"), qa).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut o = opts(out.path(), 1);
        o.templates = t.path().to_path_buf();
        let err = run(&o).unwrap_err().to_string();
        assert!(err.contains("qa.toml"), "{err}");
        assert!(err.contains("{fax}"), "{err}");
        assert!(err.contains("category 'contact'"), "{err}");
        assert!(!out.path().join("qa-synth.csv").exists());

        // Same for prose, and for a list placeholder without `each`.
        std::fs::write(
            t.path().join("prose.toml"),
            "[[paragraph]]\ntext = \"{name} likes {colour}.\"\n",
        )
        .unwrap();
        let err = run(&o).unwrap_err().to_string();
        assert!(
            err.contains("prose.toml") && err.contains("{colour}"),
            "{err}"
        );
        std::fs::copy(src.join("prose.toml"), t.path().join("prose.toml")).unwrap();
        std::fs::write(
            t.path().join("qa.toml"),
            "[[template]]\ncategory = \"skills\"\nanswer = \"Yes.\"\nquestions = [\"Do you know {skill}?\"]\n",
        )
        .unwrap();
        let err = run(&o).unwrap_err().to_string();
        assert!(err.contains("qa.toml") && err.contains("each"), "{err}");
    }

    #[test]
    fn bad_facts_name_file_and_field() {
        let t = tempfile::tempdir().unwrap();
        let facts = std::fs::read_to_string(data_root().join("profile/facts.toml")).unwrap();
        let facts = facts.replace("email = ", "mail = ");
        let path = t.path().join("facts.toml");
        std::fs::write(&path, facts).unwrap();
        let mut o = opts(t.path(), 1);
        o.facts = path;
        let err = run(&o).unwrap_err().to_string();
        assert!(err.contains("facts.toml") && err.contains("email"), "{err}");
    }

    #[test]
    fn template_parser() {
        assert_eq!(
            parse_template("a {b} {{c}}").unwrap(),
            vec![
                Piece::Text("a ".into()),
                Piece::Var("b".into()),
                Piece::Text(" {c}".into())
            ]
        );
        assert!(parse_template("a {b").is_err());
        assert!(parse_template("a } b").is_err());
        assert!(parse_template("a {b c}").is_err());
        assert_eq!(
            join_list(&["x".into(), "y".into(), "z".into()]).unwrap(),
            "x, y and z"
        );
        assert_eq!(with_article("engineer"), "an engineer");
    }

    /// Synthetic questions must agree with the hand-written Q&A and must not
    /// leak the held-out questions into training.
    #[test]
    fn consistent_with_hand_written_qa() {
        let dir = tempfile::tempdir().unwrap();
        run(&opts(dir.path(), 3)).unwrap();
        let synth = csv_rows(&dir.path().join("qa-synth.csv"));
        let train = csv_rows(&data_root().join("profile/qa.csv"));
        let heldout = csv_rows(&data_root().join("profile/qa-heldout.csv"));
        let train_map: BTreeMap<String, String> = train
            .iter()
            .map(|(q, a)| (normalize(q), a.clone()))
            .collect();
        let held: BTreeSet<String> = heldout.iter().map(|(q, _)| normalize(q)).collect();
        for (q, a) in &synth {
            if let Some(ta) = train_map.get(&normalize(q)) {
                assert_eq!(ta, a, "qa.csv and synth disagree on {q:?}");
            }
            assert!(
                !held.contains(&normalize(q)),
                "held-out question leaked: {q:?}"
            );
        }
        // Every held-out answer is also a training answer.
        let train_answers: BTreeSet<&String> = train.iter().map(|(_, a)| a).collect();
        for (q, a) in &heldout {
            assert!(
                train_answers.contains(a),
                "held-out {q:?} has new answer {a:?}"
            );
            assert!(
                !train_map.contains_key(&normalize(q)),
                "held-out {q:?} is in qa.csv"
            );
        }
        // And the synthetic answers reuse the training answers for the same facts.
        let synth_answers: BTreeSet<&String> = synth.iter().map(|(_, a)| a).collect();
        let covered = train_answers
            .iter()
            .filter(|a| synth_answers.contains(*a))
            .count();
        assert!(
            covered * 10 >= train_answers.len() * 9,
            "{covered}/{}",
            train_answers.len()
        );
    }
}
