//! `badge export` on a badge-6m-sized run: the KV cache is chosen to fit the board, and a
//! forced choice that does not fit is refused, naming what overflows, with nothing written.

mod common;

use badge::train::checkpoint::RunDir;
use badge_firmware::config::KvCacheKind;

/// A run directory with random badge-6m weights, as `badge train` would leave it.
fn six_m_run(dir: &std::path::Path) -> std::path::PathBuf {
    let run = dir.join("run");
    let rd = RunDir::new(&run);
    let rc =
        badge::config::Curriculum::load(&common::repo().join("configs/badge-6m.toml")).unwrap();
    std::fs::create_dir_all(rd.checkpoints()).unwrap();
    std::fs::write(rd.config(), serde_json::to_string(&rc).unwrap()).unwrap();
    common::small_tokenizer(1024).save(&rd.tokenizer()).unwrap();
    let params = badge::train::model::init_params(&rc.model, 1, &candle_core::Device::Cpu).unwrap();
    badge::train::checkpoint::save(&rd.final_weights(), &params, None).unwrap();
    run
}

fn options(
    run: &std::path::Path,
    out: &std::path::Path,
    kv: Option<KvCacheKind>,
) -> badge::export::ExportOptions {
    badge::export::ExportOptions {
        run: run.to_path_buf(),
        checkpoint: None,
        out: out.to_path_buf(),
        group_size: badge::export::GroupSize::Auto(64),
        format: badge::export::ExportFormat::Blob,
        kv_cache: kv,
        max_rel_error: None,
        board: Some(common::repo().join("configs/boards/esp32s3-n16r8.toml")),
        quality_samples: 0,
        free: false,
        keep_known: None,
        question_match: true,
    }
}

#[test]
fn kv_cache_is_chosen_to_fit_and_a_forced_misfit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = six_m_run(dir.path());

    let forced = dir.path().join("forced.bin");
    let err = format!(
        "{:#}",
        badge::export::export(&options(&run, &forced, Some(KvCacheKind::F32))).unwrap_err()
    );
    assert!(
        err.contains("PSRAM") && err.contains("KV cache") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!forced.exists());

    let auto = dir.path().join("auto.bin");
    let r = badge::export::export(&options(&run, &auto, None)).unwrap();
    assert_eq!(r.kv_cache, Some(KvCacheKind::F16));
    assert_eq!(r.group_size, 32);
    let note = r.note.unwrap();
    assert!(
        note.contains("using 32") && note.contains("KV cache f16"),
        "{note}"
    );
    let file = badge::answer::BlobFile::read(&auto).unwrap();
    assert_eq!(file.blob().kv_cache, KvCacheKind::F16);
    assert!(r.memory.unwrap().psram_headroom > 0);
}

/// The PIE kernel (run by its interpreter, hazard rules in force) gives the portable sums for
/// every group size the exporter picks for the shipped model configs, on random and extreme
/// groups.
#[test]
fn pie_kernel_handles_the_exporters_group_sizes() {
    use badge_firmware::kernel::dot_i8_portable;
    use badge_firmware::kernel::pie_interp::simulate_dot;
    let dir = common::repo().join("configs/models");
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let c = badge::config::load_model_config(&path).unwrap();
        let (gs, _) =
            badge::export::resolve_group_size(&c, badge::export::GroupSize::Auto(64)).unwrap();
        sizes.push(gs);
    }
    sizes.sort_unstable();
    sizes.dedup();
    assert!(!sizes.is_empty(), "no model configs in {}", dir.display());
    let mut x = 0x1234_5678u32;
    let mut random = |n: usize| -> Vec<i8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8 as i8
            })
            .collect()
    };
    for &gs in &sizes {
        assert!(gs % 16 == 0, "group size {gs} is not a PIE length");
        let mut cases = vec![
            (vec![-128i8; gs], vec![-128i8; gs]),
            (vec![127i8; gs], vec![-128i8; gs]),
            (vec![127i8; gs], vec![127i8; gs]),
        ];
        for _ in 0..50 {
            cases.push((random(gs), random(gs)));
        }
        for (a, b) in &cases {
            let r = simulate_dot(a, b, 0, 0).unwrap_or_else(|e| panic!("group {gs}: {e}"));
            assert_eq!(r.value, dot_i8_portable(a, b), "group {gs}");
        }
    }
    println!("exporter group sizes checked: {sizes:?}");
}
