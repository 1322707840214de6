//! The badge on the ESP32-S3: esp-hal glue around `badge_firmware::app::run`.
//!
//! Everything the badge does is host-tested in the firmware crate (`badge sim` runs the same
//! `app::run`); this file only adapts the hardware to its traits:
//!
//! - flash: esp-storage's `FlashStorage` (embedded-storage `ReadNorFlash`);
//! - console: the USB-Serial-JTAG halves (embedded-io 0.6 `Read`/`Write`);
//! - speaker: I2S0 TX with a DMA stream buffer, 16-bit stereo frames (L = R) at the board's
//!   sample rate, to a MAX98357A on the board profile's pins (see `build.rs`);
//! - workers: core 1 started with `CpuControl`, taking half of each matmul's rows;
//! - clock: `esp_hal::time::Instant`;
//! - buttons: the board profile's button pin, read with esp-hal's GPIO `Input` on every poll
//!   and debounced by `badge_firmware::buttons::Debouncer`;
//! - idle: `badge_firmware::idle` decides; between polls the main loop waits
//!   `idle::POLL_MS` with a delay, or light-sleeps (`LowPower::sleep_light`) until the button's
//!   level or a timer wakes it, when nobody used the badge for a while and no USB host is
//!   attached (light sleep would cut the console). Core 1 is parked (stalled) whenever no
//!   matmul rows are posted to it, so it never spins while the badge waits.
//!
//! PIE (the int8 dot-product unit, coprocessor 3) runs only in the matmul jobs, never in an
//! interrupt handler: interrupt entry does not save its registers. This program installs no
//! interrupt handlers (I2S and the console are polled). The button's pin listens for its level
//! only during a light sleep, as esp-hal's wake source; if esp-hal's own GPIO handler then
//! runs, it runs on core 0 in the idle wait, where no PIE code is in flight.

#![no_std]
#![no_main]
#![cfg_attr(not(badge_check_no_asm), feature(asm_experimental_arch))]

extern crate alloc;

use badge_firmware::app::{self, AppConfig, Buttons, Clock, Peripherals, Speaker, Utterance};
use badge_firmware::buttons::{Debouncer, Press};
use badge_firmware::idle::{self, IdleStep, UsbHost};
use badge_firmware::sam::{Channels, Pcm16Sink, Volume};
use badge_firmware::workers::{split_point, RowJob, Workers};
use core::cell::{RefCell, UnsafeCell};
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicU8, Ordering};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::delay::Delay;
use esp_hal::dma::DmaTxStreamBuf;
use esp_hal::dma_tx_stream_buffer;
use esp_hal::gpio::{AnyPin, Event, Input, InputConfig, Pull};
use esp_hal::i2s::master::{
    Channels as I2sChannels, DataFormat, I2s, I2sTx, I2sTxDmaTransfer, TdmConfig,
};
use esp_hal::psram::{Psram, PsramConfig, PsramMode};
use esp_hal::peripherals::USB_DEVICE;
use esp_hal::rtc_cntl::sleep::{LowPower, RtcSleepConfig};
use esp_hal::system::{AppCoreGuard, Cpu, CpuControl, Stack};
use esp_hal::time::{Duration, Instant, Rate};
use esp_hal::usb::usb_serial_jtag::{UsbSerialJtag, UsbSerialJtagRx};
use esp_hal::Blocking;
use esp_println::println;
use esp_storage::FlashStorage;

esp_bootloader_esp_idf::esp_app_desc!();

/// A decimal number from the board profile (set by build.rs), at compile time.
const fn board_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v = 0u32;
    while i < b.len() {
        assert!(
            b[i].is_ascii_digit(),
            "board profile value is not a decimal number"
        );
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    v
}

const I2S_BCLK: u8 = board_u32(env!("BADGE_I2S_BCLK")) as u8;
const I2S_WS: u8 = board_u32(env!("BADGE_I2S_WS")) as u8;
const I2S_DOUT: u8 = board_u32(env!("BADGE_I2S_DOUT")) as u8;
const SAMPLE_RATE: u32 = board_u32(env!("BADGE_SAMPLE_RATE"));
const RESERVED_PSRAM: usize = board_u32(env!("BADGE_RESERVED_PSRAM")) as usize;
const MODEL_PARTITION: &str = env!("BADGE_MODEL_PARTITION");
const BUTTON_GPIO: u8 = board_u32(env!("BADGE_BUTTON_GPIO")) as u8;
const BUTTON_ACTIVE_LOW: bool = board_bool(env!("BADGE_BUTTON_ACTIVE_LOW"));
const BUTTON_PULL_UP: bool = board_bool(env!("BADGE_BUTTON_PULL_UP"));

/// `true` or `false` from the board profile, at compile time.
const fn board_bool(s: &str) -> bool {
    match s.as_bytes() {
        b"true" => true,
        b"false" => false,
        _ => panic!("board profile value is not true or false"),
    }
}
const _: () = assert!(SAMPLE_RATE == badge_firmware::sam::SAMPLE_RATE);

/// Enables coprocessor 3 (PIE) on the calling core. Bare-metal start-up leaves it off; the
/// exception entry of xtensa-lx-rt saves CPENABLE and clears it for handlers.
fn enable_pie() {
    // SAFETY: sets one bit of this core's CPENABLE special register; no memory is touched.
    // (`badge_check_no_asm`: only the type check of scripts/check-firmware.sh, where upstream
    // rustc has no Xtensa `asm!`.)
    #[cfg(not(badge_check_no_asm))]
    unsafe {
        core::arch::asm!(
            "rsr {0}, CPENABLE",
            "movi {1}, 8",
            "or {0}, {0}, {1}",
            "wsr {0}, CPENABLE",
            "rsync",
            out(reg) _,
            out(reg) _,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The second core.

/// The row job handed to core 1, and its state: 0 idle, 1 posted, 2 done. Statics live in
/// internal RAM (atomics in PSRAM do not work on the S3).
struct Mailbox {
    state: AtomicU8,
    task: UnsafeCell<Option<Task>>,
}

#[derive(Clone, Copy)]
struct Task {
    job: *const RowJob<'static>,
    out: *mut f32,
    len: usize,
    first_row: usize,
}

// SAFETY: `task` is written only by core 0 while `state` is 0 (core 1 not reading) and read by
// core 1 only after it saw 1 (Release/Acquire on `state` orders the accesses).
unsafe impl Sync for Mailbox {}

static MAILBOX: Mailbox = Mailbox {
    state: AtomicU8::new(0),
    task: UnsafeCell::new(None),
};
static mut CORE1_STACK: Stack<16384> = Stack::new();

fn core1_loop() {
    enable_pie();
    loop {
        while MAILBOX.state.load(Ordering::Acquire) != 1 {
            core::hint::spin_loop();
        }
        // SAFETY: see `Mailbox`; core 0 keeps the job and the output alive until state is 2.
        unsafe {
            if let Some(t) = *MAILBOX.task.get() {
                (*t.job)(t.first_row, core::slice::from_raw_parts_mut(t.out, t.len));
            }
        }
        MAILBOX.state.store(2, Ordering::Release);
    }
}

/// The board's button, sampled on each poll, and the idle wait between polls.
struct PinButton {
    pin: Input<'static>,
    debouncer: Debouncer,
    delay: Delay,
    low_power: LowPower<'static>,
    usb: UsbHost,
}

impl PinButton {
    /// Light sleep until the button reaches its active level or `max_ms` pass. esp-hal moves
    /// `Instant` on by the time slept, so the millisecond clock stays right.
    fn light_sleep(&mut self, max_ms: u32) {
        let deadline = Instant::now() + Duration::from_millis(u64::from(max_ms));
        self.low_power.set_wakeup_deadline(deadline);
        self.pin.listen(if BUTTON_ACTIVE_LOW {
            Event::LowLevel
        } else {
            Event::HighLevel
        });
        self.low_power.sleep_light(RtcSleepConfig::default());
        self.pin.unlisten();
        self.pin.clear_interrupt();
        self.low_power.clear_wakeup_deadline();
    }
}

impl Buttons for PinButton {
    fn poll(&mut self, now: u64) -> Option<Press> {
        let pressed = self.pin.is_low() == BUTTON_ACTIVE_LOW;
        self.debouncer.sample(pressed, now)
    }
    fn drop_pending(&mut self) {
        self.debouncer.drop_pending();
    }
    /// A delay while awake; a light sleep once `idle::next_step` allows it. (`waiti` is not
    /// used: with no interrupt handlers nothing would wake the core.) The USB host is seen
    /// through the start-of-frame counter, read on every wait.
    fn wait(&mut self, now: u64, quiet_since: u64) {
        let frame = USB_DEVICE::regs().fram_num().read().sof_frame_index().bits();
        self.usb.sample(u32::from(frame), now);
        let released = self.debouncer.is_released();
        match idle::next_step(now, quiet_since, released, self.usb.present(now)) {
            IdleStep::Poll { ms } => self.delay.delay_millis(ms),
            IdleStep::LightSleep { max_ms } => self.light_sleep(max_ms),
        }
    }
}

/// Both cores. Core 1 starts on the first matmul, after the model has been read from flash,
/// so no flash read (which stops the cache) ever runs while it executes. After each job core 0
/// parks it (the RTC controller stalls it) and unparks it for the next: core 1 only runs while
/// it has rows to compute, and never spins through the badge's idle time.
struct DualCore {
    control: RefCell<Option<CpuControl<'static>>>,
    guard: RefCell<Option<AppCoreGuard<'static>>>,
}

impl Workers for DualCore {
    fn run_rows(&self, out: &mut [f32], job: &RowJob<'_>) {
        let mid = split_point(out.len());
        if mid == 0 {
            return job(0, out);
        }
        let mut control_slot = self.control.borrow_mut();
        let Some(control) = control_slot.as_mut() else {
            return job(0, out); // core 1 failed to start: everything here
        };
        if self.guard.borrow().is_none() {
            // SAFETY: the stack is used by core 1 only, and only started once.
            let stack = unsafe { &mut *addr_of_mut!(CORE1_STACK) };
            match control.start_app_core(stack, core1_loop) {
                Ok(g) => *self.guard.borrow_mut() = Some(g),
                Err(_) => {
                    *control_slot = None;
                    return job(0, out);
                }
            }
        } else {
            control.unpark_core(Cpu::AppCpu);
        }
        let (first, second) = out.split_at_mut(mid);
        // SAFETY: lifetime erasure only; this function waits for state 2 before returning.
        let job_static: *const RowJob<'static> =
            unsafe { core::mem::transmute(job as *const RowJob<'_>) };
        // SAFETY: state is 0, so core 1 is not reading the task.
        unsafe {
            *MAILBOX.task.get() = Some(Task {
                job: job_static,
                out: second.as_mut_ptr(),
                len: second.len(),
                first_row: mid,
            });
        }
        MAILBOX.state.store(1, Ordering::Release);
        job(0, first);
        while MAILBOX.state.load(Ordering::Acquire) != 2 {
            core::hint::spin_loop();
        }
        MAILBOX.state.store(0, Ordering::Relaxed);
        // SAFETY: this is core 0 parking core 1, which holds no lock and only waits for the
        // next job (it has stored state 2); `unpark_core` above resumes it where it stopped.
        unsafe { control.park_core(Cpu::AppCpu) };
    }
    fn count(&self) -> usize {
        2
    }
}

// ---------------------------------------------------------------------------------------------
// The speaker.

enum Audio {
    Idle(I2sTx<'static, Blocking>, DmaTxStreamBuf),
    Playing(I2sTxDmaTransfer<'static, Blocking, DmaTxStreamBuf>),
    Broken,
}

/// I2S0 → MAX98357A. The app's `Pcm16Writer` already interleaves L = R frames
/// (`Channels::Stereo`); this pushes them into the DMA ring, waiting for room.
struct I2sSpeaker {
    audio: Audio,
}

/// The DMA ring: four descriptors of 4000 bytes (1000 stereo frames each), about 0.18 s.
const RING_BYTES: usize = 4 * 4000;

impl I2sSpeaker {
    fn start(&mut self) {
        if let Audio::Idle(tx, buf) = core::mem::replace(&mut self.audio, Audio::Broken) {
            self.audio = match tx.write(buf) {
                Ok(t) => Audio::Playing(t),
                Err((e, tx, buf)) => {
                    println!("badge: I2S start failed: {e:?}");
                    Audio::Idle(tx, buf)
                }
            };
        }
    }

    fn stop(&mut self) {
        if let Audio::Playing(t) = core::mem::replace(&mut self.audio, Audio::Broken) {
            let (tx, buf) = t.stop();
            self.audio = Audio::Idle(tx, buf);
        }
    }

    /// Queues `bytes`, waiting for the DMA to free room. If the stream ran dry before (the
    /// DMA stops at the end of its descriptors), the transfer is restarted.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let Audio::Playing(t) = &mut self.audio else {
                return;
            };
            let n = t.push(bytes);
            bytes = &bytes[n..];
            if n == 0 && t.is_done() {
                self.stop();
                self.start();
            }
        }
    }
}

impl Pcm16Sink for I2sSpeaker {
    fn write_pcm16(&mut self, samples: &[i16]) {
        let mut buf = [0u8; 512];
        for chunk in samples.chunks(buf.len() / 2) {
            for (b, s) in buf.chunks_exact_mut(2).zip(chunk) {
                b.copy_from_slice(&s.to_le_bytes());
            }
            self.feed(&buf[..chunk.len() * 2]);
        }
    }
}

impl Speaker for I2sSpeaker {
    fn begin(&mut self, _what: Utterance) {
        self.start();
    }
    fn end(&mut self) {
        // A ring of silence behind the last samples: once it is queued, they have played.
        self.feed(&[0u8; RING_BYTES]);
        self.stop();
    }
}

struct Millis;

impl Clock for Millis {
    fn millis(&self) -> u64 {
        Instant::now().duration_since_epoch().as_millis()
    }
}

/// The console's receiving half with one byte of look-ahead. esp-hal's USB-Serial-JTAG
/// receiver reads without blocking (`drain_rx_fifo`) but has no `embedded_io::ReadReady`,
/// which the main loop needs to poll the console between button checks.
struct ConsoleIn<'d> {
    rx: UsbSerialJtagRx<'d, Blocking>,
    pending: Option<u8>,
}

impl app::embedded_io::ErrorType for ConsoleIn<'_> {
    type Error = <UsbSerialJtagRx<'static, Blocking> as app::embedded_io::ErrorType>::Error;
}

impl app::embedded_io::ReadReady for ConsoleIn<'_> {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        if self.pending.is_none() {
            let mut byte = [0u8; 1];
            if self.rx.drain_rx_fifo(&mut byte) == 1 {
                self.pending = Some(byte[0]);
            }
        }
        Ok(self.pending.is_some())
    }
}

impl app::embedded_io::Read for ConsoleIn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match (self.pending.take(), buf.first_mut()) {
            (_, None) => Ok(0),
            (Some(b), Some(first)) => {
                *first = b;
                Ok(1)
            }
            (None, Some(_)) => app::embedded_io::Read::read(&mut self.rx, buf),
        }
    }
}

#[esp_hal::main]
fn main() -> ! {
    let p = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    enable_pie();

    // Small allocations in internal RAM, the model and its run state in the 8 MB octal PSRAM.
    esp_alloc::heap_allocator!(size: 96 * 1024);
    let psram = Psram::new(
        p.PSRAM,
        PsramConfig {
            mode: PsramMode::OctalSpi,
            ..Default::default()
        },
    );
    let psram_bytes = psram.raw_parts().1;
    esp_alloc::psram_allocator!(&psram);

    let flash = FlashStorage::new(p.FLASH);
    let (rx, tx) = UsbSerialJtag::new(p.USB_DEVICE).split();

    let i2s = I2s::new(
        p.I2S0,
        p.DMA_CH0,
        TdmConfig::new_tdm_philips()
            .with_sample_rate(Rate::from_hz(SAMPLE_RATE))
            .with_data_format(DataFormat::Data16Channel16)
            .with_channels(I2sChannels::STEREO),
    )
    .expect("I2S configuration");
    // SAFETY: each pin number from the board profile is used once, here only.
    let (bclk, ws, dout) = unsafe {
        (
            AnyPin::steal(I2S_BCLK),
            AnyPin::steal(I2S_WS),
            AnyPin::steal(I2S_DOUT),
        )
    };
    let i2s_tx = i2s
        .i2s_tx
        .with_bclk(bclk)
        .with_ws(ws)
        .with_dout(dout)
        .build();
    let ring = dma_tx_stream_buffer!(RING_BYTES, RING_BYTES / 4);

    let workers = DualCore {
        control: RefCell::new(Some(CpuControl::new(p.CPU_CTRL))),
        guard: RefCell::new(None),
    };
    // SAFETY: the button's pin number from the board profile is used here only (build.rs
    // and `Board::load` refuse a profile that gives it to the I2S pins too).
    let button_pin = unsafe { AnyPin::steal(BUTTON_GPIO) };
    let pull = if BUTTON_PULL_UP { Pull::Up } else { Pull::None };
    let button = PinButton {
        pin: Input::new(button_pin, InputConfig::default().with_pull(pull)),
        debouncer: Debouncer::new(),
        delay: Delay::new(),
        low_power: LowPower::new(p.LPWR),
        usb: UsbHost::new(),
    };
    let mut io = Peripherals {
        console_in: ConsoleIn { rx, pending: None },
        console_out: tx,
        speaker: I2sSpeaker {
            audio: Audio::Idle(i2s_tx, ring),
        },
        clock: Millis,
        buttons: button,
    };
    let mut cfg = AppConfig::new(psram_bytes.saturating_sub(RESERVED_PSRAM));
    cfg.model_partition = MODEL_PARTITION;
    cfg.channels = Channels::Stereo;
    cfg.volume = Volume::FULL;
    cfg.echo = true;

    let mut flash = flash;
    let result = app::run(&mut flash, workers, &mut io, &cfg, &mut |_| {});
    // The app has printed and spoken what went wrong (or the console closed): idle.
    println!("badge: stopped: {:?}", result.err());
    loop {
        core::hint::spin_loop();
    }
}
