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

    // Export says what each button press makes the badge say, as `ask` would.
    let buttons = export["buttons"].as_array().unwrap();
    assert_eq!(buttons[0]["press"], "intro");
    assert_eq!(buttons[0]["question"], "Who are you?");
    assert!(
        buttons.len() >= 2,
        "the default list asks one question per category"
    );
    let asked = ok(&["ask", "--model", &d("m.bin"), "Who are you?"]);
    assert_eq!(buttons[0]["answer"].as_str().unwrap(), asked.trim());

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

/// A blob whose header claims a context far larger than its file: the badge's engine on the
/// host refuses the run state up front (the board's PSRAM budget by default, `--max-memory` to
/// raise it) instead of aborting in the allocator, and a context past the loader's limit is
/// named as such.
#[test]
fn a_huge_context_is_refused_with_a_clear_error_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::tiny_config();
    c.n_layers = 100;
    c.seq_len = 4096; // f32 KV cache: 100 × 4096 × 16 × 4 × 2 = 52 MB, over the board's 8 MB
    let (bytes, _) = common::random_blob(&c, 3, badge_firmware::config::KvCacheKind::F32);
    let big = dir.path().join("big.bin");
    std::fs::write(&big, &bytes).unwrap();
    let big = big.display().to_string();
    let refused = |args: &[&str]| {
        let out = badge(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "badge {args:?} succeeded");
        assert!(
            err.contains("the run state needs") && err.contains("--max-memory"),
            "badge {args:?}: {err}"
        );
    };
    refused(&["ask", "--model", &big, "who are you?"]);
    refused(&["eval", "--model", &big, "--qa", "data/profile/qa.csv"]);
    let out = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["chat", "--model", &big])
        .current_dir(common::repo())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the run state needs"));
    // Raised: the same model answers.
    ok(&[
        "ask",
        "--model",
        &big,
        "--max-memory",
        "64M",
        "--max-tokens",
        "4",
        "who are you?",
    ]);
    let bad = badge(&["ask", "--model", &big, "--max-memory", "lots", "x"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a size"));

    // seq_len 2^20 is past the loader's limit: the header field is named, with the limit.
    let mut huge = bytes.clone();
    huge[44..48].copy_from_slice(&(1u32 << 20).to_le_bytes());
    let crc = badge_firmware::format::crc32(&huge[badge_firmware::format::HEADER_SIZE..]);
    huge[16..20].copy_from_slice(&crc.to_le_bytes());
    let p = dir.path().join("huge.bin");
    std::fs::write(&p, &huge).unwrap();
    let out = badge(&["ask", "--model", &p.display().to_string(), "hi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("seq_len") && err.contains("1 to 65536"),
        "{err}"
    );

    // The simulator's budget (blob + run state) can be lowered, and is then enforced.
    let (small, _) = common::random_blob(
        &common::tiny_config(),
        4,
        badge_firmware::config::KvCacheKind::F32,
    );
    let sb = dir.path().join("small.bin");
    std::fs::write(&sb, &small).unwrap();
    let img = dir.path().join("flash.img").display().to_string();
    ok(&[
        "flash",
        "--model",
        &sb.display().to_string(),
        "--image",
        &img,
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["sim", "--image", &img, "--max-memory", "16K"])
        .args(["--out", &dir.path().join("sim").display().to_string()])
        .current_dir(common::repo())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("16384 are available"), "{text}");
}
