//! `--download` goes through the real hf-hub client; offline it must find TinyStories in the
//! hf-hub cache (HF_HOME) without touching the network.

mod common;

use badge::config::SourceConfig;

#[test]
fn tinystories_is_read_from_the_hf_hub_cache() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/datasets--roneneldan--TinyStories");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    let snap = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snap).unwrap();
    let stories = common::repo().join("data/stories");
    std::fs::copy(
        stories.join("stories.txt"),
        snap.join(badge::data::download::TRAIN_FILE),
    )
    .unwrap();
    std::fs::copy(
        stories.join("stories-valid.txt"),
        snap.join(badge::data::download::VALID_FILE),
    )
    .unwrap();
    // This test binary is its own process: setting the variable affects nothing else.
    unsafe { std::env::set_var("HF_HOME", home.path()) };

    let (train, valid) = badge::data::download::tinystories().unwrap();
    assert_eq!(train, snap.join(badge::data::download::TRAIN_FILE));
    assert_eq!(valid, snap.join(badge::data::download::VALID_FILE));

    let source = SourceConfig::Stories {
        train: None,
        valid: None,
        download: true,
        limit: 0,
    };
    let tpl =
        badge_firmware::template::PromptTemplate::parse(badge::config::DEFAULT_TEMPLATE).unwrap();
    let data =
        badge::data::load_source(&source, &tpl, home.path(), true, &Default::default()).unwrap();
    // The train file is streamed from disk (tokenized into the run's cache), not held.
    let file = data.stories.as_ref().expect("a streamed stories file");
    assert_eq!(file.path, train);
    assert_eq!(
        badge::data::stream::count_stories(&file.path, 0).unwrap(),
        400
    );
    assert_eq!(data.valid.len(), 40);
}
