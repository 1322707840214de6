//! The token ids of a stories file, tokenized once and kept on disk beside the run.
//!
//! A stories source is tokenized on every core in batches read from the file, and written as
//! one flat stream `BOS story EOS BOS story EOS ...` of little-endian u16 ids followed by the
//! offset of every story's BOS. That is exactly the stream `TokenStream::build` makes from the
//! same stories with `repeat = 1`, so training draws the same windows (and losses) either way.
//! Training then reads the ids through a memory map: the text is never held, and only the
//! pages that windows touch come into memory.
//!
//! File layout (all little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `BDGTOKS\0` |
//! | 4 | format version (1) |
//! | 4 | reserved, 0 |
//! | 8 | FNV-1a 64 hash of the tokenizer (its vocabulary and merges) |
//! | 8 | the stories file's size in bytes |
//! | 8 | the stories file's modification time, nanoseconds since 1970 |
//! | 8 | the source's story `limit` (0 = all) |
//! | 8 | number of stories `n` |
//! | 8 | number of tokens `t` |
//! | 2·t | token ids |
//! | 8·n | start offset of each story |
//!
//! A cache made with another tokenizer or from a changed file is rebuilt; a cache whose size does
//! not match its header (cut short by a full disk, say) is an error naming the file.

use crate::data::stream::StoryReader;
use crate::data::tokenizer::BadgeTokenizer;
use crate::data::word_memo;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"BDGTOKS\0";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;
/// Text tokenized per parallel batch: big enough to keep every core busy, small enough to
/// keep memory flat.
const BATCH_BYTES: usize = 16 << 20;

/// What a cache was built from; a cache is reused only when all of it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey {
    pub tokenizer_hash: u64,
    pub source_len: u64,
    pub source_mtime_ns: u64,
    pub limit: u64,
}

impl CacheKey {
    /// The key of `stories` (read with `limit`) under `tok`.
    pub fn of(stories: &Path, limit: usize, tok: &BadgeTokenizer) -> Result<Self> {
        let meta = std::fs::metadata(stories)
            .with_context(|| format!("cannot read {}", stories.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Self {
            tokenizer_hash: tokenizer_hash(tok)?,
            source_len: meta.len(),
            source_mtime_ns: mtime,
            limit: limit as u64,
        })
    }
}

/// FNV-1a 64 over the tokenizer's pieces and merges: two tokenizers that encode alike hash alike.
pub fn tokenizer_hash(tok: &BadgeTokenizer) -> Result<u64> {
    let (vocab, merges) = tok.parts()?;
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes.iter().chain(std::iter::once(&0xff)) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for piece in &vocab {
        feed(piece.as_bytes());
    }
    for (a, b) in &merges {
        feed(a.as_bytes());
        feed(b.as_bytes());
    }
    feed(&[u8::from(tok.splits_digits())]);
    Ok(h)
}

/// A stories file's tokens, memory-mapped from the cache.
pub struct CachedStories {
    pub path: PathBuf,
    map: memmap2::Mmap,
    tokens: usize,
    /// Offset of every story's BOS in the token stream.
    pub starts: Vec<usize>,
}

impl std::fmt::Debug for CachedStories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CachedStories({}, {} stories, {} tokens)",
            self.path.display(),
            self.starts.len(),
            self.tokens
        )
    }
}

impl CachedStories {
    pub fn len(&self) -> usize {
        self.tokens
    }
    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }
    /// Token `i` of the stream.
    pub fn token(&self, i: usize) -> u32 {
        let o = HEADER_BYTES + 2 * i;
        u32::from(u16::from_le_bytes([self.map[o], self.map[o + 1]]))
    }

    /// Opens a cache; `Ok(None)` when it was built from something else than `key`.
    pub fn open(path: &Path, key: &CacheKey) -> Result<Option<Self>> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        // SAFETY: the cache is written once by rename and never modified in place; a file
        // replaced under a running trainer keeps the mapped inode alive.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        let bad = |what: String| {
            anyhow::anyhow!(
                "{}: not a usable token cache ({what}); delete it and it is rebuilt",
                path.display()
            )
        };
        if map.len() < HEADER_BYTES {
            return Err(bad(format!(
                "{} bytes, shorter than the {HEADER_BYTES}-byte header",
                map.len()
            )));
        }
        if &map[..8] != MAGIC {
            return Err(bad("wrong magic".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(map[o..o + 8].try_into().unwrap());
        if u32_at(8) != VERSION {
            return Err(bad(format!(
                "format version {}, this badge reads {VERSION}",
                u32_at(8)
            )));
        }
        let found = CacheKey {
            tokenizer_hash: u64_at(16),
            source_len: u64_at(24),
            source_mtime_ns: u64_at(32),
            limit: u64_at(40),
        };
        if found != *key {
            return Ok(None);
        }
        let (stories, tokens) = (u64_at(48), u64_at(56));
        let want = tokens
            .checked_mul(2)
            .and_then(|t| stories.checked_mul(8).and_then(|s| t.checked_add(s)))
            .and_then(|b| b.checked_add(HEADER_BYTES as u64));
        if want != Some(map.len() as u64) {
            return Err(bad(format!(
                "the header promises {stories} stories and {tokens} tokens, {} bytes, but the file has {} (truncated?)",
                want.map_or("too many".to_string(), |w| w.to_string()),
                map.len()
            )));
        }
        let tokens = tokens as usize;
        let at = HEADER_BYTES + 2 * tokens;
        let starts: Vec<usize> = map[at..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as usize)
            .collect();
        if starts.first() != Some(&0)
            || starts.windows(2).any(|w| w[0] >= w[1])
            || starts.last().is_some_and(|&s| s >= tokens)
        {
            return Err(bad("story offsets out of order".into()));
        }
        Ok(Some(Self {
            path: path.to_path_buf(),
            map,
            tokens,
            starts,
        }))
    }
}

/// The cache file for source `name` in `dir`.
pub fn cache_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.tokens"))
}

/// Opens the cache of `stories` in `dir`, building it first when it is missing or stale.
pub fn load_or_build(
    dir: &Path,
    name: &str,
    stories: &Path,
    limit: usize,
    tok: &BadgeTokenizer,
) -> Result<CachedStories> {
    let key = CacheKey::of(stories, limit, tok)?;
    let path = cache_path(dir, name);
    if path.exists() {
        if let Some(c) = CachedStories::open(&path, &key)? {
            return Ok(c);
        }
        eprintln!(
            "{}: made from another tokenizer or another version of {}; tokenizing again",
            path.display(),
            stories.display()
        );
    }
    build(&path, stories, limit, tok, &key)?;
    CachedStories::open(&path, &key)?
        .with_context(|| format!("{}: the cache just written does not match", path.display()))
}

/// Tokenizes `stories` on every core into the cache at `path` (written atomically).
pub fn build(
    path: &Path,
    stories: &Path,
    limit: usize,
    tok: &BadgeTokenizer,
    key: &CacheKey,
) -> Result<()> {
    if tok.vocab_size() > usize::from(u16::MAX) + 1 {
        bail!(
            "the tokenizer has {} tokens; the token cache stores u16 ids (at most 65536)",
            tok.vocab_size()
        );
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let ctx = || format!("writing {}", path.display());
    out.write_all(&[0u8; HEADER_BYTES]).with_context(ctx)?;

    let bar = ProgressBar::new(key.source_len).with_style(
        ProgressStyle::with_template(
            "tokenizing {msg} {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("a valid progress template"),
    );
    bar.set_message(
        stories
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let mut reader = StoryReader::open(stories, limit)?;
    let mut starts: Vec<u64> = Vec::new();
    let mut tokens: u64 = 0;
    let (bos, eos) = (tok.bos_id() as u16, tok.eos_id() as u16);
    let mut ids16: Vec<u8> = Vec::new();
    while let Some(batch) = reader.next_batch(BATCH_BYTES)? {
        let encoded: Vec<Vec<u32>> = batch
            .par_iter()
            .map(|s| {
                let mut ids = Vec::with_capacity(s.len() / 3);
                word_memo::encode_into(tok, key.tokenizer_hash, s, &mut ids).map(|()| ids)
            })
            .collect::<Result<_>>()?;
        drop(batch);
        for ids in encoded {
            starts.push(tokens);
            ids16.clear();
            ids16.extend_from_slice(&bos.to_le_bytes());
            for id in ids {
                ids16.extend_from_slice(&(id as u16).to_le_bytes());
            }
            ids16.extend_from_slice(&eos.to_le_bytes());
            tokens += (ids16.len() / 2) as u64;
            out.write_all(&ids16).with_context(ctx)?;
        }
        bar.set_position(reader.bytes_read);
    }
    bar.finish_and_clear();
    if starts.is_empty() {
        bail!("{}: no stories found", stories.display());
    }
    for s in &starts {
        out.write_all(&s.to_le_bytes()).with_context(ctx)?;
    }
    out.flush().with_context(ctx)?;
    drop(out);
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    for v in [
        key.tokenizer_hash,
        key.source_len,
        key.source_mtime_ns,
        key.limit,
        starts.len() as u64,
        tokens,
    ] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    let mut file = tmp.as_file();
    file.seek(SeekFrom::Start(0)).with_context(ctx)?;
    file.write_all(&header).with_context(ctx)?;
    tmp.as_file().sync_all().with_context(ctx)?;
    crate::util::persist_with_usual_mode(tmp, path)
}
