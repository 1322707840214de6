//! SAM's whole pipeline down to samples: text or phonemes, in one of three voices (the first
//! byte picks mode and voice; the third voice takes its settings from the input). The sample
//! count returned must be the count written.
#![no_main]

use badge_firmware::sam::{self, NullSink, Voice};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Rendering costs per sample, and a slow voice speaks 256 characters for half a minute:
    // 48 characters reach every phoneme, stress and pitch path while keeping runs short
    // (long texts and sentence splitting are covered by the SAM tests).
    let text = String::from_utf8_lossy(&rest[..rest.len().min(48)]);
    let voice = match mode >> 1 & 3 {
        0 => Voice::SAM,
        1 => Voice::default(),
        _ => Voice {
            speed: rest.first().copied().unwrap_or(72),
            pitch: rest.get(1).copied().unwrap_or(64),
            mouth: rest.get(2).copied().unwrap_or(128),
            throat: rest.get(3).copied().unwrap_or(128),
        },
    };
    let mut sink = NullSink::default();
    let r = if mode & 1 == 0 {
        sam::speak_text(&text, &voice, &mut sink)
    } else {
        sam::speak_phonetic(&text, &voice, &mut sink)
    };
    if let Ok(n) = r {
        assert_eq!(n, sink.samples);
    }
});
