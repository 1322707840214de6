//! Reading a stories file as a stream: a bounded buffer of bytes at a time, never the whole
//! file. The full TinyStories train file is 2.2 GB and 2.7 M stories; holding it as one string
//! and then as one `String` per story needs several times that in memory.
//!
//! The split is the one `read_stories` always made: on the text `<|endoftext|>` wherever it
//! appears, each piece trimmed, empty pieces dropped.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

const END_OF_TEXT: &[u8] = b"<|endoftext|>";

/// How many bytes the reader asks the file for at a time.
const READ_SIZE: usize = 8 << 20;

/// A stories file read story by story. Yields owned stories in batches so that callers can
/// tokenize a batch on every core while the file stays on disk.
pub struct StoryReader {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes read but not yet split off (at most one partial story plus one read).
    pending: Vec<u8>,
    /// Where the unsplit part of `pending` begins.
    pos: usize,
    eof: bool,
    /// Stories still allowed by the source's `limit` (`usize::MAX` for all).
    left: usize,
    /// Bytes consumed from the file so far (for progress).
    pub bytes_read: u64,
    /// Stories yielded so far.
    pub stories: usize,
}

impl StoryReader {
    /// Opens `path`; at most `limit` stories are read (0 = all).
    pub fn open(path: &Path, limit: usize) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            pending: Vec::new(),
            pos: 0,
            eof: false,
            left: if limit == 0 { usize::MAX } else { limit },
            bytes_read: 0,
            stories: 0,
        })
    }

    /// The next batch of about `batch_bytes` of text (at least one story), or `None` at the end.
    pub fn next_batch(&mut self, batch_bytes: usize) -> Result<Option<Vec<String>>> {
        let mut out = Vec::new();
        let mut size = 0;
        while size < batch_bytes && self.left > 0 {
            match self.next_story()? {
                Some(s) => {
                    size += s.len();
                    out.push(s);
                }
                None => break,
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// The next non-empty story, trimmed.
    pub fn next_story(&mut self) -> Result<Option<String>> {
        while self.left > 0 {
            let (from, to, next) = match find(&self.pending[self.pos..], END_OF_TEXT) {
                Some(at) => (self.pos, self.pos + at, self.pos + at + END_OF_TEXT.len()),
                None if !self.eof => {
                    self.fill()?;
                    continue;
                }
                None if self.pos == self.pending.len() => return Ok(None),
                None => (self.pos, self.pending.len(), self.pending.len()),
            };
            self.pos = next;
            let text = std::str::from_utf8(&self.pending[from..to]).map_err(|e| {
                anyhow::anyhow!(
                    "{}: story {} is not valid UTF-8 ({e})",
                    self.path.display(),
                    self.stories + 1
                )
            })?;
            let text = text.trim();
            if !text.is_empty() {
                self.left -= 1;
                self.stories += 1;
                return Ok(Some(text.to_string()));
            }
        }
        Ok(None)
    }

    /// Drops the bytes already split off, then appends one read.
    fn fill(&mut self) -> Result<()> {
        self.pending.drain(..self.pos);
        self.pos = 0;
        let old = self.pending.len();
        self.pending.resize(old + READ_SIZE, 0);
        let n = self
            .file
            .read(&mut self.pending[old..])
            .with_context(|| format!("reading {}", self.path.display()))?;
        self.pending.truncate(old + n);
        self.bytes_read += n as u64;
        self.eof = n == 0;
        Ok(())
    }
}

impl Iterator for StoryReader {
    type Item = Result<String>;
    fn next(&mut self) -> Option<Result<String>> {
        self.next_story().transpose()
    }
}

/// First offset of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        if hay.len() - at < needle.len() {
            return None;
        }
        from = at + 1;
    }
    None
}

/// Whether a stories file is the JSON form (`[{"story": ...}, ...]`) rather than plain text.
pub fn is_json(path: &Path) -> Result<bool> {
    let mut head = [0u8; 256];
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(head[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'['))
}

/// Counts the stories of a text file without keeping them (at most `limit`, 0 = all).
pub fn count_stories(path: &Path, limit: usize) -> Result<usize> {
    let mut r = StoryReader::open(path, limit)?;
    while r.next_story()?.is_some() {}
    if r.stories == 0 {
        bail!("{}: no stories found", path.display());
    }
    Ok(r.stories)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_whole_file_split_across_read_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.txt");
        // A separator straddling the 8 MiB read boundary, one inside a line, empty pieces.
        let mut text = "a".repeat(READ_SIZE - 5);
        text.push_str("<|endoftext|>\n  Two. <|endoftext|>Three\n<|endoftext|>\n<|endoftext|>\nä");
        std::fs::write(&p, &text).unwrap();
        let want: Vec<String> = text
            .split("<|endoftext|>")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let got: Vec<String> = StoryReader::open(&p, 0)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(got, want);
        let two: Vec<String> = StoryReader::open(&p, 2)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(two, want[..2]);
        assert_eq!(count_stories(&p, 0).unwrap(), 4);
    }

    #[test]
    fn bad_utf8_names_file_and_story() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.txt");
        std::fs::write(&p, b"ok\n<|endoftext|>\nbad \xff\n").unwrap();
        let err = StoryReader::open(&p, 0)
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.txt") && err.contains("story 2"), "{err}");
    }
}
