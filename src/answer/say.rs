//! `badge say`: SAM on the host, written to a standard WAV file (8-bit unsigned PCM, mono,
//! 22050 Hz: exactly the samples the badge renders before its 16-bit I2S conversion).

use anyhow::{anyhow, bail, Context, Result};
use badge_firmware::sam::{self, Voice};
use std::path::Path;

/// Looks up a named preset (`sam`, `robot`, ...) or says which exist.
pub fn voice_by_name(name: &str) -> Result<Voice> {
    Voice::preset(name).ok_or_else(|| {
        anyhow!(
            "unknown voice `{name}`; available: {}",
            sam::Voice::preset_names().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Renders `text` (English, or SAM phonemes when `phonetic`) to PCM bytes.
pub fn render(text: &str, voice: &Voice, phonetic: bool) -> Result<Vec<u8>> {
    let r = if phonetic {
        sam::phonetic_to_pcm(text, voice)
    } else {
        sam::text_to_pcm(text, voice)
    };
    r.map_err(|e| anyhow!("SAM could not speak {text:?}: {e:?}"))
}

/// Writes 8-bit unsigned PCM samples as a WAV file (atomically).
pub fn write_wav(path: &Path, pcm: &[u8]) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: sam::SAMPLE_RATE,
        bits_per_sample: 8,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cursor, spec).context("starting the WAV file")?;
        for &s in pcm {
            // hound stores 8-bit samples unsigned: it adds 128 to the signed value it is given.
            w.write_sample((i16::from(s) - 128) as i8)?;
        }
        w.finalize()?;
    }
    crate::util::write_atomic(path, cursor.get_ref())
}

/// Reads the PCM bytes of an 8-bit WAV file (for tests and comparisons).
pub fn read_wav_u8(path: &Path) -> Result<Vec<u8>> {
    let mut r = hound::WavReader::open(path)
        .with_context(|| format!("cannot read WAV {}", path.display()))?;
    if r.spec().bits_per_sample != 8 {
        bail!("{}: expected 8-bit samples", path.display());
    }
    r.samples::<i8>()
        .map(|s| Ok((i16::from(s?) + 128) as u8))
        .collect()
}

/// `badge say`: render and write; returns the number of samples.
pub fn say_to_wav(text: &str, voice: &Voice, phonetic: bool, out: &Path) -> Result<usize> {
    let pcm = render(text, voice, phonetic)?;
    write_wav(out, &pcm)?;
    Ok(pcm.len())
}
