//! Reads the board profile (`configs/boards/esp32s3-n16r8.toml`, or `$BADGE_BOARD`) so the
//! binary uses the same I2S pins, sample rate, PSRAM reserve and model partition as the host
//! tools. A tiny line reader: the profile is flat `key = value` lines in a few sections.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let board = std::env::var("BADGE_BOARD")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.join("../../configs/boards/esp32s3-n16r8.toml"));
    println!("cargo:rerun-if-changed={}", board.display());
    println!("cargo:rerun-if-env-changed=BADGE_BOARD");
    let text = std::fs::read_to_string(&board)
        .unwrap_or_else(|e| panic!("cannot read board profile {}: {e}", board.display()));
    let mut section = String::new();
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap().trim();
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        let name = match (section.as_str(), key) {
            ("", "reserved_psram") => "BADGE_RESERVED_PSRAM",
            ("", "model_partition") => "BADGE_MODEL_PARTITION",
            ("i2s", "bclk") => "BADGE_I2S_BCLK",
            ("i2s", "ws") => "BADGE_I2S_WS",
            ("i2s", "dout") => "BADGE_I2S_DOUT",
            ("i2s", "sample_rate") => "BADGE_SAMPLE_RATE",
            ("button", "gpio") => "BADGE_BUTTON_GPIO",
            ("button", "active_low") => "BADGE_BUTTON_ACTIVE_LOW",
            ("button", "pull_up") => "BADGE_BUTTON_PULL_UP",
            _ => continue,
        };
        println!("cargo:rustc-env={name}={value}");
        found.push(name);
    }
    // The button section is optional: GPIO 0 (BOOT), active low, internal pull-up.
    for (name, default) in [
        ("BADGE_BUTTON_GPIO", "0"),
        ("BADGE_BUTTON_ACTIVE_LOW", "true"),
        ("BADGE_BUTTON_PULL_UP", "true"),
    ] {
        if !found.contains(&name) {
            println!("cargo:rustc-env={name}={default}");
        }
    }
    for name in [
        "BADGE_RESERVED_PSRAM",
        "BADGE_MODEL_PARTITION",
        "BADGE_I2S_BCLK",
        "BADGE_I2S_WS",
        "BADGE_I2S_DOUT",
        "BADGE_SAMPLE_RATE",
    ] {
        assert!(
            found.contains(&name),
            "{}: no value for {name}",
            board.display()
        );
    }
}
