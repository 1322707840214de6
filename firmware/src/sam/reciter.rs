//! English reciter: converts text to SAM phonemes with SAM's letter-context rule set.
//!
//! Works on a fixed 256-byte window exactly like the original: the text plus a `[`
//! terminator is read from the first 255 bytes, and the phoneme string is written
//! into a 256-byte buffer (ending with 0x9B).

use super::tables::{CHAR_CLASS, LETTER_RULES, LETTER_RULE_HI, LETTER_RULE_LO, SYMBOL_RULES};
use super::SamError;

/// Address of the first letter rule in the original memory map.
const LETTER_RULES_ADDR: u16 = 32000;
/// Address of the symbol/digit rules in the original memory map.
const SYMBOL_RULES_ADDR: u16 = 37541;
/// A space emitted past this output position ends the reciter output.
pub const OUTPUT_SOFT_LIMIT: u8 = 120;

// Character class bits of CHAR_CLASS.
const C_DIGIT: u8 = 0x01;
const C_SYMBOL: u8 = 0x02;
const C_VOICED: u8 = 0x04;
const C_FRONT: u8 = 0x08;
const C_SIBILANT: u8 = 0x10;
const C_CONSONANT: u8 = 0x20;
const C_VOWEL: u8 = 0x40;
const C_LETTER: u8 = 0x80;

#[inline]
fn class(c: u8) -> u8 {
    CHAR_CLASS[c as usize]
}

#[inline]
fn rule_byte(addr: u16, offset: u8) -> u8 {
    let (table, base): (&[u8], u16) = if addr >= SYMBOL_RULES_ADDR {
        (&SYMBOL_RULES, SYMBOL_RULES_ADDR)
    } else {
        (&LETTER_RULES, LETTER_RULES_ADDR)
    };
    let i = (addr.wrapping_sub(base)) as usize + offset as usize;
    table.get(i).copied().unwrap_or(0x80)
}

/// How the reciter stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReciteEnd {
    /// The whole text was converted.
    Complete,
    /// The output passed the reference's soft limit at a word boundary; the text from
    /// byte `resume_at` on (an index into the input text) was not converted.
    Truncated {
        /// Index into the input text where conversion stopped (first byte not spoken).
        resume_at: usize,
    },
}

/// Output of the reciter: the phoneme string as the reference leaves it in its buffer.
#[derive(Clone)]
pub struct Recited {
    buf: [u8; 256],
    /// How the conversion ended.
    pub end: ReciteEnd,
    /// True when the output wrapped around the 256-byte buffer (input far too long for
    /// one pass); the phoneme string is then not meaningful.
    pub overflowed: bool,
}

impl core::fmt::Debug for Recited {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Recited")
            .field(
                "phonemes",
                &core::str::from_utf8(self.phonemes()).unwrap_or("<bytes>"),
            )
            .field("end", &self.end)
            .field("overflowed", &self.overflowed)
            .finish()
    }
}

impl Recited {
    /// The raw 256-byte buffer (phoneme string, 0x9B, then leftovers of the input).
    pub fn buffer(&self) -> &[u8; 256] {
        &self.buf
    }

    /// The phoneme string without the 0x9B terminator (the reference's
    /// `sam_X_phonemes.txt` content).
    pub fn phonemes(&self) -> &[u8] {
        let end = self.buf.iter().position(|&b| b == 0x9B).unwrap_or(256);
        &self.buf[..end]
    }

    /// The string the phoneme stage reads: up to the first NUL, at most 254 bytes.
    pub fn phoneme_input(&self) -> &[u8] {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(256)
            .min(254);
        &self.buf[..end]
    }

    /// True when the phoneme stage will see the complete string, terminator included.
    pub fn fits(&self) -> bool {
        !self.overflowed && self.phoneme_input().contains(&0x9B)
    }
}

/// Folds a byte to the reciter's 7-bit upper-case alphabet.
#[inline]
fn fold(b: u8) -> u8 {
    let a = b & 0x7F;
    if a >= 112 {
        a & 95
    } else if a >= 96 {
        a & 79
    } else {
        a
    }
}

/// Converts upper-cased text (the reference's line: words, one trailing space) to
/// phonemes. `on_rule` is called with the bytes of each rule applied (for traces).
pub fn recite_traced(text: &[u8], on_rule: &mut dyn FnMut(&[u8])) -> Result<Recited, SamError> {
    // The reference's line buffer: text, '[' terminator, zero fill.
    let mut buf = [0u8; 256];
    let n = text.len().min(255);
    buf[..n].copy_from_slice(&text[..n]);
    if n < 256 {
        buf[n] = b'[';
    }
    let mut src = [0u8; 256];
    src[0] = b' ';
    for i in 0..255 {
        src[i + 1] = fold(buf[i]);
    }
    src[255] = 27;

    let mut out_pos: u8 = 255;
    let mut emitted: u16 = 0;
    let mut cursor: u8 = 255;

    macro_rules! emit {
        ($b:expr) => {{
            out_pos = out_pos.wrapping_add(1);
            emitted = emitted.saturating_add(1);
            buf[out_pos as usize] = $b;
        }};
    }

    loop {
        // Next input character; runs of '.' not followed by a digit are copied.
        let ch;
        loop {
            cursor = cursor.wrapping_add(1);
            let c = src[cursor as usize];
            if c == b'[' {
                emit!(0x9B);
                return Ok(Recited {
                    buf,
                    end: ReciteEnd::Complete,
                    overflowed: emitted > 256,
                });
            }
            if c != b'.' || class(src[cursor.wrapping_add(1) as usize]) & C_DIGIT != 0 {
                ch = c;
                break;
            }
            emit!(b'.');
        }

        let cls = class(ch);
        let mut rule: u16;
        if cls & C_SYMBOL != 0 {
            rule = SYMBOL_RULES_ADDR;
        } else if cls == 0 {
            // Anything unknown is spoken as a word break.
            src[cursor as usize] = b' ';
            out_pos = out_pos.wrapping_add(1);
            emitted = emitted.saturating_add(1);
            if out_pos > OUTPUT_SOFT_LIMIT {
                buf[out_pos as usize] = 0x9B;
                return Ok(Recited {
                    buf,
                    end: ReciteEnd::Truncated {
                        resume_at: cursor as usize,
                    },
                    overflowed: emitted > 256,
                });
            }
            buf[out_pos as usize] = b' ';
            continue;
        } else if cls & C_LETTER == 0 {
            return Err(SamError::ReciterFailure);
        } else {
            let l = (ch - b'A') as usize;
            rule = LETTER_RULE_LO[l] as u16 | (LETTER_RULE_HI[l] as u16) << 8;
        }

        // Try rules until one matches.
        'rules: loop {
            loop {
                rule = rule.wrapping_add(1);
                if rule_byte(rule, 0) & 0x80 != 0 {
                    break;
                }
            }
            let mut y: u8 = 1;
            while rule_byte(rule, y) != b'(' {
                y = y.wrapping_add(1);
            }
            let open = y;
            loop {
                y = y.wrapping_add(1);
                if rule_byte(rule, y) == b')' {
                    break;
                }
            }
            let close = y;
            loop {
                y = y.wrapping_add(1);
                if rule_byte(rule, y) & 0x7F == b'=' {
                    break;
                }
            }
            let equals = y;

            // The bracketed text must match at the cursor.
            let mut x = cursor;
            let mut last = x;
            let mut y = open.wrapping_add(1);
            loop {
                if src[x as usize] != rule_byte(rule, y) {
                    continue 'rules;
                }
                y = y.wrapping_add(1);
                if y == close {
                    break;
                }
                x = x.wrapping_add(1);
                last = x;
            }

            // Left context, read right to left.
            let mut left = cursor;
            let mut k = open;
            loop {
                k = k.wrapping_sub(1);
                let p = rule_byte(rule, k);
                if p & 0x80 != 0 {
                    break;
                }
                let prev = left.wrapping_sub(1);
                let pc = src[prev as usize];
                if class(p & 0x7F) & C_LETTER != 0 {
                    if pc != p {
                        continue 'rules;
                    }
                    left = prev;
                    continue;
                }
                let ok = match p {
                    b' ' => class(pc) & C_LETTER == 0,
                    b'#' => class(pc) & C_VOWEL != 0,
                    b'.' => class(pc) & C_FRONT != 0,
                    b'&' => {
                        if class(pc) & C_SIBILANT != 0 {
                            true
                        } else if pc == b'H' {
                            let pp = prev.wrapping_sub(1);
                            let c2 = src[pp as usize];
                            if c2 == b'C' || c2 == b'S' {
                                left = pp;
                                continue;
                            }
                            false
                        } else {
                            false
                        }
                    }
                    b'@' => class(pc) & C_VOICED != 0,
                    b'^' => class(pc) & C_CONSONANT != 0,
                    b'+' => pc == b'E' || pc == b'I' || pc == b'Y',
                    b':' => {
                        // Any number of consonants.
                        while class(src[left.wrapping_sub(1) as usize]) & C_CONSONANT != 0 {
                            left = left.wrapping_sub(1);
                        }
                        continue;
                    }
                    _ => return Err(SamError::ReciterFailure),
                };
                if !ok {
                    continue 'rules;
                }
                left = prev;
            }

            // Right context, read left to right.
            let mut right = last;
            let mut k = close;
            loop {
                k = k.wrapping_add(1);
                if k == equals {
                    break;
                }
                let p = rule_byte(rule, k);
                let next = right.wrapping_add(1);
                let nc = src[next as usize];
                if class(p) & C_LETTER != 0 {
                    if nc != p {
                        continue 'rules;
                    }
                    right = next;
                    continue;
                }
                let ok = match p {
                    b' ' => class(nc) & C_LETTER == 0,
                    b'#' => class(nc) & C_VOWEL != 0,
                    b'.' => class(nc) & C_FRONT != 0,
                    b'&' => {
                        if class(nc) & C_SIBILANT != 0 {
                            true
                        } else if nc == b'H' {
                            let nn = next.wrapping_add(1);
                            let c2 = src[nn as usize];
                            if c2 == b'C' || c2 == b'S' {
                                right = nn;
                                continue;
                            }
                            false
                        } else {
                            false
                        }
                    }
                    b'@' => class(nc) & C_VOICED != 0,
                    b'^' => class(nc) & C_CONSONANT != 0,
                    b'+' => nc == b'E' || nc == b'I' || nc == b'Y',
                    b':' => {
                        while class(src[right.wrapping_add(1) as usize]) & C_CONSONANT != 0 {
                            right = right.wrapping_add(1);
                        }
                        continue;
                    }
                    b'%' => match suffix_end(&src, next) {
                        Some(end) => {
                            right = end;
                            continue;
                        }
                        None => continue 'rules,
                    },
                    _ => return Err(SamError::ReciterFailure),
                };
                if !ok {
                    continue 'rules;
                }
                right = next;
            }

            // Matched: emit the replacement.
            let mut rule_text = [0u8; 256];
            let mut rl = 0usize;
            let mut k: u8 = 1;
            loop {
                let b = rule_byte(rule, k);
                rule_text[rl] = b;
                rl += 1;
                if b & 0x80 != 0 || rl == 256 {
                    break;
                }
                k = k.wrapping_add(1);
            }
            on_rule(&rule_text[..rl]);

            cursor = last;
            let mut k = equals;
            loop {
                let b = rule_byte(rule, k);
                if b & 0x7F != b'=' {
                    emit!(b & 0x7F);
                }
                if b & 0x80 != 0 {
                    break;
                }
                k = k.wrapping_add(1);
            }
            break;
        }
    }
}

/// Matches the `%` suffix class (E, ER, ES, ED, ELY, EFUL, ING) starting at `at`;
/// returns the position of the last character of the suffix.
fn suffix_end(src: &[u8; 256], at: u8) -> Option<u8> {
    let c = src[at as usize];
    let n1 = at.wrapping_add(1);
    if c == b'E' {
        if class(src[n1 as usize]) & C_LETTER == 0 {
            return Some(at);
        }
        let c1 = src[n1 as usize];
        match c1 {
            b'R' | b'S' | b'D' => Some(n1),
            b'L' => {
                let n2 = n1.wrapping_add(1);
                (src[n2 as usize] == b'Y').then_some(n2)
            }
            b'F' => {
                let n2 = n1.wrapping_add(1);
                let n3 = n2.wrapping_add(1);
                (src[n2 as usize] == b'U' && src[n3 as usize] == b'L').then_some(n3)
            }
            _ => None,
        }
    } else if c == b'I' {
        let n2 = n1.wrapping_add(1);
        (src[n1 as usize] == b'N' && src[n2 as usize] == b'G').then_some(n2)
    } else {
        None
    }
}

/// Converts text to phonemes (see [`recite_traced`]).
pub fn recite(text: &[u8]) -> Result<Recited, SamError> {
    recite_traced(text, &mut |_| {})
}

/// Formats a rule as the reference trace prints it (`(A)B -> XY`), into `out`;
/// returns the number of bytes written.
pub fn format_rule(rule: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for &b in rule {
        let c = b & 0x7F;
        let piece: &[u8] = if c == b'=' {
            b" -> "
        } else {
            core::slice::from_ref(&c)
        };
        for &p in piece {
            if n < out.len() {
                out[n] = p;
                n += 1;
            }
        }
        if b & 0x80 != 0 {
            break;
        }
    }
    n
}
