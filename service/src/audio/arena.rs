//! Reusable output memory for a node's hot path.
//!
//! An [`OutputArena`] writes samples into one `BytesMut` region and hands each output out as a
//! frozen, shared slice. Once the previous outputs have been dropped (encoded and sent), the
//! next `reserve` reclaims the same memory, so a stream in steady state allocates nothing.

use bytes::BytesMut;

use super::{AudioBuffer, SampleFormat, f32_to_i16, f32_to_i32};

/// Starts of outputs are kept at cache-line alignment, so typed views never need a copy and
/// vector loads never split a line.
const ALIGN: usize = 64;

#[derive(Default)]
pub struct OutputArena {
    buf: BytesMut,
}

impl OutputArena {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `samples` (interleaved `f32`) as a buffer of `format`, rounding and saturating for
    /// the integer formats.
    pub fn write(&mut self, samples: &[f32], format: SampleFormat, sample_rate: u32, channels: u32) -> AudioBuffer {
        match format {
            SampleFormat::F32 => self.write_map(samples, format, sample_rate, channels, |s| s),
            SampleFormat::I16 => self.write_map(samples, format, sample_rate, channels, f32_to_i16),
            SampleFormat::I32 => self.write_map(samples, format, sample_rate, channels, f32_to_i32),
        }
    }

    /// Writes `f(s)` for every sample of `src` as a buffer of `format` (whose sample type must be
    /// `T`), straight into fresh memory: nothing is zeroed first and nothing is copied twice.
    pub fn write_map<S: Copy, T: bytemuck::Pod>(
        &mut self,
        src: &[S],
        format: SampleFormat,
        sample_rate: u32,
        channels: u32,
        f: impl Fn(S) -> T,
    ) -> AudioBuffer {
        debug_assert_eq!(size_of::<T>(), format.bytes_per_sample(), "sample type must match the format");
        if cfg!(target_endian = "big") {
            return self.write_typed(src.len(), format, sample_rate, channels, |out: &mut [T]| {
                for (o, s) in out.iter_mut().zip(src) {
                    *o = f(*s);
                }
            });
        }
        let len = src.len() * size_of::<T>();
        self.reserve_aligned(len);
        let spare = self.buf.spare_capacity_mut();
        assert!(spare.len() >= len && (spare.as_ptr() as usize).is_multiple_of(align_of::<T>()));
        // SAFETY: the spare capacity holds at least `len` bytes (asserted), starts at an address
        // aligned for `T` (asserted; reserve_aligned aligns to 16), and `MaybeUninit<T>` has the
        // layout of `T`, so it may be viewed as `src.len()` uninitialised `T`s.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<std::mem::MaybeUninit<T>>(), src.len()) };
        map_into(dst, src, f);
        // SAFETY: map_into initialised every element, that is all `len` bytes.
        unsafe { self.buf.set_len(len) };
        self.freeze(format, sample_rate, channels)
    }

    /// Copies little-endian sample bytes of `format` into a new buffer.
    pub fn write_bytes(&mut self, bytes: &[u8], format: SampleFormat, sample_rate: u32, channels: u32) -> AudioBuffer {
        self.reserve_aligned(bytes.len());
        self.buf.extend_from_slice(bytes);
        self.freeze(format, sample_rate, channels)
    }

    /// `audio` itself when its samples sit at an address aligned for their type, else a copy
    /// written here ([`AudioBuffer::into_aligned`] without an allocation per call).
    pub fn aligned(&mut self, audio: AudioBuffer) -> AudioBuffer {
        if audio.is_aligned() {
            return audio;
        }
        let copy = self.write_bytes(audio.bytes(), audio.format(), audio.sample_rate(), audio.channels());
        debug_assert!(copy.is_aligned());
        copy
    }

    /// Gives `fill` `len` zeroed bytes to fill with little-endian samples of `format`.
    pub fn write_raw(
        &mut self,
        len: usize,
        format: SampleFormat,
        sample_rate: u32,
        channels: u32,
        fill: impl FnOnce(&mut [u8]),
    ) -> AudioBuffer {
        fill(self.aligned_region(len));
        self.freeze(format, sample_rate, channels)
    }

    /// Gives `fill` a zeroed slice of `count` samples of type `T` to write, and returns it as a
    /// buffer of `format` (whose sample type must be `T`).
    pub fn write_typed<T: bytemuck::Pod>(
        &mut self,
        count: usize,
        format: SampleFormat,
        sample_rate: u32,
        channels: u32,
        fill: impl FnOnce(&mut [T]),
    ) -> AudioBuffer {
        debug_assert_eq!(size_of::<T>(), format.bytes_per_sample(), "sample type must match the format");
        let region = self.aligned_region(count * size_of::<T>());
        match bytemuck::try_cast_slice_mut::<u8, T>(region) {
            Ok(typed) if cfg!(target_endian = "little") => fill(typed),
            _ => {
                // Only on big-endian targets: write through a temporary and store little-endian.
                let mut tmp = vec![T::zeroed(); count];
                fill(&mut tmp);
                for (dst, src) in region.chunks_exact_mut(size_of::<T>()).zip(&tmp) {
                    dst.copy_from_slice(bytemuck::bytes_of(src));
                    dst.reverse();
                }
            }
        }
        self.freeze(format, sample_rate, channels)
    }

    /// Makes room for `len` bytes starting at an aligned address (reclaiming memory of dropped
    /// outputs when it can).
    fn reserve_aligned(&mut self, len: usize) {
        debug_assert!(self.buf.is_empty(), "the previous output was frozen");
        self.buf.reserve(len + ALIGN);
        let misalign = self.buf.as_ptr() as usize % ALIGN;
        if misalign != 0 {
            // Skip to the next aligned address; the skipped bytes are dropped with their handle.
            let pad = ALIGN - misalign;
            self.buf.resize(pad, 0);
            drop(self.buf.split_to(pad));
        }
    }

    /// Makes the arena's pending region `len` zeroed bytes starting at an aligned address.
    fn aligned_region(&mut self, len: usize) -> &mut [u8] {
        self.reserve_aligned(len);
        self.buf.resize(len, 0);
        &mut self.buf[..]
    }

    fn freeze(&mut self, format: SampleFormat, sample_rate: u32, channels: u32) -> AudioBuffer {
        let bytes = self.buf.split().freeze();
        let count = (bytes.len() / format.bytes_per_sample()) as u64;
        AudioBuffer::from_wire(bytes, format, sample_rate, channels, count)
            .expect("the arena writes whole frames of a valid layout")
    }
}

/// `dst[i] = f(src[i])`, compiled twice on x86_64: for AVX2 (picked at run time when the CPU
/// has it) and for the baseline, so the same scalar code vectorises as wide as the machine allows.
fn map_into<S: Copy, T>(dst: &mut [std::mem::MaybeUninit<T>], src: &[S], f: impl Fn(S) -> T) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { map_into_avx2(dst, src, f) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        d.write(f(*s));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn map_into_avx2<S: Copy, T>(dst: &mut [std::mem::MaybeUninit<T>], src: &[S], f: impl Fn(S) -> T) {
    for (d, s) in dst.iter_mut().zip(src) {
        d.write(f(*s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_aligned_and_typed() {
        let mut arena = OutputArena::new();
        let a = arena.write(&[0.5, -0.5, 1.0], SampleFormat::I16, 8_000, 1);
        let b = arena.write(&[0.25, 0.75], SampleFormat::F32, 8_000, 2);
        assert_eq!(a.i16_slice().unwrap(), &[16_384, -16_384, i16::MAX]);
        assert_eq!(b.f32_slice().unwrap(), &[0.25, 0.75], "aligned, so a zero-copy view exists");
        assert_eq!(b.bytes().as_ptr() as usize % ALIGN, 0);
    }

    #[test]
    fn memory_is_reused_once_outputs_are_dropped() {
        let mut arena = OutputArena::new();
        let first = arena.write(&[0.0; 256], SampleFormat::F32, 8_000, 1);
        let ptr = first.bytes().as_ptr();
        drop(first);
        let second = arena.write(&[1.0; 256], SampleFormat::F32, 8_000, 1);
        assert_eq!(second.bytes().as_ptr(), ptr, "the region was reclaimed");
        let third = arena.write(&[2.0; 256], SampleFormat::F32, 8_000, 1);
        assert_ne!(third.bytes().as_ptr(), second.bytes().as_ptr(), "a live output is never overwritten");
        assert!(second.f32_slice().unwrap().iter().all(|&s| s == 1.0));
    }
}
