//! `badge sim` and `badge flash`'s image: the badge's main program over a flash image, and
//! every way loading can fail.

mod common;

use badge::answer::{Answerer, BlobAnswerer, BlobFile};
use badge::config::board::Board;
use badge::device::flash::write_image;
use badge::device::sim::{answer_wav, error_wav, run_sim, SimOptions, SimReport};
use badge_firmware::config::KvCacheKind;
use badge_firmware::format::Blob;
use badge_firmware::generate::GenerateOptions;
use badge_firmware::partition::{self, Partition, PartitionTable, TYPE_APP, TYPE_DATA};
use badge_firmware::sam::{self, Channels, Pcm16Writer, Volume};
use std::path::{Path, PathBuf};

const MODEL_OFFSET: usize = 0x31_0000;

fn board_path() -> PathBuf {
    common::repo().join(badge::config::board::DEFAULT_BOARD)
}

/// The button prompts of the test blob.
const INTRO: &str = "Who are you?";
const ASK: [&str; 2] = ["what do you like", "Where do you work?"];

/// Random weights with the test's button prompts and the example owner's known answers, so the
/// badge's loop and the host are compared in the default known-answer mode.
fn blob_bytes() -> Vec<u8> {
    let mut c = common::tiny_config();
    c.seq_len = 64;
    let prompts = badge_firmware::prompts::PromptsSpec {
        intro: INTRO.into(),
        ask: ASK.iter().map(|q| q.to_string()).collect(),
    };
    common::random_blob_full(&c, 7, KvCacheKind::F32, prompts, |tok| {
        badge::answer::known::answers_spec(
            tok,
            badge::config::DEFAULT_TEMPLATE,
            &common::example_answers(),
            badge::config::DEFAULT_FALLBACK,
            false,
        )
        .ok()
    })
    .0
}

/// A blob file and the merged image made from it for the default board.
struct Setup {
    dir: tempfile::TempDir,
    blob: Vec<u8>,
    blob_path: PathBuf,
    image: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let blob = blob_bytes();
    let blob_path = dir.path().join("model.bin");
    std::fs::write(&blob_path, &blob).unwrap();
    let image = dir.path().join("flash.bin");
    let board = Board::load(&board_path()).unwrap();
    write_image(&blob_path, &board, None, None, &image).unwrap();
    Setup {
        dir,
        blob,
        blob_path,
        image,
    }
}

impl Setup {
    fn opts(&self) -> SimOptions {
        let mut o = SimOptions::new(&self.image, self.dir.path().join("wav"));
        o.board = board_path();
        o.generate = GenerateOptions {
            max_new_tokens: 24,
            ..Default::default()
        };
        o
    }
    fn sim(&self, opts: &SimOptions, input: &str) -> (anyhow::Result<SimReport>, String) {
        let mut out = Vec::new();
        let r = run_sim(opts, input.as_bytes(), &mut out);
        (r, String::from_utf8(out).unwrap())
    }
    fn patch_image(&self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut img = std::fs::read(&self.image).unwrap();
        f(&mut img);
        std::fs::write(&self.image, img).unwrap();
    }
    /// Runs the sim expecting a load failure; returns the error chain and the console.
    fn expect_load_error(&self, opts: &SimOptions) -> (String, String) {
        let (r, console) = self.sim(opts, "hello\n");
        let err = format!("{:#}", r.expect_err("the model should not load"));
        assert!(console.contains("badge: cannot start: "), "{console}");
        assert!(error_wav(&opts.out_dir).exists(), "the error is spoken");
        assert!(!answer_wav(&opts.out_dir, 0).exists());
        (err, console)
    }
}

fn wav_samples(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 22050, 16)
    );
    r.samples::<i16>().map(Result::unwrap).collect()
}

#[test]
fn sim_image_layout() {
    let s = setup();
    let img = std::fs::read(&s.image).unwrap();
    assert_eq!(img.len(), MODEL_OFFSET + s.blob.len());
    assert!(
        img[..0x8000].iter().all(|&b| b == 0xFF),
        "no bootloader given"
    );
    let table = PartitionTable::parse(&img[0x8000..0x8C00]).unwrap();
    let names: Vec<&str> = ["nvs", "phy_init", "factory", "model"].to_vec();
    assert_eq!(
        table
            .iter()
            .map(|p| p.name().to_string())
            .collect::<Vec<_>>(),
        names
    );
    let model = table.find("model").unwrap();
    assert_eq!(
        (model.offset, model.size, model.kind, model.subtype),
        (0x31_0000, 0xCF_0000, TYPE_DATA, 0x40)
    );
    assert_eq!(&img[MODEL_OFFSET..], &s.blob[..]);
}

#[test]
fn sim_answers_like_the_host_engine_and_speaks_it() {
    let s = setup();
    let opts = s.opts();
    let long = "x".repeat(201);
    let input = format!("Who are you?\n\n   \n{long}\nwhat do you like\n");
    let (r, console) = s.sim(&opts, &input);
    let report = r.unwrap();
    assert_eq!(report.answers.len(), 2, "{console}");
    assert_eq!(report.empty_lines, 2);
    assert_eq!(report.rejected_lines, 1);
    assert!(
        console.contains("Type a question and press Enter."),
        "{console}"
    );
    assert!(
        console.contains("too long (201 characters; at most 200)"),
        "{console}"
    );
    assert!(
        console.contains("tokens/s]") || console.contains("tokens in under 1 ms]"),
        "{console}"
    );

    let file = BlobFile::read(&s.blob_path).unwrap();
    let mut host = BlobAnswerer::new(&file, 1, opts.generate).unwrap();
    let voice = Blob::parse(file.bytes.as_slice()).unwrap().voice;
    let voice = sam::Voice {
        speed: voice.speed,
        pitch: voice.pitch,
        mouth: voice.mouth,
        throat: voice.throat,
    };
    for (i, (a, q)) in report
        .answers
        .iter()
        .zip(["Who are you?", "what do you like"])
        .enumerate()
    {
        assert_eq!(a.question, q);
        let expected = host.answer(q).unwrap();
        assert_eq!(a.text, expected);
        assert!(
            console.contains(&expected),
            "the answer is printed: {console}"
        );
        assert!(a.generated_tokens > 0);
        assert_eq!(a.wav, answer_wav(&opts.out_dir, i));

        let mut pcm: Vec<i16> = Vec::new();
        let mut w = Pcm16Writer::new(&mut pcm, Volume::FULL, Channels::Mono);
        let n = sam::speak_text(&expected, &voice, &mut w).unwrap_or(0);
        assert_eq!(a.samples, n);
        assert_eq!(wav_samples(&a.wav), pcm);
    }
    assert!(
        report.answers.iter().any(|a| a.samples > 0),
        "something was spoken"
    );
    assert!(!answer_wav(&opts.out_dir, 2).exists());
}

#[test]
fn sim_partition_table_bad_md5() {
    let s = setup();
    s.patch_image(|img| img[0x8000 + 32 * 3 + 8] ^= 0x01);
    let (err, console) = s.expect_load_error(&s.opts());
    assert!(err.contains("partition table MD5 mismatch"), "{err}");
    assert!(console.contains("MD5"), "{console}");
}

#[test]
fn sim_no_model_partition() {
    let s = setup();
    let table = partition::build(&[
        Partition::new("factory", TYPE_APP, 0, 0x10000, 0x30_0000, 0).unwrap(),
        Partition::new("weights", TYPE_DATA, 0x40, 0x31_0000, 0xCF_0000, 0).unwrap(),
    ])
    .unwrap();
    s.patch_image(|img| img[0x8000..0x8C00].copy_from_slice(&table));
    let (err, _) = s.expect_load_error(&s.opts());
    assert!(err.contains("no partition named `model`"), "{err}");
}

#[test]
fn sim_erased_model_partition() {
    let s = setup();
    s.patch_image(|img| img.truncate(MODEL_OFFSET));
    let (err, _) = s.expect_load_error(&s.opts());
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn sim_corrupt_blob_is_a_crc_error() {
    let s = setup();
    s.patch_image(|img| {
        let i = img.len() - 100;
        img[i] ^= 0x40;
    });
    let (err, _) = s.expect_load_error(&s.opts());
    assert!(err.contains("CRC32 mismatch"), "{err}");
}

#[test]
fn sim_model_over_memory_cap() {
    let s = setup();
    let mut opts = s.opts();
    opts.memory_budget = Some(s.blob.len() + badge_firmware::app::APP_RESERVE + 1);
    let (err, _) = s.expect_load_error(&opts);
    assert!(
        err.contains("only") && err.contains("are available"),
        "{err}"
    );
    opts.memory_budget = Some(s.blob.len() / 2);
    let (err, _) = s.expect_load_error(&opts);
    assert!(err.contains("run state 0"), "refused before copying: {err}");
}

/// A board whose model partition is `model_size` bytes, in `dir`.
fn small_board(dir: &Path, model_size: usize) -> PathBuf {
    let csv = dir.join("parts.csv");
    std::fs::write(&csv, format!("factory, app, factory, 0x10000, 0x10000,\nmodel, data, 0x40, 0x20000, {model_size:#x}, readonly\n")).unwrap();
    let toml = std::fs::read_to_string(board_path()).unwrap();
    let toml = toml.replace("../../firmware/partitions.csv", "parts.csv");
    let path = dir.join("board.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn sim_blob_larger_than_partition() {
    let s = setup();
    let board_file = small_board(s.dir.path(), 0x1000);
    let board = Board::load(&board_file).unwrap();
    let out = s.dir.path().join("small.bin");
    let err = format!(
        "{:#}",
        write_image(&s.blob_path, &board, None, None, &out).unwrap_err()
    );
    assert!(
        err.contains("does not fit the `model` flash partition"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written");

    // A header claiming more than the partition (as if flashed by another tool): refused.
    let table = badge::device::flash::table_bytes(&board).unwrap();
    assert!(
        PartitionTable::parse(&table)
            .unwrap()
            .find("model")
            .unwrap()
            .flags
            == partition::FLAG_READONLY
    );
    let mut img = vec![0xFF; 0x21000];
    img[0x8000..0x8C00].copy_from_slice(&table);
    img[0x20000..].copy_from_slice(&s.blob[..0x1000]);
    std::fs::write(&s.image, img).unwrap();
    let mut opts = s.opts();
    opts.board = board_file;
    let (err, _) = s.expect_load_error(&opts);
    assert!(err.contains("the model partition holds 4096"), "{err}");
}

#[test]
fn flash_refuses_a_corrupt_blob() {
    let s = setup();
    let mut bad = s.blob.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    std::fs::write(&s.blob_path, bad).unwrap();
    let out = s.dir.path().join("bad.bin");
    let board = Board::load(&board_path()).unwrap();
    let err = format!(
        "{:#}",
        write_image(&s.blob_path, &board, None, None, &out).unwrap_err()
    );
    assert!(err.contains("CRC32 mismatch"), "{err}");
    assert!(!out.exists());
}

#[test]
fn flash_places_bootloader_and_app() {
    let s = setup();
    let boot = s.dir.path().join("boot.bin");
    let app = s.dir.path().join("app.bin");
    std::fs::write(&boot, [0xE9, 1, 2, 3]).unwrap();
    std::fs::write(&app, vec![0xAB; 1000]).unwrap();
    let board = Board::load(&board_path()).unwrap();
    let out = s.dir.path().join("full.bin");
    write_image(&s.blob_path, &board, Some(&app), Some(&boot), &out).unwrap();
    let img = std::fs::read(&out).unwrap();
    assert_eq!(&img[..4], &[0xE9, 1, 2, 3]);
    assert!(img[0x10000..0x10000 + 1000].iter().all(|&b| b == 0xAB));
    assert_eq!(img[0x10000 + 1000], 0xFF);
    assert_eq!(&img[MODEL_OFFSET..], &s.blob[..]);
}

// ---- the boot self-test -----------------------------------------------------------------

/// The answers of a session equal the host engine's for the same questions.
fn assert_host_answers(s: &Setup, opts: &SimOptions, report: &SimReport, questions: &[&str]) {
    let file = BlobFile::read(&s.blob_path).unwrap();
    let mut host = BlobAnswerer::new(&file, 1, opts.generate).unwrap();
    assert_eq!(report.answers.len(), questions.len());
    for (a, q) in report.answers.iter().zip(questions) {
        assert_eq!(a.text, host.answer(q).unwrap(), "{q}");
    }
}

#[test]
fn sim_boot_self_test_passes_on_working_hardware() {
    let s = setup();
    let opts = s.opts();
    let (r, console) = s.sim(&opts, "Who are you?\n");
    let report = r.unwrap();
    assert!(
        console.contains("badge: self-test passed: 8 passes on 2 workers, one on one worker and the portable kernel agree bit for bit"),
        "{console}"
    );
    // The self-test comes before the prompt.
    assert!(console.find("self-test").unwrap() < console.find("badge ready").unwrap());
    assert_eq!(report.matmul_mode, "all-workers");
    // 8 shared passes, then the answer's matmuls are shared too; one pass on one worker.
    assert!(report.shared_matmuls > 8, "{}", report.shared_matmuls);
    assert_eq!(report.one_worker_matmuls, 1);
    assert_host_answers(&s, &opts, &report, &["Who are you?"]);
}

#[test]
fn sim_dual_core_fault_falls_back_to_one_worker() {
    let s = setup();
    let mut opts = s.opts();
    opts.fault = Some(badge::device::sim::SimFault::DualCore);
    let qs = ["Who are you?", "what do you like"];
    let (r, console) = s.sim(&opts, &format!("{}\n{}\n", qs[0], qs[1]));
    let report = r.unwrap();
    assert!(
        console.contains("badge: self-test: pass 3 of 8 on 2 workers differs from pass 1 at row "),
        "{console}"
    );
    assert!(
        console.contains("using one worker from now on"),
        "{console}"
    );
    assert_eq!(report.matmul_mode, "one-worker");
    // The workers shared nothing after the third pass: every answer ran on one worker.
    assert_eq!(report.shared_matmuls, 3);
    assert!(report.one_worker_matmuls > 1);
    assert_host_answers(&s, &opts, &report, &qs);
}

#[test]
fn sim_kernel_fault_falls_back_to_the_portable_kernel() {
    let s = setup();
    let mut opts = s.opts();
    opts.fault = Some(badge::device::sim::SimFault::Kernel);
    let qs = ["Who are you?"];
    let (r, console) = s.sim(&opts, "Who are you?\n");
    let report = r.unwrap();
    // The fault is the same on every pass, so the workers agree with each other and with one
    // worker; only the portable kernel tells.
    assert!(!console.contains("differs from pass 1"), "{console}");
    assert!(
        console.contains(
            "badge: self-test: the vector kernel on one worker differs from the portable kernel at row "
        ),
        "{console}"
    );
    assert!(
        console.contains("using the portable kernel on one worker from now on"),
        "{console}"
    );
    assert_eq!(report.matmul_mode, "portable");
    // The answers bypassed the (faulty) workers entirely.
    assert_eq!((report.shared_matmuls, report.one_worker_matmuls), (8, 1));
    assert_host_answers(&s, &opts, &report, &qs);
}

// ---- buttons --------------------------------------------------------------------------------

#[test]
fn sim_button_presses_introduce_cycle_wrap_and_repeat() {
    let s = setup();
    let mut opts = s.opts();
    opts.presses = badge::device::sim::parse_presses("short, short,long").unwrap();
    // Then two more short presses and a typed question from the console.
    let (r, console) = s.sim(&opts, "!press\n!press\nwhat do you like\n!press long\n");
    let report = r.unwrap();
    let file = BlobFile::read(&s.blob_path).unwrap();
    let mut host = BlobAnswerer::new(&file, 1, opts.generate).unwrap();
    let intro = host.answer(INTRO).unwrap();
    let ask0 = host.answer(ASK[0]).unwrap();
    let ask1 = host.answer(ASK[1]).unwrap();
    let want = [
        ("button", INTRO, &intro),
        ("button", ASK[0], &ask0),
        ("repeat", ASK[0], &ask0),
        ("button", ASK[1], &ask1),
        ("button", INTRO, &intro), // wrapped around
        ("typed", ASK[0], &ask0),
        ("repeat", ASK[0], &ask0), // the last answer, typed or not
    ];
    let got: Vec<(&str, &str, &str)> = report
        .answers
        .iter()
        .map(|a| (a.source, a.question.as_str(), a.text.as_str()))
        .collect();
    let want: Vec<(&str, &str, &str)> = want.iter().map(|(s, q, t)| (*s, *q, t.as_str())).collect();
    assert_eq!(got, want, "{console}");
    // One WAV per utterance; a repeat says exactly the same samples again.
    for (i, a) in report.answers.iter().enumerate() {
        assert_eq!(a.wav, answer_wav(&opts.out_dir, i));
        assert!(a.wav.exists(), "{}", a.wav.display());
    }
    assert_eq!(
        wav_samples(&report.answers[2].wav),
        wav_samples(&report.answers[1].wav)
    );
    assert!(!answer_wav(&opts.out_dir, 7).exists());
    assert!(console.contains("[button] Who are you?"), "{console}");
    assert!(console.contains("[button] again: "), "{console}");
}

#[test]
fn sim_long_press_first_introduces_and_bad_press_lists_are_refused() {
    let s = setup();
    let mut opts = s.opts();
    opts.presses = badge::device::sim::parse_presses("long").unwrap();
    let (r, _) = s.sim(&opts, "!press sideways\n");
    let report = r.unwrap();
    // Nothing said yet: the long press introduces. `!press sideways` is a question like any.
    assert_eq!(report.answers.len(), 2);
    assert_eq!(report.answers[0].source, "button");
    assert_eq!(report.answers[0].question, INTRO);
    assert_eq!(report.answers[1].source, "typed");
    let e = badge::device::sim::parse_presses("short,medium")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"medium\" is not a press"), "{e}");
}
