//! The token cache of a stories file: it holds exactly the stream the in-memory path builds,
//! is rebuilt for another tokenizer or a changed file, and a damaged file is a clear error.

mod common;

use badge::data::token_cache::{self, CacheKey, CachedStories};
use badge::data::{read_stories, Sample, StoriesFile, TokenStream};
use std::path::Path;
use std::sync::Arc;

fn cached_stream(dir: &Path, stories: &Path, limit: usize, vocab: usize) -> TokenStream {
    let tok = common::small_tokenizer(vocab);
    let c = token_cache::load_or_build(dir, "stories", stories, limit, &tok).unwrap();
    TokenStream::from_cache(Arc::new(c))
}

fn in_memory_stream(stories: &Path, limit: usize, vocab: usize, repeat: usize) -> TokenStream {
    let tok = common::small_tokenizer(vocab);
    let mut s = read_stories(stories).unwrap();
    if limit > 0 {
        s.truncate(limit);
    }
    let samples: Vec<Sample> = s.into_iter().map(Sample::Text).collect();
    TokenStream::build(&tok, &samples, repeat, 7).unwrap()
}

fn windows(s: &TokenStream, len: usize) -> Vec<(Vec<u32>, Vec<u8>)> {
    // Every sample start, plus windows that wrap around the end of the stream.
    s.starts
        .iter()
        .copied()
        .chain([s.len() - 3, s.len() - 1])
        .map(|start| {
            let (mut t, mut m) = (Vec::new(), Vec::new());
            s.window(start, len, &mut t, &mut m);
            (t, m)
        })
        .collect()
}

#[test]
fn cached_windows_equal_the_in_memory_ones() {
    let dir = tempfile::tempdir().unwrap();
    let stories = common::repo().join("data/stories/stories.txt");
    for limit in [0, 5] {
        let sub = dir.path().join(format!("limit{limit}"));
        let cached = cached_stream(&sub, &stories, limit, 320);
        let memory = in_memory_stream(&stories, limit, 320, 1);
        assert_eq!(cached.starts, memory.starts, "limit {limit}");
        assert_eq!(cached.len(), memory.tokens.len());
        assert_eq!(windows(&cached, 257), windows(&memory, 257));
        // A second open reads the file instead of tokenizing again, with the same result.
        let again = cached_stream(&sub, &stories, limit, 320);
        assert_eq!(windows(&again, 64), windows(&memory, 64));
    }
    // Repeated and shuffled: the same stream as building the repeated samples in memory.
    let cached = cached_stream(&dir.path().join("limit0"), &stories, 0, 320).repeated(3, 7);
    let memory = in_memory_stream(&stories, 0, 320, 3);
    assert_eq!(cached.tokens, memory.tokens);
    assert_eq!(cached.loss_mask, memory.loss_mask);
    assert_eq!(cached.starts, memory.starts);
}

#[test]
fn another_tokenizer_or_a_changed_file_rebuilds_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let stories = dir.path().join("s.txt");
    std::fs::copy(common::repo().join("data/stories/stories.txt"), &stories).unwrap();
    let a = cached_stream(dir.path(), &stories, 0, 300);
    let b = cached_stream(dir.path(), &stories, 0, 340);
    assert_eq!(
        windows(&b, 100),
        windows(&in_memory_stream(&stories, 0, 340, 1), 100)
    );
    assert_ne!(a.len(), b.len(), "a bigger vocabulary gives fewer tokens");
    // Changing the file (its size) invalidates the cache too.
    let mut text = std::fs::read_to_string(&stories).unwrap();
    text.push_str("\n<|endoftext|>\nOne more story about a cat.\n");
    std::fs::write(&stories, text).unwrap();
    let c = cached_stream(dir.path(), &stories, 0, 340);
    assert_eq!(c.starts.len(), b.starts.len() + 1);
    assert_eq!(
        windows(&c, 100),
        windows(&in_memory_stream(&stories, 0, 340, 1), 100)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = token_cache::cache_path(dir.path(), "stories");
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the cache gets the usual file mode");
    }
}

#[test]
fn truncated_or_foreign_cache_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let stories = common::repo().join("data/stories/stories.txt");
    let tok = common::small_tokenizer(300);
    let key = CacheKey::of(&stories, 0, &tok).unwrap();
    let path = token_cache::cache_path(dir.path(), "stories");
    token_cache::build(&path, &stories, 0, &tok, &key).unwrap();
    let full = std::fs::read(&path).unwrap();

    std::fs::write(&path, &full[..full.len() - 10]).unwrap();
    let err = format!(
        "{:#}",
        token_cache::load_or_build(dir.path(), "stories", &stories, 0, &tok).unwrap_err()
    );
    assert!(
        err.contains(&path.display().to_string()) && err.contains("truncated"),
        "{err}"
    );

    std::fs::write(&path, &full[..20]).unwrap();
    let err = format!("{:#}", CachedStories::open(&path, &key).unwrap_err());
    assert!(err.contains("header"), "{err}");

    let mut foreign = full.clone();
    foreign[..8].copy_from_slice(b"NOTBADGE");
    std::fs::write(&path, &foreign).unwrap();
    let err = format!("{:#}", CachedStories::open(&path, &key).unwrap_err());
    assert!(err.contains("magic"), "{err}");
}

#[test]
fn a_stories_source_streams_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let stories = common::repo().join("data/stories/stories.txt");
    let source = badge::config::SourceConfig::Stories {
        train: Some(stories.clone()),
        valid: Some(common::repo().join("data/stories/stories-valid.txt")),
        download: false,
        limit: 3,
    };
    let tpl =
        badge_firmware::template::PromptTemplate::parse(badge::config::DEFAULT_TEMPLATE).unwrap();
    let mut data =
        badge::data::load_source(&source, &tpl, dir.path(), false, &Default::default()).unwrap();
    assert!(data.train.is_empty());
    let Some(StoriesFile { path, limit, .. }) = &data.stories else {
        panic!("a text stories file is streamed");
    };
    assert_eq!((path, *limit), (&stories, 3));
    let texts: Vec<String> = data.train_texts().unwrap().map(|t| t.unwrap()).collect();
    assert_eq!(texts, read_stories(&stories).unwrap()[..3]);
    let tok = common::small_tokenizer(300);
    let mut sources = std::collections::BTreeMap::from([("stories".to_string(), data)]);
    badge::data::attach_token_caches(&mut sources, dir.path(), &tok).unwrap();
    data = sources.remove("stories").unwrap();
    let stream = data.train_stream(&tok, 1, 0).unwrap();
    assert_eq!(stream.starts.len(), 3);
}
