//! SAM's front end: English text through the reciter's rules to phonemes, or phoneme text
//! directly, then the phoneme parser and its rules; for inputs whose first byte has the top bit
//! set, also the whole renderer in one of three voices. The first byte picks mode and voice.
#![no_main]

use badge_firmware::sam::phonemes::PhonemeTable;
use badge_firmware::sam::{self, reciter, NullSink, Voice};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text_mode = mode & 1 == 0;
    if text_mode {
        if let Ok(recited) = reciter::recite(rest) {
            if let Ok(mut table) = PhonemeTable::parse(recited.phoneme_input()) {
                table.apply_rules();
            }
        }
    } else if let Ok(mut table) = PhonemeTable::parse(rest) {
        table.apply_rules();
    }
    if mode & 0x80 == 0 {
        return;
    }
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
    let r = if text_mode {
        sam::speak_text(&text, &voice, &mut sink)
    } else {
        sam::speak_phonetic(&text, &voice, &mut sink)
    };
    if let Ok(n) = r {
        assert_eq!(n, sink.samples);
    }
});
