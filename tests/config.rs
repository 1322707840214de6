//! Every config shipped in configs/ loads and checks out.

mod common;

#[test]
fn every_shipped_curriculum_and_model_config_loads() {
    let dir = common::repo().join("configs");
    let mut curricula = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml")
            && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        {
            let rc = badge::config::Curriculum::load(&p)
                .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            assert_eq!(rc.curriculum.phase.len(), 3, "{}", p.display());
            curricula += 1;
        }
    }
    assert!(curricula >= 4, "badge-tiny, badge-1m, badge-3m, badge-6m");
    for m in ["badge-tiny", "badge-1m", "badge-3m", "badge-6m"] {
        badge::config::load_model_config(&dir.join(format!("models/{m}.toml"))).unwrap();
    }
    // The published recipe's phase lengths and learning rates.
    let six = badge::config::Curriculum::load(&dir.join("badge-6m.toml")).unwrap();
    let steps: Vec<(usize, f64)> = six
        .curriculum
        .phase
        .iter()
        .map(|p| (p.steps, p.lr))
        .collect();
    assert_eq!(steps, vec![(20000, 3e-4), (10000, 1e-4), (12000, 5e-5)]);
    assert_eq!(six.model.parameter_count(), 5_566_176);
}

/// Partition CSV sizes: decimal, hex and K/M suffixes, and an overflow is refused (it wrapped
/// to a wrong size in release builds), also when read from a CSV.
#[test]
fn partition_sizes_parse_with_checked_arithmetic() {
    use badge::config::board::{parse_size, read_partitions};
    assert_eq!(parse_size("4096"), Some(4096));
    assert_eq!(parse_size(" 0x1000 "), Some(4096));
    assert_eq!(parse_size("64K"), Some(65536));
    assert_eq!(parse_size("3M"), Some(3 << 20));
    assert_eq!(parse_size("0xFFFFFFFFFFFFFFFFK"), None);
    assert_eq!(parse_size("17592186044416M"), None); // 2^44 · 2^20 = 2^64
    assert_eq!(
        parse_size("17592186044415M"),
        Some(u64::MAX - (1 << 20) + 1)
    );
    assert_eq!(parse_size("12Q"), None);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("p.csv");
    std::fs::write(&csv, "model, data, 0x40, 0x10000, 0xFFFFFFFFFFFFFFFFK,\n").unwrap();
    let err = format!("{:#}", read_partitions(&csv).unwrap_err());
    assert!(err.contains("p.csv") && err.contains("size"), "{err}");
}

/// `[answers] keep_known` must be a share above 0 and at most 1.
#[test]
fn a_keep_known_out_of_range_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::reduced_curriculum(dir.path(), [1, 1, 1], 10, 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("keep_known = 0.96"), "{text}");
    for bad in ["0.0", "1.5", "-1"] {
        std::fs::write(
            &path,
            text.replacen("keep_known = 0.96", &format!("keep_known = {bad}"), 1),
        )
        .unwrap();
        let err = format!("{:#}", badge::config::Curriculum::load(&path).unwrap_err());
        assert!(
            err.contains("curriculum.toml") && err.contains("answers.keep_known"),
            "{err}"
        );
    }
}
