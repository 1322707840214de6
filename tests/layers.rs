//! The stages of `src/` import only the stages below them in the pipeline (lib.rs and each
//! folder's mod.rs state the rule). This reads the sources, so a new upward import fails here
//! rather than growing back into an import circle.

use std::path::{Path, PathBuf};

/// Bottom first. `util` sits beside every stage and imports none of them.
const ORDER: &[&str] = &[
    "config", "data", "train", "run", "answer", "export", "device", "demo",
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules named as `crate::NAME` in `text`.
fn crate_imports(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `badge_crate::`
        }
        let name: String = text[i + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

#[test]
fn no_stage_imports_a_stage_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut checked = 0;
    for (rank, stage) in ORDER.iter().enumerate() {
        let mut files = Vec::new();
        let dir = src.join(stage);
        rust_files(if dir.is_dir() { &dir } else { &src }, &mut files);
        if !dir.is_dir() {
            files.retain(|f| f.file_stem().is_some_and(|s| s == *stage));
        }
        assert!(!files.is_empty(), "stage {stage} has no sources under src/");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in crate_imports(&text) {
                checked += 1;
                if name == *stage || name == "util" {
                    continue;
                }
                match ORDER.iter().position(|s| *s == name) {
                    Some(r) if r < rank => {}
                    Some(_) => violations.push(format!(
                        "{}: stage {stage} imports crate::{name}, which is not below it",
                        file.display()
                    )),
                    None => violations.push(format!(
                        "{}: crate::{name} is not a stage of lib.rs's order",
                        file.display()
                    )),
                }
            }
        }
    }
    let util = std::fs::read_to_string(src.join("util.rs")).unwrap();
    for name in crate_imports(&util) {
        violations.push(format!("src/util.rs imports crate::{name}"));
    }
    assert!(
        checked > 50,
        "only {checked} imports found: is the scan broken?"
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
