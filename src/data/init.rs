//! `badge init DIR`: a personal project folder, so an owner goes from "who I am" to a flashable
//! model without touching the repository's own files.
//!
//! Everything the folder needs is built into the binary (the example files, the templates,
//! the TinyStories sample, the model shapes and curricula), so the folder works from any
//! working directory and with an installed `badge`. Paths inside `badge.toml` are relative to
//! it, so the folder can move.

use crate::util::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;

/// Model sizes `badge init --size` knows: the repository's curricula of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Size {
    Tiny,
    M1,
    M3,
    M6,
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Size, String> {
        match s {
            "tiny" => Ok(Size::Tiny),
            "1m" => Ok(Size::M1),
            "3m" => Ok(Size::M3),
            "6m" => Ok(Size::M6),
            _ => Err(format!("unknown size `{s}`; use tiny, 1m, 3m or 6m")),
        }
    }
}

impl Size {
    /// The built-in curriculum and model config of this size.
    fn configs(self) -> (&'static str, &'static str) {
        match self {
            Size::Tiny => (
                include_str!("../../configs/badge-tiny.toml"),
                include_str!("../../configs/models/badge-tiny.toml"),
            ),
            Size::M1 => (
                include_str!("../../configs/badge-1m.toml"),
                include_str!("../../configs/models/badge-1m.toml"),
            ),
            Size::M3 => (
                include_str!("../../configs/badge-3m.toml"),
                include_str!("../../configs/models/badge-3m.toml"),
            ),
            Size::M6 => (
                include_str!("../../configs/badge-6m.toml"),
                include_str!("../../configs/models/badge-6m.toml"),
            ),
        }
    }
}

/// What `badge init` needs.
pub struct InitOptions {
    pub dir: PathBuf,
    /// The owner's full name, written into `facts.toml` and `qa.csv`.
    pub name: Option<String>,
    pub size: Size,
    /// Let `badge train --download` fetch the full TinyStories set (the sample stays as the
    /// offline default).
    pub download: bool,
    /// Regenerate only the curriculum (`badge.toml`, `model.toml`) of an existing folder.
    pub force: bool,
}

/// What `badge init` wrote.
#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    pub dir: PathBuf,
    pub written: Vec<PathBuf>,
    /// The curriculum to train with.
    pub curriculum: PathBuf,
}

/// The files of the curriculum, which `--force` regenerates (with the off-topic questions).
const CURRICULUM: &str = "badge.toml";
const MODEL: &str = "model.toml";
/// The curriculum's off-topic questions (`[answers]` and the off-topic source), written
/// beside it.
const OFFTOPIC_FILES: [(&str, &str); 3] = [
    (
        "offtopic/calibrate.txt",
        include_str!("../../data/offtopic/calibrate.txt"),
    ),
    (
        "offtopic/test.txt",
        include_str!("../../data/offtopic/test.txt"),
    ),
    (
        "offtopic/train.txt",
        include_str!("../../data/offtopic/train.txt"),
    ),
];
/// The thesaurus of the sources' synonym copies: generic English, written beside the
/// templates (and by `--force` when it is missing, so an older folder keeps training).
const THESAURUS: (&str, &str) = (
    "templates/synonyms.txt",
    include_str!("../../data/templates/synonyms.txt"),
);
/// The owner's files, never overwritten.
const OWNER_FILES: [&str; 3] = ["facts.toml", "qa.csv", "prose"];

/// Creates the folder (or, with `force`, its curriculum only).
pub fn run(opts: &InitOptions) -> Result<InitReport> {
    let dir = &opts.dir;
    let existing: Vec<&str> = OWNER_FILES
        .iter()
        .chain([&CURRICULUM, &MODEL])
        .copied()
        .filter(|f| dir.join(f).exists())
        .collect();
    if !existing.is_empty() && !opts.force {
        bail!(
            "{}: already holds {}; nothing was overwritten (use --force to regenerate only {CURRICULUM} and {MODEL})",
            dir.display(),
            existing.join(", ")
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let mut written = Vec::new();
    let mut put = |rel: &str, text: &str| -> Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create folder", parent.display()))?;
        }
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
        Ok(())
    };
    let (curriculum, model) = opts.size.configs();
    put(MODEL, model)?;
    put(CURRICULUM, &owner_curriculum(curriculum, opts)?)?;
    // The off-topic questions that calibrate "I don't know" belong to the curriculum, not to
    // the owner: they are the same for anyone, so `--force` writes them too.
    for (rel, text) in OFFTOPIC_FILES {
        put(rel, text)?;
    }
    // The owner may have added words of their own: an existing thesaurus stays.
    if !dir.join(THESAURUS.0).exists() {
        put(THESAURUS.0, THESAURUS.1)?;
    }
    if existing.is_empty() {
        let name = opts
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        put("facts.toml", &facts_file(name))?;
        put("qa.csv", &qa_file(name))?;
        let who = name.unwrap_or("its owner");
        put(
            "prose/badge.txt",
            &include_str!("../../data/init/badge.txt").replace("{{WHO}}", who),
        )?;
        put(
            "templates/qa.toml",
            include_str!("../../data/templates/qa.toml"),
        )?;
        put(
            "templates/prose.toml",
            include_str!("../../data/templates/prose.toml"),
        )?;
        put(
            "stories/stories.txt",
            include_str!("../../data/stories/stories.txt"),
        )?;
        put(
            "stories/stories-valid.txt",
            include_str!("../../data/stories/stories-valid.txt"),
        )?;
    }
    Ok(InitReport {
        dir: dir.clone(),
        written,
        curriculum: dir.join(CURRICULUM),
    })
}

fn facts_file(name: Option<&str>) -> String {
    let line = match name {
        Some(n) => format!(
            "name = {}                  # your full name",
            toml_string(n)
        ),
        None => "# name = \"Åsa Lindqvist\"                 # your full name".to_string(),
    };
    include_str!("../../data/init/facts.toml").replace("{{NAME_LINE}}", &line)
}

fn qa_file(name: Option<&str>) -> String {
    let rows = match name {
        Some(n) => {
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new());
            let answer = format!("My name is {n}.");
            for (id, q) in [("name-1", "What is your name?"), ("name-2", "Who are you?")] {
                w.write_record([id, q, answer.as_str(), "name"])
                    .expect("writing to memory");
            }
            String::from_utf8(w.into_inner().expect("writing to memory"))
                .expect("UTF-8 in, UTF-8 out")
        }
        None => "# name-1,What is your name?,My name is Åsa Lindqvist.,name\n".to_string(),
    };
    include_str!("../../data/init/qa.csv").replace("{{NAME_ROWS}}\n", &rows)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The repository's curriculum of the chosen size, with every path pointing inside the folder.
fn owner_curriculum(base: &str, opts: &InitOptions) -> Result<String> {
    let mut c: toml::Table =
        toml::from_str(base).map_err(|e| anyhow!("built-in curriculum: {e}"))?;
    c.insert("model".into(), MODEL.into());
    let sources = c
        .get_mut("sources")
        .and_then(|s| s.as_table_mut())
        .ok_or_else(|| anyhow!("built-in curriculum has no [sources]"))?;
    for (name, src) in sources.iter_mut() {
        let src = src
            .as_table_mut()
            .ok_or_else(|| anyhow!("built-in curriculum: source {name} is not a table"))?;
        if let Some(synonyms) = src.get_mut("synonyms").and_then(|s| s.as_table_mut()) {
            synonyms.insert("thesaurus".into(), THESAURUS.0.into());
        }
        match src.get("kind").and_then(|k| k.as_str()) {
            Some("stories") => {
                src.insert("train".into(), "stories/stories.txt".into());
                src.insert("valid".into(), "stories/stories-valid.txt".into());
                src.insert("download".into(), opts.download.into());
            }
            Some("prose") => {
                src.insert("path".into(), "prose".into());
            }
            Some("synth") => {
                src.insert("facts".into(), "facts.toml".into());
                src.insert("templates".into(), "templates".into());
            }
            Some("qa") => {
                src.insert("train".into(), "qa.csv".into());
                src.remove("valid");
            }
            Some("offtopic") => {
                src.insert("questions".into(), OFFTOPIC_FILES[2].0.into());
            }
            _ => {}
        }
    }
    if let Some(answers) = c.get_mut("answers").and_then(|a| a.as_table_mut()) {
        for (key, (rel, _)) in ["offtopic", "offtopic_test"]
            .into_iter()
            .zip(OFFTOPIC_FILES)
        {
            if answers.contains_key(key) {
                answers.insert(key.into(), rel.into());
            }
        }
    }
    // An owner's facts live mostly in facts.toml, not in a long qa.csv: the last phase
    // memorises both.
    if let Some(last) = c
        .get_mut("phase")
        .and_then(|p| p.as_array_mut())
        .and_then(|p| p.last_mut())
        .and_then(|p| p.as_table_mut())
    {
        if let Some(mix) = last.get_mut("mix").and_then(|m| m.as_array_mut()) {
            let synth = mix
                .iter_mut()
                .filter_map(|m| m.as_table_mut())
                .find(|m| m.get("source").and_then(|s| s.as_str()) == Some("synth"));
            match synth {
                // The bundled owner's long qa.csv outweighs its synth; an owner's short one
                // must not.
                Some(entry) => {
                    let w = entry
                        .get("weight")
                        .and_then(|w| w.as_float())
                        .unwrap_or(0.0);
                    entry.insert("weight".into(), w.max(SYNTH_WEIGHT_IN_QA).into());
                }
                None => {
                    let mut entry = toml::Table::new();
                    entry.insert("source".into(), "synth".into());
                    entry.insert("weight".into(), SYNTH_WEIGHT_IN_QA.into());
                    entry.insert("repeat".into(), 10.into());
                    mix.push(entry.into());
                }
            }
        }
    }
    let name = opts
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "badge".into());
    c.insert("name".into(), name.into());
    let body = toml::to_string(&c).map_err(|e| anyhow!("cannot write the curriculum: {e}"))?;
    Ok(format!(
        "# The curriculum of this badge, written by `badge init` (paths are relative to this\n\
         # file). `badge init DIR --force` rewrites it, {MODEL} and offtopic/, and nothing else.\n\n{body}"
    ))
}

/// Weight of the generated pairs in the last phase (the human pairs keep theirs).
const SYNTH_WEIGHT_IN_QA: f64 = 2.0;
