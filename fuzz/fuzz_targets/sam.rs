//! SAM's front end: English text through the reciter's rules to phonemes, or phoneme text
//! directly, then the phoneme parser and its rules. The first byte picks the mode. The
//! renderer, which costs per audio sample, has its own target (`sam_render`) so that this one
//! runs fast enough to reach millions of inputs.
#![no_main]

use badge_firmware::sam::phonemes::PhonemeTable;
use badge_firmware::sam::reciter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(recited) = reciter::recite(rest) {
            if let Ok(mut table) = PhonemeTable::parse(recited.phoneme_input()) {
                table.apply_rules();
            }
        }
    } else if let Ok(mut table) = PhonemeTable::parse(rest) {
        table.apply_rules();
    }
});
