//! Phoneme processor: parses a phoneme string into SAM's phoneme table and applies the
//! stress, combination and length rules.
//!
//! All positions are 8-bit and wrap like the original 6502 code; tables are fixed
//! 256-entry arrays, so nothing here allocates.

use super::tables::{
    LENGTH_PLAIN, LENGTH_STRESSED, PHONEME_FLAGS, PHONEME_FLAGS2, PHONEME_NAME_1, PHONEME_NAME_2,
    STRESS_MARKS,
};
use super::SamError;

/// Marks the end of the phoneme table.
pub const END_MARK: u8 = 255;
/// Marks a point where the renderer flushes (a breath / phrase boundary).
pub const PHRASE_MARK: u8 = 254;
/// Byte that terminates a phoneme string.
pub const PHONEME_STRING_END: u8 = 0x9B;
/// Maximum number of bytes of a phoneme string the reference looks at.
pub const MAX_PHONEME_STRING: usize = 254;

/// Number of distinct phoneme codes.
pub const PHONEME_COUNT: usize = 81;

// Phoneme codes used by the rules.
const P_PAUSE: u8 = 0;
const P_AX: u8 = 13;
const P_UX: u8 = 16;
const P_RX: u8 = 18;
const P_LX: u8 = 19;
const P_WX: u8 = 20;
const P_YX: u8 = 21;
const P_R: u8 = 23;
const P_L: u8 = 24;
const P_M: u8 = 27;
const P_N: u8 = 28;
const P_DX: u8 = 30;
const P_Q: u8 = 31;
const P_S: u8 = 32;
const P_Z: u8 = 38;
const P_H: u8 = 36;
const P_X: u8 = 37;
const P_CH: u8 = 42;
const P_J: u8 = 44;
const P_UW: u8 = 53;
const P_D: u8 = 57;
const P_G: u8 = 60;
const P_GX: u8 = 63;
const P_T: u8 = 69;
const P_K: u8 = 72;
const P_KX: u8 = 75;
const P_UL: u8 = 78;
const P_UM: u8 = 79;
const P_UN: u8 = 80;

// Flag bits of PHONEME_FLAGS.
const F_PLOSIVE: u8 = 0x01;
const F_STOP: u8 = 0x02;
const F_VOICED: u8 = 0x04;
const F_NASAL_LIKE: u8 = 0x08;
const F_DIPHTHONG: u8 = 0x10;
const F_ENDS_IY: u8 = 0x20;
const F_CONSONANT: u8 = 0x40;
const F_VOWEL: u8 = 0x80;
// Flag bits of PHONEME_FLAGS2.
const F2_PUNCT: u8 = 0x01;
const F2_ALVEOLAR: u8 = 0x04;
const F2_NASAL: u8 = 0x08;
const F2_LIQUID: u8 = 0x10;
const F2_FRICATIVE: u8 = 0x20;

/// Flags of a code; the end mark reads as 0x41 (the value the reference substitutes for
/// it, and what its unguarded table reads observe).
#[inline]
fn flags(p: u8) -> u8 {
    if p == END_MARK {
        0x41
    } else {
        PHONEME_FLAGS[p as usize]
    }
}
#[inline]
fn flags2(p: u8) -> u8 {
    PHONEME_FLAGS2[p as usize]
}

/// Two-letter name of a phoneme code as printed by the reference debug output
/// (`??` for codes outside the phoneme set).
pub fn phoneme_name(code: u8) -> [u8; 2] {
    if (code as usize) < PHONEME_COUNT {
        [PHONEME_NAME_1[code as usize], PHONEME_NAME_2[code as usize]]
    } else {
        *b"??"
    }
}

/// SAM's phoneme table: parallel arrays of phoneme code, length in frames and stress,
/// terminated by [`END_MARK`]. [`PHRASE_MARK`] entries split the output into phrases.
#[derive(Clone, PartialEq, Eq)]
pub struct PhonemeTable {
    /// Phoneme codes (0 = pause, 254 = phrase break, 255 = end).
    pub index: [u8; 256],
    /// Length of each phoneme in frames.
    pub length: [u8; 256],
    /// Stress level (0 = unstressed, 1..=8 from the input, +1 when copied).
    pub stress: [u8; 256],
}

impl core::fmt::Debug for PhonemeTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.entries()).finish()
    }
}

impl Default for PhonemeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl PhonemeTable {
    /// An empty table.
    pub const fn new() -> Self {
        let mut index = [0u8; 256];
        index[0] = END_MARK;
        // The reference keeps a non-terminator guard value in the last slot.
        index[255] = P_S;
        PhonemeTable {
            index,
            length: [0; 256],
            stress: [0; 256],
        }
    }

    /// `(code, length, stress)` up to (not including) the end mark, at most 255 entries
    /// (the same rows the reference debug trace prints).
    pub fn entries(&self) -> impl Iterator<Item = (u8, u8, u8)> + '_ {
        (0..255)
            .take_while(move |&i| self.index[i] != END_MARK)
            .map(move |i| (self.index[i], self.length[i], self.stress[i]))
    }

    /// Number of entries before the end mark.
    pub fn len(&self) -> usize {
        self.entries().count()
    }

    /// True when the table holds no phonemes.
    pub fn is_empty(&self) -> bool {
        self.index[0] == END_MARK
    }

    /// Reads the code before position `i`; positions before the start read as a pause.
    #[inline]
    fn before(&self, i: u8) -> u8 {
        if i == 0 {
            P_PAUSE
        } else {
            self.index[i as usize - 1]
        }
    }

    /// Inserts an entry at `at`, shifting later entries up. The table never grows past
    /// 254 entries: the slot 254 always keeps the end mark once the table is full.
    fn insert(&mut self, at: u8, code: u8, length: u8, stress: u8) {
        if at >= 254 {
            return;
        }
        let at = at as usize;
        self.index.copy_within(at..254, at + 1);
        self.length.copy_within(at..254, at + 1);
        self.stress.copy_within(at..254, at + 1);
        self.index[at] = code;
        self.length[at] = length;
        self.stress[at] = stress;
        if self.index[254] != END_MARK && self.index[..254].iter().all(|&c| c != END_MARK) {
            self.index[254] = END_MARK;
        }
    }

    /// Parses a phoneme string (terminated by 0x9B; a NUL byte ends the string like a C
    /// string; only the first 254 bytes are looked at) into phoneme codes and stresses.
    pub fn parse(text: &[u8]) -> Result<Self, SamError> {
        let mut buf = [0u8; 256];
        let len = text
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(text.len())
            .min(MAX_PHONEME_STRING);
        buf[..len].copy_from_slice(&text[..len]);

        let mut table = PhonemeTable::new();
        let mut out: u8 = 0;
        let mut pos: u8 = 0;
        loop {
            let first_at = pos as usize;
            let first = buf[first_at];
            if first == PHONEME_STRING_END {
                table.index[out as usize] = END_MARK;
                return Ok(table);
            }
            pos = pos.wrapping_add(1);
            let second = buf[pos as usize];
            // Two-letter names first.
            if let Some(code) = (0..PHONEME_COUNT).find(|&c| {
                PHONEME_NAME_1[c] == first
                    && PHONEME_NAME_2[c] != b'*'
                    && PHONEME_NAME_2[c] == second
            }) {
                table.index[out as usize] = code as u8;
                out = out.wrapping_add(1);
                pos = pos.wrapping_add(1);
                continue;
            }
            // Then one-letter names.
            if let Some(code) = (0..PHONEME_COUNT)
                .find(|&c| PHONEME_NAME_2[c] == b'*' && PHONEME_NAME_1[c] == first)
            {
                table.index[out as usize] = code as u8;
                out = out.wrapping_add(1);
                continue;
            }
            // Finally a stress digit for the previous phoneme.
            match (1..STRESS_MARKS.len())
                .rev()
                .find(|&s| STRESS_MARKS[s] == first)
            {
                Some(level) => {
                    if out > 0 {
                        table.stress[out as usize - 1] = level as u8;
                    }
                }
                None => {
                    return Err(SamError::InvalidPhoneme {
                        offset: first_at,
                        byte: first,
                    })
                }
            }
        }
    }

    /// Applies all phoneme rules of the reference in order: combination rules, stress
    /// copying, lengths, length adjustments, stop-consonant expansion and phrase breaks.
    pub fn apply_rules(&mut self) {
        self.rewrite();
        self.copy_stress();
        self.assign_lengths();
        self.adjust_lengths();
        let mut x = self.expand_stops();
        // Anything that is not a phoneme code ends the table.
        loop {
            if self.index[x as usize] > 80 {
                self.index[x as usize] = END_MARK;
                break;
            }
            x = x.wrapping_add(1);
            if x == 0 {
                break;
            }
        }
        self.insert_phrase_breaks();
    }

    /// Phoneme combination rules (diphthong glides, UL/UM/UN, glottal stops, R/L
    /// colouring, K/G fronting, S+stop softening, UW after alveolars, CH/J, flaps).
    fn rewrite(&mut self) {
        let mut pos: u8 = 0;
        loop {
            let cur = self.index[pos as usize];
            if cur == P_PAUSE {
                pos = pos.wrapping_add(1);
                continue;
            }
            if cur == END_MARK {
                return;
            }
            // `at` mirrors the position register that the later rules look at.
            let mut at = pos;
            let mut code = cur;
            // Which group of trailing rules to enter.
            enum Next {
                Uw,
                Ch,
                J,
                Flap,
            }
            let next: Next;
            if flags(cur) & F_DIPHTHONG != 0 {
                let glide = if flags(cur) & F_ENDS_IY == 0 {
                    P_WX
                } else {
                    P_YX
                };
                let s = self.stress[pos as usize];
                self.insert(pos.wrapping_add(1), glide, 0, s);
                next = Next::Uw;
            } else if cur == P_UL || cur == P_UM || cur == P_UN {
                let tail = match cur {
                    P_UL => P_L,
                    P_UM => P_M,
                    _ => P_N,
                };
                let s = self.stress[pos as usize];
                self.index[pos as usize] = P_AX;
                self.insert(pos.wrapping_add(1), tail, 0, s);
                pos = pos.wrapping_add(1);
                continue;
            } else {
                // Stressed vowel, pause, stressed vowel: put a glottal stop before the second.
                if flags(cur) & F_VOWEL != 0 && self.stress[pos as usize] != 0 {
                    let p1 = pos.wrapping_add(1);
                    if self.index[p1 as usize] == P_PAUSE {
                        let p2 = p1.wrapping_add(1);
                        let c2 = self.index[p2 as usize];
                        let vowel = c2 != END_MARK && flags(c2) & F_VOWEL != 0;
                        if vowel && self.stress[p2 as usize] != 0 {
                            self.insert(p2, P_Q, 0, 0);
                            pos = pos.wrapping_add(1);
                            continue;
                        }
                    }
                }
                if cur == P_R {
                    let prev = self.before(pos);
                    at = pos.wrapping_sub(1);
                    if prev == P_T {
                        self.index[pos as usize - 1] = P_CH;
                        code = P_T;
                        next = Next::Ch;
                    } else if prev == P_D {
                        self.index[pos as usize - 1] = P_J;
                        code = P_D;
                        next = Next::J;
                    } else {
                        if flags(prev) & F_VOWEL != 0 {
                            self.index[pos as usize] = P_RX;
                        }
                        pos = pos.wrapping_add(1);
                        continue;
                    }
                } else if cur == P_L {
                    if flags(self.before(pos)) & F_VOWEL != 0 {
                        self.index[pos as usize] = P_LX;
                    }
                    pos = pos.wrapping_add(1);
                    continue;
                } else if cur == P_S {
                    if self.before(pos) == P_G {
                        self.index[pos as usize] = P_Z;
                    }
                    pos = pos.wrapping_add(1);
                    continue;
                } else if cur == P_G {
                    let n = self.index[pos.wrapping_add(1) as usize];
                    if n != END_MARK && flags(n) & F_ENDS_IY == 0 {
                        self.index[pos as usize] = P_GX;
                    }
                    pos = pos.wrapping_add(1);
                    continue;
                } else {
                    if cur == P_K {
                        let n = self.index[pos.wrapping_add(1) as usize];
                        if n == END_MARK || flags(n) & F_ENDS_IY == 0 {
                            self.index[pos as usize] = P_KX;
                        }
                    }
                    let now = self.index[pos as usize];
                    if flags(now) & F_PLOSIVE == 0 {
                        next = Next::Uw;
                    } else if self.before(pos) == P_S {
                        self.index[pos as usize] = now.wrapping_sub(12);
                        pos = pos.wrapping_add(1);
                        continue;
                    } else {
                        code = now;
                        next = Next::Flap;
                    }
                }
            }

            // Trailing rules share fall-through order: UW, CH, J, flap.
            let mut stage = next;
            loop {
                match stage {
                    Next::Uw => {
                        code = self.index[at as usize];
                        if code == P_UW {
                            if flags2(self.before(at)) & F2_ALVEOLAR != 0 {
                                self.index[at as usize] = P_UX;
                            }
                            break;
                        }
                        stage = Next::Ch;
                    }
                    Next::Ch => {
                        if code == P_CH {
                            let s = self.stress[at as usize];
                            self.insert(at.wrapping_add(1), code + 1, 0, s);
                            break;
                        }
                        stage = Next::J;
                    }
                    Next::J => {
                        if code == P_J {
                            let s = self.stress[at as usize];
                            self.insert(at.wrapping_add(1), code + 1, 0, s);
                            break;
                        }
                        stage = Next::Flap;
                    }
                    Next::Flap => {
                        if code != P_T && code != P_D {
                            break;
                        }
                        if flags(self.before(at)) & F_VOWEL == 0 {
                            break;
                        }
                        let n = at.wrapping_add(1);
                        let c = self.index[n as usize];
                        if c != P_PAUSE {
                            if flags(c) & F_VOWEL != 0 && self.stress[n as usize] == 0 {
                                self.index[pos as usize] = P_DX;
                            }
                        } else {
                            let c2 = self.index[n.wrapping_add(1) as usize];
                            if c2 != END_MARK && flags(c2) & F_VOWEL != 0 {
                                self.index[pos as usize] = P_DX;
                            }
                        }
                        break;
                    }
                }
            }
            pos = pos.wrapping_add(1);
        }
    }

    /// A voiced consonant before a stressed vowel takes the vowel's stress + 1.
    fn copy_stress(&mut self) {
        let mut pos: u8 = 0;
        loop {
            let c = self.index[pos as usize];
            if c == END_MARK {
                return;
            }
            if flags(c) & F_CONSONANT != 0 {
                let n = pos.wrapping_add(1);
                let nc = self.index[n as usize];
                if nc != END_MARK && flags(nc) & F_VOWEL != 0 {
                    let s = self.stress[n as usize];
                    if s != 0 && s & 0x80 == 0 {
                        self.stress[pos as usize] = s + 1;
                    }
                }
            }
            pos = pos.wrapping_add(1);
        }
    }

    /// Base lengths from the stressed/unstressed length tables.
    fn assign_lengths(&mut self) {
        for i in 0..256 {
            let c = self.index[i];
            if c == END_MARK {
                break;
            }
            let s = self.stress[i];
            self.length[i] = if s == 0 || s & 0x80 != 0 {
                LENGTH_PLAIN[c as usize]
            } else {
                LENGTH_STRESSED[c as usize]
            };
        }
    }

    /// Length rules around punctuation, vowels, nasals, stops and liquids.
    fn adjust_lengths(&mut self) {
        // Phase 1: before punctuation, lengthen from the last vowel on by 1.5.
        let mut x: u8 = 0;
        'outer: loop {
            let c = self.index[x as usize];
            if c == END_MARK {
                break;
            }
            if flags2(c) & F2_PUNCT == 0 {
                x = x.wrapping_add(1);
                continue;
            }
            let punct = x;
            loop {
                x = x.wrapping_sub(1);
                if x == 0 {
                    break 'outer;
                }
                let c = self.index[x as usize];
                if c == END_MARK || flags(c) & F_VOWEL != 0 {
                    break;
                }
            }
            loop {
                let c = self.index[x as usize];
                if c != END_MARK && (flags2(c) & F2_FRICATIVE == 0 || flags(c) & F_VOICED != 0) {
                    let l = self.length[x as usize];
                    self.length[x as usize] = (l >> 1).wrapping_add(l).wrapping_add(1);
                }
                x = x.wrapping_add(1);
                if x == punct {
                    break;
                }
            }
            x = x.wrapping_add(1);
        }

        // Phase 2: pairwise rules.
        let mut i: u8 = 0;
        loop {
            let mut x = i;
            let c = self.index[x as usize];
            if c == END_MARK {
                return;
            }
            if flags(c) & F_VOWEL != 0 {
                x = x.wrapping_add(1);
                let n = self.index[x as usize];
                let nflags = if n == END_MARK { 0x41 } else { flags(n) };
                if flags(n) & F_CONSONANT == 0 {
                    if n == P_RX || n == P_LX {
                        x = x.wrapping_add(1);
                        let n2 = self.index[x as usize];
                        if flags(n2) & F_CONSONANT != 0 {
                            self.length[i as usize] = self.length[i as usize].wrapping_sub(1);
                        }
                    }
                } else if nflags & F_VOICED == 0 {
                    if nflags & F_PLOSIVE != 0 {
                        // Vowel before an unvoiced plosive: shorten by 1/8.
                        let at = x.wrapping_sub(1) as usize;
                        let l = self.length[at];
                        self.length[at] = l - (l >> 3);
                    }
                } else {
                    // Vowel before a voiced consonant: lengthen by 1/4 + 1.
                    let at = x.wrapping_sub(1) as usize;
                    let l = self.length[at];
                    self.length[at] = (l >> 2).wrapping_add(l).wrapping_add(1);
                }
            } else if flags2(c) & F2_NASAL != 0 {
                x = x.wrapping_add(1);
                let n = self.index[x as usize];
                if n != END_MARK && flags(n) & F_STOP != 0 {
                    self.length[x as usize] = 6;
                    self.length[x.wrapping_sub(1) as usize] = 5;
                }
            } else if flags(c) & F_STOP != 0 {
                let mut n;
                loop {
                    x = x.wrapping_add(1);
                    n = self.index[x as usize];
                    if n != P_PAUSE {
                        break;
                    }
                }
                if n != END_MARK && flags(n) & F_STOP != 0 {
                    let l = self.length[x as usize];
                    self.length[x as usize] = (l >> 1) + 1;
                    let l = self.length[i as usize];
                    self.length[i as usize] = (l >> 1) + 1;
                }
            } else if flags2(c) & F2_LIQUID != 0 && flags(self.before(x)) & F_STOP != 0 {
                self.length[x as usize] = self.length[x as usize].wrapping_sub(2);
            }
            i = i.wrapping_add(1);
        }
    }

    /// Stop consonants become three phonemes (closure, burst, release). Returns the final
    /// scan position (the reference continues its end-mark search from there).
    fn expand_stops(&mut self) -> u8 {
        let mut pos: usize = 0;
        let mut x: u8 = 0;
        while pos < 255 && self.index[pos] != END_MARK {
            x = pos as u8;
            let c = self.index[pos];
            if flags(c) & F_STOP == 0 {
                pos += 1;
                continue;
            }
            if flags(c) & F_PLOSIVE != 0 {
                let mut n;
                loop {
                    x = x.wrapping_add(1);
                    n = self.index[x as usize];
                    if n != P_PAUSE {
                        break;
                    }
                }
                if n != END_MARK && (flags(n) & F_NASAL_LIKE != 0 || n == P_H || n == P_X) {
                    pos += 1;
                    continue;
                }
            }
            let s = self.stress[pos];
            let c1 = c.wrapping_add(1);
            let c2 = c.wrapping_add(2);
            self.insert((pos + 1).min(255) as u8, c1, LENGTH_PLAIN[c1 as usize], s);
            self.insert((pos + 2).min(255) as u8, c2, LENGTH_PLAIN[c2 as usize], s);
            pos += 3;
        }
        x
    }

    /// Splits the table into phrases after punctuation and before ~232 frames of speech
    /// (turning the last pause into a glottal stop).
    fn insert_phrase_breaks(&mut self) {
        let mut last_pause: u8 = 255;
        let mut acc: u8 = 0;
        let mut pos: usize = 0;
        loop {
            if pos > 254 {
                return;
            }
            let mut x = pos as u8;
            let c = self.index[x as usize];
            if c == END_MARK {
                return;
            }
            acc = acc.wrapping_add(self.length[x as usize]);
            if acc < 232 {
                if c != PHRASE_MARK && flags2(c) & F2_PUNCT != 0 {
                    x = x.wrapping_add(1);
                    acc = 0;
                    self.insert(x, PHRASE_MARK, 0, 0);
                    pos += 2;
                    continue;
                }
                if c == P_PAUSE {
                    last_pause = x;
                }
                pos += 1;
                continue;
            }
            x = last_pause;
            self.index[x as usize] = P_Q;
            self.length[x as usize] = 4;
            self.stress[x as usize] = 0;
            x = x.wrapping_add(1);
            acc = 0;
            self.insert(x, PHRASE_MARK, 0, 0);
            x = x.wrapping_add(1);
            pos = x as usize;
        }
    }
}
