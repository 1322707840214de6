//! How the badge waits between interactions: the decision only, host-tested with the
//! millisecond [`crate::app::Clock`]; the ESP32-S3 shell does the waiting.
//!
//! On a lanyard nobody types, and the USB port is usually unplugged. The badge then light-sleeps
//! ([`IdleStep::LightSleep`]): both cores stop, PSRAM keeps its contents, and the button's pin
//! (a GPIO wake source at its active level) or a timer ends the sleep. Light sleep would cut
//! the USB-Serial-JTAG console, so while a USB host is attached, or soon after someone used
//! the badge, it only polls ([`IdleStep::Poll`]) every [`POLL_MS`]: a typed question or a
//! second press is answered at once. A USB host is seen through the start-of-frame counter,
//! which a host advances every millisecond ([`UsbHost`]).
//!
//! Why a timer as well as the button: the sleep ends every [`SLEEP_SLICE_MS`] so that a laptop
//! plugged in while the badge sleeps gets its console within about a second.

/// The poll period while awake: well under [`crate::buttons::DEBOUNCE_MS`], so a press is
/// sampled several times before it counts.
pub const POLL_MS: u32 = 10;
/// How long the badge stays awake after its last interaction (a press, a typed byte, an
/// answer), so that a visitor's next press is not delayed by a wake-up.
pub const SLEEP_AFTER_MS: u64 = 5_000;
/// The longest single light sleep.
pub const SLEEP_SLICE_MS: u32 = 1_000;
/// A host sends a start-of-frame every millisecond; a counter unchanged for this long means
/// no host is listening (several frames, so one missed sample does not matter).
pub const HOST_GONE_MS: u64 = 50;

/// What to do until the next poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleStep {
    /// Stay awake and wait this many milliseconds (a plain delay).
    Poll { ms: u32 },
    /// Light-sleep until the button is pressed, or for at most this many milliseconds.
    LightSleep { max_ms: u32 },
}

/// Whether a USB host is attached, from samples of the USB start-of-frame counter.
#[derive(Clone, Copy, Debug, Default)]
pub struct UsbHost {
    last_frame: Option<u32>,
    changed_at: Option<u64>,
}

impl UsbHost {
    /// No host seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the frame counter read at `now` (milliseconds).
    pub fn sample(&mut self, frame: u32, now: u64) {
        if self.last_frame != Some(frame) {
            // The first sample only starts the clock: one reading cannot show a host.
            if self.last_frame.is_some() {
                self.changed_at = Some(now);
            }
            self.last_frame = Some(frame);
        }
    }

    /// A host advanced the counter within the last [`HOST_GONE_MS`].
    pub fn present(&self, now: u64) -> bool {
        self.changed_at
            .is_some_and(|t| now.saturating_sub(t) < HOST_GONE_MS)
    }
}

/// Picks the next [`IdleStep`]. `quiet_since`: when the last interaction ended;
/// `button_released`: the button is up and settled (a held button would end the sleep at once);
/// `host_present`: [`UsbHost::present`].
pub fn next_step(
    now: u64,
    quiet_since: u64,
    button_released: bool,
    host_present: bool,
) -> IdleStep {
    let quiet_for = now.saturating_sub(quiet_since);
    if host_present || !button_released || quiet_for < SLEEP_AFTER_MS {
        IdleStep::Poll { ms: POLL_MS }
    } else {
        IdleStep::LightSleep {
            max_ms: SLEEP_SLICE_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples the counter every millisecond from `from` to `to`, advancing it when `host`.
    fn run(usb: &mut UsbHost, from: u64, to: u64, host: bool) {
        for t in from..to {
            usb.sample(if host { t as u32 } else { 7 }, t);
        }
    }

    #[test]
    fn a_host_is_seen_from_the_advancing_frame_counter_and_lost_when_it_stops() {
        let mut usb = UsbHost::new();
        assert!(!usb.present(0), "nothing sampled yet");
        usb.sample(5, 1);
        assert!(!usb.present(1), "one reading cannot show a host");
        run(&mut usb, 2, 100, true);
        assert!(usb.present(100));
        // Unplugged at 100 ms: the counter freezes.
        run(&mut usb, 100, 100 + HOST_GONE_MS - 2, false);
        assert!(
            usb.present(100 + HOST_GONE_MS - 2),
            "a few missed frames are not an unplug"
        );
        run(&mut usb, 100 + HOST_GONE_MS - 2, 200, false);
        assert!(!usb.present(200));
    }

    #[test]
    fn a_frozen_counter_from_boot_is_no_host() {
        let mut usb = UsbHost::new();
        run(&mut usb, 0, 1000, false);
        assert!(!usb.present(1000));
    }

    #[test]
    fn sleeps_only_when_quiet_long_enough_with_the_button_up_and_no_host() {
        let poll = IdleStep::Poll { ms: POLL_MS };
        let sleep = IdleStep::LightSleep {
            max_ms: SLEEP_SLICE_MS,
        };
        let q = 10_000;
        assert_eq!(next_step(q + 1, q, true, false), poll, "just answered");
        assert_eq!(next_step(q + SLEEP_AFTER_MS - 1, q, true, false), poll);
        assert_eq!(next_step(q + SLEEP_AFTER_MS, q, true, false), sleep);
        assert_eq!(
            next_step(q + SLEEP_AFTER_MS, q, false, false),
            poll,
            "button held"
        );
        assert_eq!(
            next_step(q + SLEEP_AFTER_MS, q, true, true),
            poll,
            "laptop attached"
        );
        // A clock that went backwards (or a stale quiet_since) never underflows into a sleep.
        assert_eq!(next_step(0, q, true, false), poll);
    }
}
