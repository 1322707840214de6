//! Buttons: debouncing, short and long presses, and what each press makes the badge say.
//!
//! This is logic, not hardware: the shell samples the pin (esp-hal GPIO, no interrupts) each
//! time [`crate::app::Buttons::poll`] is called and feeds the level to a [`Debouncer`] with
//! the millisecond [`crate::app::Clock`]; [`ButtonMenu`] turns finished presses into the
//! question to ask. The host tests drive both with scripted levels and times.
//!
//! # Rules
//!
//! * **Debounce**: the pin's level must hold for [`DEBOUNCE_MS`] before the button counts as
//!   pressed or released, so contact bounces shorter than that make one press.
//! * **Short and long**: a press held [`LONG_PRESS_MS`] or longer is long, anything shorter is
//!   short. The kind is decided at release.
//! * **Short presses** step through a cycle: the introduction prompt, then each "ask me about"
//!   question, then the introduction again. After [`NEW_VISITOR_MS`] without a press the cycle
//!   starts over at the introduction (someone new is probably standing there).
//! * **Long press**: repeat the last answer (the introduction's, if nothing was said yet).
//! * **Presses while the badge is busy** (thinking or speaking) are dropped, not queued: after
//!   each utterance the app calls [`Debouncer::drop_pending`], and a press that began before
//!   that, even one still held, is ignored until the button has been released. An impatient
//!   visitor pressing three times would otherwise get three answers in a row; this way every
//!   press made while the badge is quiet gets exactly one answer, and utterances never overlap
//!   (the main loop speaks one at a time in any case).

use crate::prompts::Prompts;

/// How long the level must hold before a change counts.
pub const DEBOUNCE_MS: u64 = 30;
/// Presses at least this long are long presses.
pub const LONG_PRESS_MS: u64 = 700;
/// A short press after this long without one starts again at the introduction.
pub const NEW_VISITOR_MS: u64 = 120_000;

/// Short or long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PressKind {
    Short,
    Long,
}

/// One finished press.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Press {
    /// How long the button was held, in milliseconds.
    pub held_ms: u64,
    /// When it was released ([`crate::app::Clock::millis`]).
    pub released_at: u64,
}

impl Press {
    /// A press of `kind` released at `now` (the console's `!press` commands).
    pub fn synthetic(kind: PressKind, now: u64) -> Self {
        let held_ms = match kind {
            PressKind::Short => DEBOUNCE_MS * 4,
            PressKind::Long => LONG_PRESS_MS,
        };
        Press {
            held_ms,
            released_at: now,
        }
    }

    /// Short or long, by [`LONG_PRESS_MS`].
    pub fn kind(&self) -> PressKind {
        if self.held_ms >= LONG_PRESS_MS {
            PressKind::Long
        } else {
            PressKind::Short
        }
    }
}

/// Debounces one button from polled samples of its level.
#[derive(Clone, Copy, Debug)]
pub struct Debouncer {
    /// The debounced state: pressed or not.
    stable: bool,
    /// The latest raw level, and since when it has held.
    raw: bool,
    raw_since: u64,
    /// When the current debounced press began.
    pressed_at: u64,
    /// Swallow the press in progress (see [`Debouncer::drop_pending`]).
    ignoring: bool,
}

impl Default for Debouncer {
    fn default() -> Self {
        Self::new()
    }
}

impl Debouncer {
    /// A released button.
    pub fn new() -> Self {
        Debouncer {
            stable: false,
            raw: false,
            raw_since: 0,
            pressed_at: 0,
            ignoring: false,
        }
    }

    /// Feeds the level seen at `now` (`pressed`: the active level, after the board's
    /// polarity); returns the press that this sample finished, if any.
    pub fn sample(&mut self, pressed: bool, now: u64) -> Option<Press> {
        if pressed != self.raw {
            self.raw = pressed;
            self.raw_since = now;
        }
        if now.saturating_sub(self.raw_since) < DEBOUNCE_MS {
            return None;
        }
        if self.raw == self.stable {
            if !self.stable {
                // Released and settled: nothing left to swallow.
                self.ignoring = false;
            }
            return None;
        }
        self.stable = self.raw;
        if self.stable {
            // The press began when the level first changed, not when it had settled.
            self.pressed_at = self.raw_since;
            return None;
        }
        let press = Press {
            held_ms: self.raw_since.saturating_sub(self.pressed_at),
            released_at: self.raw_since,
        };
        if core::mem::replace(&mut self.ignoring, false) {
            return None;
        }
        Some(press)
    }

    /// The button is up and has been for the debounce time: no press is in progress or
    /// about to be reported (the idle loop may sleep; see [`crate::idle`]).
    pub fn is_released(&self) -> bool {
        !self.raw && !self.stable
    }

    /// Drops any press not finished yet: one in progress, or one that will turn out to have
    /// begun before this call (the button is still held). The next press counts only after
    /// the button has been seen released.
    pub fn drop_pending(&mut self) {
        self.ignoring = true;
    }
}

/// What a press asks the badge to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Ask the model this and speak the answer.
    Ask(&'a str),
    /// Say the last answer again.
    Repeat,
}

/// Which prompt the next short press asks (see the module rules).
#[derive(Clone, Copy, Debug, Default)]
pub struct ButtonMenu {
    /// Position in the cycle: 0 the introduction, `i ≥ 1` the `i-1`-th question.
    next: usize,
    last_press: Option<u64>,
}

impl ButtonMenu {
    pub fn new() -> Self {
        Self::default()
    }

    /// The action for `press`, given the blob's prompts.
    pub fn on_press<'a>(&mut self, press: Press, prompts: &Prompts<'a>) -> Action<'a> {
        let fresh = self
            .last_press
            .is_none_or(|t| press.released_at.saturating_sub(t) >= NEW_VISITOR_MS);
        self.last_press = Some(press.released_at);
        if press.kind() == PressKind::Long {
            return Action::Repeat;
        }
        if fresh {
            self.next = 0;
        }
        let cycle = 1 + prompts.ask_count();
        let at = self.next % cycle;
        self.next = (at + 1) % cycle;
        Action::Ask(if at == 0 {
            prompts.intro()
        } else {
            prompts.ask(at - 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::PromptsSpec;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Samples every `step` ms over `[from, to)` at a level given by `level(t)`.
    fn drive(
        d: &mut Debouncer,
        from: u64,
        to: u64,
        step: u64,
        level: impl Fn(u64) -> bool,
    ) -> Vec<Press> {
        (from..to)
            .step_by(step as usize)
            .filter_map(|t| d.sample(level(t), t))
            .collect()
    }

    #[test]
    fn bounces_shorter_than_the_threshold_make_one_press() {
        let mut d = Debouncer::new();
        // Pressed at 1000 with 5 ms bounces for 20 ms, held, released at 1300 with bounces.
        let level = |t: u64| match t {
            1000..=1019 => (t / 5).is_multiple_of(2),
            1020..=1299 => true,
            1300..=1319 => !(t / 5).is_multiple_of(2),
            _ => false,
        };
        let presses = drive(&mut d, 0, 2000, 1, level);
        assert_eq!(presses.len(), 1, "{presses:?}");
        let p = presses[0];
        assert_eq!(p.kind(), PressKind::Short);
        // From the last bounce into the press to the last bounce out of it.
        assert!((280..=320).contains(&p.held_ms), "{p:?}");
        // A glitch shorter than the threshold is no press at all.
        let mut d = Debouncer::new();
        assert!(drive(&mut d, 0, 500, 1, |t| (100..120).contains(&t)).is_empty());
        // Polled every 10 ms (the badge's idle tick) the same press is still one press.
        let mut d = Debouncer::new();
        assert_eq!(drive(&mut d, 0, 2000, 10, level).len(), 1);
    }

    #[test]
    fn released_only_when_up_and_settled() {
        let mut d = Debouncer::new();
        assert!(d.is_released());
        d.sample(true, 100);
        assert!(!d.is_released(), "a press may be starting: no sleep now");
        d.sample(true, 100 + DEBOUNCE_MS);
        assert!(!d.is_released(), "held");
        d.sample(false, 500);
        assert!(!d.is_released(), "the release has not settled yet");
        assert!(d.sample(false, 500 + DEBOUNCE_MS).is_some());
        assert!(d.is_released());
    }

    #[test]
    fn short_and_long_presses() {
        for (held, kind) in [
            (60u64, PressKind::Short),
            (LONG_PRESS_MS - 10, PressKind::Short),
            (LONG_PRESS_MS, PressKind::Long),
            (3000, PressKind::Long),
        ] {
            let mut d = Debouncer::new();
            let presses = drive(&mut d, 0, 5000, 1, |t| (500..500 + held).contains(&t));
            assert_eq!(presses.len(), 1);
            assert_eq!(presses[0].held_ms, held);
            assert_eq!(presses[0].released_at, 500 + held);
            assert_eq!(presses[0].kind(), kind, "{held} ms");
        }
        assert_eq!(Press::synthetic(PressKind::Long, 9).kind(), PressKind::Long);
        assert_eq!(
            Press::synthetic(PressKind::Short, 9).kind(),
            PressKind::Short
        );
    }

    #[test]
    fn presses_while_busy_are_dropped() {
        // Busy (not sampled) from 1000 to 3000; pressed 1500..1700 and 2500..3400.
        let level = |t: u64| (1500..1700).contains(&t) || (2500..3400).contains(&t);
        let mut d = Debouncer::new();
        assert!(drive(&mut d, 0, 1000, 10, level).is_empty());
        d.drop_pending(); // the utterance ended at 3000
                          // The button is still held from during the speech: that press is swallowed.
        assert!(drive(&mut d, 3000, 4000, 10, level).is_empty());
        // The next press after release counts.
        let later = |t: u64| (4200..4300).contains(&t);
        assert_eq!(drive(&mut d, 4000, 5000, 10, later).len(), 1);
        // Dropping with the button released and quiet costs the next press nothing.
        d.drop_pending();
        let p = drive(&mut d, 5000, 6000, 10, |t| (5500..5600).contains(&t));
        assert_eq!(p.len(), 1);
    }

    fn prompts() -> Vec<u8> {
        PromptsSpec {
            intro: "Who are you?".into(),
            ask: vec!["Where do you work?".into(), "What do you like?".into()],
        }
        .to_bytes()
    }

    #[test]
    fn the_menu_introduces_cycles_wraps_and_repeats() {
        let bytes = prompts();
        let p = Prompts::parse(&bytes).unwrap();
        let mut m = ButtonMenu::new();
        let short = |t| Press::synthetic(PressKind::Short, t);
        let long = |t| Press::synthetic(PressKind::Long, t);
        let asked: Vec<Action<'_>> = [1_000, 2_000, 3_000, 4_000, 5_000]
            .into_iter()
            .map(|t| m.on_press(short(t), &p))
            .collect();
        assert_eq!(
            asked,
            [
                Action::Ask("Who are you?"),
                Action::Ask("Where do you work?"),
                Action::Ask("What do you like?"),
                Action::Ask("Who are you?"),
                Action::Ask("Where do you work?"),
            ]
        );
        assert_eq!(m.on_press(long(6_000), &p), Action::Repeat);
        // A long press does not move the cycle.
        assert_eq!(
            m.on_press(short(7_000), &p),
            Action::Ask("What do you like?")
        );
        // Someone new, minutes later: the introduction again.
        assert_eq!(
            m.on_press(short(7_000 + NEW_VISITOR_MS), &p),
            Action::Ask("Who are you?")
        );
        // No questions at all: every short press introduces.
        let only = PromptsSpec::default().to_bytes();
        let p = Prompts::parse(&only).unwrap();
        let mut m = ButtonMenu::new();
        for t in [1, 2, 3] {
            assert_eq!(m.on_press(short(t), &p), Action::Ask("Who are you?"));
        }
    }
}
