//! SAM (Software Automatic Mouth) speech synthesiser, a bit-exact re-implementation of
//! the reverse-engineered 1982 program.
//!
//! Three stages, each usable on its own:
//! 1. [`reciter`]: English text to phoneme string by letter-context rules.
//! 2. [`phonemes`]: phoneme string to phoneme table (codes, lengths, stress) with
//!    SAM's combination, stress and length rules.
//! 3. [`render`]: phoneme table to frames to 8-bit unsigned PCM, 22050 Hz, mono.
//!
//! Non-ASCII text is first spelled in ASCII by [`translit`] (one allocation); pure ASCII goes
//! straight in, exactly as the reference takes it. Otherwise nothing allocates: text and phoneme strings live in fixed 256-byte windows and audio
//! is streamed through an [`AudioSink`] in chunks of at most [`render::CHUNK_SAMPLES`]
//! samples. Input longer than the reference's window is spoken in several passes,
//! split at sentence ends (or word boundaries), each pass identical to one run of the
//! reference program.

pub mod phonemes;
pub mod reciter;
pub mod render;
pub mod sink;
mod tables;
pub mod translit;

pub use phonemes::PhonemeTable;
pub use reciter::{ReciteEnd, Recited};
pub use render::{FrameTable, Synth};
pub use sink::{Channels, Pcm16Sink, Pcm16Writer, Volume};

/// Output sample rate in Hz.
pub const SAMPLE_RATE: u32 = 22050;

/// Longest normalised input (bytes, without the trailing space) handled in one pass;
/// longer input is split. With the trailing space and the terminator this fills the
/// reference's 254/255-byte windows.
pub const MAX_LINE: usize = 252;

/// Receives 8-bit unsigned PCM samples (22050 Hz, mono) as they are produced.
pub trait AudioSink {
    /// Called with the next samples, in order; at most [`render::CHUNK_SAMPLES`] at once.
    fn write(&mut self, samples: &[u8]);
}

impl<T: AudioSink + ?Sized> AudioSink for &mut T {
    fn write(&mut self, samples: &[u8]) {
        (**self).write(samples)
    }
}

/// Adapts a closure to [`AudioSink`].
pub struct FnSink<F: FnMut(&[u8])>(pub F);

impl<F: FnMut(&[u8])> AudioSink for FnSink<F> {
    fn write(&mut self, samples: &[u8]) {
        (self.0)(samples)
    }
}

/// Counts samples and discards them.
#[derive(Default, Debug, Clone, Copy)]
pub struct NullSink {
    /// Samples seen so far.
    pub samples: usize,
}

impl AudioSink for NullSink {
    fn write(&mut self, samples: &[u8]) {
        self.samples += samples.len();
    }
}

/// Collects samples (convenient on the host; allocation is the caller's choice).
impl AudioSink for alloc::vec::Vec<u8> {
    fn write(&mut self, samples: &[u8]) {
        self.extend_from_slice(samples);
    }
}

/// Errors of the reference program, reported instead of producing audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SamError {
    /// A byte of a phoneme string is neither a phoneme name nor a stress digit.
    /// `offset` is the byte position within the pass (normalised line) that failed.
    InvalidPhoneme {
        /// Byte offset in the phoneme string of the failing pass.
        offset: usize,
        /// The offending byte.
        byte: u8,
    },
    /// The reciter's rule table did not describe the input (not reachable with SAM's
    /// rule set; kept for completeness).
    ReciterFailure,
}

impl core::fmt::Display for SamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SamError::InvalidPhoneme { offset, byte } => {
                write!(f, "invalid phoneme byte 0x{byte:02X} at offset {offset}")
            }
            SamError::ReciterFailure => write!(f, "reciter rules failed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SamError {}

/// Voice parameters (all 0..=255). The blob stores one (`config::Voice` is this type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
pub struct Voice {
    /// 5-sample steps per frame (higher = slower). Default 72.
    pub speed: u8,
    /// Base glottal period (lower = higher voice). Default 64.
    pub pitch: u8,
    /// F1 (mouth) formant scale, 128 = neutral. Default 128.
    pub mouth: u8,
    /// F2 (throat) formant scale, 128 = neutral. Default 128.
    pub throat: u8,
}

impl Default for Voice {
    fn default() -> Self {
        Voice::SAM
    }
}

impl Voice {
    /// SAM's standard voice: speed 72, pitch 64, mouth 128, throat 128.
    pub const SAM: Voice = Voice {
        speed: 72,
        pitch: 64,
        mouth: 128,
        throat: 128,
    };
    /// Robot: speed 100, pitch 50, mouth 200, throat 200.
    pub const ROBOT: Voice = Voice {
        speed: 100,
        pitch: 50,
        mouth: 200,
        throat: 200,
    };
    /// Named presets, `(name, voice)`.
    pub const PRESETS: &'static [(&'static str, Voice)] =
        &[("sam", Voice::SAM), ("robot", Voice::ROBOT)];

    /// Looks up a preset by name (ASCII case-insensitive); `None` for unknown names.
    pub fn preset(name: &str) -> Option<Voice> {
        Self::PRESETS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }

    /// Names of the presets.
    pub fn preset_names() -> impl Iterator<Item = &'static str> {
        Self::PRESETS.iter().map(|&(n, _)| n)
    }
}

/// How input is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// English text through the reciter.
    Text,
    /// Phoneme string (SAM's phonetic alphabet with stress digits).
    Phonetic,
}

#[inline]
fn is_separator(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0 || b == 0x0B
}

/// A fixed-capacity line: the reference's input buffer content.
#[derive(Clone)]
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    /// Builds the reference's line for one pass: `words` (already without separators)
    /// joined by one space, one trailing space, upper-cased, then the mode's
    /// terminator for phonetic mode (0x9B). `text` must be at most [`MAX_LINE`] bytes.
    pub fn new(text: &[u8], mode: Mode) -> Line {
        let mut buf = [0u8; 256];
        let n = text.len().min(MAX_LINE);
        for (d, s) in buf.iter_mut().zip(&text[..n]) {
            *d = s.to_ascii_uppercase();
        }
        buf[n] = b' ';
        let mut len = n + 1;
        if mode == Mode::Phonetic {
            buf[len] = phonemes::PHONEME_STRING_END;
            len += 1;
        }
        Line { buf, len }
    }

    /// The bytes of the line.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Splits normalised input into passes of at most [`MAX_LINE`] bytes, preferring
/// sentence ends, then word boundaries; `f` gets each pass (words joined by single
/// spaces, no trailing space). A single input that fits is one pass.
fn for_each_pass(
    input: &[u8],
    f: &mut dyn FnMut(&[u8]) -> Result<(), SamError>,
) -> Result<(), SamError> {
    let mut line = [0u8; MAX_LINE];
    let mut len = 0usize;
    // Length of `line` up to the end of its last complete sentence (0 = none).
    let mut sentence_end = 0usize;
    for word in input.split(|&b| is_separator(b)).filter(|w| !w.is_empty()) {
        let mut word = word;
        loop {
            let need = if len == 0 {
                word.len()
            } else {
                len + 1 + word.len()
            };
            if need <= MAX_LINE {
                if len > 0 {
                    line[len] = b' ';
                    len += 1;
                }
                line[len..len + word.len()].copy_from_slice(word);
                len += word.len();
                if matches!(word.last(), Some(b'.' | b'!' | b'?')) {
                    sentence_end = len;
                }
                break;
            }
            if len > 0 {
                if sentence_end > 0 && sentence_end < len {
                    f(&line[..sentence_end])?;
                    let rest = sentence_end + 1;
                    line.copy_within(rest..len, 0);
                    len -= rest;
                } else {
                    f(&line[..len])?;
                    len = 0;
                }
                sentence_end = 0;
                continue;
            }
            // A single word longer than a pass: cut it.
            let (head, tail) = word.split_at(MAX_LINE);
            f(head)?;
            word = tail;
        }
    }
    if len > 0 {
        f(&line[..len])?;
    }
    Ok(())
}

/// Runs the reciter on one pass, splitting it further where the reference would cut
/// words off or overflow its buffer. `f` receives each phoneme line (ending in 0x9B).
fn recite_pass(
    text: &[u8],
    f: &mut dyn FnMut(&Recited) -> Result<(), SamError>,
) -> Result<(), SamError> {
    // Work list of byte ranges of `text`, processed last-in first-out.
    let mut stack = [(0usize, 0usize); 32];
    let mut depth = 1;
    stack[0] = (0, text.len());
    while depth > 0 {
        depth -= 1;
        let (start, end) = stack[depth];
        let part = trim(&text[start..end]);
        if part.is_empty() {
            continue;
        }
        let start = start + (part.as_ptr() as usize - text[start..].as_ptr() as usize);
        let line = Line::new(part, Mode::Text);
        let recited = reciter::recite(line.as_bytes())?;
        if !recited.fits() && part.len() > 1 && depth + 2 <= stack.len() {
            let mid = split_point(part);
            stack[depth] = (start + mid, start + part.len());
            stack[depth + 1] = (start, start + mid);
            depth += 2;
            continue;
        }
        f(&recited)?;
        if let ReciteEnd::Truncated { resume_at } = recited.end {
            if resume_at < part.len() && depth < stack.len() {
                stack[depth] = (start + resume_at, start + part.len());
                depth += 1;
            }
        }
    }
    Ok(())
}

fn trim(s: &[u8]) -> &[u8] {
    let a = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    let b = s.iter().rposition(|&b| b != b' ').map_or(a, |i| i + 1);
    &s[a..b]
}

/// Splits near the middle, at a space if there is one.
fn split_point(s: &[u8]) -> usize {
    let mid = s.len() / 2;
    s[..mid]
        .iter()
        .rposition(|&b| b == b' ')
        .filter(|&i| i > 0)
        .or_else(|| s[mid..].iter().position(|&b| b == b' ').map(|i| i + mid))
        .unwrap_or(mid.max(1))
}

/// Calls `f` with the processed phoneme table of every pass of `input`.
fn for_each_table(
    input: &[u8],
    mode: Mode,
    f: &mut dyn FnMut(&PhonemeTable) -> Result<(), SamError>,
) -> Result<(), SamError> {
    for_each_pass(input, &mut |pass| match mode {
        Mode::Phonetic => {
            let line = Line::new(pass, Mode::Phonetic);
            let mut table = PhonemeTable::parse(line.as_bytes())?;
            table.apply_rules();
            f(&table)
        }
        Mode::Text => recite_pass(pass, &mut |recited| {
            let mut table = PhonemeTable::parse(recited.phoneme_input())?;
            table.apply_rules();
            f(&table)
        }),
    })
}

/// Speaks `input` in `mode`: validates every pass first (so an error produces no audio,
/// as in the reference), then renders pass by pass into `sink`. Returns samples written.
pub fn speak(
    input: &[u8],
    mode: Mode,
    voice: &Voice,
    sink: &mut dyn AudioSink,
) -> Result<usize, SamError> {
    for_each_table(input, mode, &mut |_| Ok(()))?;
    let mut total = 0;
    for_each_table(input, mode, &mut |table| {
        total += Synth::new(voice).render(table, &mut *sink, &mut |_| {});
        Ok(())
    })?;
    Ok(total)
}

/// Speaks English text. Returns the number of samples written (8-bit unsigned,
/// 22050 Hz, mono).
pub fn speak_text(text: &str, voice: &Voice, sink: &mut impl AudioSink) -> Result<usize, SamError> {
    speak(spoken(text).as_bytes(), Mode::Text, voice, sink)
}

/// What SAM's reciter is given for `text`: itself when ASCII, else its transliteration.
pub fn spoken(text: &str) -> alloc::borrow::Cow<'_, str> {
    if text.is_ascii() {
        alloc::borrow::Cow::Borrowed(text)
    } else {
        alloc::borrow::Cow::Owned(translit::transliterate(text))
    }
}

/// Speaks a phoneme string (e.g. `"/HEH4LOW WERLD"`).
pub fn speak_phonetic(
    phonemes: &str,
    voice: &Voice,
    sink: &mut impl AudioSink,
) -> Result<usize, SamError> {
    speak(phonemes.as_bytes(), Mode::Phonetic, voice, sink)
}

/// Renders English text into a new vector.
#[cfg(feature = "std")]
pub fn text_to_pcm(text: &str, voice: &Voice) -> Result<alloc::vec::Vec<u8>, SamError> {
    let mut v = alloc::vec::Vec::new();
    speak_text(text, voice, &mut v)?;
    Ok(v)
}

/// Renders a phoneme string into a new vector.
#[cfg(feature = "std")]
pub fn phonetic_to_pcm(phonemes: &str, voice: &Voice) -> Result<alloc::vec::Vec<u8>, SamError> {
    let mut v = alloc::vec::Vec::new();
    speak(phonemes.as_bytes(), Mode::Phonetic, voice, &mut v)?;
    Ok(v)
}

/// The stages of one pass, as the reference runs them, with every intermediate result
/// handed to `observer` (for comparing with reference traces). `line` is the text of
/// one pass (at most [`MAX_LINE`] bytes, words separated by single spaces); no
/// splitting is done. Returns samples written.
pub fn run_pass_traced(
    line: &[u8],
    mode: Mode,
    voice: &Voice,
    sink: &mut dyn AudioSink,
    observer: &mut dyn StageObserver,
) -> Result<usize, SamError> {
    let input = Line::new(line, mode);
    let recited;
    let phoneme_line: &[u8] = match mode {
        Mode::Text => {
            recited = reciter::recite_traced(input.as_bytes(), &mut |r| observer.rule(r))?;
            observer.reciter_output(&recited);
            recited.phoneme_input()
        }
        Mode::Phonetic => input.as_bytes(),
    };
    let mut table = PhonemeTable::parse(phoneme_line)?;
    observer.parsed(&table);
    table.apply_rules();
    observer.processed(&table);
    Ok(Synth::new(voice).render(&table, sink, &mut |frames| observer.frames(frames)))
}

/// Receives intermediate results of [`run_pass_traced`]. All methods default to no-ops.
pub trait StageObserver {
    /// A reciter rule was applied (raw rule bytes; see [`reciter::format_rule`]).
    fn rule(&mut self, _rule: &[u8]) {}
    /// The reciter's output.
    fn reciter_output(&mut self, _recited: &Recited) {}
    /// The phoneme table right after parsing (lengths still 0).
    fn parsed(&mut self, _table: &PhonemeTable) {}
    /// The phoneme table after all rules (phrase marks included).
    fn processed(&mut self, _table: &PhonemeTable) {}
    /// The frame table of one phrase, just before synthesis.
    fn frames(&mut self, _frames: &FrameTable) {}
}

/// A [`StageObserver`] that ignores everything.
pub struct NoObserver;
impl StageObserver for NoObserver {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formant_scaling_matches_shift_add_multiply() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                // 8-step shift-and-add keeping only the high byte, then doubled.
                let (mut hi, mut m) = (0u16, a);
                for _ in 0..8 {
                    if m & 1 != 0 {
                        hi += b as u16;
                    }
                    hi >>= 1;
                    m >>= 1;
                }
                assert_eq!(render::scale_formant(a, b), ((hi as u8) << 1), "{a} {b}");
            }
        }
        assert_eq!(render::scale_formant(128, 19), 18);
    }

    #[test]
    fn passes_prefer_sentence_ends() {
        let mut s = alloc::string::String::new();
        for i in 0..30 {
            s.push_str(if i % 3 == 2 {
                "word end. "
            } else {
                "some words "
            });
        }
        let mut passes = alloc::vec::Vec::new();
        for_each_pass(s.as_bytes(), &mut |p| {
            passes.push(p.to_vec());
            Ok(())
        })
        .unwrap();
        assert!(passes.len() > 1);
        for p in &passes {
            assert!(p.len() <= MAX_LINE);
            assert!(p.ends_with(b"."), "{:?}", core::str::from_utf8(p));
        }
        let joined: alloc::vec::Vec<u8> = passes.join(&b' ');
        assert_eq!(joined, s.trim_end().as_bytes());
    }

    #[test]
    fn short_input_is_one_pass_and_whitespace_is_normalised() {
        let mut passes = 0;
        for_each_pass(b"  Hello,\tmy\n name  ", &mut |p| {
            assert_eq!(p, b"Hello, my name");
            passes += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(passes, 1);
    }
}
