//! The main loop tells the buttons when the badge last did something, so the shell can pick a
//! short poll or a light sleep (`badge_firmware::idle`). Runs the whole program (`app::run`) on
//! the small test blob, with a console that is silent, then types one question, then is silent
//! again, on a clock that only the waits and the work move forward.

mod common;

use badge_firmware::app::{self, AppConfig, Buttons, Clock, Peripherals, Speaker};
use badge_firmware::buttons::Press;
use badge_firmware::config::KvCacheKind;
use badge_firmware::idle::{next_step, IdleStep, SLEEP_AFTER_MS};
use badge_firmware::sam::Pcm16Sink;
use badge_firmware::workers::SingleWorker;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Milliseconds: each read of the clock costs 1 ms of "work", each wait its poll period.
#[derive(Clone)]
struct FakeClock(Rc<Cell<u64>>);
impl Clock for FakeClock {
    fn millis(&self) -> u64 {
        self.0.set(self.0.get() + 1);
        self.0.get()
    }
}

/// Records every wait as (now, quiet_since) and lets time pass as the badge would.
struct RecordingButtons {
    time: Rc<Cell<u64>>,
    waits: Rc<RefCell<Vec<(u64, u64)>>>,
}
impl Buttons for RecordingButtons {
    fn poll(&mut self, _now: u64) -> Option<Press> {
        None
    }
    fn wait(&mut self, now: u64, quiet_since: u64) {
        self.waits.borrow_mut().push((now, quiet_since));
        let ms = match next_step(now, quiet_since, true, false) {
            IdleStep::Poll { ms } => ms,
            IdleStep::LightSleep { max_ms } => max_ms,
        };
        self.time.set(self.time.get() + u64::from(ms));
    }
}

/// Silent for `silent_before` polls, then the question, then silent for `silent_after` polls,
/// then the end of input.
struct Console {
    polls: usize,
    silent_before: usize,
    silent_after: usize,
    question: &'static [u8],
}
impl app::embedded_io::ErrorType for Console {
    type Error = core::convert::Infallible;
}
impl app::embedded_io::ReadReady for Console {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        self.polls += 1;
        let typing = !self.question.is_empty();
        Ok(if typing {
            self.polls > self.silent_before
        } else {
            self.polls > self.silent_before + self.silent_after
        })
    }
}
impl app::embedded_io::Read for Console {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.question.len());
        buf[..n].copy_from_slice(&self.question[..n]);
        self.question = &self.question[n..];
        if self.question.is_empty() {
            // The next polls count the silence after the question.
            self.polls = self.silent_before;
        }
        Ok(n)
    }
}

struct Sink;
impl app::embedded_io::ErrorType for Sink {
    type Error = core::convert::Infallible;
}
impl app::embedded_io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
struct Quiet;
impl Pcm16Sink for Quiet {
    fn write_pcm16(&mut self, _samples: &[i16]) {}
}
impl Speaker for Quiet {}

#[test]
fn the_loop_reports_when_it_went_quiet_and_sleeps_only_after_the_quiet_period() {
    let time = Rc::new(Cell::new(0));
    let waits = Rc::new(RefCell::new(Vec::new()));
    let silent = 1_000; // polls: 10 s at 10 ms, well past SLEEP_AFTER_MS
    let mut io = Peripherals {
        console_in: Console {
            polls: 0,
            silent_before: silent,
            silent_after: silent,
            question: b"who are you?\n",
        },
        console_out: Sink,
        speaker: Quiet,
        clock: FakeClock(time.clone()),
        buttons: RecordingButtons {
            time: time.clone(),
            waits: waits.clone(),
        },
    };
    let mut flash = common::flash_with(&common::small_blob(KvCacheKind::F32));
    let mut cfg = AppConfig::new(8 << 20);
    cfg.generate.max_new_tokens = 8;
    app::run(&mut flash, SingleWorker, &mut io, &cfg, &mut |_| {}).expect("the session runs");

    let waits = waits.borrow();
    assert_eq!(waits.len(), 2 * silent, "one wait per silent poll");
    let (before, after) = waits.split_at(silent);
    let boot_quiet = before[0].1;
    assert!(
        before.iter().all(|&(_, q)| q == boot_quiet),
        "before anything happens, quiet since the session started"
    );
    let answered_at = after[0].1;
    assert!(
        answered_at > before[silent - 1].0,
        "the question moved quiet_since past the last wait before it"
    );
    assert!(after.iter().all(|&(_, q)| q == answered_at));
    assert!(
        after.iter().all(|&(now, q)| now >= q),
        "never in the future"
    );

    // The shell's schedule: polls first, a light sleep once quiet for SLEEP_AFTER_MS.
    let first_sleep = after
        .iter()
        .position(|&(now, q)| matches!(next_step(now, q, true, false), IdleStep::LightSleep { .. }))
        .expect("a long silence ends in sleep");
    let (now, q) = after[first_sleep];
    assert!(now - q >= SLEEP_AFTER_MS && now - q < SLEEP_AFTER_MS + 20);
}
