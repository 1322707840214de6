//! The `badge` binary end to end, command by command, as a user types them: argument parsing,
//! exit codes, `--json` reports and the files each command writes.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn badge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(args)
        .current_dir(common::repo())
        .output()
        .expect("run badge")
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let out = badge(args);
    assert!(
        out.status.success(),
        "badge {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).unwrap_or_else(|e| panic!("badge {args:?}: not JSON: {e}"))
}

#[test]
fn every_command_runs_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).display().to_string();

    assert!(ok(&["--help"]).contains("demo"));
    assert_eq!(
        json(&["info", "--config", "configs/models/badge-6m.toml", "--json"])["parameters"],
        5_566_176
    );

    ok(&[
        "tokenizer",
        "train",
        "--vocab-size",
        "300",
        "--split-digits",
        "--input",
        "data/stories/stories.txt",
        "data/profile/prose",
        "data/profile/qa.csv",
        "--out",
        &d("tok.json"),
    ]);
    let stats = json(&[
        "tokenizer",
        "stats",
        "--tokenizer",
        &d("tok.json"),
        "--input",
        "data/stories/stories-valid.txt",
        "--json",
    ]);
    assert_eq!(stats["vocab_size"], 300);

    let cur = common::reduced_curriculum(dir.path(), [4, 4, 4], 0, 100)
        .display()
        .to_string();
    let summary = json(&[
        "train",
        "--curriculum",
        &cur,
        "--out",
        &d("run"),
        "--quiet",
        "--json",
    ]);
    assert_eq!(summary["phases"].as_array().unwrap().len(), 3);

    let export = json(&[
        "export",
        "--from",
        &d("run"),
        "--out",
        &d("m.bin"),
        "--csv",
        &d("errors.csv"),
        "--quality",
        "2",
        "--json",
    ]);
    assert_eq!(export["kv_cache"], "f32");
    assert_eq!(export["quality"]["qa_questions"], 2);
    assert!(std::fs::read_to_string(d("errors.csv"))
        .unwrap()
        .starts_with("tensor,rows,cols"));
    let int8 = json(&[
        "export",
        "--from",
        &d("run"),
        "--out",
        &d("m8.bin"),
        "--kv-cache",
        "int8",
        "--quality",
        "0",
        "--json",
    ]);
    assert_eq!(int8["kv_cache"], "int8");

    let inspect = json(&[
        "inspect",
        &d("m.bin"),
        "--report",
        "--against",
        &d("run"),
        "--json",
    ]);
    assert_eq!(inspect["tensors"].as_array().unwrap().len(), 2 + 9 * 2);
    assert!(inspect["report"]["tensors"].as_array().unwrap().len() == 1 + 7 * 2);

    let answer = ok(&[
        "ask",
        "--model",
        &d("m.bin"),
        "What is your email?",
        "--speak",
        &d("a.wav"),
    ]);
    assert_eq!(
        answer.lines().count(),
        1,
        "the answer is one line on stdout: {answer:?}"
    );
    assert!(Path::new(&d("a.wav")).exists());
    ok(&[
        "ask",
        "--model",
        &d("run"),
        "--engine",
        "candle",
        "What is your email?",
    ]);
    let eval = json(&[
        "eval",
        "--model",
        &d("m.bin"),
        "--qa",
        "data/profile/qa-heldout.csv",
        "--json",
    ]);
    assert_eq!(eval["overall"]["total"], 69);

    ok(&[
        "say",
        "Hello, I am a badge.",
        "--voice",
        "robot",
        "--out",
        &d("h.wav"),
    ]);
    assert!(
        badge::answer::say::read_wav_u8(Path::new(&d("h.wav")))
            .unwrap()
            .len()
            > 10_000
    );
    let synth = json(&["data", "synth", "--out", &d("synth"), "--json"]);
    assert!(synth["qa_pairs"].as_u64().unwrap() >= 240);

    ok(&["flash", "--model", &d("m.bin"), "--image", &d("flash.bin")]);
    let mut sim = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["sim", "--image", &d("flash.bin"), "--out", &d("sim")])
        .current_dir(common::repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sim.stdin
        .take()
        .unwrap()
        .write_all(b"What is your name?\n")
        .unwrap();
    let out = sim.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("sim/answer-001.wav").exists());
}

#[test]
fn mistakes_get_clear_messages_and_exit_codes() {
    let out = badge(&["train", "--curriculum", "nope.toml", "--out", "/tmp/never"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));

    let out = badge(&["say", "hi", "--voice", "opera", "--out", "/tmp/never.wav"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opera") && err.contains("robot"), "{err}");

    let out = badge(&[
        "export",
        "--from",
        "/nonexistent-run",
        "--out",
        "/tmp/never.bin",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-run"));

    // clap's own usage errors exit with 2.
    assert_eq!(
        badge(&["export", "--kv-cache", "f8"]).status.code(),
        Some(2)
    );
}
