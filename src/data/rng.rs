//! SplitMix64: the one small, seedable generator of the data stage. Stable across crate
//! versions, so synthetic data and paraphrases are byte-identical for a seed on every machine.

/// SplitMix64 state.
pub struct Rng(u64);

impl Rng {
    /// A generator that starts from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough index in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher-Yates shuffle in place.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// FNV-1a of `text`: a stable way to mix a string into a seed.
pub fn hash_str(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// Up to `n` distinct strings from `draw`, none equal to `original`: a few tries per string,
/// since two draws can give the same one or change nothing. The noise and synonym copies of a
/// question share it, so both stop after the same number of draws for a seed.
pub fn distinct_draws(original: &str, n: usize, mut draw: impl FnMut() -> String) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for _ in 0..n * 4 {
        if out.len() == n {
            break;
        }
        let copy = draw();
        if copy != original && !out.contains(&copy) {
            out.push(copy);
        }
    }
    out
}
