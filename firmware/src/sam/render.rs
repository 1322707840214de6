//! Renderer: turns the processed phoneme table into frames (formant parameters every
//! ~10 ms), blends neighbouring phonemes, and synthesises 8-bit unsigned PCM at
//! 22050 Hz, streaming it through an [`AudioSink`] in small chunks.

use super::phonemes::{PhonemeTable, END_MARK, PHRASE_MARK};
use super::tables::{
    AMPLITUDE_DB, BLEND_IN, BLEND_OUT, BLEND_RANK, FORMANT1_AMP, FORMANT1_FREQ, FORMANT2_AMP,
    FORMANT2_FREQ, FORMANT3_AMP, FORMANT3_FREQ, MOUTH_F1_48_53, MOUTH_F1_5_29, NOISE_LEVEL,
    NOISE_SAMPLES, OUTPUT_TIMING, SAMPLE_FLAGS, SINE, SQUARE, STRESS_PITCH, THROAT_F2_48_53,
    THROAT_F2_5_29,
};
use super::{AudioSink, Voice};

/// Samples handed to the sink per `write` call (at most).
pub const CHUNK_SAMPLES: usize = 256;

/// Per-frame synthesis parameters (the reference's "final data for speech output").
/// Frames are 8-bit indexed; rows past the current phrase keep older values, exactly
/// like the reference.
#[derive(Clone, PartialEq, Eq)]
pub struct FrameTable {
    /// Glottal period per frame (after the F1 contour is subtracted).
    pub pitch: [u8; 256],
    /// Formant frequencies F1, F2, F3.
    pub freq: [[u8; 256]; 3],
    /// Formant amplitudes A1, A2, A3 (logarithmic after rescaling).
    pub ampl: [[u8; 256]; 3],
    /// Sampled-consonant flags (0 = pure formant synthesis).
    pub flags: [u8; 256],
}

impl Default for FrameTable {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameTable {
    /// All-zero frames.
    pub const fn new() -> Self {
        FrameTable {
            pitch: [0; 256],
            freq: [[0; 256]; 3],
            ampl: [[0; 256]; 3],
            flags: [0; 256],
        }
    }

    /// Parameter column `k`: 0 = pitch, 1..=3 = F1..F3 frequency, 4..=6 = A1..A3.
    fn column(&mut self, k: usize) -> &mut [u8; 256] {
        match k {
            0 => &mut self.pitch,
            1..=3 => &mut self.freq[k - 1],
            _ => &mut self.ampl[k - 4],
        }
    }

    /// Row `i` as the reference trace prints it:
    /// `[flags, a1, f1, a2, f2, a3, f3, pitch]`.
    pub fn row(&self, i: usize) -> [u8; 8] {
        [
            self.flags[i],
            self.ampl[0][i],
            self.freq[0][i],
            self.ampl[1][i],
            self.freq[1][i],
            self.ampl[2][i],
            self.freq[2][i],
            self.pitch[i],
        ]
    }
}

/// Sample clock and small look-ahead window: the reference writes 5 samples at a time
/// at `clock / 50` and may overwrite them with the next write, so samples are only final
/// once the write position has moved past them.
struct Output {
    clock: u64,
    last_kind: usize,
    base: u64,
    window: [u8; 5],
    chunk: [u8; CHUNK_SAMPLES],
    chunk_len: usize,
    total: usize,
}

impl Output {
    const fn new() -> Self {
        Output {
            clock: 0,
            last_kind: 0,
            base: 0,
            window: [0; 5],
            chunk: [0; CHUNK_SAMPLES],
            chunk_len: 0,
            total: 0,
        }
    }

    #[inline]
    fn emit<S: AudioSink + ?Sized>(&mut self, s: u8, sink: &mut S) {
        self.chunk[self.chunk_len] = s;
        self.chunk_len += 1;
        self.total += 1;
        if self.chunk_len == CHUNK_SAMPLES {
            sink.write(&self.chunk);
            self.chunk_len = 0;
        }
    }

    #[inline]
    fn put<S: AudioSink + ?Sized>(&mut self, kind: usize, samples: [u8; 5], sink: &mut S) {
        self.clock += OUTPUT_TIMING[self.last_kind][kind] as u64;
        self.last_kind = kind;
        let at = self.clock / 50;
        let mut i = 0;
        while self.base < at {
            let s = if i < 5 { self.window[i] } else { 0 };
            self.emit(s, sink);
            self.base += 1;
            i += 1;
        }
        self.window = samples;
    }

    fn finish<S: AudioSink + ?Sized>(&mut self, sink: &mut S) -> usize {
        if self.chunk_len > 0 {
            sink.write(&self.chunk[..self.chunk_len]);
            self.chunk_len = 0;
        }
        self.total
    }
}

/// Scales a base formant value by a mouth/throat factor (128 = unchanged).
#[inline]
pub(crate) fn scale_formant(factor: u8, base: u8) -> u8 {
    (((factor as u16 * base as u16) >> 8) as u8).wrapping_shl(1)
}

/// One utterance's synthesiser state. Everything is fixed size; a `Synth` is about
/// 3.5 KiB and can live on the stack or in a static.
pub struct Synth {
    speed: u8,
    pitch: u8,
    f1_table: [u8; 256],
    f2_table: [u8; 256],
    frames: FrameTable,
    phrase_code: [u8; 256],
    phrase_len: [u8; 256],
    phrase_stress: [u8; 256],
    out: Output,
}

impl Synth {
    /// A fresh synthesiser for `voice` (equivalent to a fresh run of the reference).
    pub fn new(voice: &Voice) -> Self {
        let mut f1_table = FORMANT1_FREQ;
        let mut f2_table = FORMANT2_FREQ;
        for p in 5..30 {
            f1_table[p] = scale_formant(voice.mouth, MOUTH_F1_5_29[p]);
            f2_table[p] = scale_formant(voice.throat, THROAT_F2_5_29[p]);
        }
        for (i, p) in (48..54).enumerate() {
            f1_table[p] = scale_formant(voice.mouth, MOUTH_F1_48_53[i]);
            f2_table[p] = scale_formant(voice.throat, THROAT_F2_48_53[i]);
        }
        Synth {
            speed: voice.speed,
            pitch: voice.pitch,
            f1_table,
            f2_table,
            frames: FrameTable::new(),
            phrase_code: [0; 256],
            phrase_len: [0; 256],
            phrase_stress: [0; 256],
            out: Output::new(),
        }
    }

    /// Renders a processed phoneme table phrase by phrase. `on_frames` sees the frame
    /// table of each phrase just before it is synthesised. Returns samples written.
    pub fn render<S: AudioSink + ?Sized>(
        mut self,
        table: &PhonemeTable,
        sink: &mut S,
        on_frames: &mut dyn FnMut(&FrameTable),
    ) -> usize {
        let mut x: u8 = 0;
        let mut y: u8 = 0;
        // Bounded walk: at most one pass over the table.
        for _ in 0..256 {
            let code = table.index[x as usize];
            if code == END_MARK {
                self.phrase_code[y as usize] = END_MARK;
                self.render_phrase(sink, on_frames);
                return self.out.finish(sink);
            }
            x = x.wrapping_add(1);
            if code == PHRASE_MARK {
                self.phrase_code[y as usize] = END_MARK;
                self.render_phrase(sink, on_frames);
                y = 0;
                continue;
            }
            if code == 0 {
                continue;
            }
            let src = x.wrapping_sub(1) as usize;
            self.phrase_code[y as usize] = code;
            self.phrase_len[y as usize] = table.length[src];
            self.phrase_stress[y as usize] = table.stress[src];
            y = y.wrapping_add(1);
        }
        self.out.finish(sink)
    }

    /// Rising or falling pitch over the 30 frames before `end`; returns the last value
    /// written (the reference's accumulator, which the caller inspects).
    fn inflect(&mut self, end: u8, step: u8) -> u8 {
        let pitch = &mut self.frames.pitch;
        let mut x = end.saturating_sub(30);
        let mut a = pitch[x as usize];
        let mut guard = 0;
        while a == 127 && guard < 256 {
            x = x.wrapping_add(1);
            a = pitch[x as usize];
            guard += 1;
        }
        loop {
            a = a.wrapping_add(step);
            let held = a;
            pitch[x as usize] = a;
            loop {
                x = x.wrapping_add(1);
                if x == end {
                    return a;
                }
                if pitch[x as usize] != 255 {
                    break;
                }
            }
            a = held;
        }
    }

    fn build_frames(&mut self) {
        let mut frame: u8 = 0;
        let mut p: u8 = 0;
        loop {
            let code = self.phrase_code[p as usize];
            if code == END_MARK {
                break;
            }
            let mut acc = code;
            if acc == 1 {
                acc = self.inflect(frame, 1);
            }
            if acc == 2 {
                self.inflect(frame, 255);
            }
            let bump = STRESS_PITCH
                .get(self.phrase_stress[p as usize] as usize + 1)
                .copied()
                .unwrap_or(0);
            let c = code as usize;
            let mut n = self.phrase_len[p as usize];
            loop {
                let f = frame as usize;
                self.frames.freq[0][f] = self.f1_table[c];
                self.frames.freq[1][f] = self.f2_table[c];
                self.frames.freq[2][f] = FORMANT3_FREQ[c];
                self.frames.ampl[0][f] = FORMANT1_AMP[c];
                self.frames.ampl[1][f] = FORMANT2_AMP[c];
                self.frames.ampl[2][f] = FORMANT3_AMP[c];
                self.frames.flags[f] = SAMPLE_FLAGS[c];
                self.frames.pitch[f] = self.pitch.wrapping_add(bump);
                frame = frame.wrapping_add(1);
                n = n.wrapping_sub(1);
                if n == 0 {
                    break;
                }
            }
            p = p.wrapping_add(1);
            if p == 0 {
                break;
            }
        }
    }

    /// Linear transitions between neighbouring phonemes; returns the frame count.
    fn blend(&mut self) -> u8 {
        let mut p: u8 = 0;
        let mut start: u8 = 0; // first frame of the next phoneme
        loop {
            let cur = self.phrase_code[p as usize];
            let nxt = self.phrase_code[p.wrapping_add(1) as usize];
            if nxt == END_MARK {
                break;
            }
            let (rc, rn) = (BLEND_RANK[cur as usize], BLEND_RANK[nxt as usize]);
            let (before, after) = if rc == rn {
                (BLEND_OUT[cur as usize], BLEND_OUT[nxt as usize])
            } else if rc < rn {
                (BLEND_IN[nxt as usize], BLEND_OUT[nxt as usize])
            } else {
                (BLEND_OUT[cur as usize], BLEND_IN[cur as usize])
            };
            start = start.wrapping_add(self.phrase_len[p as usize]);
            let target = start.wrapping_add(after);
            let from = start.wrapping_sub(before);
            let span = before.wrapping_add(after);
            if span.wrapping_sub(2) & 0x80 == 0 {
                for k in 0..7 {
                    let mut width = span;
                    let delta;
                    if k == 0 {
                        // Pitch blends from the middle of this phoneme to the middle of the next.
                        let half_cur = self.phrase_len[p as usize] >> 1;
                        let half_next = self.phrase_len[p.wrapping_add(1) as usize] >> 1;
                        width = half_cur.wrapping_add(half_next);
                        let col = self.frames.column(0);
                        delta = col[half_next.wrapping_add(start) as usize]
                            .wrapping_sub(col[start.wrapping_sub(half_cur) as usize]);
                    } else {
                        let col = self.frames.column(k);
                        delta = col[target as usize].wrapping_sub(col[from as usize]);
                    }
                    if width == 0 {
                        // The reference divides by zero here; leave the values alone.
                        continue;
                    }
                    let signed = delta as i8;
                    let negative = delta & 0x80 != 0;
                    let rem = signed.unsigned_abs() % width;
                    let step = (signed as i16 / width as i16) as u8;
                    let col = self.frames.column(k);
                    let mut y = from;
                    let mut left = width;
                    let mut err: u8 = 0;
                    loop {
                        let mut v = col[y as usize].wrapping_add(step);
                        y = y.wrapping_add(1);
                        left = left.wrapping_sub(1);
                        if left == 0 {
                            break;
                        }
                        err = err.wrapping_add(rem);
                        if err >= width {
                            err = err.wrapping_sub(width);
                            if !negative {
                                if v != 0 {
                                    v = v.wrapping_add(1);
                                }
                            } else {
                                v = v.wrapping_sub(1);
                            }
                        }
                        col[y as usize] = v;
                    }
                }
            }
            p = p.wrapping_add(1);
        }
        start.wrapping_add(self.phrase_len[p as usize])
    }

    fn render_phrase<S: AudioSink + ?Sized>(
        &mut self,
        sink: &mut S,
        on_frames: &mut dyn FnMut(&FrameTable),
    ) {
        if self.phrase_code[0] == END_MARK {
            return;
        }
        self.build_frames();
        let mut frames_left = self.blend();

        // Pitch contour follows F1.
        for i in 0..256 {
            self.frames.pitch[i] = self.frames.pitch[i].wrapping_sub(self.frames.freq[0][i] >> 1);
        }
        for col in self.frames.ampl.iter_mut() {
            for v in col.iter_mut() {
                *v = AMPLITUDE_DB[*v as usize];
            }
        }
        on_frames(&self.frames);
        self.synthesize(&mut frames_left, sink);
    }

    fn synthesize<S: AudioSink + ?Sized>(&mut self, frames_left: &mut u8, sink: &mut S) {
        let (mut ph1, mut ph2, mut ph3) = (0u8, 0u8, 0u8);
        let mut steps: u8 = 72; // the first frame always uses the standard speed
        let mut y: u8 = 0;
        let mut period = self.frames.pitch[0];
        let mut open = period.wrapping_sub(period >> 2);
        let mut voiced_pos: u8 = 0;

        loop {
            let flag = self.frames.flags[y as usize];
            let mut next_frame = true;
            if flag & 0xF8 != 0 {
                self.noise(y, flag, &mut voiced_pos, sink);
                y = y.wrapping_add(2);
                *frames_left = frames_left.wrapping_sub(2);
                period = 1;
            } else {
                let yi = y as usize;
                let (f1, f2, f3) = (
                    self.frames.freq[0][yi] as u32,
                    self.frames.freq[1][yi] as u32,
                    self.frames.freq[2][yi] as u32,
                );
                let (a1, a2, a3) = (
                    (self.frames.ampl[0][yi] & 15) as i32,
                    (self.frames.ampl[1][yi] & 15) as i32,
                    (self.frames.ampl[2][yi] & 15) as i32,
                );
                let (mut p1, mut p2, mut p3) =
                    ((ph1 as u32) << 8, (ph2 as u32) << 8, (ph3 as u32) << 8);
                let mut five = [0u8; 5];
                for s in five.iter_mut() {
                    let v = SINE[((p1 >> 8) & 0xFF) as usize] as i32 * a1
                        + SINE[((p2 >> 8) & 0xFF) as usize] as i32 * a2
                        + SQUARE[((p3 >> 8) & 0xFF) as usize] as i32 * a3;
                    *s = (v / 32 + 128) as u8;
                    p1 += f1 * 64;
                    p2 += f2 * 64;
                    p3 += f3 * 64;
                }
                self.out.put(0, five, sink);
                steps = steps.wrapping_sub(1);
                if steps != 0 {
                    next_frame = false;
                } else {
                    y = y.wrapping_add(1);
                    *frames_left = frames_left.wrapping_sub(1);
                }
            }
            if next_frame {
                if *frames_left == 0 {
                    return;
                }
                steps = self.speed;
            }

            period = period.wrapping_sub(1);
            let mut restart = period == 0;
            if !restart {
                open = open.wrapping_sub(1);
                if open != 0 || flag == 0 {
                    let yi = y as usize;
                    ph1 = ph1.wrapping_add(self.frames.freq[0][yi]);
                    ph2 = ph2.wrapping_add(self.frames.freq[1][yi]);
                    ph3 = ph3.wrapping_add(self.frames.freq[2][yi]);
                    continue;
                }
                // Voiced fricative: the noise sample fills the closed part of the period.
                self.noise(y, flag, &mut voiced_pos, sink);
                restart = true;
            }
            if restart {
                period = self.frames.pitch[y as usize];
                open = period.wrapping_sub(period >> 2);
                ph1 = 0;
                ph2 = 0;
                ph3 = 0;
            }
        }
    }

    /// Plays a sampled consonant: unvoiced ones play the tail of their noise page,
    /// voiced ones play a pitch-dependent slice and continue where they stopped.
    fn noise<S: AudioSink + ?Sized>(&mut self, y: u8, flag: u8, voiced_pos: &mut u8, sink: &mut S) {
        let sel = (flag & 7).wrapping_sub(1);
        let level = NOISE_LEVEL.get(sel as usize).copied().unwrap_or(0);
        let page = sel as usize * 256;
        let byte_at = |pos: u8| NOISE_SAMPLES.get(page + pos as usize).copied().unwrap_or(0);
        if flag & 0xF8 == 0 {
            let mut n = (self.frames.pitch[y as usize] >> 4) ^ 255;
            let mut pos = *voiced_pos;
            loop {
                let mut bits = byte_at(pos);
                for _ in 0..8 {
                    if bits & 0x80 != 0 {
                        self.out.put(3, [160; 5], sink);
                    } else {
                        self.out.put(4, [96; 5], sink);
                    }
                    bits <<= 1;
                }
                pos = pos.wrapping_add(1);
                n = n.wrapping_add(1);
                if n == 0 {
                    break;
                }
            }
            *voiced_pos = pos;
        } else {
            let mut pos = (flag & 0xF8) ^ 255;
            loop {
                let mut bits = byte_at(pos);
                for _ in 0..8 {
                    if bits & 0x80 == 0 {
                        self.out.put(1, [(level & 0x0F) << 4; 5], sink);
                        if level == 0 {
                            self.out.put(2, [80; 5], sink);
                        }
                    } else {
                        self.out.put(2, [80; 5], sink);
                    }
                    bits <<= 1;
                }
                pos = pos.wrapping_add(1);
                if pos == 0 {
                    break;
                }
            }
        }
    }
}
