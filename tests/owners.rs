//! Owners shaped unlike the bundled example, through the whole product as a new user runs it:
//! `badge init` → their own facts → `badge data check` → `badge train` (tiny) →
//! `badge flash --image` → `badge sim`, each command run from an unrelated working directory
//! with an empty HOME, touching nothing outside the owner's folder.
//!
//! The natural questions and their answers are written here by hand, not produced by the
//! code under test. An answer counts only when it is exactly one of the listed answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One fictional owner.
struct Owner {
    slug: &'static str,
    /// `--name` for `badge init`, if any.
    name: Option<&'static str>,
    facts: &'static str,
    /// (question, accepted answers).
    natural: &'static [(&'static str, &'static [&'static str])],
}

/// A PhD student: no past jobs, no projects, one school, an email and nothing else to reach.
const STUDENT: Owner = Owner {
    slug: "student",
    name: Some("Mira Okonkwo-Lindahl"),
    facts: r#"
name = "Mira Okonkwo-Lindahl"
home_city = "Göteborg"
languages = ["Swedish", "Igbo", "English"]
skills = ["marine biology", "R"]
interests = ["free diving", "crochet"]

[contact]
email = "mira.ol@example.edu"

[current]
employer = "Chalmers Ocean Lab"
role = "PhD student"
start = "September 2023"
focus = "seagrass carbon storage"

[[education]]
school = "Lund University"
degree = "MSc"
field = "Marine Ecology"
from = 2021
to = 2023
"#,
    natural: &[
        ("What's your name?", &["My name is Mira Okonkwo-Lindahl."]),
        ("Who are you?", &["My name is Mira Okonkwo-Lindahl."]),
        ("Where do you live?", &["I live in Göteborg."]),
        ("What is your email?", &["My email is mira.ol@example.edu."]),
        ("Where do you work?", &["I work at Chalmers Ocean Lab."]),
        (
            "What is your job?",
            &[
                "I am a PhD student at Chalmers Ocean Lab.",
                "I am a PhD student.",
            ],
        ),
        (
            "What are you working on?",
            &["I work on seagrass carbon storage."],
        ),
        ("Where did you study?", &["I studied at Lund University."]),
        (
            "What languages do you speak?",
            &["I speak Swedish, Igbo and English."],
        ),
        (
            "What are your hobbies?",
            &["I enjoy free diving and crochet."],
        ),
        (
            "What are you good at?",
            &["My main skills are marine biology and R."],
        ),
        ("Do you speak Igbo?", &["Yes, I speak Igbo."]),
    ],
};

/// A retiree: a long work history, no contact details, no projects, no skills.
const RETIREE: Owner = Owner {
    slug: "retiree",
    name: Some("Bartholomew Ó Ceallaigh"),
    facts: r#"
name = "Bartholomew Ó Ceallaigh"
home_city = "Galway"
languages = ["English", "Irish"]
interests = ["sea fishing", "local history", "bridge"]

[current]
role = "retired harbour engineer"

[[work_history]]
employer = "Galway Harbour Board"
role = "apprentice fitter"
from = 1968
to = 1972
summary = "repaired cranes on the docks"

[[work_history]]
employer = "Shannon Dredging"
role = "site engineer"
from = 1972
to = 1979
summary = "planned dredging of the river mouth"

[[work_history]]
employer = "Atlantic Marine Works"
role = "project engineer"
from = 1979
to = 1986
summary = "built breakwaters along the west coast"

[[work_history]]
employer = "Corrib Civil Engineering"
role = "chief engineer"
from = 1986
to = 1995
summary = "ran the harbour extension works"

[[work_history]]
employer = "Port of Galway"
role = "harbour master"
from = 1995
to = 2012
summary = "managed the port and its pilots"

[[education]]
school = "Galway Technical School"
degree = "Diploma"
field = "Mechanical Engineering"
from = 1965
to = 1968
"#,
    natural: &[
        (
            "What is your name?",
            &["My name is Bartholomew Ó Ceallaigh."],
        ),
        ("Where do you live?", &["I live in Galway."]),
        (
            "What is your job title?",
            &["I am a retired harbour engineer."],
        ),
        (
            "What was your first job?",
            &["My first job was as an apprentice fitter at Galway Harbour Board."],
        ),
        (
            "What did you do at Port of Galway?",
            &["At Port of Galway I managed the port and its pilots."],
        ),
        (
            "When did you work at Shannon Dredging?",
            &["I worked at Shannon Dredging from 1972 to 1979."],
        ),
        (
            "What was your job at Corrib Civil Engineering?",
            &["I was a chief engineer at Corrib Civil Engineering."],
        ),
        (
            "What did you study?",
            &["I studied Mechanical Engineering."],
        ),
        (
            "What are your hobbies?",
            &["I enjoy sea fishing, local history and bridge."],
        ),
        (
            "Which languages do you speak?",
            &["I speak English and Irish."],
        ),
        ("Do you like bridge?", &["Yes, I enjoy bridge."]),
    ],
};

/// An owner who fills in no section at all, only free-form facts (and no --name).
const FREE_FORM: Owner = Owner {
    slug: "freeform",
    name: None,
    facts: r#"
[[fact]]
answer = "My name is Tamsin Quay."
questions = ["What is your name?", "Who are you?"]
category = "about"

[[fact]]
answer = "My dog is a greyhound called Biscuit."
questions = ["What is your dog called?", "Do you have a pet?"]
category = "pets"

[[fact]]
answer = "My favourite food is mushroom risotto."
questions = ["What is your favourite food?", "What do you like to eat?"]
category = "food"

[[fact]]
answer = "This year I gave a talk about urban beekeeping."
questions = ["What was your talk about?", "Did you give a talk this year?"]
category = "talks"

[[fact]]
answer = "I make stained glass windows."
questions = ["What do you do for a living?", "What is your job?"]
category = "work"

[[fact]]
answer = "I grew up in Penzance."
questions = ["Where did you grow up?", "Where are you from?"]
category = "home"
"#,
    natural: &[
        ("What's your name?", &["My name is Tamsin Quay."]),
        ("Can you tell me who you are?", &["My name is Tamsin Quay."]),
        (
            "What's your dog called?",
            &["My dog is a greyhound called Biscuit."],
        ),
        (
            "do you have a pet",
            &["My dog is a greyhound called Biscuit."],
        ),
        (
            "What's your favourite food?",
            &["My favourite food is mushroom risotto."],
        ),
        (
            "What do you like to eat?",
            &["My favourite food is mushroom risotto."],
        ),
        (
            "What was your talk about?",
            &["This year I gave a talk about urban beekeeping."],
        ),
        ("So, what is your job?", &["I make stained glass windows."]),
        ("Where did you grow up?", &["I grew up in Penzance."]),
        ("Hey, where are you from?", &["I grew up in Penzance."]),
    ],
};

/// A sandbox: the owner's folder, an unrelated working directory and an empty HOME.
struct Sandbox {
    _root: tempfile::TempDir,
    dir: PathBuf,
    cwd: PathBuf,
    home: PathBuf,
}

impl Sandbox {
    fn new(slug: &str) -> Sandbox {
        let root = tempfile::tempdir().unwrap();
        let (cwd, home) = (root.path().join("elsewhere"), root.path().join("home"));
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        Sandbox {
            dir: root.path().join(slug),
            cwd,
            home,
            _root: root,
        }
    }

    fn badge(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_badge"));
        cmd.args(args)
            .current_dir(&self.cwd)
            .env("HOME", &self.home)
            .env_remove("HF_HOME")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.badge(args, stdin);
        assert!(
            out.status.success(),
            "badge {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn err(&self, args: &[&str]) -> String {
        let out = self.badge(args, None);
        assert!(!out.status.success(), "badge {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    /// Nothing was written outside the owner's folder.
    fn assert_untouched_outside(&self) {
        for d in [&self.cwd, &self.home] {
            let left: Vec<_> = std::fs::read_dir(d).unwrap().collect();
            assert!(left.is_empty(), "{} was written to: {left:?}", d.display());
        }
        let siblings: Vec<_> = std::fs::read_dir(self.dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            siblings.len(),
            3,
            "unexpected files beside the folder: {siblings:?}"
        );
    }
}

/// The answers `badge sim` printed, one per question (`> ANSWER` lines).
fn sim_answers(console: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|l| l.strip_prefix("> "))
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

/// Runs one owner from init to sim; returns (exact answers, questions).
fn run_owner(o: &Owner) -> (usize, usize) {
    let s = Sandbox::new(o.slug);
    let dir = s.dir.display().to_string();
    let mut init = vec!["init", dir.as_str(), "--size", "tiny"];
    if let Some(n) = o.name {
        init.extend(["--name", n]);
    }
    s.ok(&init, None);
    std::fs::write(s.dir.join("facts.toml"), o.facts).unwrap();

    let check: serde_json::Value =
        serde_json::from_str(&s.ok(&["data", "check", &dir, "--json"], None)).unwrap();
    assert!(
        check["categories"]
            .as_object()
            .is_some_and(|c| !c.is_empty()),
        "{check}"
    );

    let run = s.path("run");
    s.ok(
        &[
            "train",
            "--curriculum",
            &s.path("badge.toml"),
            "--out",
            &run,
        ],
        None,
    );
    let image = s.path("flash.bin");
    s.ok(&["flash", "--from", &run, "--image", &image], None);
    let questions: String = o.natural.iter().map(|(q, _)| format!("{q}\n")).collect();
    let console = s.ok(
        &["sim", "--image", &image, "--out", &s.path("sim")],
        Some(&questions),
    );
    let answers = sim_answers(&console);
    assert_eq!(answers.len(), o.natural.len(), "{console}");
    let mut exact = 0;
    for ((q, accepted), a) in o.natural.iter().zip(&answers) {
        let hit = accepted.contains(&a.as_str());
        exact += usize::from(hit);
        eprintln!("  [{}] {q:?} -> {a:?}", if hit { "ok" } else { "MISS" });
    }
    s.assert_untouched_outside();
    (exact, o.natural.len())
}

/// The three owners, each trained once (tiny size), from one test so they do not compete
/// for the CPU.
#[test]
fn three_owners_from_init_to_sim() {
    let mut results = Vec::new();
    for o in [&STUDENT, &RETIREE, &FREE_FORM] {
        eprintln!("owner {}:", o.slug);
        let (exact, n) = run_owner(o);
        eprintln!(
            "owner {}: {exact}/{n} natural questions exact ({:.0}%)",
            o.slug,
            100.0 * exact as f64 / n as f64
        );
        results.push((o.slug, exact, n));
    }
    for (slug, exact, n) in results {
        assert!(
            exact * 5 >= n * 4,
            "{slug}: only {exact}/{n} natural questions answered exactly"
        );
    }
}

/// `badge init` refuses to overwrite; `--force` rewrites only the curriculum.
#[test]
fn init_refuses_to_overwrite_and_force_keeps_the_owner_files() {
    let s = Sandbox::new("me");
    let dir = s.dir.display().to_string();
    s.ok(&["init", &dir, "--name", "Łukasz Żółć"], None);
    let facts = std::fs::read_to_string(s.dir.join("facts.toml")).unwrap();
    assert!(facts.contains("name = \"Łukasz Żółć\""), "{facts}");
    for f in [
        "qa.csv",
        "badge.toml",
        "model.toml",
        "prose/badge.txt",
        "templates/synonyms.txt",
    ] {
        assert!(s.dir.join(f).is_file(), "{f}");
    }
    // The tiny curriculum's sources take synonym copies from the thesaurus written beside
    // the templates.
    let check = s.ok(
        &["data", "check", "--curriculum", &s.path("badge.toml")],
        None,
    );
    assert!(check.contains("Synonym copies, source `synth`"), "{check}");
    let e = s.err(&["init", &dir]);
    assert!(
        e.contains("nothing was overwritten") && e.contains("--force"),
        "{e}"
    );

    std::fs::write(s.dir.join("facts.toml"), "name = \"Mine\"\n").unwrap();
    std::fs::write(s.dir.join("badge.toml"), "broken").unwrap();
    let thesaurus = s.dir.join("templates/synonyms.txt");
    std::fs::write(&thesaurus, "gig, job\n").unwrap();
    s.ok(&["init", &dir, "--force", "--size", "1m"], None);
    assert_eq!(
        std::fs::read_to_string(s.dir.join("facts.toml")).unwrap(),
        "name = \"Mine\"\n"
    );
    // The owner's own words stay; a thesaurus that is gone comes back, as the curriculum
    // names it.
    assert_eq!(std::fs::read_to_string(&thesaurus).unwrap(), "gig, job\n");
    std::fs::remove_file(&thesaurus).unwrap();
    s.ok(&["init", &dir, "--force", "--size", "1m"], None);
    assert_eq!(
        std::fs::read_to_string(&thesaurus).unwrap(),
        std::fs::read_to_string(repo().join("data/templates/synonyms.txt")).unwrap()
    );
    let c = std::fs::read_to_string(s.dir.join("badge.toml")).unwrap();
    assert!(c.contains("model.toml") && c.contains("facts.toml"), "{c}");
    let m = std::fs::read_to_string(s.dir.join("model.toml")).unwrap();
    assert_eq!(
        m,
        std::fs::read_to_string(repo().join("configs/models/badge-1m.toml")).unwrap()
    );
    // Every path of the curriculum resolves inside the folder.
    let check = s.ok(
        &["data", "check", "--curriculum", &s.path("badge.toml")],
        None,
    );
    assert!(check.contains("badge.toml"), "{check}");
    s.assert_untouched_outside();
}

/// The errors a new owner meets name the file and the line.
#[test]
fn bad_owner_files_name_file_and_line() {
    let s = Sandbox::new("me");
    let dir = s.dir.display().to_string();
    s.ok(&["init", &dir, "--name", "Ana"], None);
    let facts = s.dir.join("facts.toml");

    std::fs::write(
        &facts,
        "name = \"Ana\"\n\n[contact]\nemial = \"a@example.com\"\n",
    )
    .unwrap();
    let e = s.err(&["data", "check", &dir]);
    assert!(
        e.contains("facts.toml: line 4") && e.contains("emial") && e.contains("`email`"),
        "{e}"
    );

    std::fs::write(&facts, "# nothing yet\n").unwrap();
    let e = s.err(&["data", "check", &dir]);
    assert!(
        e.contains("facts.toml: line 1") && e.contains("no facts"),
        "{e}"
    );

    std::fs::write(&facts, "name = \"Ana\"\n").unwrap();
    let qa = s.dir.join("qa.csv");
    std::fs::write(
        &qa,
        "# comment\nid,question,answer,category\nn-1,What is your name?,My name is Ana.,name\nn-2,Who are you?\n",
    )
    .unwrap();
    let e = s.err(&["data", "check", &dir]);
    assert!(e.contains("qa.csv: line 4"), "{e}");
    std::fs::write(&qa, "id,question\nn-1,What is your name?\n").unwrap();
    let e = s.err(&["data", "check", &dir]);
    assert!(e.contains("qa.csv: line 1") && e.contains("answer"), "{e}");
}

/// `badge say` speaks and shows the ASCII spelling of letters SAM lacks.
#[test]
fn say_shows_the_transliteration() {
    let s = Sandbox::new("me");
    std::fs::create_dir_all(&s.dir).unwrap();
    let wav = s.path("hi.wav");
    let out = s.badge(&["say", "Hej, jeg heter Åsa Øberg.", "--out", &wav], None);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SAM says: Hej, jeg heter Aasa Oeberg."),
        "{err}"
    );
    // The same words in ASCII give the same audio.
    let ascii = s.path("ascii.wav");
    s.ok(
        &["say", "Hej, jeg heter Aasa Oeberg.", "--out", &ascii],
        None,
    );
    assert_eq!(std::fs::read(&wav).unwrap(), std::fs::read(&ascii).unwrap());
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
