//! Audio buffers as they flow between nodes.
//!
//! An [`AudioBuffer`] holds little-endian, interleaved samples in a reference-counted
//! [`Bytes`] region, so fan-out to several consumers, hand-off to Python and encoding into a
//! response never copy the samples. Typed views ([`AudioBuffer::as_f32`], ...) reinterpret the
//! bytes in place with `bytemuck` when they are aligned and fall back to one copy when not.

mod arena;
mod convert;

pub use arena::OutputArena;
pub use convert::{f32_to_i16, f32_to_i32, i16_to_f32, i32_to_f32};

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

/// Most channels a buffer may declare; more is certainly a malformed request.
pub const MAX_CHANNELS: u32 = 256;

/// Sample encoding of an [`AudioBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    /// 32-bit float, nominal range [-1.0, 1.0].
    F32,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
}

impl SampleFormat {
    pub const fn bytes_per_sample(self) -> usize {
        match self {
            SampleFormat::F32 | SampleFormat::I32 => 4,
            SampleFormat::I16 => 2,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            SampleFormat::F32 => "f32",
            SampleFormat::I16 => "i16",
            SampleFormat::I32 => "i32",
        }
    }

    /// Parses the names used in node parameters (`"f32"`, `"i16"`, `"i32"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(SampleFormat::F32),
            "i16" => Some(SampleFormat::I16),
            "i32" => Some(SampleFormat::I32),
            _ => None,
        }
    }
}

impl fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a buffer's description does not match its bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    #[error("sample_rate must be > 0")]
    ZeroSampleRate,
    #[error("channels must be between 1 and {MAX_CHANNELS}, got {0}")]
    BadChannelCount(u32),
    #[error(
        "samples holds {actual} bytes but num_samples {num_samples} × {bytes_per_sample} bytes ({format}) needs {expected}"
    )]
    LengthMismatch { num_samples: u64, format: SampleFormat, bytes_per_sample: usize, expected: u128, actual: usize },
    #[error("num_samples {num_samples} is not a multiple of channels {channels}")]
    PartialFrame { num_samples: u64, channels: u32 },
    #[error("cannot join audio of {left} with audio of {right}")]
    Incompatible { left: String, right: String },
}

/// Interleaved little-endian samples with their rate and channel count.
///
/// Cloning is cheap: the samples are shared, never copied.
#[derive(Clone, PartialEq)]
pub struct AudioBuffer {
    bytes: Bytes,
    format: SampleFormat,
    sample_rate: u32,
    channels: u32,
}

impl fmt::Debug for AudioBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioBuffer")
            .field("format", &self.format)
            .field("sample_rate", &self.sample_rate)
            .field("channels", &self.channels)
            .field("num_samples", &self.num_samples())
            .finish()
    }
}

/// Keeps a typed `Vec` alive behind a [`Bytes`] without copying it.
struct SampleVec<T>(Vec<T>);

impl<T: bytemuck::Pod> AsRef<[u8]> for SampleVec<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

fn vec_into_bytes<T: bytemuck::Pod + Send + Sync>(samples: Vec<T>) -> Bytes {
    if cfg!(target_endian = "little") {
        Bytes::from_owner(SampleVec(samples))
    } else {
        let mut out = Vec::with_capacity(samples.len() * size_of::<T>());
        for s in &samples {
            let mut b = bytemuck::bytes_of(s).to_vec();
            b.reverse();
            out.extend_from_slice(&b);
        }
        Bytes::from(out)
    }
}

impl AudioBuffer {
    /// Builds a buffer from wire fields, enforcing the contract: `sample_rate > 0`,
    /// `1 <= channels <= MAX_CHANNELS`, `len(samples) == num_samples * bytes_per_sample`, and whole
    /// frames only.
    pub fn from_wire(
        bytes: Bytes,
        format: SampleFormat,
        sample_rate: u32,
        channels: u32,
        num_samples: u64,
    ) -> Result<Self, AudioError> {
        if sample_rate == 0 {
            return Err(AudioError::ZeroSampleRate);
        }
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(AudioError::BadChannelCount(channels));
        }
        let expected = u128::from(num_samples) * format.bytes_per_sample() as u128;
        if expected != bytes.len() as u128 {
            return Err(AudioError::LengthMismatch {
                num_samples,
                format,
                bytes_per_sample: format.bytes_per_sample(),
                expected,
                actual: bytes.len(),
            });
        }
        if !num_samples.is_multiple_of(u64::from(channels)) {
            return Err(AudioError::PartialFrame { num_samples, channels });
        }
        Ok(Self { bytes, format, sample_rate, channels })
    }

    /// Wraps `f32` samples without copying them.
    pub fn from_f32(samples: Vec<f32>, sample_rate: u32, channels: u32) -> Self {
        Self::from_vec(samples, SampleFormat::F32, sample_rate, channels)
    }

    /// Wraps `i16` samples without copying them.
    pub fn from_i16(samples: Vec<i16>, sample_rate: u32, channels: u32) -> Self {
        Self::from_vec(samples, SampleFormat::I16, sample_rate, channels)
    }

    /// Wraps `i32` samples without copying them.
    pub fn from_i32(samples: Vec<i32>, sample_rate: u32, channels: u32) -> Self {
        Self::from_vec(samples, SampleFormat::I32, sample_rate, channels)
    }

    fn from_vec<T: bytemuck::Pod + Send + Sync>(
        samples: Vec<T>,
        format: SampleFormat,
        sample_rate: u32,
        channels: u32,
    ) -> Self {
        debug_assert!(sample_rate > 0 && channels > 0, "node produced an invalid buffer");
        debug_assert_eq!(samples.len() % channels as usize, 0, "node produced a partial frame");
        Self { bytes: vec_into_bytes(samples), format, sample_rate, channels }
    }

    /// The same samples at an address aligned for their type, copied only when they are not:
    /// bytes cut out of a request can start anywhere. Typed views need the alignment; without
    /// it each node reading the samples, and the Python bridge's numpy view, would make a copy
    /// of its own, and a node passing its input on would hand out a second buffer.
    pub fn into_aligned(self) -> Self {
        if self.is_aligned() {
            return self;
        }
        let bytes = match self.format {
            SampleFormat::F32 => vec_into_bytes(bytemuck::pod_collect_to_vec::<u8, f32>(&self.bytes)),
            SampleFormat::I16 => vec_into_bytes(bytemuck::pod_collect_to_vec::<u8, i16>(&self.bytes)),
            SampleFormat::I32 => vec_into_bytes(bytemuck::pod_collect_to_vec::<u8, i32>(&self.bytes)),
        };
        Self { bytes, ..self }
    }

    /// Whether typed views of the samples need no copy: they start at an address aligned for
    /// their type (always true on big-endian targets, where views always copy anyway).
    pub fn is_aligned(&self) -> bool {
        cfg!(target_endian = "big") || self.bytes.as_ptr().addr().is_multiple_of(self.format.bytes_per_sample())
    }

    /// A buffer of no samples in the given layout (what a node returns when it has no output yet).
    pub fn empty(format: SampleFormat, sample_rate: u32, channels: u32) -> Self {
        Self { bytes: Bytes::new(), format, sample_rate, channels }
    }

    /// A buffer with the same rate and layout over other bytes of the same format.
    pub fn with_bytes(&self, bytes: Bytes) -> Self {
        Self { bytes, ..self.clone() }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn format(&self) -> SampleFormat {
        self.format
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    pub fn channels(&self) -> u32 {
        self.channels
    }

    /// Samples across all channels.
    pub fn num_samples(&self) -> usize {
        self.bytes.len() / self.format.bytes_per_sample()
    }

    pub fn frames(&self) -> usize {
        self.num_samples() / self.channels as usize
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn duration_secs(&self) -> f64 {
        self.frames() as f64 / f64::from(self.sample_rate)
    }

    /// A short description for error messages: `"16000 Hz, 2 ch, i16"`.
    pub fn describe(&self) -> String {
        format!("{} Hz, {} ch, {}", self.sample_rate, self.channels, self.format)
    }

    /// The samples as `f32` without copying, when the buffer is `f32` and suitably aligned.
    pub fn f32_slice(&self) -> Option<&[f32]> {
        self.typed_slice(SampleFormat::F32)
    }

    /// The samples as `i16` without copying, when the buffer is `i16` and suitably aligned.
    pub fn i16_slice(&self) -> Option<&[i16]> {
        self.typed_slice(SampleFormat::I16)
    }

    /// The samples as `i32` without copying, when the buffer is `i32` and suitably aligned.
    pub fn i32_slice(&self) -> Option<&[i32]> {
        self.typed_slice(SampleFormat::I32)
    }

    /// The samples of an `i32` buffer: borrowed when aligned, one copy otherwise. Empty for a
    /// buffer of another format.
    pub fn i32_samples(&self) -> Cow<'_, [i32]> {
        if self.format != SampleFormat::I32 {
            return Cow::Borrowed(&[]);
        }
        match self.i32_slice() {
            Some(s) => Cow::Borrowed(s),
            None => {
                Cow::Owned(self.bytes.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
            }
        }
    }

    fn typed_slice<T: bytemuck::Pod>(&self, format: SampleFormat) -> Option<&[T]> {
        if self.format != format || cfg!(target_endian = "big") {
            return None;
        }
        if self.bytes.is_empty() {
            // An empty `Bytes` may point anywhere; an empty slice is always a valid view.
            return Some(&[]);
        }
        bytemuck::try_cast_slice(&self.bytes).ok()
    }

    /// The samples as `f32` in [-1, 1] (integers scaled by 2^15 or 2^31): borrowed when the
    /// buffer is aligned `f32`, one copy otherwise.
    pub fn as_f32(&self) -> Cow<'_, [f32]> {
        if let Some(s) = self.f32_slice() {
            return Cow::Borrowed(s);
        }
        let mut out = Vec::new();
        self.read_f32_into(&mut out);
        Cow::Owned(out)
    }

    /// Writes the samples as `f32` into `out` (cleared first), reusing its allocation.
    pub fn read_f32_into(&self, out: &mut Vec<f32>) {
        out.clear();
        out.reserve(self.num_samples());
        match self.format {
            SampleFormat::F32 => match self.f32_slice() {
                Some(s) => out.extend_from_slice(s),
                None => out.extend(self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            },
            SampleFormat::I16 => match self.i16_slice() {
                Some(s) => out.extend(s.iter().map(|&v| i16_to_f32(v))),
                None => out.extend(self.bytes.chunks_exact(2).map(|b| i16_to_f32(i16::from_le_bytes([b[0], b[1]])))),
            },
            SampleFormat::I32 => match self.i32_slice() {
                Some(s) => out.extend(s.iter().map(|&v| i32_to_f32(v))),
                None => out.extend(
                    self.bytes.chunks_exact(4).map(|b| i32_to_f32(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
                ),
            },
        }
    }

    /// The index and value of the first NaN or infinite sample, if any (only `f32` can hold one).
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        if self.format != SampleFormat::F32 {
            return None;
        }
        self.as_f32().iter().copied().enumerate().find(|(_, v)| !v.is_finite())
    }

    /// Whether `other` has the same format, rate and channel count.
    pub fn same_layout(&self, other: &AudioBuffer) -> bool {
        self.format == other.format && self.sample_rate == other.sample_rate && self.channels == other.channels
    }

    /// Appends `other` after `self` (one copy of both). Layouts must match.
    pub fn concat(&self, other: &AudioBuffer) -> Result<AudioBuffer, AudioError> {
        if !self.same_layout(other) {
            return Err(AudioError::Incompatible { left: self.describe(), right: other.describe() });
        }
        if other.is_empty() {
            return Ok(self.clone());
        }
        if self.is_empty() {
            return Ok(other.clone());
        }
        let mut joined = Vec::with_capacity(self.bytes.len() + other.bytes.len());
        joined.extend_from_slice(&self.bytes);
        joined.extend_from_slice(&other.bytes);
        Ok(self.with_bytes(Bytes::from(joined)))
    }

    /// Sums buffers of the same rate and channel count sample by sample (how several connections
    /// into one audio port are mixed), as wide as the longest input. Buffers of one integer
    /// format are summed exactly in that format, saturating; otherwise the result is `f32`, with
    /// integer inputs scaled to [-1, 1] first.
    pub fn mix(buffers: &[AudioBuffer]) -> Result<AudioBuffer, AudioError> {
        let first = buffers.first().expect("mix is only called with at least one buffer");
        if buffers.len() == 1 {
            return Ok(first.clone());
        }
        if let Some(b) = buffers.iter().find(|b| b.sample_rate != first.sample_rate || b.channels != first.channels) {
            return Err(AudioError::Incompatible { left: first.describe(), right: b.describe() });
        }
        if buffers.iter().all(|b| b.format == first.format) {
            match first.format {
                SampleFormat::I16 => {
                    let sum = sum_integers(buffers, |b| {
                        b.bytes.chunks_exact(2).map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
                    });
                    let out =
                        sum.into_iter().map(|v| v.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16).collect();
                    return Ok(AudioBuffer::from_i16(out, first.sample_rate, first.channels));
                }
                SampleFormat::I32 => {
                    let sum = sum_integers(buffers, |b| {
                        b.bytes.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    });
                    let out =
                        sum.into_iter().map(|v| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32).collect();
                    return Ok(AudioBuffer::from_i32(out, first.sample_rate, first.channels));
                }
                SampleFormat::F32 => {}
            }
        }
        let mut acc: Vec<f32> = Vec::new();
        let mut scratch = Vec::new();
        for b in buffers {
            b.read_f32_into(&mut scratch);
            if scratch.len() > acc.len() {
                acc.resize(scratch.len(), 0.0);
            }
            for (a, s) in acc.iter_mut().zip(&scratch) {
                *a += *s;
            }
        }
        Ok(AudioBuffer::from_f32(acc, first.sample_rate, first.channels))
    }
}

/// The sample-by-sample sum of `buffers`' integer samples (read by `samples`), as long as the
/// longest; an i64 holds the sum of 2^32 full-scale 32-bit samples.
fn sum_integers<'a, I: Iterator<Item = i64>>(
    buffers: &'a [AudioBuffer],
    samples: impl Fn(&'a AudioBuffer) -> I,
) -> Vec<i64> {
    let mut acc: Vec<i64> = Vec::new();
    for b in buffers {
        for (k, v) in samples(b).enumerate() {
            match acc.get_mut(k) {
                Some(a) => *a += v,
                None => acc.push(v),
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Bytes {
        Bytes::from(v.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>())
    }

    #[test]
    fn unaligned_samples_are_copied_once_to_aligned_memory_and_aligned_ones_kept() {
        let samples = [0.25f32, -0.5, 1.0];
        let mut shifted = vec![0u8];
        shifted.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        let odd = Bytes::from(shifted).slice(1..);
        let a = AudioBuffer::from_wire(odd, SampleFormat::F32, 16_000, 1, 3).unwrap();
        assert!(!a.is_aligned() && a.f32_slice().is_none());
        let aligned = a.into_aligned();
        assert_eq!(aligned.f32_slice(), Some(&samples[..]), "a view without a copy, same samples");

        let before = aligned.bytes().as_ptr();
        let kept = aligned.into_aligned();
        assert_eq!(kept.bytes().as_ptr(), before, "aligned samples are not copied");
    }

    #[test]
    fn from_wire_accepts_a_consistent_buffer() {
        let b = AudioBuffer::from_wire(f32_bytes(&[0.0, 0.5, -0.5, 1.0]), SampleFormat::F32, 16_000, 2, 4).unwrap();
        assert_eq!(b.frames(), 2);
        assert_eq!(b.num_samples(), 4);
        assert_eq!(&*b.as_f32(), &[0.0, 0.5, -0.5, 1.0]);
    }

    #[test]
    fn from_wire_rejects_length_mismatch_naming_both_sizes() {
        let err = AudioBuffer::from_wire(f32_bytes(&[0.0; 3]), SampleFormat::F32, 16_000, 1, 4).unwrap_err();
        assert!(matches!(err, AudioError::LengthMismatch { expected: 16, actual: 12, .. }), "{err:?}");
        assert!(err.to_string().contains("12 bytes"), "{err}");
    }

    #[test]
    fn from_wire_rejects_zero_rate_zero_channels_and_partial_frames() {
        let bytes = f32_bytes(&[0.0; 3]);
        assert_eq!(
            AudioBuffer::from_wire(bytes.clone(), SampleFormat::F32, 0, 1, 3).unwrap_err(),
            AudioError::ZeroSampleRate
        );
        assert_eq!(
            AudioBuffer::from_wire(bytes.clone(), SampleFormat::F32, 8_000, 0, 3).unwrap_err(),
            AudioError::BadChannelCount(0)
        );
        assert_eq!(
            AudioBuffer::from_wire(bytes, SampleFormat::F32, 8_000, 2, 3).unwrap_err(),
            AudioError::PartialFrame { num_samples: 3, channels: 2 }
        );
    }

    #[test]
    fn from_wire_survives_a_num_samples_that_would_overflow() {
        let err = AudioBuffer::from_wire(Bytes::new(), SampleFormat::F32, 8_000, 1, u64::MAX).unwrap_err();
        assert!(matches!(err, AudioError::LengthMismatch { .. }));
    }

    #[test]
    fn typed_vectors_are_wrapped_without_copying() {
        let samples = vec![0.25f32; 64];
        let ptr = samples.as_ptr() as *const u8;
        let b = AudioBuffer::from_f32(samples, 48_000, 1);
        assert_eq!(b.bytes().as_ptr(), ptr);
        assert_eq!(b.f32_slice().unwrap().as_ptr() as *const u8, ptr);
        let shared = b.clone();
        assert_eq!(shared.bytes().as_ptr(), ptr, "clones share the samples");
    }

    #[test]
    fn misaligned_f32_bytes_are_read_with_one_copy() {
        let mut raw = vec![0u8];
        raw.extend(f32_bytes(&[0.5, -0.25]));
        let bytes = Bytes::from(raw).slice(1..);
        let b = AudioBuffer::from_wire(bytes, SampleFormat::F32, 8_000, 1, 2).unwrap();
        if b.f32_slice().is_none() {
            assert!(matches!(b.as_f32(), Cow::Owned(_)));
        }
        assert_eq!(&*b.as_f32(), &[0.5, -0.25]);
    }

    #[test]
    fn integer_buffers_read_as_scaled_f32() {
        let b = AudioBuffer::from_i16(vec![i16::MIN, 0, 16_384], 8_000, 1);
        assert_eq!(&*b.as_f32(), &[-1.0, 0.0, 0.5]);
        let b = AudioBuffer::from_i32(vec![i32::MIN, 1 << 30], 8_000, 1);
        assert_eq!(&*b.as_f32(), &[-1.0, 0.5]);
    }

    #[test]
    fn non_finite_samples_are_found_with_their_index() {
        let b = AudioBuffer::from_f32(vec![0.0, 1.0, f32::NAN], 8_000, 1);
        let (i, v) = b.first_non_finite().unwrap();
        assert_eq!(i, 2);
        assert!(v.is_nan());
        assert!(AudioBuffer::from_f32(vec![0.0, 1.0], 8_000, 1).first_non_finite().is_none());
    }

    #[test]
    fn mix_sums_and_pads_to_the_longest_input() {
        let a = AudioBuffer::from_f32(vec![0.25, 0.25, 0.25], 8_000, 1);
        let b = AudioBuffer::from_i16(vec![16_384], 8_000, 1);
        let m = AudioBuffer::mix(&[a, b]).unwrap();
        assert_eq!(&*m.as_f32(), &[0.75, 0.25, 0.25]);
    }

    #[test]
    fn buffers_of_one_integer_format_mix_exactly_in_it_saturating() {
        let a = AudioBuffer::from_i16(vec![30_000, -30_000, 7, 1], 8_000, 1);
        let b = AudioBuffer::from_i16(vec![10_000, -10_000, -3], 8_000, 1);
        let m = AudioBuffer::mix(&[a, b]).unwrap();
        assert_eq!(m.format(), SampleFormat::I16);
        assert_eq!(m.i16_slice(), Some(&[32_767, -32_768, 4, 1][..]));
        let c = AudioBuffer::from_i32(vec![16_777_217, i32::MAX], 8_000, 1);
        let d = AudioBuffer::from_i32(vec![-1, 1], 8_000, 1);
        let m = AudioBuffer::mix(&[c, d]).unwrap();
        assert_eq!(m.i32_slice(), Some(&[16_777_216, i32::MAX][..]), "exact where f32 would round");
    }

    #[test]
    fn mix_refuses_different_rates() {
        let a = AudioBuffer::from_f32(vec![0.0], 8_000, 1);
        let b = AudioBuffer::from_f32(vec![0.0], 16_000, 1);
        let err = AudioBuffer::mix(&[a, b]).unwrap_err();
        assert!(err.to_string().contains("8000 Hz") && err.to_string().contains("16000 Hz"), "{err}");
    }

    #[test]
    fn concat_joins_in_order() {
        let a = AudioBuffer::from_f32(vec![1.0, 2.0], 8_000, 1);
        let b = AudioBuffer::from_f32(vec![3.0], 8_000, 1);
        assert_eq!(&*a.concat(&b).unwrap().as_f32(), &[1.0, 2.0, 3.0]);
    }
}
