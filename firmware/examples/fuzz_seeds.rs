//! Writes the seed inputs of the firmware fuzz targets (`fuzz/`): valid blobs of each KV kind
//! and a few shapes, the badge's partition table, and short texts, so that libFuzzer starts
//! from inputs that pass every check instead of having to find the magic and the CRC.
//!
//!     cargo run --release -p badge-firmware --example fuzz_seeds -- fuzz/corpus
//!
//! (`scripts/fuzz.sh` runs it.) Host reader seeds are the repository's own config files.

#[path = "../tests/common/mod.rs"]
mod common;

use badge_firmware::answers::{question_words, AnswersSpec, ConfidenceMeasure};
use badge_firmware::config::KvCacheKind;
use badge_firmware::format::BlobWriter;
use badge_firmware::partition::{build, Partition, FLAG_READONLY, TYPE_APP, TYPE_DATA};
use badge_firmware::question_match::{MatchQuestion, MatchWeights};
use std::path::Path;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)
}

/// Three answers over token ids 3..31 (1 and 2 are BOS and EOS), each taught for a question.
fn known_answers() -> AnswersSpec {
    let taught = [
        (vec![5u32, 9], "Where do you live?"),
        (vec![5, 11, 7], "Where did you work before?"),
        (vec![20], "What is the weather like?"),
    ];
    AnswersSpec {
        answers: taught[..2].iter().map(|(a, _)| a.clone()).collect(),
        fallback_ids: Some(taught[2].0.clone()),
        fallback: "Sorry.".into(),
        measure: ConfidenceMeasure::MeanLogProbNoveltyMatch,
        threshold: -3.0,
        question_words: taught[..2]
            .iter()
            .flat_map(|(_, q)| question_words(q))
            .collect(),
        novelty_penalty: 0.1,
        match_questions: taught
            .iter()
            .map(|(a, q)| MatchQuestion::new(a, q))
            .collect(),
        match_weights: MatchWeights {
            steer: 50.0,
            confidence: 1.0,
        },
        ..Default::default()
    }
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let dir = Path::new(&dir);
    let mut blobs = Vec::new();
    for (kv, name) in [
        (KvCacheKind::F32, "f32"),
        (KvCacheKind::F16, "f16"),
        (KvCacheKind::Int8, "int8"),
    ] {
        blobs.push((format!("small-{name}"), common::small_blob(kv)));
    }
    // The smallest useful model (about 2 KB): fast executions.
    let tiny = common::spec(common::config(8, 16, 1, 2, 32, 8), 8, KvCacheKind::Int8, 9);
    blobs.push(("tiny-int8".into(), BlobWriter::write(&tiny)));
    // Grouped-query attention, an odd group size, a one-layer model, digit splitting.
    let mut gqa = common::spec(common::config(16, 48, 1, 4, 40, 8), 8, KvCacheKind::Int8, 5);
    gqa.config.n_kv_heads = 2;
    gqa.tokenizer.split_digits = true;
    blobs.push(("gqa-int8".into(), BlobWriter::write(&gqa)));
    // Known answers with question words and the question match, so mutations reach the
    // answers loader and the constrained decoder (`app_startup`'s whole session).
    let mut answers = tiny.clone();
    answers.answers = Some(known_answers());
    let bytes = BlobWriter::write(&answers);
    let aligned = common::Aligned::new(&bytes);
    let parsed = badge_firmware::format::Blob::parse(aligned.bytes()).expect("a valid seed");
    assert!(parsed.answers.is_some_and(|a| a.question_match.is_some()));
    blobs.push(("answers-int8".into(), bytes));
    for (name, b) in &blobs {
        write(dir, "blob_engine", name, b)?;
        write(dir, "app_startup", name, b)?;
        // The same model with the app_startup target's "whole session" marker: the last,
        // reserved header byte set to 1.
        let mut session = b.clone();
        session[127] = 1;
        write(dir, "app_startup", &format!("{name}-session"), &session)?;
    }
    let table = build(&[
        Partition::new("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000, 0).unwrap(),
        Partition::new("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000, 0).unwrap(),
        Partition::new("factory", TYPE_APP, 0x00, 0x10000, 0x30_0000, 0).unwrap(),
        Partition::new(
            "model",
            TYPE_DATA,
            0x40,
            common::MODEL_OFFSET,
            common::MODEL_SIZE,
            FLAG_READONLY,
        )
        .unwrap(),
    ])
    .unwrap();
    write(dir, "partition_table", "badge", &table)?;
    for (i, text) in [
        "Who are you?",
        "what is 1234 + 5?",
        "  spaces  ",
        "ünï ☃ 日本",
    ]
    .iter()
    .enumerate()
    {
        write(dir, "tokenizer", &format!("text-{i}"), text.as_bytes())?;
    }
    for (i, t) in ["Q: {question}\nA: {answer}", "{question} => {answer}"]
        .iter()
        .enumerate()
    {
        write(dir, "template", &format!("template-{i}"), t.as_bytes())?;
    }
    for (i, t) in [
        &b"\x00Hello, I am a badge."[..],
        b"\x01/HEH4LOW, AY4 AEM AH BAE4J.",
        b"\x80Numbers 1 2 3!",
        b"\x85/HEH4LOW",
    ]
    .iter()
    .enumerate()
    {
        // The front end and the renderer read the same inputs.
        write(dir, "sam", &format!("speech-{i}"), t)?;
        write(dir, "sam_render", &format!("speech-{i}"), t)?;
    }
    println!("seeds written under {}", dir.display());
    Ok(())
}
