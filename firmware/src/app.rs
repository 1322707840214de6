//! The badge's main program, written against small traits instead of esp-hal.
//!
//! Everything the badge does after boot — find the model in flash, check it, load it into
//! PSRAM, then answer questions typed on the console and speak the answers — lives here, so
//! the host simulator (`badge sim`) runs the very same code with a file as flash, stdin/stdout
//! as the console and WAV files as the speaker. The hardware shell only has to implement:
//!
//! - flash: `embedded-storage`'s [`ReadNorFlash`] (esp-storage's `FlashStorage` does);
//! - console: `embedded-io` [`Read`] and [`Write`] (the USB-serial-JTAG halves do);
//! - speaker: [`Speaker`], a [`Pcm16Sink`] (the I2S DMA ring takes 16-bit frames);
//! - the second core: [`Workers`];
//! - a millisecond [`Clock`] for tokens per second and button timing;
//! - [`Buttons`]: finished presses of the badge's buttons, and a low-power wait between
//!   polls ([`NoButtons`] for a board without any).
//!
//! Failures while loading never panic: a reset would only fail the same way again (a crash
//! loop with no explanation). Instead the badge prints what is wrong and how to fix it, says a
//! short phrase through the speaker (a badge is often used without a console attached), and
//! [`run`] returns the error so the shell can idle.

use crate::buffers::AlignedBuf;
use crate::buttons::{Action, ButtonMenu, Press, PressKind};
use crate::engine::{matmul, Engine, MatmulMode, QMatrix, RunStateSize};
use crate::format::{Blob, BlobError, HEADER_SIZE};
use crate::generate::{self, GenerateOptions, GenerateStats};
use crate::partition::{Partition, PartitionError, PartitionTable, TABLE_MAX_LEN, TABLE_OFFSET};
use crate::sam::{self, Channels, Pcm16Sink, Pcm16Writer, Volume};
use crate::template::PromptTemplate;
use crate::tokenizer::Tokenizer;
use crate::workers::Workers;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;
use embedded_io::{Read, ReadReady, Write};
use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind, ReadNorFlash};

/// The trait crates, re-exported so shells (and the host simulator) implement exactly the
/// versions this module was written against without naming them as dependencies.
pub use {embedded_io, embedded_storage};

/// Milliseconds since some fixed point (boot, on the badge).
pub trait Clock {
    fn millis(&self) -> u64;
}

/// What the speaker is about to say; lets a sink separate utterances (the simulator writes
/// one WAV file per answer, the badge can let its DMA ring drain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Utterance {
    /// The answer to the `n`-th question (counting from 0).
    Answer(usize),
    /// A spoken error message while loading the model.
    Error,
}

/// The speaker: 16-bit PCM at [`sam::SAMPLE_RATE`] (see [`Pcm16Sink`]), bracketed by
/// [`Speaker::begin`] and [`Speaker::end`] for each utterance.
pub trait Speaker: Pcm16Sink {
    fn begin(&mut self, _what: Utterance) {}
    fn end(&mut self) {}
}

impl<T: Speaker + ?Sized> Speaker for &mut T {
    fn begin(&mut self, what: Utterance) {
        (**self).begin(what)
    }
    fn end(&mut self) {
        (**self).end()
    }
}

/// The badge's buttons, polled by the main loop whenever it is idle (see [`crate::buttons`]
/// for debouncing and the rules).
pub trait Buttons {
    /// The next finished press, if any; never blocks. `now` is [`Clock::millis`].
    fn poll(&mut self, now: u64) -> Option<Press>;
    /// Called after every utterance: drop presses made while the badge was busy
    /// ([`crate::buttons::Debouncer::drop_pending`]).
    fn drop_pending(&mut self) {}
    /// Nothing to do: wait until the next poll is due. `now` is [`Clock::millis`] and
    /// `quiet_since` when the last interaction (a press, a typed line, an answer) ended; the
    /// badge uses them to choose between a short delay and a light sleep ([`crate::idle`]).
    fn wait(&mut self, _now: u64, _quiet_since: u64) {}
}

/// A board without buttons (and a host session that only reads the console).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoButtons;

impl Buttons for NoButtons {
    fn poll(&mut self, _now: u64) -> Option<Press> {
        None
    }
}

impl<T: Buttons + ?Sized> Buttons for &mut T {
    fn poll(&mut self, now: u64) -> Option<Press> {
        (**self).poll(now)
    }
    fn drop_pending(&mut self) {
        (**self).drop_pending()
    }
    fn wait(&mut self, now: u64, quiet_since: u64) {
        (**self).wait(now, quiet_since)
    }
}

/// Everything the program talks to besides flash and the second core.
pub struct Peripherals<R, T, S, C, B = NoButtons> {
    pub console_in: R,
    pub console_out: T,
    pub speaker: S,
    pub clock: C,
    pub buttons: B,
}

/// Kept free beside the blob and run state for the session's own buffers: the question line,
/// the answer text, the sampler's scratch and SAM's fixed tables (a few KB each).
pub const APP_RESERVE: usize = 32 * 1024;
/// Longest question accepted, in characters. The template, the question and the answer must
/// share the model's context; a long paste would leave no room for the answer.
pub const MAX_QUESTION_CHARS: usize = 200;

/// Settings of one run.
#[derive(Debug, Clone, Copy)]
pub struct AppConfig<'a> {
    /// Label of the partition holding the blob.
    pub model_partition: &'a str,
    /// Bytes available for the blob plus the run state (PSRAM minus the firmware's share).
    pub memory_budget: usize,
    /// Bytes of `memory_budget` kept free for the session (see [`APP_RESERVE`]).
    pub reserve: usize,
    pub generate: GenerateOptions,
    pub max_question_chars: usize,
    pub volume: Volume,
    pub channels: Channels,
    /// Echo typed characters (a raw serial console does not echo by itself).
    pub echo: bool,
}

impl AppConfig<'_> {
    /// Defaults for a memory budget: partition `model`, mono full-volume audio, no echo.
    pub fn new(memory_budget: usize) -> Self {
        AppConfig {
            model_partition: "model",
            memory_budget,
            reserve: APP_RESERVE,
            generate: GenerateOptions::default(),
            max_question_chars: MAX_QUESTION_CHARS,
            volume: Volume::FULL,
            channels: Channels::Mono,
            echo: false,
        }
    }
}

/// Why the model could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// A flash read failed.
    Flash {
        offset: u32,
        kind: NorFlashErrorKind,
    },
    /// The partition table is missing, corrupt, or has no model partition.
    Table(PartitionError),
    /// The model partition is erased: nothing was ever flashed there.
    Erased { offset: u32 },
    /// The blob is malformed, of another format version, or corrupt (CRC).
    Blob(BlobError),
    /// The blob header claims more bytes than the partition holds.
    TooLargeForPartition { len: usize, partition: usize },
    /// Blob + run state + reserve exceed the memory budget.
    OverMemory {
        blob: usize,
        run_state: usize,
        reserve: usize,
        budget: usize,
    },
    /// The allocator refused the blob buffer.
    OutOfMemory { bytes: usize },
}

impl LoadError {
    /// The short phrase the badge says out loud (SAM reads it, so plain words only).
    pub fn spoken(&self) -> &'static str {
        match self {
            LoadError::Flash { .. } => "flash read error",
            LoadError::Table(PartitionError::NotFound { .. }) | LoadError::Erased { .. } => {
                "model missing"
            }
            LoadError::Table(_) => "partition table broken",
            LoadError::Blob(BlobError::UnsupportedVersion { .. }) => "model version wrong",
            LoadError::Blob(_) => "model corrupt",
            LoadError::TooLargeForPartition { .. } => "model too big",
            LoadError::OverMemory { .. } | LoadError::OutOfMemory { .. } => "not enough memory",
        }
    }
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::Flash { offset, kind } => write!(f, "flash read at 0x{offset:X} failed: {kind}"),
            LoadError::Table(e @ PartitionError::NotFound { .. }) => {
                write!(f, "{e}: flash the image made by `badge flash` (it includes the table)")
            }
            LoadError::Table(e) => write!(f, "{e}"),
            LoadError::Erased { offset } => {
                write!(f, "the model partition at 0x{offset:X} is empty: flash a model with `badge flash`")
            }
            LoadError::Blob(e) => write!(f, "the model in flash is unusable: {e}"),
            LoadError::TooLargeForPartition { len, partition } => write!(
                f,
                "the model header says {len} bytes but the model partition holds {partition} (corrupt header or wrong partition table)"
            ),
            LoadError::OverMemory { blob, run_state, reserve, budget } => write!(
                f,
                "the model needs {} bytes (blob {blob} + run state {run_state} + reserve {reserve}) but only {budget} are available: export a smaller model or a smaller KV cache",
                blob.saturating_add(*run_state).saturating_add(*reserve)
            ),
            LoadError::OutOfMemory { bytes } => write!(f, "could not allocate {bytes} bytes for the model"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for LoadError {}

/// A console read or write failed: the session cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    ConsoleRead(embedded_io::ErrorKind),
    ConsoleWrite(embedded_io::ErrorKind),
}

impl core::fmt::Display for SessionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SessionError::ConsoleRead(k) => write!(f, "console read failed: {k:?}"),
            SessionError::ConsoleWrite(k) => write!(f, "console write failed: {k:?}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SessionError {}

/// Why [`run`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppError {
    Load(LoadError),
    Session(SessionError),
}

impl core::fmt::Display for AppError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AppError::Load(e) => write!(f, "{e}"),
            AppError::Session(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AppError {}

fn flash_read<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    buf: &mut [u8],
) -> Result<(), LoadError> {
    flash.read(offset, buf).map_err(|e| LoadError::Flash {
        offset,
        kind: e.kind(),
    })
}

/// `n` rounded up to a multiple of the flash's read granularity.
fn read_len<F: ReadNorFlash>(n: usize) -> usize {
    n.next_multiple_of(F::READ_SIZE.max(1))
}

/// Reads and checks the partition table and returns the partition labelled `name`.
pub fn find_partition<F: ReadNorFlash>(flash: &mut F, name: &str) -> Result<Partition, LoadError> {
    let mut table = [0u8; TABLE_MAX_LEN];
    flash_read(flash, TABLE_OFFSET, &mut table)?;
    let table = PartitionTable::parse(&table).map_err(LoadError::Table)?;
    table.find(name).map_err(LoadError::Table)
}

/// The blob, copied out of flash into one 16-byte-aligned buffer (the engine's kernels need
/// 16-byte-aligned weights, and flash cannot be mapped in place without MMU work).
pub struct LoadedModel {
    blocks: Vec<u128>,
    len: usize,
}

impl LoadedModel {
    /// The blob's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `blocks` holds at least `len` initialised bytes (see `load_model`); u8 has no
        // alignment or validity requirements.
        unsafe { core::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), self.len) }
    }

    /// The parsed blob (its CRC was checked while copying).
    pub fn blob(&self) -> Result<Blob<'_>, BlobError> {
        Blob::parse_crc_checked(self.bytes())
    }
}

/// Bytes copied per flash read: large enough to amortise each read command's overhead, and a
/// whole number of sectors so the CRC streams in step. Reads go straight into the destination
/// buffer, so no bounce buffer is needed.
const COPY_CHUNK: usize = 4096;

/// Finds, checks and copies the model. The CRC is computed while copying, so the blob is read
/// from flash exactly once; the memory checks come before the large allocations, so a model
/// that cannot fit is reported instead of aborting in the allocator.
pub fn load_model<F: ReadNorFlash>(
    flash: &mut F,
    cfg: &AppConfig<'_>,
) -> Result<LoadedModel, LoadError> {
    let part = find_partition(flash, cfg.model_partition)?;
    let mut header = [0u8; HEADER_SIZE];
    let header_read = read_len::<F>(HEADER_SIZE);
    if header_read == HEADER_SIZE {
        flash_read(flash, part.offset, &mut header)?;
    } else {
        let mut tmp = alloc::vec![0u8; header_read];
        flash_read(flash, part.offset, &mut tmp)?;
        header.copy_from_slice(&tmp[..HEADER_SIZE]);
    }
    if header.iter().all(|&b| b == 0xFF) {
        return Err(LoadError::Erased {
            offset: part.offset,
        });
    }
    let (total, stored_crc) = Blob::peek_header(&header).map_err(LoadError::Blob)?;
    let len = total as usize;
    if len > part.size as usize {
        return Err(LoadError::TooLargeForPartition {
            len,
            partition: part.size as usize,
        });
    }
    if len < HEADER_SIZE {
        return Err(LoadError::Blob(BlobError::TooShort { len }));
    }
    let over = |run_state| LoadError::OverMemory {
        blob: len,
        run_state,
        reserve: cfg.reserve,
        budget: cfg.memory_budget,
    };
    if len.saturating_add(cfg.reserve) > cfg.memory_budget {
        return Err(over(0));
    }

    let padded = read_len::<F>(len);
    let mut blocks: Vec<u128> = Vec::new();
    let n_blocks = padded.div_ceil(16);
    blocks
        .try_reserve_exact(n_blocks)
        .map_err(|_| LoadError::OutOfMemory {
            bytes: n_blocks * 16,
        })?;
    blocks.resize(n_blocks, 0);
    {
        // SAFETY: `blocks` owns n_blocks·16 ≥ padded initialised bytes; u8 accepts any value.
        let buf =
            unsafe { core::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), padded) };
        let mut crc = crc32fast::Hasher::new();
        let mut done = 0;
        while done < padded {
            let n = COPY_CHUNK.min(padded - done);
            flash_read(flash, part.offset + done as u32, &mut buf[done..done + n])?;
            let payload_end = (done + n).min(len);
            let payload_start = done.max(HEADER_SIZE);
            if payload_start < payload_end {
                crc.update(&buf[payload_start..payload_end]);
            }
            done += n;
        }
        let computed = crc.finalize();
        if computed != stored_crc {
            return Err(LoadError::Blob(BlobError::CrcMismatch {
                stored: stored_crc,
                computed,
            }));
        }
    }
    let model = LoadedModel { blocks, len };
    let blob = model.blob().map_err(LoadError::Blob)?;
    // Sized without allocating: a model whose run state would not fit is refused here, not by
    // an allocation failure later.
    let run_state = RunStateSize::of(&blob.config, blob.group_size, blob.kv_cache).total();
    if len.saturating_add(run_state).saturating_add(cfg.reserve) > cfg.memory_budget {
        return Err(over(run_state));
    }
    Ok(model)
}

/// The loaded model, ready to answer.
pub struct Model<'a, W: Workers> {
    pub blob: Blob<'a>,
    pub engine: Engine<'a, W>,
    pub tokenizer: Tokenizer<'a>,
    pub template: PromptTemplate<'a>,
}

impl<'a, W: Workers> Model<'a, W> {
    pub fn new(blob: Blob<'a>, workers: W) -> Result<Self, LoadError> {
        let engine = Engine::new(&blob, workers).map_err(LoadError::Blob)?;
        let tokenizer = Tokenizer::new(blob.tokenizer);
        let template = PromptTemplate::parse(blob.template)
            .map_err(|reason| LoadError::Blob(BlobError::BadTemplate { reason }))?;
        Ok(Model {
            blob,
            engine,
            tokenizer,
            template,
        })
    }
}

/// What made the badge answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerSource {
    /// A question typed on the console.
    Typed,
    /// A short press (the button, or `!press` on the console).
    Button,
    /// A long press: the last answer again, not generated anew.
    Repeat,
}

/// One answered question, handed to the caller's `on_answer`.
#[derive(Debug, Clone, Copy)]
pub struct AnswerRecord<'a> {
    pub index: usize,
    pub source: AnswerSource,
    pub question: &'a str,
    pub text: &'a str,
    pub stats: GenerateStats,
    /// Milliseconds spent generating (prompt and answer tokens).
    pub millis: u64,
    /// SAM samples spoken (0 when speech failed or there was nothing to say).
    pub samples: usize,
}

/// Counts of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionReport {
    pub answered: usize,
    pub empty_lines: usize,
    pub rejected_lines: usize,
    pub generated_tokens: usize,
    /// The boot self-test, when [`run`] ran one.
    pub self_test: Option<SelfTestReport>,
}

/// Dual-worker passes of the boot self-test. The fault it looks for showed on real hardware
/// only in some runs, so one pass is not enough; each pass of badge-6m's `w1` takes a few
/// milliseconds (`cost_figures` in the `pie_kernel` tests estimates the whole test).
pub const SELF_TEST_DUAL_RUNS: usize = 8;

/// The first output row where two self-test passes differ, with both values' bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    pub row: usize,
    pub expected: u32,
    pub got: u32,
}

/// What went wrong with all workers sharing the matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DualMismatch {
    /// Pass `run` (counting from 0) differs from pass 0.
    BetweenRuns { run: usize, at: Mismatch },
    /// The passes agree with each other but not with one worker alone.
    VersusOneWorker { at: Mismatch },
}

/// The outcome of [`boot_self_test`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfTestReport {
    /// The matrix multiplied.
    pub rows: usize,
    pub cols: usize,
    /// Workers sharing the dual passes ([`Workers::count`]).
    pub workers: usize,
    /// Dual passes run (fewer than [`SELF_TEST_DUAL_RUNS`] when one differed early).
    pub dual_runs: usize,
    /// Set when all-worker passes disagreed.
    pub dual: Option<DualMismatch>,
    /// Set when one worker's fast kernel disagreed with the portable kernel.
    pub portable: Option<Mismatch>,
    /// The mode the engine runs in from now on.
    pub mode: MatmulMode,
}

impl SelfTestReport {
    /// The console line (without line end) saying what was found and what the badge does.
    pub fn describe(&self, millis: u64) -> String {
        let mut s = String::new();
        let m = |s: &mut String, what: &str, at: &Mismatch| {
            let _ = write!(
                s,
                "{what} at row {} (bits {:#010x} instead of {:#010x})",
                at.row, at.got, at.expected
            );
        };
        match &self.dual {
            None => {}
            Some(DualMismatch::BetweenRuns { run, at }) => m(
                &mut s,
                &alloc::format!(
                    "self-test: pass {} of {SELF_TEST_DUAL_RUNS} on {} workers differs from pass 1",
                    run + 1,
                    self.workers
                ),
                at,
            ),
            Some(DualMismatch::VersusOneWorker { at }) => m(
                &mut s,
                &alloc::format!(
                    "self-test: {} workers agree with each other but not with one",
                    self.workers
                ),
                at,
            ),
        }
        if let Some(at) = &self.portable {
            if !s.is_empty() {
                s.push_str("; ");
            }
            m(
                &mut s,
                "self-test: the vector kernel on one worker differs from the portable kernel",
                at,
            );
        }
        let size = alloc::format!("{}x{} matmul, {millis} ms", self.rows, self.cols);
        match self.mode {
            MatmulMode::AllWorkers => alloc::format!(
                "self-test passed: {} passes on {} workers, one on one worker and the portable kernel agree bit for bit ({size})",
                self.dual_runs, self.workers
            ),
            MatmulMode::OneWorker => {
                alloc::format!("{s}: using one worker from now on ({size})")
            }
            MatmulMode::Portable => {
                alloc::format!("{s}: using the portable kernel on one worker from now on ({size})")
            }
        }
    }
}

/// First row where `got` differs from `expected` in any bit.
fn first_difference(expected: &[f32], got: &[f32]) -> Option<Mismatch> {
    expected
        .iter()
        .zip(got)
        .position(|(a, b)| a.to_bits() != b.to_bits())
        .map(|row| Mismatch {
            row,
            expected: expected[row].to_bits(),
            got: got[row].to_bits(),
        })
}

/// The self-test's matrix: layer 0's `w1` (the widest of a layer, the shape every token
/// multiplies), or the embedding of a model without layers.
fn self_test_matrix<'a>(engine: &Engine<'a, impl Workers>) -> QMatrix<'a> {
    let w = &engine.weights;
    w.layers.first().map_or(w.token_embedding, |l| l.w1)
}

/// A fixed quantized input for the self-test: int8 values from a fixed xorshift sequence
/// covering -128..=127, in a 16-byte-aligned buffer (the PIE kernel needs it), and scales
/// that keep the sums well inside f32's range.
fn self_test_input(cols: usize, group_size: usize) -> (AlignedBuf<i8>, Vec<f32>) {
    let mut xq = AlignedBuf::<i8>::zeroed(cols);
    let mut x = 0x9E37_79B9u32;
    for v in xq.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *v = (x >> 24) as u8 as i8;
    }
    let groups = cols / group_size.max(1);
    let xs = (0..groups).map(|g| 1.0 / (64 + g) as f32).collect();
    (xq, xs)
}

/// Checks, before the first answer, that the matmul gives the same bits however it runs: a
/// fixed matmul on all workers [`SELF_TEST_DUAL_RUNS`] times, once on one worker, once with
/// the portable kernel. Two cores running the PIE kernel at once failed intermittently on
/// another project's ESP32-S3 boards (see `kernel::pie`), which a one-core test cannot see.
///
/// Any difference between the all-worker passes, or between them and one worker, makes the
/// engine use one worker; a difference between one worker's fast kernel and the portable
/// kernel makes it use the portable kernel on one worker. The portable pass bypasses the
/// workers entirely, so it is the reference for both. The result's `mode` is what the engine
/// should run in; the caller sets it.
pub fn boot_self_test<W: Workers>(engine: &Engine<'_, W>) -> SelfTestReport {
    let m = self_test_matrix(engine);
    let (xq, xs) = self_test_input(m.cols, m.group_size);
    let w = &engine.workers;
    let mut first = alloc::vec![0f32; m.rows];
    let mut pass = alloc::vec![0f32; m.rows];
    let mut one = alloc::vec![0f32; m.rows];
    matmul(w, MatmulMode::AllWorkers, &m, &xq, &xs, &mut first);
    let mut dual = None;
    let mut dual_runs = 1;
    for run in 1..SELF_TEST_DUAL_RUNS {
        matmul(w, MatmulMode::AllWorkers, &m, &xq, &xs, &mut pass);
        dual_runs += 1;
        if let Some(at) = first_difference(&first, &pass) {
            dual = Some(DualMismatch::BetweenRuns { run, at });
            break;
        }
    }
    matmul(w, MatmulMode::OneWorker, &m, &xq, &xs, &mut one);
    if dual.is_none() {
        dual = first_difference(&one, &first).map(|at| DualMismatch::VersusOneWorker { at });
    }
    matmul(w, MatmulMode::Portable, &m, &xq, &xs, &mut pass);
    let portable = first_difference(&pass, &one);
    let mode = if portable.is_some() {
        MatmulMode::Portable
    } else if dual.is_some() {
        MatmulMode::OneWorker
    } else {
        MatmulMode::AllWorkers
    };
    SelfTestReport {
        rows: m.rows,
        cols: m.cols,
        workers: w.count(),
        dual_runs,
        dual,
        portable,
        mode,
    }
}

/// What one line read from the console turned out to be.
enum LineStatus {
    Line,
    TooLong { chars: usize },
    NotUtf8,
    Eof,
}

/// Splits console bytes into lines without ever holding more than the limit: a terminal
/// sends `\r`, `\n` or `\r\n` for Enter, and a paste can be arbitrarily long.
struct LineReader {
    buf: [u8; 64],
    start: usize,
    end: usize,
    after_cr: bool,
}

impl LineReader {
    fn new() -> Self {
        LineReader {
            buf: [0; 64],
            start: 0,
            end: 0,
            after_cr: false,
        }
    }

    fn next_line<R: Read, T: Write>(
        &mut self,
        rx: &mut R,
        echo: Option<&mut T>,
        max_chars: usize,
        line: &mut Vec<u8>,
    ) -> Result<LineStatus, SessionError> {
        line.clear();
        let mut echo = echo;
        let mut chars = 0usize;
        let mut any = false;
        loop {
            if self.start == self.end {
                let n = rx
                    .read(&mut self.buf)
                    .map_err(|e| SessionError::ConsoleRead(embedded_io::Error::kind(&e)))?;
                if n == 0 {
                    return Ok(if any {
                        self.finish(line, chars, max_chars)
                    } else {
                        LineStatus::Eof
                    });
                }
                if let Some(tx) = echo.as_deref_mut() {
                    echo_bytes(tx, &self.buf[..n])?;
                }
                self.start = 0;
                self.end = n;
            }
            let b = self.buf[self.start];
            self.start += 1;
            let after_cr = core::mem::replace(&mut self.after_cr, b == b'\r');
            if b == b'\n' && after_cr {
                continue; // the second half of \r\n
            }
            if b == b'\r' || b == b'\n' {
                return Ok(self.finish(line, chars, max_chars));
            }
            any = true;
            if b & 0xC0 != 0x80 {
                chars += 1;
            }
            if chars <= max_chars {
                line.push(b);
            }
        }
    }

    /// Bytes already read from the console but not yet returned as a line.
    fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    fn finish(&self, line: &[u8], chars: usize, max_chars: usize) -> LineStatus {
        if chars > max_chars {
            LineStatus::TooLong { chars }
        } else if core::str::from_utf8(line).is_err() {
            LineStatus::NotUtf8
        } else {
            LineStatus::Line
        }
    }
}

fn echo_bytes<T: Write>(tx: &mut T, bytes: &[u8]) -> Result<(), SessionError> {
    for &b in bytes {
        let out: &[u8] = if b == b'\r' || b == b'\n' {
            b"\r\n"
        } else {
            core::slice::from_ref(&b)
        };
        tx.write_all(out).map_err(write_err)?;
    }
    tx.flush().map_err(write_err)
}

fn write_err<E: embedded_io::Error>(e: E) -> SessionError {
    SessionError::ConsoleWrite(e.kind())
}

fn say<T: Write>(tx: &mut T, text: &str) -> Result<(), SessionError> {
    tx.write_all(text.as_bytes()).map_err(write_err)?;
    tx.flush().map_err(write_err)
}

/// Speaks `text` as one utterance; returns the samples written.
fn speak<S: Speaker>(
    speaker: &mut S,
    what: Utterance,
    text: &str,
    voice: &sam::Voice,
    cfg: &AppConfig<'_>,
) -> Result<usize, sam::SamError> {
    speaker.begin(what);
    // SAM renders in chunks of at most 256 samples; Pcm16Writer converts them in blocks of
    // 128 values, so the answer streams to the speaker without a whole-answer buffer.
    let mut writer = Pcm16Writer::new(&mut *speaker, cfg.volume, cfg.channels);
    let r = sam::speak_text(text, voice, &mut writer);
    speaker.end();
    r
}

/// Tokens per second in tenths, as integers (no float formatting needed on the badge).
fn tenths_per_second(tokens: usize, millis: u64) -> u64 {
    (tokens as u64 * 10_000).checked_div(millis).unwrap_or(0)
}

/// A console line that stands for a button press: `!press` (short) or `!press long`, so the
/// buttons can be tried over the console (and `badge sim` scripts them).
fn console_press(line: &str) -> Option<PressKind> {
    let mut words = line.split_whitespace();
    if words.next() != Some("!press") {
        return None;
    }
    match (words.next(), words.next()) {
        (None, _) | (Some("short"), None) => Some(PressKind::Short),
        (Some("long"), None) => Some(PressKind::Long),
        _ => None,
    }
}

/// The session's state between answers.
struct Session {
    report: SessionReport,
    menu: ButtonMenu,
    /// The last answer's question and text (what a long press repeats).
    last_question: String,
    last: String,
    /// What generating `last` cost (a repeat reports the original's).
    last_stats: Option<GenerateStats>,
    msg: String,
}

impl Session {
    /// Generates the answer to `question` (streaming it to the console), speaks it and records
    /// it. A model failure is reported on the console and leaves no answer.
    fn answer<W, R, T, S, C, B>(
        &mut self,
        model: &mut Model<'_, W>,
        io: &mut Peripherals<R, T, S, C, B>,
        cfg: &AppConfig<'_>,
        question: &str,
        source: AnswerSource,
        on_answer: &mut dyn FnMut(&AnswerRecord<'_>),
    ) -> Result<(), SessionError>
    where
        W: Workers,
        T: Write,
        S: Speaker,
        C: Clock,
        B: Buttons,
    {
        let mut text = String::new();
        let mut console_err = None;
        let start = io.clock.millis();
        let result = {
            let tx = &mut io.console_out;
            let text = &mut text;
            let mut on_text = |piece: &str| {
                text.push_str(piece);
                if console_err.is_none() {
                    if let Err(e) = say(tx, piece) {
                        console_err = Some(e);
                    }
                }
            };
            generate::answer(
                &mut model.engine,
                &model.tokenizer,
                &model.template,
                model.blob.bos_id,
                model.blob.eos_id,
                question,
                &cfg.generate,
                model.blob.answers.as_ref(),
                &mut on_text,
            )
        };
        let millis = io.clock.millis().saturating_sub(start);
        if let Some(e) = console_err {
            return Err(e);
        }
        let stats = match result {
            Ok(stats) => stats,
            Err(e) => {
                self.msg.clear();
                let _ = write!(self.msg, "\r\n(the model failed: {e})\r\n");
                say(&mut io.console_out, &self.msg)?;
                return Ok(());
            }
        };
        self.msg.clear();
        if millis == 0 {
            // Faster than the clock's resolution (the host with a tiny model): no rate to show.
            let _ = write!(
                self.msg,
                "\r\n[{} tokens in under 1 ms]\r\n",
                stats.generated_tokens
            );
        } else {
            let tps = tenths_per_second(stats.generated_tokens, millis);
            let _ = write!(
                self.msg,
                "\r\n[{} tokens in {millis} ms, {}.{} tokens/s]\r\n",
                stats.generated_tokens,
                tps / 10,
                tps % 10
            );
        }
        say(&mut io.console_out, &self.msg)?;
        self.report.generated_tokens += stats.generated_tokens;
        self.last_question.clear();
        self.last_question.push_str(question);
        self.last = text;
        self.last_stats = Some(stats);
        self.speak_last(model, io, cfg, source, stats, millis, on_answer)
    }

    /// Speaks the last answer as a new utterance and records it.
    #[allow(clippy::too_many_arguments)]
    fn speak_last<W, R, T, S, C, B>(
        &mut self,
        model: &Model<'_, W>,
        io: &mut Peripherals<R, T, S, C, B>,
        cfg: &AppConfig<'_>,
        source: AnswerSource,
        stats: GenerateStats,
        millis: u64,
        on_answer: &mut dyn FnMut(&AnswerRecord<'_>),
    ) -> Result<(), SessionError>
    where
        W: Workers,
        T: Write,
        S: Speaker,
        B: Buttons,
    {
        let index = self.report.answered;
        let voice = model.blob.voice;
        let samples = match speak(
            &mut io.speaker,
            Utterance::Answer(index),
            &self.last,
            &voice,
            cfg,
        ) {
            Ok(n) => n,
            Err(e) => {
                self.msg.clear();
                let _ = write!(self.msg, "(could not speak the answer: {e})\r\n");
                say(&mut io.console_out, &self.msg)?;
                0
            }
        };
        // Presses made while the badge was thinking or speaking do not count.
        io.buttons.drop_pending();
        self.report.answered += 1;
        on_answer(&AnswerRecord {
            index,
            source,
            question: &self.last_question,
            text: &self.last,
            stats,
            millis,
            samples,
        });
        Ok(())
    }

    /// Acts on one press: a short one asks the next button prompt, a long one repeats the last
    /// answer (or introduces, when nothing was said yet).
    fn press<W, R, T, S, C, B>(
        &mut self,
        model: &mut Model<'_, W>,
        io: &mut Peripherals<R, T, S, C, B>,
        cfg: &AppConfig<'_>,
        press: Press,
        on_answer: &mut dyn FnMut(&AnswerRecord<'_>),
    ) -> Result<(), SessionError>
    where
        W: Workers,
        T: Write,
        S: Speaker,
        C: Clock,
        B: Buttons,
    {
        let prompts = model.blob.prompts;
        let action = match (self.menu.on_press(press, &prompts), self.last_stats) {
            (Action::Repeat, None) => Action::Ask(prompts.intro()),
            (a, _) => a,
        };
        match action {
            Action::Ask(question) => {
                self.msg.clear();
                let _ = write!(self.msg, "[button] {question}\r\n");
                say(&mut io.console_out, &self.msg)?;
                self.answer(model, io, cfg, question, AnswerSource::Button, on_answer)
            }
            Action::Repeat => {
                self.msg.clear();
                let _ = write!(self.msg, "[button] again: {}\r\n", self.last);
                say(&mut io.console_out, &self.msg)?;
                match self.last_stats {
                    Some(stats) => {
                        self.speak_last(model, io, cfg, AnswerSource::Repeat, stats, 0, on_answer)
                    }
                    None => Ok(()),
                }
            }
        }
    }
}

/// Answers until the console reaches end of input (never, on the badge). Between answers it
/// polls the buttons, then the console, then waits ([`Buttons::wait`]); a line is read whole
/// once its first byte is there (buttons are not polled while someone types). Empty lines
/// prompt again, over-long or non-UTF-8 lines get an explanation, `!press` / `!press long`
/// act as the button, and each answer streams to the console token by token and is then
/// spoken in the blob's voice. One utterance at a time: nothing runs while the badge speaks.
pub fn run_session<W, R, T, S, C, B>(
    model: &mut Model<'_, W>,
    io: &mut Peripherals<R, T, S, C, B>,
    cfg: &AppConfig<'_>,
    on_answer: &mut dyn FnMut(&AnswerRecord<'_>),
) -> Result<SessionReport, SessionError>
where
    W: Workers,
    R: Read + ReadReady,
    T: Write,
    S: Speaker,
    C: Clock,
    B: Buttons,
{
    let mut st = Session {
        report: SessionReport::default(),
        menu: ButtonMenu::new(),
        last_question: String::new(),
        last: String::new(),
        last_stats: None,
        msg: String::new(),
    };
    let mut reader = LineReader::new();
    let mut line = Vec::new();
    let c = &model.blob.config;
    let _ = write!(
        st.msg,
        "badge ready: {} layers, dim {}, vocab {}, context {} tokens. Ask me something, or press the button.\r\n",
        c.n_layers, c.dim, c.vocab_size, c.seq_len
    );
    say(&mut io.console_out, &st.msg)?;
    let mut prompted = false;
    // When the last interaction ended: every pass that did something (a press, a line) comes
    // back to the top of the loop with `active` set.
    let mut quiet_since = io.clock.millis();
    let mut active = false;
    loop {
        if core::mem::take(&mut active) {
            quiet_since = io.clock.millis();
        }
        if !prompted {
            say(&mut io.console_out, "> ")?;
            prompted = true;
        }
        if let Some(press) = io.buttons.poll(io.clock.millis()) {
            say(&mut io.console_out, "\r\n")?;
            st.press(model, io, cfg, press, on_answer)?;
            prompted = false;
            active = true;
            continue;
        }
        let ready = io
            .console_in
            .read_ready()
            .map_err(|e| SessionError::ConsoleRead(embedded_io::Error::kind(&e)))?;
        if !ready && !reader.has_buffered() {
            io.buttons.wait(io.clock.millis(), quiet_since);
            continue;
        }
        prompted = false;
        active = true;
        let echo = cfg.echo.then_some(&mut io.console_out);
        let status =
            reader.next_line(&mut io.console_in, echo, cfg.max_question_chars, &mut line)?;
        let question = match status {
            LineStatus::Eof => {
                say(&mut io.console_out, "\r\n")?;
                return Ok(st.report);
            }
            LineStatus::TooLong { chars } => {
                st.report.rejected_lines += 1;
                st.msg.clear();
                let _ = write!(st.msg, "That question is too long ({chars} characters; at most {}). Please ask something shorter.\r\n", cfg.max_question_chars);
                say(&mut io.console_out, &st.msg)?;
                continue;
            }
            LineStatus::NotUtf8 => {
                st.report.rejected_lines += 1;
                say(
                    &mut io.console_out,
                    "That line is not valid UTF-8 text. Please type it again.\r\n",
                )?;
                continue;
            }
            LineStatus::Line => core::str::from_utf8(&line).unwrap_or("").trim(),
        };
        if question.is_empty() {
            st.report.empty_lines += 1;
            say(&mut io.console_out, "Type a question and press Enter.\r\n")?;
            continue;
        }
        if let Some(kind) = console_press(question) {
            let press = Press::synthetic(kind, io.clock.millis());
            st.press(model, io, cfg, press, on_answer)?;
            continue;
        }
        let question = String::from(question);
        st.answer(model, io, cfg, &question, AnswerSource::Typed, on_answer)?;
    }
}

/// The whole program: load the model from flash, check the matmul ([`boot_self_test`]), then
/// answer questions until the console closes. A load failure is printed and spoken (in SAM's default voice: the blob's voice is
/// not available) and returned.
pub fn run<F, W, R, T, S, C, B>(
    flash: &mut F,
    workers: W,
    io: &mut Peripherals<R, T, S, C, B>,
    cfg: &AppConfig<'_>,
    on_answer: &mut dyn FnMut(&AnswerRecord<'_>),
) -> Result<SessionReport, AppError>
where
    F: ReadNorFlash,
    W: Workers,
    R: Read + ReadReady,
    T: Write,
    S: Speaker,
    C: Clock,
    B: Buttons,
{
    say(&mut io.console_out, "badge: loading the model...\r\n").map_err(AppError::Session)?;
    let loaded = load_model(flash, cfg);
    let model = loaded.as_ref().map_err(Clone::clone).and_then(|m| {
        let blob = m.blob().map_err(LoadError::Blob)?;
        Model::new(blob, workers)
    });
    match model {
        Ok(mut model) => {
            let start = io.clock.millis();
            let test = boot_self_test(&model.engine);
            let millis = io.clock.millis().saturating_sub(start);
            model.engine.mode = test.mode;
            let mut msg = String::from("badge: ");
            msg.push_str(&test.describe(millis));
            msg.push_str("\r\n");
            say(&mut io.console_out, &msg).map_err(AppError::Session)?;
            let mut report =
                run_session(&mut model, io, cfg, on_answer).map_err(AppError::Session)?;
            report.self_test = Some(test);
            Ok(report)
        }
        Err(e) => {
            let mut msg = String::new();
            let _ = write!(msg, "badge: cannot start: {e}\r\n");
            // The console may be what is broken; the spoken message still matters.
            let _ = say(&mut io.console_out, &msg);
            let _ = speak(
                &mut io.speaker,
                Utterance::Error,
                e.spoken(),
                &sam::Voice::default(),
                cfg,
            );
            Err(AppError::Load(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::{build, TYPE_DATA};

    /// Flash over a byte vector, with a configurable read granularity.
    struct VecFlash<const N: usize>(Vec<u8>);

    #[derive(Debug)]
    struct OutOfBounds;
    impl NorFlashError for OutOfBounds {
        fn kind(&self) -> NorFlashErrorKind {
            NorFlashErrorKind::OutOfBounds
        }
    }
    impl<const N: usize> embedded_storage::nor_flash::ErrorType for VecFlash<N> {
        type Error = OutOfBounds;
    }
    impl<const N: usize> ReadNorFlash for VecFlash<N> {
        const READ_SIZE: usize = N;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), OutOfBounds> {
            assert_eq!(offset as usize % N, 0);
            assert_eq!(bytes.len() % N, 0);
            let o = offset as usize;
            let src = self.0.get(o..o + bytes.len()).ok_or(OutOfBounds)?;
            bytes.copy_from_slice(src);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.0.len()
        }
    }

    fn flash_with(part_size: u32, payload: &[u8]) -> Vec<u8> {
        let table =
            build(&[Partition::new("model", TYPE_DATA, 0x40, 0x10000, part_size, 0).unwrap()])
                .unwrap();
        let mut img = alloc::vec![0xFFu8; 0x10000 + part_size as usize];
        img[0x8000..0x8000 + table.len()].copy_from_slice(&table);
        img[0x10000..0x10000 + payload.len()].copy_from_slice(payload);
        img
    }

    #[test]
    fn app_reports_erased_partition_and_missing_table() {
        let cfg = AppConfig::new(1 << 20);
        let mut f = VecFlash::<4>(flash_with(0x1000, &[]));
        assert_eq!(
            load_model(&mut f, &cfg).err(),
            Some(LoadError::Erased { offset: 0x10000 })
        );
        let mut f = VecFlash::<4>(alloc::vec![0xFF; 0x20000]);
        let e = load_model(&mut f, &cfg).err().unwrap();
        assert_eq!(
            e,
            LoadError::Table(PartitionError::MissingMd5 { entries: 0 })
        );
        assert_eq!(e.spoken(), "partition table broken");
        let mut f = VecFlash::<4>(alloc::vec![0xFF; 0x100]);
        assert!(matches!(
            load_model(&mut f, &cfg),
            Err(LoadError::Flash {
                offset: 0x8000,
                kind: NorFlashErrorKind::OutOfBounds
            })
        ));
    }

    #[test]
    fn app_reports_foreign_data() {
        let cfg = AppConfig::new(1 << 20);
        let mut f = VecFlash::<1>(flash_with(0x1000, b"not a blob"));
        let e = load_model(&mut f, &cfg).err().unwrap();
        assert!(matches!(e, LoadError::Blob(BlobError::BadMagic { .. })));
        assert_eq!(e.spoken(), "model corrupt");
    }

    #[test]
    fn app_line_reader_splits_and_limits() {
        let input: &[u8] = b"one\r\ntwo\n\nthree\rfour-is-long\xff\nfive";
        let mut rx = input;
        let mut r = LineReader::new();
        let mut line = Vec::new();
        let mut got = Vec::new();
        loop {
            let s = r
                .next_line::<_, &mut [u8]>(&mut rx, None, 8, &mut line)
                .unwrap();
            let tag = match s {
                LineStatus::Eof => break,
                LineStatus::Line => String::from_utf8(line.clone()).unwrap(),
                LineStatus::TooLong { chars } => alloc::format!("long {chars}"),
                LineStatus::NotUtf8 => String::from("bad"),
            };
            got.push(tag);
        }
        assert_eq!(got, ["one", "two", "", "three", "long 13", "five"]);
    }

    #[test]
    fn app_tokens_per_second() {
        assert_eq!(tenths_per_second(10, 2000), 50);
        assert_eq!(tenths_per_second(7, 0), 0);
    }
}
