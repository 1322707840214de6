//! Known answers: the trie built from real tokenized answers, its round trip through the blob,
//! the loader's checks on a corrupt answers section, and constrained decoding, which can only
//! say a known answer or the fallback line.

mod common;

use badge::answer::{Answerer, BlobAnswerer, BlobFile};
use badge_firmware::answers::{AnswersSpec, ConfidenceMeasure, ANSWERS_HEADER_SIZE, NODE_SIZE};
use badge_firmware::config::KvCacheKind;
use badge_firmware::format::{Blob, BlobError, HEADER_SIZE};
use badge_firmware::generate::{GenerateOptions, Outcome};
use badge_firmware::question_match::MatchWeights;
use std::collections::BTreeSet;

const FALLBACK: &str = badge::config::DEFAULT_FALLBACK;

fn spec_for(
    tok: &badge::data::tokenizer::BadgeTokenizer,
    measure: ConfidenceMeasure,
    threshold: f32,
) -> AnswersSpec {
    let mut s = badge::answer::known::answers_spec(
        tok,
        badge::config::DEFAULT_TEMPLATE,
        &common::example_answers(),
        FALLBACK,
        false,
    )
    .unwrap();
    s.measure = measure;
    s.threshold = threshold;
    s
}

fn blob(measure: ConfidenceMeasure, threshold: f32) -> BlobFile {
    let (bytes, _) = common::random_blob_with(&common::tiny_config(), 4, KvCacheKind::F32, |t| {
        Some(spec_for(t, measure, threshold))
    });
    BlobFile {
        bytes: badge::util::AlignedBytes::from_slice(&bytes),
    }
}

fn questions() -> Vec<String> {
    let mut q: Vec<String> =
        badge::data::read_qa_csv(&common::repo().join("data/profile/qa-heldout.csv"))
            .unwrap()
            .into_iter()
            .take(12)
            .map(|p| p.question)
            .collect();
    q.extend(
        badge::answer::known::read_questions(&common::repo().join("data/offtopic/test.txt"))
            .unwrap()
            .into_iter()
            .take(6),
    );
    q
}

#[test]
fn the_trie_holds_exactly_the_tokenized_answers() {
    let file = blob(ConfidenceMeasure::None, 0.0);
    let b = file.blob();
    let set = b.answers.expect("the blob has an answers section");
    let tok = badge_firmware::tokenizer::Tokenizer::new(b.tokenizer);
    let decoded: BTreeSet<String> = set
        .all_answers()
        .iter()
        .map(|ids| {
            let mut s = String::new();
            let mut d = badge_firmware::tokenizer::StreamDecoder::new();
            ids.iter()
                .for_each(|&i| d.push(&tok, i, &mut |p| s.push_str(p)));
            d.finish(&mut |p| s.push_str(p));
            s
        })
        .collect();
    let expected: BTreeSet<String> = common::example_answers()
        .iter()
        .map(|a| format!(" {a}"))
        .collect();
    assert_eq!(decoded, expected);
    assert_eq!(set.answer_count, expected.len());
    assert_eq!(set.fallback, FALLBACK);
    assert!(set.byte_len() > ANSWERS_HEADER_SIZE + set.node_count() * NODE_SIZE);
}

#[test]
fn constrained_decoding_says_only_known_answers_or_the_fallback() {
    // Random weights: open generation babbles, known-answer decoding cannot.
    let known: BTreeSet<String> = common::example_answers().into_iter().collect();
    let file = blob(ConfidenceMeasure::None, 0.0);
    let mut badge = BlobAnswerer::new(&file, 1, GenerateOptions::default()).unwrap();
    let free_opts = GenerateOptions {
        free: true,
        ..Default::default()
    };
    let mut free = BlobAnswerer::new(&file, 1, free_opts).unwrap();
    let mut babble = 0;
    for q in questions() {
        let mut got = String::new();
        let stats = badge
            .answer_streaming(&q, &mut |t| got.push_str(t))
            .unwrap();
        match stats.outcome {
            Outcome::Known => {
                assert!(known.contains(&got), "{q:?} → {got:?}");
                assert!(stats.confidence.is_some());
            }
            Outcome::Fallback => assert_eq!(got, FALLBACK),
            Outcome::Free => panic!("the blob's answers were ignored"),
        }
        babble += usize::from(!known.contains(&free.answer(&q).unwrap()));
    }
    assert!(
        babble > 0,
        "open generation on random weights said only known answers"
    );

    // A threshold above every possible mean log-probability: always the fallback.
    let file = blob(ConfidenceMeasure::MeanLogProb, 0.5);
    let mut badge = BlobAnswerer::new(&file, 1, GenerateOptions::default()).unwrap();
    for q in questions().iter().take(4) {
        assert_eq!(badge.answer(q).unwrap(), FALLBACK);
    }
}

/// The novelty measure through the badge's engine: a question's words that no trained
/// question has lower its confidence by the blob's penalty each, and only that measure.
#[test]
fn novel_words_lower_the_novelty_confidence_by_the_penalty() {
    let trained = ["Where do you live?", "What is your job?"];
    let (bytes, _) = common::random_blob_with(&common::tiny_config(), 4, KvCacheKind::F32, |t| {
        let mut s = spec_for(t, ConfidenceMeasure::None, 0.0);
        s.question_words = trained
            .iter()
            .flat_map(|q| badge_firmware::answers::question_words(q))
            .collect();
        s.novelty_penalty = 0.5;
        Some(s)
    });
    let file = BlobFile {
        bytes: badge::util::AlignedBytes::from_slice(&bytes),
    };
    let set = file.blob().answers.expect("an answers section");
    assert_eq!(
        set.question_word_count(),
        8,
        "where do you live what is your job"
    );
    let mut badge = BlobAnswerer::new(&file, 1, GenerateOptions::default()).unwrap();
    for (q, novel) in [
        ("where do you live", 0.0),
        ("your cousin's job?", 1.0),
        ("sunny Oslo", 2.0),
    ] {
        let stats = badge.answer_streaming(q, &mut |_| {}).unwrap();
        let c = stats
            .confidence
            .unwrap_or_else(|| panic!("{q:?}: {stats:?}"));
        let drop = c.mean_log_prob - c.value(ConfidenceMeasure::MeanLogProbNovelty);
        assert!((drop - 0.5 * novel).abs() < 1e-5, "{q:?}: {c:?}");
        assert_eq!(c.value(ConfidenceMeasure::MeanLogProb), c.mean_log_prob);
    }
}

/// A blob whose answers section carries the question match of the example owner's Q&A
/// pairs at `steer` (a random model, so the match is what decides).
fn matched_blob(pairs: &[badge::data::QaPair], steer: f32) -> BlobFile {
    let taught = badge::answer::known::TaughtAnswers {
        match_questions: pairs
            .iter()
            .map(|p| (p.question.clone(), p.answer.clone()))
            .collect(),
        ..Default::default()
    };
    // Room for the longest answer in the tiny tokenizer's pieces.
    let config = badge_firmware::config::ModelConfig {
        seq_len: 256,
        ..common::tiny_config()
    };
    let (bytes, _) = common::random_blob_with(&config, 4, KvCacheKind::F32, |t| {
        let mut s = spec_for(t, ConfidenceMeasure::None, 0.0);
        badge::answer::known::add_question_signals(
            &mut s,
            t,
            badge::config::DEFAULT_TEMPLATE,
            &taught,
        )
        .unwrap();
        s.match_weights = MatchWeights {
            steer,
            confidence: 1.0,
        };
        Some(s)
    });
    BlobFile {
        bytes: badge::util::AlignedBytes::from_slice(&bytes),
    }
}

/// The question match through the badge's engine: asked a question it was taught, the badge
/// says that question's answer when the match steers, whatever random weights would pick;
/// without steering the model alone chooses, and mostly wrongly.
#[test]
fn the_question_match_steers_a_taught_question_to_its_answer() {
    let pairs = badge::data::read_qa_csv(&common::repo().join("data/profile/qa.csv")).unwrap();
    let right = |file: &BlobFile| {
        let mut badge = BlobAnswerer::new(file, 1, GenerateOptions::default()).unwrap();
        pairs
            .iter()
            .step_by(5)
            .filter(|p| badge.answer(&p.question).unwrap() == p.answer)
            .count()
    };
    let asked = pairs.iter().step_by(5).count();
    let steered = matched_blob(&pairs, 1000.0);
    let set = steered.blob().answers.expect("an answers section");
    let m = set.question_match.expect("a question-match block");
    assert!(
        m.question_count() >= 150,
        "{} questions",
        m.question_count()
    );
    let (with, without) = (right(&steered), right(&matched_blob(&pairs, 0.0)));
    // Two taught questions may share all their telling words ("What do you do?" for two
    // answers), so not every one; but far more than the model alone.
    assert!(with * 10 >= asked * 9, "{with} of {asked} with the match");
    assert!(
        without * 2 < with,
        "{without} of {asked} without, {with} with"
    );
}

fn with_crc(mut b: Vec<u8>) -> Vec<u8> {
    let crc = badge_firmware::format::crc32(&b[HEADER_SIZE..]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn a_corrupt_answers_section_is_rejected_by_name() {
    let file = blob(ConfidenceMeasure::MeanLogProb, -1.0);
    let good = file.bytes.as_slice().to_vec();
    let off = u32::from_le_bytes(good[120..124].try_into().unwrap()) as usize;
    let len = u32::from_le_bytes(good[124..128].try_into().unwrap()) as usize;
    assert!(off > 0 && len > 0);
    let parse = |b: Vec<u8>| {
        let a = badge::util::AlignedBytes::from_slice(&with_crc(b));
        Blob::parse(a.as_slice()).map(|_| ()).unwrap_err()
    };
    let patch = |at: usize, v: u32| {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        b
    };
    let first_edge_token = off + ANSWERS_HEADER_SIZE + {
        let nodes = u32::from_le_bytes(good[off + 4..off + 8].try_into().unwrap()) as usize;
        nodes * NODE_SIZE
    };
    let cases = [
        ("length past the end", patch(124, u32::MAX - 64)),
        ("misaligned offset", patch(120, off as u32 + 4)),
        ("unknown flags", patch(off, 8)),
        ("node count overflow", patch(off + 4, u32::MAX)),
        (
            "token outside the vocabulary",
            patch(first_edge_token, 1 << 20),
        ),
        ("NaN threshold", patch(off + 20, f32::NAN.to_bits())),
        ("unknown measure", patch(off + 16, 9)),
        ("fallback past the section", patch(off + 24, 1000)),
        (
            "unknown node flags",
            patch(off + ANSWERS_HEADER_SIZE + 8, 4),
        ),
    ];
    for (what, b) in cases {
        let e = parse(b);
        assert!(
            matches!(
                e,
                BlobError::BadAnswers { .. }
                    | BlobError::OutOfBounds { .. }
                    | BlobError::Misaligned { .. }
            ),
            "{what}: {e:?}"
        );
        assert!(e.to_string().contains("answers"), "{what}: {e}");
    }
}
