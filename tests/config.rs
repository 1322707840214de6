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
