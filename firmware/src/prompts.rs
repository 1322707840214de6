//! The blob's button prompts section: what the badge asks its own model when its button is
//! pressed with nobody typing (layout in `firmware/FORMAT.md`, "Button prompts").
//!
//! Entry 0 is the introduction prompt (a short press after a pause), the rest the "ask me
//! about" list that further short presses step through. The section is tiny and read in place.

use alloc::string::String;
use alloc::vec::Vec;

/// Most entries a section may hold (the introduction plus 63 questions).
pub const MAX_PROMPTS: usize = 64;
/// Longest entry in bytes (questions are short; the console accepts 200 characters).
pub const MAX_PROMPT_BYTES: usize = 800;

/// The prompts, borrowed from the blob. Always holds the introduction.
#[derive(Debug, Clone, Copy)]
pub struct Prompts<'a> {
    section: &'a [u8],
    count: usize,
}

fn read_u32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

impl<'a> Prompts<'a> {
    /// Checks a section: entry count 1..=[`MAX_PROMPTS`], every entry inside the section,
    /// non-empty UTF-8 of at most [`MAX_PROMPT_BYTES`] bytes with some non-space character.
    pub fn parse(section: &'a [u8]) -> Result<Self, &'static str> {
        if section.len() < 4 {
            return Err("shorter than its entry count");
        }
        let count = read_u32(section, 0);
        if count == 0 {
            return Err("no introduction prompt");
        }
        if count > MAX_PROMPTS {
            return Err("more than 64 entries");
        }
        // count ≤ 64, so the index size cannot overflow.
        let index_end = 4 + 8 * count;
        if index_end > section.len() {
            return Err("entry index runs past the section");
        }
        let p = Prompts { section, count };
        for i in 0..count {
            let (off, len) = p.span(i);
            let text = off
                .checked_add(len)
                .filter(|&end| off >= index_end && end <= section.len())
                .map(|end| &section[off..end])
                .ok_or("an entry runs outside the section")?;
            if len > MAX_PROMPT_BYTES {
                return Err("an entry is longer than 800 bytes");
            }
            let text = core::str::from_utf8(text).map_err(|_| "an entry is not UTF-8")?;
            if text.trim().is_empty() {
                return Err("an entry is empty");
            }
        }
        Ok(p)
    }

    fn span(&self, i: usize) -> (usize, usize) {
        let at = 4 + 8 * i;
        (read_u32(self.section, at), read_u32(self.section, at + 4))
    }

    fn entry(&self, i: usize) -> &'a str {
        let (off, len) = self.span(i);
        // Checked in `parse`.
        core::str::from_utf8(&self.section[off..off + len]).unwrap_or("")
    }

    /// The introduction prompt.
    pub fn intro(&self) -> &'a str {
        self.entry(0)
    }

    /// Number of "ask me about" questions.
    pub fn ask_count(&self) -> usize {
        self.count - 1
    }

    /// The `i`-th "ask me about" question (`i < ask_count()`).
    pub fn ask(&self, i: usize) -> &'a str {
        self.entry(1 + i)
    }
}

/// The prompts before serialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptsSpec {
    pub intro: String,
    pub ask: Vec<String>,
}

impl Default for PromptsSpec {
    fn default() -> Self {
        PromptsSpec {
            intro: String::from(DEFAULT_INTRO),
            ask: Vec::new(),
        }
    }
}

/// The introduction prompt when the curriculum names none.
pub const DEFAULT_INTRO: &str = "Who are you?";

impl PromptsSpec {
    /// The section's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries: Vec<&str> = core::iter::once(self.intro.as_str())
            .chain(self.ask.iter().map(String::as_str))
            .collect();
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        let mut off = 4 + 8 * entries.len();
        for e in &entries {
            out.extend_from_slice(&(off as u32).to_le_bytes());
            out.extend_from_slice(&(e.len() as u32).to_le_bytes());
            off += e.len();
        }
        for e in &entries {
            out.extend_from_slice(e.as_bytes());
        }
        out
    }

    /// Why the section would be refused by [`Prompts::parse`], if it would.
    pub fn check(&self) -> Result<(), &'static str> {
        Prompts::parse(&self.to_bytes()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn prompts_round_trip_and_reject_bad_sections() {
        let spec = PromptsSpec {
            intro: "Who are you?".into(),
            ask: vec!["Where do you work?".into(), "¿Qué idiomas hablas?".into()],
        };
        let bytes = spec.to_bytes();
        let p = Prompts::parse(&bytes).unwrap();
        assert_eq!(p.intro(), "Who are you?");
        assert_eq!(p.ask_count(), 2);
        assert_eq!(p.ask(1), "¿Qué idiomas hablas?");
        assert!(Prompts::parse(&[]).is_err());
        assert_eq!(
            Prompts::parse(&0u32.to_le_bytes()).err(),
            Some("no introduction prompt")
        );
        let mut b = bytes.clone();
        b[8] = 0xFF; // first entry's length
        assert!(Prompts::parse(&b).is_err());
        let mut b = bytes.clone();
        b[0] = 200;
        assert_eq!(Prompts::parse(&b).err(), Some("more than 64 entries"));
        let mut b = bytes.clone();
        b[4] = 0; // first entry's offset inside the index
        assert_eq!(
            Prompts::parse(&b).err(),
            Some("an entry runs outside the section")
        );
        let empty = PromptsSpec {
            intro: "  ".into(),
            ask: vec![],
        };
        assert_eq!(empty.check(), Err("an entry is empty"));
        let mut b = spec.to_bytes();
        let last = b.len() - 1;
        b[last] = 0xFF;
        assert_eq!(Prompts::parse(&b).err(), Some("an entry is not UTF-8"));
    }
}
