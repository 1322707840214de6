//! `badge flash` over a serial port, end to end without a badge: espflash's real code talks to
//! a stand-in for the ESP32-S3's ROM loader on a pseudo-terminal (`rom_stub`), the flash it
//! stores is saved as an image, and `badge sim` boots that image and must answer like the
//! host engine over the same blob.

mod common;
mod rom_stub;

use badge::answer::{Answerer, BlobAnswerer, BlobFile};
use badge::config::board::Board;
use badge::device::flash::{
    flash_serial, write_image, FlashReport, ResetAfterOperation, ResetBeforeOperation,
    SerialOptions,
};
use badge::device::sim::{run_sim, SimOptions};
use badge_firmware::config::KvCacheKind;
use badge_firmware::generate::GenerateOptions;
use rom_stub::{op, RomStub, StubLog};
use std::path::{Path, PathBuf};

const FLASH_SIZE: usize = 16 << 20;
const MODEL_OFFSET: u32 = 0x31_0000;

fn board_path() -> PathBuf {
    common::repo().join(badge::config::board::DEFAULT_BOARD)
}

struct Setup {
    dir: tempfile::TempDir,
    blob_path: PathBuf,
    board: Board,
}

fn setup(seed: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::tiny_config();
    c.seq_len = 64;
    let blob = common::random_blob(&c, seed, KvCacheKind::F32).0;
    let blob_path = dir.path().join("model.bin");
    std::fs::write(&blob_path, blob).unwrap();
    Setup {
        dir,
        blob_path,
        board: Board::load(&board_path()).unwrap(),
    }
}

/// Options for the stand-in: it is already "in download mode" and cannot be reset by
/// DTR/RTS (a pty has no modem lines), so no reset before and the stub is left running.
fn stub_opts(stub: &RomStub, use_stub: bool, baud: u32) -> SerialOptions {
    SerialOptions {
        port: Some(stub.path().to_str().unwrap().to_string()),
        baud,
        before: ResetBeforeOperation::NoReset,
        after: ResetAfterOperation::NoResetNoStub,
        use_stub,
        progress: false,
    }
}

/// The stand-in's flash equals the merged image `write_image` makes from the same inputs
/// (beyond the image's end, only erased `FF`: the ROM pads its blocks with it).
fn assert_same_as_merged_image(s: &Setup, log: &StubLog, app: Option<&Path>, boot: Option<&Path>) {
    let merged = s.dir.path().join("merged.bin");
    write_image(&s.blob_path, &s.board, app, boot, &merged).unwrap();
    let merged = std::fs::read(merged).unwrap();
    assert!(log.written_end >= merged.len());
    assert!(
        log.flash[..merged.len()] == merged[..],
        "the flashed bytes differ from the merged image"
    );
    assert!(log.flash[merged.len()..].iter().all(|&b| b == 0xFF));
}

/// Boots the saved flash in `badge sim` and checks each answer against the host engine.
fn boot_and_ask(s: &Setup, log: &StubLog) {
    let image = s.dir.path().join("flashed.bin");
    log.save(&image);
    let mut opts = SimOptions::new(&image, s.dir.path().join("wav"));
    opts.board = board_path();
    opts.generate = GenerateOptions {
        max_new_tokens: 16,
        ..Default::default()
    };
    let mut console = Vec::new();
    let questions = ["Who are you?", "what is your email"];
    let input = questions.join("\n") + "\n";
    let report = run_sim(&opts, input.as_bytes(), &mut console).unwrap();
    let console = String::from_utf8(console).unwrap();
    assert_eq!(report.answers.len(), 2, "{console}");
    let file = BlobFile::read(&s.blob_path).unwrap();
    let mut host = BlobAnswerer::new(&file, 1, opts.generate).unwrap();
    for (a, q) in report.answers.iter().zip(questions) {
        assert_eq!(a.question, q);
        assert_eq!(a.text, host.answer(q).unwrap());
        assert!(a.generated_tokens > 0);
    }
}

fn assert_clean(log: &StubLog) {
    assert!(
        log.unknown.is_empty(),
        "unknown commands: {:02x?}",
        log.unknown
    );
    assert!(log.errors.is_empty(), "protocol errors: {:?}", log.errors);
    assert!(log.saw(op::SYNC) && log.saw(op::READ_REG) && log.saw(op::SPI_ATTACH));
}

fn assert_report(r: &FlashReport, names: &[(&str, u32)]) {
    assert_eq!(r.chip, "esp32s3");
    assert_eq!(r.flash_size as usize, FLASH_SIZE);
    let got: Vec<(&str, u32)> = r
        .regions
        .iter()
        .map(|g| (g.name.as_str(), g.offset))
        .collect();
    assert_eq!(got, names);
}

#[test]
fn flash_serial_with_stub_writes_compressed_and_the_image_boots() {
    let s = setup(7);
    let stub = RomStub::start(FLASH_SIZE);
    let r = flash_serial(
        &s.blob_path,
        &s.board,
        None,
        None,
        &stub_opts(&stub, true, 921_600),
    )
    .unwrap();
    let log = stub.finish();
    assert_clean(&log);
    assert!(
        log.stub_started,
        "espflash uploaded and started its RAM stub"
    );
    assert!(log.saw(op::FLASH_DEFL_BEGIN) && log.saw(op::FLASH_DEFL_DATA));
    assert!(!log.saw(op::FLASH_BEGIN), "everything went compressed");
    assert!(log.saw(op::SPI_FLASH_MD5), "every region is verified");
    assert!(log.saw(op::SPI_SET_PARAMS) && log.saw(op::GET_SECURITY_INFO));
    assert_eq!(log.bauds, [921_600]);
    let blob_len = std::fs::metadata(&s.blob_path).unwrap().len() as u32;
    assert_eq!(
        log.writes,
        [
            (0x8000, 0xC00),
            (MODEL_OFFSET, blob_len.next_multiple_of(4))
        ]
    );
    assert_report(&r, &[("partition table", 0x8000), ("model", MODEL_OFFSET)]);
    assert_same_as_merged_image(&s, &log, None, None);
    boot_and_ask(&s, &log);
}

#[test]
fn flash_serial_through_the_rom_loader_with_app_and_bootloader() {
    let s = setup(11);
    let boot = s.dir.path().join("boot.bin");
    let app = s.dir.path().join("app.bin");
    std::fs::write(&boot, [0xE9, 3, 2, 0x20, 1, 2, 3, 4]).unwrap();
    std::fs::write(&app, vec![0xAB; 3001]).unwrap();
    let stub = RomStub::start(FLASH_SIZE);
    let r = flash_serial(
        &s.blob_path,
        &s.board,
        Some(&app),
        Some(&boot),
        &stub_opts(&stub, false, 115_200),
    )
    .unwrap();
    let log = stub.finish();
    assert_clean(&log);
    assert!(!log.stub_started);
    assert!(log.saw(op::FLASH_BEGIN) && log.saw(op::FLASH_DATA) && log.saw(op::FLASH_END));
    assert!(log.saw(op::SPI_FLASH_MD5));
    assert!(log.bauds.is_empty(), "115200 is the ROM's own speed");
    assert_eq!(
        log.writes.iter().map(|w| w.0).collect::<Vec<_>>(),
        [0x0, 0x8000, 0x1_0000, MODEL_OFFSET]
    );
    assert_report(
        &r,
        &[
            ("bootloader", 0),
            ("partition table", 0x8000),
            ("app", 0x1_0000),
            ("model", MODEL_OFFSET),
        ],
    );
    // The app's odd length is padded to a word with FF: the merged image has FF there too.
    assert_same_as_merged_image(&s, &log, Some(&app), Some(&boot));
    boot_and_ask(&s, &log);
}

/// A board whose model partition is `size` bytes.
fn small_board(dir: &Path, size: usize) -> Board {
    let csv = dir.join("parts.csv");
    std::fs::write(
        &csv,
        format!(
            "factory, app, factory, 0x10000, 0x10000,\nmodel, data, 0x40, 0x20000, {size:#x},\n"
        ),
    )
    .unwrap();
    let toml = std::fs::read_to_string(board_path())
        .unwrap()
        .replace("../../firmware/partitions.csv", "parts.csv");
    let path = dir.join("board.toml");
    std::fs::write(&path, toml).unwrap();
    Board::load(&path).unwrap()
}

#[test]
fn flash_serial_refuses_before_touching_the_port() {
    let s = setup(7);

    // Larger than the model partition.
    let small = small_board(s.dir.path(), 0x1000);
    let stub = RomStub::start(FLASH_SIZE);
    let err = flash_serial(
        &s.blob_path,
        &small,
        None,
        None,
        &stub_opts(&stub, true, 115_200),
    )
    .unwrap_err();
    let log = stub.finish();
    let err = format!("{err:#}");
    assert!(
        err.contains("does not fit the `model` flash partition"),
        "{err}"
    );
    assert!(
        log.commands.is_empty(),
        "nothing was sent: {:02x?}",
        log.commands
    );
    assert!(!log.saw(op::FLASH_BEGIN) && !log.saw(op::FLASH_DEFL_BEGIN));

    // A corrupt blob.
    let mut bad = std::fs::read(&s.blob_path).unwrap();
    let n = bad.len();
    bad[n - 1] ^= 1;
    std::fs::write(&s.blob_path, bad).unwrap();
    let stub = RomStub::start(FLASH_SIZE);
    let err = flash_serial(
        &s.blob_path,
        &s.board,
        None,
        None,
        &stub_opts(&stub, true, 115_200),
    )
    .unwrap_err();
    let log = stub.finish();
    assert!(format!("{err:#}").contains("CRC32 mismatch"), "{err:#}");
    assert!(log.commands.is_empty());
}

#[test]
fn flash_serial_reports_a_silent_port() {
    let s = setup(7);
    // A chip that is not in its serial loader: espflash retries, then gives up with a hint.
    let stub = RomStub::start_mute();
    let opts = SerialOptions {
        port: Some(stub.path().to_str().unwrap().into()),
        before: ResetBeforeOperation::NoReset,
        progress: false,
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        flash_serial(&s.blob_path, &s.board, None, None, &opts).unwrap_err()
    );
    let log = stub.finish();
    assert!(err.contains("no ESP32-S3 serial loader answered"), "{err}");
    assert!(
        log.commands.iter().all(|&c| c == op::SYNC),
        "{:02x?}",
        log.commands
    );
    assert!(!log.commands.is_empty());
}

#[test]
fn badge_flash_cli_over_a_port() {
    let s = setup(13);
    let stub = RomStub::start(FLASH_SIZE);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_badge"))
        .current_dir(common::repo())
        .args(["flash", "--model"])
        .arg(&s.blob_path)
        .arg("--port")
        .arg(stub.path())
        .args(["--no-reset", "--baud", "460800"])
        .output()
        .unwrap();
    let log = stub.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("flashed esp32s3"), "{stdout}");
    assert!(stdout.contains("MD5 verified"), "{stdout}");
    assert_clean(&log);
    assert_eq!(log.bauds, [460_800]);
    assert_same_as_merged_image(&s, &log, None, None);
}
