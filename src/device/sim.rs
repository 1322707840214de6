//! `badge sim`: the badge's own main program (`badge_firmware::app`) on the host.
//!
//! A flash image file stands in for the flash chip, stdin/stdout for the USB console, one WAV
//! file per answer for the I2S speaker and a thread for the second core. Only these adapters
//! are host code: finding the model, checking it, the question loop and the speech are the
//! firmware's code paths, so what the simulator does is what the badge does.

use crate::config::board::{Board, DEFAULT_BOARD};
use anyhow::{anyhow, Context, Result};
use badge_firmware::app::embedded_io;
use badge_firmware::app::embedded_storage::{
    self,
    nor_flash::{ErrorType, NorFlashError, NorFlashErrorKind, ReadNorFlash},
};
use badge_firmware::app::{
    self, AnswerRecord, AnswerSource, AppConfig, AppError, Buttons, Clock, Peripherals,
    SessionReport, Speaker, Utterance,
};
use badge_firmware::buttons::{Press, PressKind};
use badge_firmware::engine::MatmulMode;
use badge_firmware::generate::GenerateOptions;
use badge_firmware::sam::{Channels, Pcm16Sink, Volume, SAMPLE_RATE};
use badge_firmware::workers::{RowJob, ThreadWorkers, Workers};
use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufWriter, Read as _, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `badge sim`.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The merged flash image (`badge flash --out`).
    pub image: PathBuf,
    /// Board profile: flash size and the PSRAM budget.
    pub board: PathBuf,
    /// Where the answers' WAV files go.
    pub out_dir: PathBuf,
    /// Overrides the board's PSRAM budget (`psram_size - reserved_psram`), in bytes.
    pub memory_budget: Option<usize>,
    pub generate: GenerateOptions,
    /// Longest question accepted, in characters.
    pub max_question_chars: usize,
    /// A hardware fault to simulate, to see the boot self-test fall back (`--simulate-fault`).
    pub fault: Option<SimFault>,
    /// Button presses made before the first console line (`--press short,short,long`).
    pub presses: Vec<PressKind>,
}

/// Parses `--press`: comma-separated `short` / `long`.
pub fn parse_presses(list: &str) -> Result<Vec<PressKind>> {
    list.split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(|w| match w {
            "short" => Ok(PressKind::Short),
            "long" => Ok(PressKind::Long),
            _ => Err(anyhow!(
                "--press: {w:?} is not a press; use short or long, separated by commas"
            )),
        })
        .collect()
}

/// The badge's button, pressed as `--press` says: each poll hands out the next press, so
/// all of them come before the console is read (one utterance each, in order).
struct ScriptedButtons {
    presses: std::collections::VecDeque<PressKind>,
}

impl Buttons for ScriptedButtons {
    fn poll(&mut self, now: u64) -> Option<Press> {
        self.presses.pop_front().map(|k| Press::synthetic(k, now))
    }
}

/// A fault of the badge's matmul hardware for the simulator to play, through the `Workers`
/// the firmware is given (the firmware's code paths stay exactly the badge's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFault {
    /// Every third matmul shared by both workers comes back with one value off by one bit,
    /// as dual-core PIE runs did on another project's boards; one worker alone stays right.
    DualCore,
    /// Every matmul through the workers, shared or on one worker, comes back with one value
    /// off: a vector kernel wrong on every core. Only the portable kernel, which bypasses the
    /// workers, stays right.
    Kernel,
}

/// The simulated second core (a thread), misbehaving as `fault` says, counting the matmuls it
/// is given (so a test can see that a fallback really took the workers out of the loop).
struct SimWorkers {
    inner: ThreadWorkers,
    fault: Option<SimFault>,
    shared_calls: Cell<usize>,
    one_calls: Cell<usize>,
}

impl SimWorkers {
    /// Flips the lowest mantissa bit of the last value: the smallest change bit-for-bit
    /// comparison must still see.
    fn corrupt(out: &mut [f32]) {
        if let Some(v) = out.last_mut() {
            *v = f32::from_bits(v.to_bits() ^ 1);
        }
    }
}

impl Workers for SimWorkers {
    fn run_rows(&self, out: &mut [f32], job: &RowJob<'_>) {
        self.inner.run_rows(out, job);
        let call = self.shared_calls.get();
        self.shared_calls.set(call + 1);
        match self.fault {
            Some(SimFault::DualCore) if call % 3 == 2 => Self::corrupt(out),
            Some(SimFault::Kernel) => Self::corrupt(out),
            _ => {}
        }
    }
    fn run_rows_one(&self, out: &mut [f32], job: &RowJob<'_>) {
        self.inner.run_rows_one(out, job);
        self.one_calls.set(self.one_calls.get() + 1);
        if self.fault == Some(SimFault::Kernel) {
            Self::corrupt(out);
        }
    }
    fn count(&self) -> usize {
        self.inner.count()
    }
}

impl SimOptions {
    pub fn new(image: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        SimOptions {
            image: image.into(),
            board: PathBuf::from(DEFAULT_BOARD),
            out_dir: out_dir.into(),
            memory_budget: None,
            generate: GenerateOptions::default(),
            max_question_chars: app::MAX_QUESTION_CHARS,
            fault: None,
            presses: Vec::new(),
        }
    }
}

/// One answer of a simulated session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimAnswer {
    /// `typed`, `button` or `repeat` (a long press: the last answer again).
    pub source: &'static str,
    pub question: String,
    pub text: String,
    pub generated_tokens: usize,
    pub millis: u64,
    /// SAM samples spoken (each one 16-bit PCM value in the mono WAV).
    pub samples: usize,
    pub wav: PathBuf,
}

/// What a simulated session did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimReport {
    pub answers: Vec<SimAnswer>,
    pub empty_lines: usize,
    pub rejected_lines: usize,
    /// How the boot self-test left the matmul: `all-workers`, `one-worker` or `portable`.
    pub matmul_mode: &'static str,
    /// Matmuls the workers were given to share, and to run on one worker (self-test included).
    pub shared_matmuls: usize,
    pub one_worker_matmuls: usize,
}

/// The name `SimReport::matmul_mode` uses for a mode.
pub fn mode_name(mode: MatmulMode) -> &'static str {
    match mode {
        MatmulMode::AllWorkers => "all-workers",
        MatmulMode::OneWorker => "one-worker",
        MatmulMode::Portable => "portable",
    }
}

/// The WAV written for the `index`-th answer (counting from 0): `answer-001.wav` first.
pub fn answer_wav(out_dir: &Path, index: usize) -> PathBuf {
    out_dir.join(format!("answer-{:03}.wav", index + 1))
}

/// The WAV of the spoken error when the model cannot be loaded.
pub fn error_wav(out_dir: &Path) -> PathBuf {
    out_dir.join("error.wav")
}

/// A flash image file as the badge's flash chip. Past the file's end reads return `FF`, as
/// erased flash does (the image stops at its last written byte), up to the board's flash size.
pub struct FileFlash {
    file: File,
    file_len: u64,
    capacity: u64,
}

impl FileFlash {
    pub fn open(path: &Path, capacity: u64) -> Result<Self> {
        let file = File::open(path)
            .with_context(|| format!("cannot open flash image {}", path.display()))?;
        let file_len = file.metadata()?.len();
        if file_len > capacity {
            anyhow::bail!(
                "{} is {file_len} bytes, larger than the board's {capacity}-byte flash",
                path.display()
            );
        }
        Ok(FileFlash {
            file,
            file_len,
            capacity,
        })
    }
}

#[derive(Debug)]
pub struct FlashError(NorFlashErrorKind);

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl ErrorType for FileFlash {
    type Error = FlashError;
}

impl ReadNorFlash for FileFlash {
    /// esp-storage reads in 4-byte words; keeping the same granularity here makes the
    /// simulator exercise the firmware's aligned-read path.
    const READ_SIZE: usize = 4;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        embedded_storage::nor_flash::check_read(self, offset, bytes.len()).map_err(FlashError)?;
        bytes.fill(0xFF);
        let start = u64::from(offset);
        if start < self.file_len {
            let n = (self.file_len - start).min(bytes.len() as u64) as usize;
            self.file
                .seek(SeekFrom::Start(start))
                .map_err(|_| FlashError(NorFlashErrorKind::Other))?;
            self.file
                .read_exact(&mut bytes[..n])
                .map_err(|_| FlashError(NorFlashErrorKind::Other))?;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.capacity as usize
    }
}

/// A `BufRead` as the console's receive half.
struct ConsoleIn<R>(R);

impl<R> embedded_io::ErrorType for ConsoleIn<R> {
    type Error = embedded_io::ErrorKind;
}

/// Always ready: the simulator's console blocks on its input, and ends at its end.
impl<R: BufRead> embedded_io::ReadReady for ConsoleIn<R> {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

impl<R: BufRead> embedded_io::Read for ConsoleIn<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let avail = self
            .0
            .fill_buf()
            .map_err(|_| embedded_io::ErrorKind::Other)?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.0.consume(n);
        Ok(n)
    }
}

/// A `Write` as the console's transmit half. The badge's console speaks `\r\n`; a host
/// terminal or a test wants plain `\n`, so carriage returns are dropped here.
struct ConsoleOut<W>(W);

impl<W> embedded_io::ErrorType for ConsoleOut<W> {
    type Error = embedded_io::ErrorKind;
}

impl<W: Write> embedded_io::Write for ConsoleOut<W> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for part in buf.split(|&b| b == b'\r') {
            self.0
                .write_all(part)
                .map_err(|_| embedded_io::ErrorKind::Other)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush().map_err(|_| embedded_io::ErrorKind::Other)
    }
}

/// The speaker: one mono 16-bit WAV per utterance. I/O errors are kept and reported after
/// the session, since the firmware's sink interface cannot fail.
struct WavSpeaker {
    out_dir: PathBuf,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    error: Option<anyhow::Error>,
}

impl WavSpeaker {
    fn fail(&mut self, e: impl Into<anyhow::Error>) {
        if self.error.is_none() {
            self.error = Some(e.into());
        }
    }
}

impl Pcm16Sink for WavSpeaker {
    fn write_pcm16(&mut self, samples: &[i16]) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        let r = samples.iter().try_for_each(|&s| w.write_sample(s));
        if let Err(e) = r {
            self.writer = None;
            self.fail(e);
        }
    }
}

impl Speaker for WavSpeaker {
    fn begin(&mut self, what: Utterance) {
        let path = match what {
            Utterance::Answer(i) => answer_wav(&self.out_dir, i),
            Utterance::Error => error_wav(&self.out_dir),
        };
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        match hound::WavWriter::create(&path, spec) {
            Ok(w) => self.writer = Some(w),
            Err(e) => self.fail(anyhow!(e).context(format!("creating {}", path.display()))),
        }
    }
    fn end(&mut self) {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.finalize() {
                self.fail(e);
            }
        }
    }
}

struct HostClock(Instant);

impl Clock for HostClock {
    fn millis(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// Runs the badge program over `opts.image`, reading questions from `input` until it ends and
/// writing the console to `output`. A model that cannot be loaded is an error (after the
/// badge printed and spoke it, to `output` and `error.wav`).
pub fn run_sim(opts: &SimOptions, input: impl BufRead, output: impl Write) -> Result<SimReport> {
    let board = Board::load(&opts.board)?;
    let budget = match opts.memory_budget {
        Some(b) => b,
        None => usize::try_from(board.memory_budget())
            .context("PSRAM size does not fit this host's address space")?,
    };
    let mut cfg = AppConfig::new(budget);
    cfg.model_partition = &board.model_partition;
    cfg.generate = opts.generate;
    cfg.max_question_chars = opts.max_question_chars;
    cfg.volume = Volume::FULL;
    cfg.channels = Channels::Mono;
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;

    let mut flash = FileFlash::open(&opts.image, board.flash_size)?;
    let mut io = Peripherals {
        console_in: ConsoleIn(input),
        console_out: ConsoleOut(output),
        speaker: WavSpeaker {
            out_dir: opts.out_dir.clone(),
            writer: None,
            error: None,
        },
        clock: HostClock(Instant::now()),
        buttons: ScriptedButtons {
            presses: opts.presses.iter().copied().collect(),
        },
    };
    let mut answers = Vec::new();
    let mut on_answer = |a: &AnswerRecord<'_>| {
        answers.push(SimAnswer {
            source: match a.source {
                AnswerSource::Typed => "typed",
                AnswerSource::Button => "button",
                AnswerSource::Repeat => "repeat",
            },
            question: a.question.to_string(),
            text: a.text.to_string(),
            generated_tokens: a.stats.generated_tokens,
            millis: a.millis,
            samples: a.samples,
            wav: answer_wav(&opts.out_dir, a.index),
        })
    };
    let workers = SimWorkers {
        inner: ThreadWorkers::new(),
        fault: opts.fault,
        shared_calls: Cell::new(0),
        one_calls: Cell::new(0),
    };
    let result = app::run(&mut flash, &workers, &mut io, &cfg, &mut on_answer);
    if let Some(e) = io.speaker.error.take() {
        return Err(e.context("writing the answers' WAV files"));
    }
    let report: SessionReport = result.map_err(|e| match e {
        AppError::Load(e) => anyhow!(e).context(format!(
            "the badge could not start from {}",
            opts.image.display()
        )),
        AppError::Session(e) => anyhow!(e),
    })?;
    Ok(SimReport {
        answers,
        empty_lines: report.empty_lines,
        rejected_lines: report.rejected_lines,
        matmul_mode: mode_name(report.self_test.map_or(MatmulMode::AllWorkers, |t| t.mode)),
        shared_matmuls: workers.shared_calls.get(),
        one_worker_matmuls: workers.one_calls.get(),
    })
}
