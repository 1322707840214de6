//! 16-bit signed PCM adapter for I2S amplifiers.
//!
//! Each 8-bit unsigned sample `s` becomes `((s as i16 - 128) << 8)`, then scaled by the
//! volume: `v * volume / 255` (integer, truncating toward zero), so volume 255 is the
//! exact full-scale conversion and 0 is silence. Output is mono, or stereo frames with
//! the same value on both channels (interleaved L, R).

use super::AudioSink;

/// Receives 16-bit signed PCM (interleaved L, R when stereo).
pub trait Pcm16Sink {
    /// Called with the next converted samples.
    fn write_pcm16(&mut self, samples: &[i16]);
}

impl<T: Pcm16Sink + ?Sized> Pcm16Sink for &mut T {
    fn write_pcm16(&mut self, samples: &[i16]) {
        (**self).write_pcm16(samples)
    }
}

/// Collects samples (convenient on the host; allocation is the caller's choice).
impl Pcm16Sink for alloc::vec::Vec<i16> {
    fn write_pcm16(&mut self, samples: &[i16]) {
        self.extend_from_slice(samples);
    }
}

/// Output channel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// One value per sample.
    Mono,
    /// Two equal values (L = R) per sample.
    Stereo,
}

/// Volume 0..=255 (255 = unscaled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volume(pub u8);

impl Volume {
    /// Full scale.
    pub const FULL: Volume = Volume(255);

    /// Converts one 8-bit unsigned SAM sample.
    #[inline]
    pub fn convert(self, sample: u8) -> i16 {
        let v = ((sample as i16) - 128) << 8;
        if self.0 == 255 {
            v
        } else {
            (v as i32 * self.0 as i32 / 255) as i16
        }
    }
}

/// [`AudioSink`] that converts to 16-bit PCM and forwards to a [`Pcm16Sink`] in blocks of
/// at most 128 output values (fixed buffer, no allocation).
pub struct Pcm16Writer<W: Pcm16Sink> {
    inner: W,
    volume: Volume,
    channels: Channels,
    buf: [i16; 128],
}

impl<W: Pcm16Sink> Pcm16Writer<W> {
    /// Wraps `inner`.
    pub fn new(inner: W, volume: Volume, channels: Channels) -> Self {
        Pcm16Writer {
            inner,
            volume,
            channels,
            buf: [0; 128],
        }
    }

    /// Changes the volume for subsequent samples.
    pub fn set_volume(&mut self, volume: Volume) {
        self.volume = volume;
    }

    /// The wrapped sink.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the inner sink.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Pcm16Sink> AudioSink for Pcm16Writer<W> {
    fn write(&mut self, samples: &[u8]) {
        let per = match self.channels {
            Channels::Mono => 1,
            Channels::Stereo => 2,
        };
        for block in samples.chunks(self.buf.len() / per) {
            let mut n = 0;
            for &s in block {
                let v = self.volume.convert(s);
                self.buf[n] = v;
                if per == 2 {
                    self.buf[n + 1] = v;
                }
                n += per;
            }
            self.inner.write_pcm16(&self.buf[..n]);
        }
    }
}
