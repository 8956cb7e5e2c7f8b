//! The overlap-add FFT resampler of rubato's `Fft`, with the state that does not change between
//! streams shared instead of owned by each one.
//!
//! Each block of `block_in` input frames is zero-padded to twice its length, transformed,
//! multiplied by the spectrum of a windowed-sinc anti-aliasing filter, cut or zero-extended to
//! `block_out + 1` bins and transformed back; the first `block_out` output frames plus the
//! previous block's overlap are the output, the second half is the next overlap. The filter is
//! rubato's (its cutoff from `rubato::calculate_cutoff`, the Blackman-Harris² window from the
//! `windowfunctions` crate rubato uses), and so is the arithmetic, in the same order: the output
//! equals rubato's `Fft` sample for sample (`tests::the_output_is_rubatos`).
//!
//! Where the state lives, and why:
//! - per rate pair and quality, built once and shared by every stream ([`Design`]): the filter's
//!   spectrum and the two FFT plans (twiddles);
//! - per thread ([`SCRATCH`]): the transform buffers, which hold nothing between blocks;
//! - per stream ([`Fft`]): the overlap, `block_out` frames per channel (2 KiB at 48 → 16 kHz).
//!
//! Every design and every stream's buffers count in one server-wide total ([`Held`]), refused past
//! [`HELD_MAX_BYTES`]: a rate pair whose ratio reduces to large numbers (383 999 → 384 000 Hz)
//! needs a design of about 50 MB and 30 MB of buffers per stream, which no request's memory
//! limit sees, and a dozen such streams took the server's RSS from 106 to 578 MiB.
//!
//! rubato's `Fft` owns all of it, about 100 KB per stream at 48 → 16 kHz `high`, so 200 streams
//! touched 20 MB per second of audio and the state fell out of cache between a stream's chunks:
//! `cargo bench --bench nodes -- 1s_high_streamed` measured 580 µs per second of audio for 200
//! resamplers served in turn against 230 µs for one warm one. BENCHMARKS.md (issue 16) has the
//! figures with shared state.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rubato::{WindowFunction, calculate_cutoff};
use windowfunctions::{Symmetry, WindowFunction as Window, window};

use super::Quality;

/// What a rate pair and quality share: block lengths, the filter's spectrum and the FFT plans.
pub(super) struct Design {
    /// Input frames per block.
    pub block_in: usize,
    /// Output frames per block.
    pub block_out: usize,
    /// The filter's spectrum, `block_in + 1` bins, scaled by `1 / (2 × block_in)` (the inverse
    /// transform is not normalised).
    filter: Vec<Complex<f32>>,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    /// The design's bytes, counted in the server-wide total while it lives.
    _held: Held,
}

/// The most bytes the server's resamplers hold at once: designs (cached or in use) and
/// streams' buffers. A design or stream that would pass it is refused (RESOURCE_LIMIT, limit
/// [`HELD_LIMIT`]); every rate pair of common rates needs well under 1 MB.
pub const HELD_MAX_BYTES: usize = 512 << 20;
/// The limit named when [`HELD_MAX_BYTES`] refuses a resampler (a
/// `remotemedia_limit_rejections_total` label).
pub const HELD_LIMIT: &str = "resampler_memory_bytes";

static HELD: AtomicUsize = AtomicUsize::new(0);

/// Bytes counted in the server-wide total of [`HELD_MAX_BYTES`] for as long as this lives.
pub(super) struct Held(usize);

impl Held {
    /// Counts `bytes` in, or says how many are held already when that would pass the maximum.
    pub(super) fn take(bytes: usize) -> Result<Self, usize> {
        HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
            now.checked_add(bytes).filter(|total| *total <= HELD_MAX_BYTES)
        })
        .map(|_| Self(bytes))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Why no design could be had.
#[derive(Debug)]
pub(super) enum DesignError {
    /// It would take the resamplers past [`HELD_MAX_BYTES`]: it `needs` bytes, `held` are taken.
    Full { needs: usize, held: usize },
    /// The transforms could not be planned.
    Plan(String),
}

/// Memory a design of these block lengths holds, over-estimated: the spectrum, and for the
/// plans 4 complex values per block frame (a block length with a large prime factor is planned
/// with Rader's or Bluestein's algorithm, whose inner transforms are longer than the block). The
/// server's RSS grew by 50 MB for 383 999 → 384 000 Hz (blocks of 1 535 996 and 1 536 000
/// frames; estimate 105 MiB) and by 92 MB for 767 999 → 1 000 Hz (3 071 996 and 4 000;
/// estimate 117 MiB).
fn design_bytes(block_in: usize, block_out: usize) -> usize {
    (block_in + 1 + 4 * (block_in + block_out)) * std::mem::size_of::<Complex<f32>>()
}

impl Design {
    /// Plans the transforms of `2 × block_in` and `2 × block_out` points and the filter. Takes
    /// about as long as resampling a second of audio at 48 → 16 kHz, and about a second for a
    /// co-prime pair such as 767 881 → 1 000 Hz (blocks of 1.5 million frames).
    fn new(block_in: usize, block_out: usize, held: Held) -> Result<Self, String> {
        let window = WindowFunction::BlackmanHarris2;
        let cutoff = if block_in > block_out {
            calculate_cutoff::<f32>(block_out, window) * block_out as f32 / block_in as f32
        } else {
            calculate_cutoff::<f32>(block_in, window)
        };
        let mut taps = windowed_sinc(block_in, cutoff);
        let scale = (2 * block_in) as f32;
        taps.iter_mut().for_each(|t| *t /= scale);
        taps.resize(2 * block_in, 0.0);
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(2 * block_in);
        let inverse = planner.plan_fft_inverse(2 * block_out);
        let mut filter = forward.make_output_vec();
        forward.process(&mut taps, &mut filter).map_err(|e| e.to_string())?;
        Ok(Self { block_in, block_out, filter, forward, inverse, _held: held })
    }

    /// Output frames the filter delays the signal by.
    pub fn delay(&self) -> usize {
        self.block_out / 2
    }

    /// Memory the design holds ([`design_bytes`]).
    fn bytes(&self) -> usize {
        design_bytes(self.block_in, self.block_out)
    }

    /// Whether a thread should let go of its transform buffers after a block of this design
    /// rather than keep them for the next: a long design's buffers are megabytes, which every
    /// runtime thread that ran one would otherwise hold for good.
    fn scratch_is_large(&self) -> bool {
        self.block_in + self.block_out > SCRATCH_KEPT_FRAMES
    }
}

/// `n` taps of a sinc with relative cutoff `cutoff`, centred on tap `n / 2`, under a periodic
/// Blackman-Harris² window, normalised to unit DC gain. Computed as rubato's `make_sincs` does
/// with an oversampling factor of 1, in `f32`, so the filter is bit for bit rubato's.
fn windowed_sinc(n: usize, cutoff: f32) -> Vec<f32> {
    let sinc = |x: f32| if x == 0.0 { 1.0 } else { (x * std::f32::consts::PI).sin() / (x * std::f32::consts::PI) };
    let centre = (n / 2) as f32;
    let taps: Vec<f32> = window::<f64>(n, Window::BlackmanHarris, Symmetry::Periodic)
        .enumerate()
        .map(|(i, w)| {
            let w = w as f32;
            w * w * sinc((i as f32 - centre) * cutoff)
        })
        .collect();
    let sum: f32 = taps.iter().sum();
    taps.into_iter().map(|t| t / sum).collect()
}

/// Designs kept for reuse, keyed by rates and quality, each with the tick of its last use.
#[derive(Default)]
struct Designs {
    map: HashMap<(u32, u32, Quality), (Arc<Design>, u64)>,
    tick: u64,
}

static DESIGNS: LazyLock<Mutex<Designs>> = LazyLock::new(Default::default);
/// Most designs kept, and their most bytes in all (an odd rate pair's design is tens of MB);
/// the least recently used go first. Streams hold their design, so eviction never frees one in
/// use; it only means the next stream at that pair plans again.
const DESIGNS_MAX: usize = 32;
const DESIGNS_MAX_BYTES: usize = 256 << 20;

/// The shared design for a rate pair and quality, planned on first use. Concurrent first uses
/// may each plan; the first to finish is kept. A new design that would take the resamplers past
/// [`HELD_MAX_BYTES`] first evicts the cached designs no stream uses, then is refused.
pub(super) fn design(input_rate: u32, output_rate: u32, quality: Quality) -> Result<Arc<Design>, DesignError> {
    let key = (input_rate, output_rate, quality);
    if let Some(found) = lookup(key) {
        return Ok(found);
    }
    let (block_in, block_out) = super::block_frames(input_rate, output_rate, quality);
    let needs = design_bytes(block_in, block_out);
    let held = match Held::take(needs) {
        Ok(held) => held,
        Err(_) => {
            evict_unused();
            Held::take(needs).map_err(|held| DesignError::Full { needs, held })?
        }
    };
    let built = Arc::new(Design::new(block_in, block_out, held).map_err(DesignError::Plan)?);
    let mut designs = DESIGNS.lock().unwrap_or_else(|e| e.into_inner());
    designs.tick += 1;
    let tick = designs.tick;
    let kept = designs.map.entry(key).or_insert_with(|| (built, tick)).0.clone();
    while designs.map.len() > DESIGNS_MAX
        || designs.map.values().map(|(d, _)| d.bytes()).sum::<usize>() > DESIGNS_MAX_BYTES
    {
        let oldest = designs.map.iter().filter(|(k, _)| **k != key).min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k);
        match oldest {
            Some(k) => designs.map.remove(&k),
            None => break,
        };
    }
    Ok(kept)
}

/// Drops the cached designs that no stream holds.
fn evict_unused() {
    let mut designs = DESIGNS.lock().unwrap_or_else(|e| e.into_inner());
    designs.map.retain(|_, (d, _)| Arc::strong_count(d) > 1);
}

fn lookup(key: (u32, u32, Quality)) -> Option<Arc<Design>> {
    let mut designs = DESIGNS.lock().unwrap_or_else(|e| e.into_inner());
    designs.tick += 1;
    let tick = designs.tick;
    let (design, used) = designs.map.get_mut(&key)?;
    *used = tick;
    Some(design.clone())
}

/// Longest blocks (input and output frames together) whose transform buffers a thread keeps:
/// 48 → 16 kHz uses 2 048, an odd rate pair such as 44 101 → 16 000 Hz 240 404.
const SCRATCH_KEPT_FRAMES: usize = 1 << 15;

/// Transform buffers, shared by every stream a thread runs. They only grow, to the largest
/// design the thread has used, so after the first block nothing is allocated; those of designs
/// longer than [`SCRATCH_KEPT_FRAMES`] are freed after each block.
#[derive(Default)]
struct Scratch {
    time_in: Vec<f32>,
    spectrum_in: Vec<Complex<f32>>,
    spectrum_out: Vec<Complex<f32>>,
    time_out: Vec<f32>,
    forward: Vec<Complex<f32>>,
    inverse: Vec<Complex<f32>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Floats and complex values this thread's transform buffers hold now.
#[cfg(test)]
pub(super) fn scratch_held() -> usize {
    SCRATCH.with_borrow(|s| {
        s.time_in.capacity()
            + s.time_out.capacity()
            + s.spectrum_in.capacity()
            + s.spectrum_out.capacity()
            + s.forward.capacity()
            + s.inverse.capacity()
    })
}

/// `v[..len]`, grown with zeros first if it is shorter.
fn at_least<T: Clone + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// One stream's resampler: a shared [`Design`] and this stream's overlap.
pub(super) struct Fft {
    design: Arc<Design>,
    channels: usize,
    /// The second half of each channel's last inverse transform, `block_out` frames per
    /// channel, channel after channel.
    overlap: Vec<f32>,
}

impl Fft {
    pub fn new(design: Arc<Design>, channels: usize) -> Self {
        let overlap = vec![0.0; design.block_out * channels];
        Self { design, channels, overlap }
    }

    pub fn design(&self) -> &Design {
        &self.design
    }

    /// Resamples one block: `input` holds at most `block_in` interleaved frames (fewer are
    /// padded with silence, none is a block of silence), `output` receives exactly `block_out`
    /// interleaved frames.
    pub fn block(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), String> {
        let d = &*self.design;
        let ch = self.channels;
        debug_assert!(input.len() <= d.block_in * ch && output.len() == d.block_out * ch);
        // Bins kept: all of the input's when upsampling (the rest stay zero), the output's
        // when downsampling (the filter has already removed what lies above).
        let kept = if d.block_in < d.block_out { d.block_in + 1 } else { d.block_out };
        SCRATCH.with_borrow_mut(|s| {
            let time_in = at_least(&mut s.time_in, 2 * d.block_in);
            let spectrum_in = at_least(&mut s.spectrum_in, d.block_in + 1);
            let spectrum_out = at_least(&mut s.spectrum_out, d.block_out + 1);
            let time_out = at_least(&mut s.time_out, 2 * d.block_out);
            let scratch_fw = at_least(&mut s.forward, d.forward.get_scratch_len());
            let scratch_inv = at_least(&mut s.inverse, d.inverse.get_scratch_len());
            for c in 0..ch {
                let frames = input.len() / ch;
                if ch == 1 {
                    time_in[..frames].copy_from_slice(input);
                } else {
                    for (t, x) in time_in.iter_mut().zip(input.iter().skip(c).step_by(ch)) {
                        *t = *x;
                    }
                }
                time_in[frames..].fill(0.0);
                d.forward.process_with_scratch(time_in, spectrum_in, scratch_fw).map_err(|e| e.to_string())?;
                for ((o, i), f) in spectrum_out.iter_mut().zip(&spectrum_in[..kept]).zip(&d.filter) {
                    *o = *i * *f;
                }
                spectrum_out[kept..].fill(Complex::default());
                d.inverse.process_with_scratch(spectrum_out, time_out, scratch_inv).map_err(|e| e.to_string())?;
                let overlap = &mut self.overlap[c * d.block_out..(c + 1) * d.block_out];
                for (k, o) in output.iter_mut().skip(c).step_by(ch).enumerate() {
                    *o = time_out[k] + overlap[k];
                }
                overlap.copy_from_slice(&time_out[d.block_out..]);
            }
            if d.scratch_is_large() {
                *s = Scratch::default();
            }
            Ok(())
        })
    }
}
