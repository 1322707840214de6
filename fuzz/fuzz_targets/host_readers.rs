//! The host's readers of user files, each given the input as its file: the partition CSV, a
//! board profile, a model config, a curriculum (TOML) and a Q&A CSV. Each must return a value
//! or an error, never panic. The first byte picks the reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch directory per fuzzing process (removed with the process's temp files).
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("badge-fuzz-host-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch directory");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let (name, read): (&str, fn(&std::path::Path)) = match which % 5 {
        0 => ("partitions.csv", |p| {
            let _ = badge::config::board::read_partitions(p);
        }),
        1 => ("board.toml", |p| {
            if let Ok(b) = badge::config::board::Board::load(p) {
                let _ = b.model_partition();
            }
        }),
        2 => ("model.toml", |p| {
            let _ = badge::config::load_model_config(p);
        }),
        3 => ("curriculum.toml", |p| {
            let _ = badge::config::Curriculum::load(p);
        }),
        _ => ("qa.csv", |p| {
            let _ = badge::data::read_qa_csv(p);
        }),
    };
    let path = scratch().join(name);
    std::fs::write(&path, body).expect("write the scratch file");
    read(&path);
});
