//! `badge data synth`: turn `facts.toml` into extra training data.
//!
//! The generator reads the owner's facts (`data/profile/facts.toml`) and two
//! template files (`data/templates/prose.toml`, `data/templates/qa.toml`) and
//! writes, under the output folder:
//!
//! * `prose/synth-NNN.txt`: one paragraph about the owner per file;
//! * `qa-synth.csv`: `id,question,answer,category` rows.
//!
//! All wording lives in the template files, so users can add phrasings without
//! touching code. Templates use `{placeholder}` names (see the header of
//! `qa.toml`); `{{` and `}}` are literal braces. A template with
//! `each = "<list>"` is repeated once per item of that list.
//!
//! Output is deterministic: the same facts, templates and seed give
//! byte-identical files (a small SplitMix64 generator is used, and only
//! ordered maps reach the output). Files are written atomically.

use crate::util::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

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
    pub per_category: std::collections::BTreeMap<String, usize>,
    /// Every file written, CSV last.
    pub files: Vec<std::path::PathBuf>,
}

/// Generate prose and Q&A from the facts and templates in `opts`.
pub fn run(opts: &SynthOptions) -> anyhow::Result<SynthReport> {
    let facts = load_facts(&opts.facts)?;
    let vars = Vars::new(&facts, &opts.facts);
    let prose_path = opts.templates.join("prose.toml");
    let qa_path = opts.templates.join("qa.toml");
    let prose_t: ProseFile = load_toml(&prose_path)?;
    let qa_t: QaFile = load_toml(&qa_path)?;

    let mut rng = Rng::new(opts.seed);
    let (paragraphs, distinct) = gen_prose(&prose_t, &prose_path, &vars, &mut rng)?;
    let rows = gen_qa(&qa_t, &qa_path, &vars, &mut rng)?;

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
    let mut wtr = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    wtr.write_record(["id", "question", "answer", "category"])?;
    for r in &rows {
        let n = per_category.entry(r.category.clone()).or_insert(0usize);
        *n += 1;
        let id = format!("{}-synth-{:03}", r.category, n);
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
        files,
    })
}

// ------------------------------------------------------------------ facts

/// A year or any short value written either as a number or as a string.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Scalar {
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

#[derive(Deserialize)]
struct Facts {
    name: String,
    home_city: String,
    #[serde(default)]
    languages: Vec<String>,
    #[serde(default)]
    skills: Vec<String>,
    #[serde(default)]
    interests: Vec<String>,
    contact: Contact,
    birth: Birth,
    current: Current,
    #[serde(default)]
    work_history: Vec<Job>,
    #[serde(default)]
    education: Vec<Education>,
    #[serde(default)]
    projects: Vec<Project>,
    /// User-defined placeholders.
    #[serde(default)]
    extra: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Contact {
    email: String,
    phone: String,
    website: String,
    preferred: Option<String>,
}

#[derive(Deserialize)]
struct Birth {
    month: String,
    year: Scalar,
}

#[derive(Deserialize)]
struct Current {
    employer: String,
    role: String,
    start: Scalar,
    employer_summary: Option<String>,
    focus: Option<String>,
}

#[derive(Deserialize)]
struct Job {
    employer: String,
    role: String,
    from: Scalar,
    to: Scalar,
    summary: String,
}

#[derive(Deserialize)]
struct Education {
    school: String,
    degree: String,
    field: String,
    from: Scalar,
    to: Scalar,
}

#[derive(Deserialize)]
struct Project {
    name: String,
    summary: String,
    year: Scalar,
}

fn load_facts(path: &Path) -> Result<Facts> {
    load_toml(path)
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

/// The lists a template may iterate with `each`, and the placeholders of one item.
const GROUPS: &[(&str, &[&str])] = &[
    ("languages", &["language"]),
    ("skills", &["skill"]),
    ("interests", &["interest"]),
    (
        "work_history",
        &[
            "job_employer",
            "job_role",
            "a_job_role",
            "job_from",
            "job_to",
            "job_summary",
        ],
    ),
    (
        "education",
        &["school", "degree", "field", "edu_from", "edu_to"],
    ),
    ("projects", &["project", "project_summary", "project_year"]),
];

fn group_of(var: &str) -> Option<&'static str> {
    GROUPS
        .iter()
        .find(|(_, vars)| vars.contains(&var))
        .map(|(g, _)| *g)
}

/// All placeholder values derived from the facts.
struct Vars {
    facts_file: String,
    /// name -> value, or why it is missing (the facts field to fill in).
    global: BTreeMap<String, std::result::Result<String, String>>,
    /// list name -> items, each item a map of its placeholders.
    groups: BTreeMap<&'static str, Vec<BTreeMap<&'static str, String>>>,
}

fn join_list(items: &[String]) -> std::result::Result<String, String> {
    match items {
        [] => Err(String::new()),
        [one] => Ok(one.clone()),
        [init @ .., last] => Ok(format!("{} and {}", init.join(", "), last)),
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

impl Vars {
    fn new(f: &Facts, facts_path: &Path) -> Vars {
        let mut g: BTreeMap<String, std::result::Result<String, String>> = BTreeMap::new();
        let mut set = |k: &str, v: std::result::Result<String, String>| {
            g.insert(k.to_string(), v);
        };
        let ok = |s: &str| Ok(s.to_string());
        let list = |items: &[String], field: &str| {
            join_list(items).map_err(|_| format!("needs at least one item in `{field}`"))
        };
        let first = |v: Option<&String>, field: &str| {
            v.cloned()
                .ok_or_else(|| format!("needs at least one item in `{field}`"))
        };
        let opt = |v: &Option<String>, field: &str| {
            v.clone()
                .ok_or_else(|| format!("needs the field `{field}`"))
        };

        set("name", ok(&f.name));
        let mut words = f.name.split_whitespace();
        set("first_name", ok(words.next().unwrap_or(&f.name)));
        set(
            "last_name",
            ok(f.name.split_whitespace().last().unwrap_or(&f.name)),
        );
        set("email", ok(&f.contact.email));
        set("phone", ok(&f.contact.phone));
        set("website", ok(&f.contact.website));
        set(
            "preferred_contact",
            opt(&f.contact.preferred, "contact.preferred"),
        );
        set("birth_month", ok(&f.birth.month));
        set("birth_year", Ok(f.birth.year.to_string()));
        set("home_city", ok(&f.home_city));
        set("employer", ok(&f.current.employer));
        set("role", ok(&f.current.role));
        set("a_role", Ok(with_article(&f.current.role)));
        set("start", Ok(f.current.start.to_string()));
        set(
            "employer_summary",
            opt(&f.current.employer_summary, "current.employer_summary"),
        );
        set("focus", opt(&f.current.focus, "current.focus"));
        set("languages", list(&f.languages, "languages"));
        set("skills", list(&f.skills, "skills"));
        set(
            "top_skills",
            list(&f.skills[..f.skills.len().min(3)], "skills"),
        );
        set("top_skill", first(f.skills.first(), "skills"));
        set("interests", list(&f.interests, "interests"));

        let employers: Vec<String> = f.work_history.iter().map(|j| j.employer.clone()).collect();
        set("past_employers", list(&employers, "work_history"));
        let prev = f.work_history.last();
        let first_job = f.work_history.first();
        let need_job = || "needs at least one item in `work_history`".to_string();
        set(
            "prev_employer",
            prev.map(|j| j.employer.clone()).ok_or_else(need_job),
        );
        set(
            "prev_role",
            prev.map(|j| j.role.clone()).ok_or_else(need_job),
        );
        set(
            "a_prev_role",
            prev.map(|j| with_article(&j.role)).ok_or_else(need_job),
        );
        set(
            "first_job_employer",
            first_job.map(|j| j.employer.clone()).ok_or_else(need_job),
        );
        set(
            "first_job_role",
            first_job.map(|j| j.role.clone()).ok_or_else(need_job),
        );
        set(
            "a_first_job_role",
            first_job
                .map(|j| with_article(&j.role))
                .ok_or_else(need_job),
        );

        let schools: Vec<String> = f.education.iter().map(|e| e.school.clone()).collect();
        let fields: Vec<String> = f.education.iter().map(|e| e.field.clone()).collect();
        set("schools", list(&schools, "education"));
        set("fields", list(&fields, "education"));
        let last_edu = f.education.last();
        let need_edu = || "needs at least one item in `education`".to_string();
        set(
            "last_school",
            last_edu.map(|e| e.school.clone()).ok_or_else(need_edu),
        );
        set(
            "last_degree",
            last_edu.map(|e| e.degree.clone()).ok_or_else(need_edu),
        );
        set(
            "last_field",
            last_edu.map(|e| e.field.clone()).ok_or_else(need_edu),
        );
        set(
            "last_edu_to",
            last_edu.map(|e| e.to.to_string()).ok_or_else(need_edu),
        );

        let projects: Vec<String> = f.projects.iter().map(|p| p.name.clone()).collect();
        set("projects", list(&projects, "projects"));
        let last_p = f.projects.last();
        let need_p = || "needs at least one item in `projects`".to_string();
        set(
            "last_project",
            last_p.map(|p| p.name.clone()).ok_or_else(need_p),
        );
        set(
            "last_project_summary",
            last_p.map(|p| p.summary.clone()).ok_or_else(need_p),
        );
        set(
            "last_project_year",
            last_p.map(|p| p.year.to_string()).ok_or_else(need_p),
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
            f.work_history
                .iter()
                .map(|j| {
                    BTreeMap::from([
                        ("job_employer", j.employer.clone()),
                        ("job_role", j.role.clone()),
                        ("a_job_role", with_article(&j.role)),
                        ("job_from", j.from.to_string()),
                        ("job_to", j.to.to_string()),
                        ("job_summary", j.summary.clone()),
                    ])
                })
                .collect(),
        );
        groups.insert(
            "education",
            f.education
                .iter()
                .map(|e| {
                    BTreeMap::from([
                        ("school", e.school.clone()),
                        ("degree", e.degree.clone()),
                        ("field", e.field.clone()),
                        ("edu_from", e.from.to_string()),
                        ("edu_to", e.to.to_string()),
                    ])
                })
                .collect(),
        );
        groups.insert(
            "projects",
            f.projects
                .iter()
                .map(|p| {
                    BTreeMap::from([
                        ("project", p.name.clone()),
                        ("project_summary", p.summary.clone()),
                        ("project_year", p.year.to_string()),
                    ])
                })
                .collect(),
        );
        Vars {
            facts_file: facts_path.display().to_string(),
            global: g,
            groups,
        }
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
}

/// Parse and check one template; `what` names it in errors
/// (e.g. "data/templates/qa.toml: category 'contact' template 3 (answer)").
fn compile(t: &str, vars: &Vars, what: &str) -> Result<Compiled> {
    let pieces = parse_template(t).map_err(|e| anyhow!("{what} {e}"))?;
    let mut groups = BTreeSet::new();
    for p in &pieces {
        if let Piece::Var(name) = p {
            if !vars.is_known(name) {
                bail!("{what} uses unknown placeholder {{{name}}}");
            }
            let (b, _) = Vars::base(name);
            if let Some(Err(why)) = vars.global.get(&b) {
                bail!(
                    "{what} uses placeholder {{{name}}}, which {why} of {}",
                    vars.facts_file
                );
            }
            if let Some(g) = group_of(&b) {
                groups.insert(g);
            }
        }
    }
    Ok(Compiled { pieces, groups })
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

/// Fill a compiled template; `items` holds the chosen item of each list used.
fn render(c: &Compiled, vars: &Vars, items: &BTreeMap<&str, usize>) -> String {
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
                        .unwrap_or_default(),
                    None => vars
                        .global
                        .get(&b)
                        .and_then(|v| v.as_ref().ok())
                        .cloned()
                        .unwrap_or_default(),
                };
                if cap {
                    out.push_str(&capitalize(&value));
                } else {
                    out.push_str(&value);
                }
            }
        }
    }
    out
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

// ------------------------------------------------------------------ prose

/// One topic of composed sentences: its name and its compiled sentences.
type Topic<'a> = (&'a String, Vec<Compiled>);

fn gen_prose(
    t: &ProseFile,
    file: &Path,
    vars: &Vars,
    rng: &mut Rng,
) -> Result<(Vec<String>, usize)> {
    let file = file.display().to_string();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut distinct = 0;
    for (i, p) in t.paragraph.iter().enumerate() {
        let what = format!("{file}: paragraph {}", i + 1);
        let each = check_each(&p.each, &what)?;
        let c = compile(&p.text, vars, &what)?;
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
            let text = render(&c, vars, &items);
            if seen.insert(text.clone()) {
                out.push(text);
                produced = true;
            }
        }
        if produced {
            distinct += 1;
        }
    }

    // Composed paragraphs: intro sentence + sentences from other topics.
    // voice -> [(topic, sentences)], empty topics and voices dropped.
    let mut voices: Vec<Vec<Topic>> = Vec::new();
    for (voice, topics) in &t.sentences {
        let mut ts = Vec::new();
        for (topic, sents) in topics {
            let mut cs = Vec::new();
            for (i, s) in sents.iter().enumerate() {
                let what = format!("{file}: sentences.{voice}.{topic} item {}", i + 1);
                cs.push(compile(s, vars, &what)?);
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
    if s.composed > 0 {
        if voices.is_empty() {
            bail!(
                "{file}: settings.composed is {} but [sentences] is empty",
                s.composed
            );
        }
        if s.min_sentences == 0 || s.min_sentences > s.max_sentences {
            bail!(
                "{file}: settings.min_sentences ({}) must be at least 1 and at most settings.max_sentences ({})",
                s.min_sentences,
                s.max_sentences
            );
        }
    }
    let mut made = 0;
    let mut tries = 0;
    while made < s.composed && tries < s.composed * 20 {
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
                sentences.push(render(c, vars, &items));
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

// ------------------------------------------------------------------ Q&A

struct QaRow {
    question: String,
    answer: String,
    category: String,
}

fn normalize(q: &str) -> String {
    q.chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn gen_qa(t: &QaFile, file: &Path, vars: &Vars, rng: &mut Rng) -> Result<Vec<QaRow>> {
    let file = file.display().to_string();
    let mut per_cat_index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for (ti, qt) in t.template.iter().enumerate() {
        let cat = qt.category.as_str();
        if cat.is_empty()
            || !cat
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            bail!(
                "{file}: template {} has category '{cat}'; use lowercase letters, digits, '-' or '_'",
                ti + 1
            );
        }
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
                    names[0]
                );
            }
        }
        let runs = match each {
            Some(g) => vars.groups[g].len(),
            None => 1,
        };
        for k in 0..runs {
            let items: BTreeMap<&str, usize> = each.map(|g| (g, k)).into_iter().collect();
            let a = render(&answer, vars, &items);
            for q in &questions {
                let qtext = render(q, vars, &items);
                // The first template to ask a question owns it.
                if seen.insert(normalize(&qtext)) {
                    rows.push(QaRow {
                        question: qtext,
                        answer: a.clone(),
                        category: cat.to_string(),
                    });
                }
            }
        }
    }
    rng.shuffle(&mut rows);
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

// ------------------------------------------------------------------ PRNG

/// SplitMix64: tiny, seedable and stable across crate versions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough index in `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
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
