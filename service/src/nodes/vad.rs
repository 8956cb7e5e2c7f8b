//! `VADNode`: voice activity detection from frame energy and spectral shape.
//!
//! The channel average first goes through a DC blocker (a one-pole high-pass at 5 Hz, started
//! at the first sample's level so it has no start-up transient), so a DC offset or a slow drift
//! (artefacts of cheap converters and of signal conditioning) changes none of the features; a
//! per-frame mean would also remove real low-frequency content, the rumble the band ratio below
//! relies on. Each frame (10, 20 or 30 ms) is speech-like when all of these hold:
//! - its level is at least `threshold_db` (RMS, dBFS);
//! - its energy in the speech band (150 Hz – 4 kHz) stands at least 6 dB above the noise floor
//!   (minimum statistics): the lowest band level among the last 1.5 s of frames judged not to be
//!   speech. Measured over a band of many FFT bins, stationary noise of any colour (white, pink,
//!   brown, hum) varies little from frame to frame, so it never rises 6 dB above its own floor,
//!   and a long utterance does not lift the floor to its own level. Until a frame has been judged
//!   not to be speech there is no floor, so speech at the very first sample is found; a stream
//!   that starts with 3 s of speech-like sound and no pause (a steady buzz, say) takes the lowest
//!   band level of those 3 s as its floor instead, so a background present from the start is
//!   not speech for ever;
//! - its spectrum in that band is not flat (spectral flatness ≤ 0.3): voiced speech is harmonic
//!   (median flatness about 0.02 in recorded speech), while white noise (about 0.55), pink noise
//!   (about 0.4) and clicks are flat;
//! - most of its energy (≥ 30 %) lies in that band, which rules out hum and rumble.
//!
//! A segment opens after `min_speech_ms` of consecutive speech-like frames (starting at the
//! first of them) and closes after `min_silence_ms` without one (ending at the last speech-like
//! frame). `speech_pad_ms` then widens it on both sides, as neural VADs do, without letting two
//! segments overlap or a segment reach outside the audio. Segments carry their start, end and
//! mean level. In a stream a segment is emitted on the chunk where it has closed and its padding
//! has been seen, and an open one is emitted when the stream is flushed. The audio itself passes
//! through untouched.
//!
//! The spectrum comes from a real FFT (`realfft`, the real-input front end of `rustfft`).

use std::collections::VecDeque;
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex, num_complex::Complex};
use serde_json::{Value, json};

use super::{
    Figure, Figures, INPUT, Node, NodeContext, NodeError, NodeFactory, NodeInputs, NodeOutputs, NodeSpec, OUTPUT,
    ParamSpec, Params, PortSpec, PortValue, Ports, check,
};

/// Margin above the noise floor a speech frame needs, in dB.
const NOISE_MARGIN_DB: f32 = 6.0;
/// How far back the noise floor looks among non-speech frames.
const NOISE_WINDOW_MS: u32 = 1_500;
/// How long a stream may be speech-like from its start before its quietest frames become the
/// floor.
const ADAPT_WINDOW_MS: u32 = 3_000;
/// Longest padding added around a segment, in ms.
const MAX_PAD_MS: u32 = 2_000;
/// Cut-off of the DC blocker, in Hz: far below the speech band, above any drift.
const DC_CUTOFF_HZ: f32 = 5.0;
/// Flatness at or above which a frame is noise-like.
const MAX_FLATNESS: f32 = 0.3;
/// Share of the frame's energy that must lie in the speech band.
const MIN_BAND_RATIO: f32 = 0.3;
const BAND_LOW_HZ: f32 = 150.0;
const BAND_HIGH_HZ: f32 = 4_000.0;
/// Lowest input rate: the speech band reaches 4 kHz.
const MIN_RATE: u32 = 8_000;
/// Highest input rate, in Hz (the resampler's highest).
const MAX_RATE: u32 = super::resample::MAX_RATE;
/// Level reported for digital silence.
const FLOOR_DB: f32 = -120.0;

/// Measurements of one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameFeatures {
    /// RMS level of the frame, dBFS.
    pub energy_db: f32,
    /// Level of the frame's speech band, in dB relative to the same scale.
    pub band_db: f32,
    pub flatness: f32,
    pub band_ratio: f32,
}

/// Per-frame spectral analysis with preallocated buffers.
struct Analyzer {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    band: std::ops::Range<usize>,
}

impl Analyzer {
    fn new(frame_len: usize, sample_rate: u32) -> Self {
        let n = frame_len.next_power_of_two().max(64);
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
        let window = (0..frame_len)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / frame_len as f32).cos())
            .collect();
        let bin_hz = sample_rate as f32 / n as f32;
        let nyquist_bin = n / 2;
        let lo = ((BAND_LOW_HZ / bin_hz).ceil() as usize).clamp(1, nyquist_bin);
        let hi =
            ((BAND_HIGH_HZ.min(sample_rate as f32 / 2.0) / bin_hz).floor() as usize).clamp(lo + 1, nyquist_bin + 1);
        Self {
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            window,
            band: lo..hi,
        }
    }

    fn analyze(&mut self, frame: &[f32]) -> FrameFeatures {
        let mean_square = frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32;
        let energy_db = if mean_square > 0.0 { (10.0 * mean_square.log10()).max(FLOOR_DB) } else { FLOOR_DB };
        for ((dst, s), w) in self.input.iter_mut().zip(frame).zip(&self.window) {
            *dst = s * w;
        }
        let filled = frame.len().min(self.input.len());
        self.input[filled..].fill(0.0);
        if self.fft.process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch).is_err() {
            return FrameFeatures { energy_db, band_db: FLOOR_DB, flatness: 1.0, band_ratio: 0.0 };
        }
        // A tiny offset keeps ln() finite for empty bins without changing real spectra.
        const EPS: f32 = 1e-20;
        let mut total = 0.0f32;
        let (mut band_sum, mut band_log) = (0.0f32, 0.0f32);
        for (k, c) in self.spectrum.iter().enumerate().skip(1) {
            let p = c.norm_sqr();
            total += p;
            if self.band.contains(&k) {
                band_sum += p;
                band_log += (p + EPS).ln();
            }
        }
        let bins = self.band.len() as f32;
        let flatness = if band_sum > 0.0 { ((band_log / bins).exp() / (band_sum / bins + EPS)).min(1.0) } else { 1.0 };
        let band_ratio = if total > 0.0 { band_sum / total } else { 0.0 };
        // The band's share of the frame's mean square, on the same dB scale as `energy_db`.
        let band_db = if band_sum > 0.0 { (10.0 * (mean_square * band_ratio).log10()).max(FLOOR_DB) } else { FLOOR_DB };
        FrameFeatures { energy_db, band_db, flatness, band_ratio }
    }
}

/// A closed (or flushed) speech segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub start_s: f64,
    pub end_s: f64,
    pub energy_db: f64,
}

impl Segment {
    fn to_json(self) -> Value {
        json!({ "start_s": self.start_s, "end_s": self.end_s, "energy_db": self.energy_db })
    }
}

/// The minimum of the last `len` values pushed (a monotonic queue: O(1) amortised per value).
struct SlidingMin {
    len: u64,
    pushed: u64,
    /// (index, value), values increasing from front to back.
    queue: VecDeque<(u64, f32)>,
}

impl SlidingMin {
    fn new(len: usize) -> Self {
        Self { len: len.max(1) as u64, pushed: 0, queue: VecDeque::with_capacity(len + 1) }
    }

    fn push(&mut self, value: f32) {
        while self.queue.back().is_some_and(|&(_, v)| v >= value) {
            self.queue.pop_back();
        }
        self.queue.push_back((self.pushed, value));
        self.pushed += 1;
        while self.queue.front().is_some_and(|&(i, _)| i + self.len < self.pushed) {
            self.queue.pop_front();
        }
    }

    /// The minimum of the window, once it has been filled at least once.
    fn full_min(&self) -> Option<f32> {
        (self.pushed >= self.len).then(|| self.min()).flatten()
    }

    fn min(&self) -> Option<f32> {
        self.queue.front().map(|&(_, v)| v)
    }
}

/// A one-pole DC blocker, `y[n] = x[n] - x[n-1] + r·y[n-1]`, started at the first sample's
/// level so a constant offset gives exactly zero from the start.
struct DcBlocker {
    r: f32,
    last_in: Option<f32>,
    last_out: f32,
}

impl DcBlocker {
    fn new(sample_rate: u32) -> Self {
        let r = (-2.0 * std::f32::consts::PI * DC_CUTOFF_HZ / sample_rate as f32).exp();
        Self { r, last_in: None, last_out: 0.0 }
    }

    fn filter(&mut self, x: f32) -> f32 {
        let previous = *self.last_in.get_or_insert(x);
        let y = x - previous + self.r * self.last_out;
        self.last_in = Some(x);
        self.last_out = y;
        y
    }
}

/// A closed segment waiting until its padding has been seen, in samples.
#[derive(Debug, Clone, Copy)]
struct Closed {
    start: u64,
    end: u64,
    energy_db: f64,
}

/// Segmentation state for one stream.
struct Detector {
    sample_rate: u32,
    channels: u32,
    frame_len: usize,
    analyzer: Analyzer,
    dc: DcBlocker,
    /// Mono samples of the frame being filled (after the DC blocker).
    frame: Vec<f32>,
    /// Frames analysed so far.
    frames_done: u64,
    /// Mono samples of the frames analysed so far.
    samples_done: u64,
    /// Band levels of recent non-speech frames: the noise floor.
    quiet: SlidingMin,
    /// Band levels of every recent frame: the floor of a stream with no non-speech frame yet.
    all: SlidingMin,
    min_speech_frames: u64,
    min_silence_frames: u64,
    threshold_db: f32,
    /// Padding added on each side of a segment, in samples.
    pad: u64,
    /// First frame of the current run of speech-like frames.
    run_start: Option<u64>,
    /// The open segment: first frame, last speech-like frame, summed mean squares and count.
    open: Option<(u64, u64, f64, u64)>,
    /// Closed segments whose end padding has not been seen yet.
    closing: VecDeque<Closed>,
    /// Where the last emitted segment ended (padding included), in samples.
    emitted_end: u64,
    ready: Vec<Segment>,
    last: Option<FrameFeatures>,
    speech_frames: u64,
}

impl Detector {
    fn new(cfg: &VadConfig, sample_rate: u32, channels: u32) -> Self {
        let frame_len = (sample_rate as usize * cfg.frame_ms as usize / 1_000).max(1);
        let frames_for = |ms: u32| u64::from(ms).div_ceil(u64::from(cfg.frame_ms)).max(1);
        Self {
            sample_rate,
            channels,
            frame_len,
            analyzer: Analyzer::new(frame_len, sample_rate),
            dc: DcBlocker::new(sample_rate),
            frame: Vec::with_capacity(frame_len),
            frames_done: 0,
            samples_done: 0,
            quiet: SlidingMin::new((NOISE_WINDOW_MS / cfg.frame_ms) as usize),
            all: SlidingMin::new((ADAPT_WINDOW_MS / cfg.frame_ms) as usize),
            min_speech_frames: frames_for(cfg.min_speech_ms),
            min_silence_frames: frames_for(cfg.min_silence_ms),
            threshold_db: cfg.threshold_db,
            pad: u64::from(sample_rate) * u64::from(cfg.speech_pad_ms) / 1_000,
            run_start: None,
            open: None,
            closing: VecDeque::with_capacity(4),
            emitted_end: 0,
            ready: Vec::with_capacity(8),
            last: None,
            speech_frames: 0,
        }
    }

    /// Mono samples seen so far, analysed or not.
    fn seen(&self) -> u64 {
        self.samples_done + self.frame.len() as u64
    }

    /// Adds interleaved samples, analysing every frame they complete.
    fn push(&mut self, samples: &[f32]) {
        let ch = self.channels as usize;
        let scale = 1.0 / ch as f32;
        for frame in samples.chunks_exact(ch) {
            let mono = if ch == 1 { frame[0] } else { frame.iter().sum::<f32>() * scale };
            self.frame.push(self.dc.filter(mono));
            if self.frame.len() == self.frame_len {
                self.finish_frame();
                self.samples_done += self.frame_len as u64;
                self.frame.clear();
            }
        }
        self.release(false);
    }

    /// The noise floor for the next frame, if one has been measured.
    fn noise_floor(&self) -> Option<f32> {
        self.quiet.min().or_else(|| self.all.full_min())
    }

    fn finish_frame(&mut self) {
        let f = self.analyzer.analyze(&self.frame);
        self.last = Some(f);
        let above_floor = self.noise_floor().is_none_or(|floor| f.band_db >= floor + NOISE_MARGIN_DB);
        let speech = f.energy_db >= self.threshold_db
            && above_floor
            && f.flatness <= MAX_FLATNESS
            && f.band_ratio >= MIN_BAND_RATIO;
        if !speech {
            // Only frames judged not to be speech feed the floor, so a long utterance does not
            // raise it to its own quietest syllables.
            self.quiet.push(f.band_db);
        }
        self.all.push(f.band_db);
        let i = self.frames_done;
        self.frames_done += 1;
        let power = 10f64.powf(f64::from(f.energy_db) / 10.0);

        if speech {
            self.speech_frames += 1;
            match &mut self.open {
                Some((_, last, sum, n)) => {
                    *last = i;
                    *sum += power;
                    *n += 1;
                }
                None => {
                    let start = *self.run_start.get_or_insert(i);
                    if i + 1 - start >= self.min_speech_frames {
                        self.open = Some((start, i, power, 1));
                        self.run_start = None;
                    }
                }
            }
        } else {
            self.run_start = None;
            if let Some((_, last, _, _)) = self.open
                && i - last >= self.min_silence_frames
            {
                self.close();
            }
        }
    }

    fn close(&mut self) {
        if let Some((start, last, sum, n)) = self.open.take() {
            let energy_db = 10.0 * (sum / n as f64).log10();
            let frame = self.frame_len as u64;
            self.closing.push_back(Closed {
                start: start * frame,
                end: ((last + 1) * frame).min(self.seen()),
                energy_db: (energy_db * 100.0).round() / 100.0,
            });
        }
    }

    /// Emits the closed segments whose end padding has been seen (all of them when `all`),
    /// padded on both sides but never overlapping each other, the open segment, or the end of
    /// the audio.
    fn release(&mut self, all: bool) {
        let seen = self.seen();
        let open_start = self.open.map(|(start, ..)| start * self.frame_len as u64);
        while let Some(c) = self.closing.front().copied() {
            let padded_end = c.end + self.pad;
            // Wait for the padding to be seen, and for a run of speech inside it to become a
            // segment (or not), so the padding never overlaps the next segment.
            let padding_seen = padded_end <= seen && self.run_start.is_none();
            if !all && open_start.is_none() && !padding_seen {
                break;
            }
            self.closing.pop_front();
            let mut end = padded_end.min(seen);
            if let Some(next) = self.closing.front().map(|n| n.start).or(open_start) {
                // Segments closer than twice the padding share the silence between them.
                end = end.min(c.end + (next - c.end).min(2 * self.pad) / 2);
            }
            let start = c.start.saturating_sub(self.pad).max(self.emitted_end).min(c.start);
            self.emitted_end = end;
            let rate = f64::from(self.sample_rate);
            self.ready.push(Segment { start_s: start as f64 / rate, end_s: end as f64 / rate, energy_db: c.energy_db });
        }
    }

    /// Analyses a final partial frame (if it is at least half a frame; the FFT pads it with
    /// silence), closes the open segment and emits every closed one.
    fn finish(&mut self) {
        let tail = self.frame.len();
        if tail * 2 >= self.frame_len {
            self.finish_frame();
        }
        self.close();
        self.samples_done += tail as u64;
        self.frame.clear();
        self.release(true);
    }

    fn take_segments(&mut self) -> Option<PortValue> {
        if self.ready.is_empty() {
            return None;
        }
        let list = self.ready.drain(..).map(Segment::to_json).collect();
        Some(PortValue::data(Value::Array(list)))
    }
}

#[derive(Debug, Clone, Copy)]
struct VadConfig {
    threshold_db: f32,
    frame_ms: u32,
    min_speech_ms: u32,
    min_silence_ms: u32,
    speech_pad_ms: u32,
}

/// Detects speech in `input`, passing the audio through on `output` and the segments on
/// `segments`.
pub struct VadNode {
    cfg: VadConfig,
    detector: Option<Detector>,
    /// The stream's rate, channels and format, fixed by its first chunk.
    layout: check::StreamLayout,
    converted: Vec<f32>,
}

impl Node for VadNode {
    fn process(&mut self, inputs: NodeInputs, _ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        let audio = check::audio_input(&inputs)?;
        if audio.sample_rate() < MIN_RATE {
            return Err(NodeError::unsupported_audio(format!(
                "input sample_rate {} Hz is below the {MIN_RATE} Hz the speech band needs; put an AudioResampleNode with \
                 output_rate {MIN_RATE} or more before it",
                audio.sample_rate(),
            ))
            .with_field("input.sample_rate"));
        }
        if audio.sample_rate() > MAX_RATE {
            // Each frame is one FFT of the frame's length: the rate bounds its plan and memory.
            return Err(NodeError::unsupported_audio(format!(
                "input sample_rate {} Hz is above the {MAX_RATE} Hz a VADNode takes; put an AudioResampleNode with \
                 output_rate {MAX_RATE} or less before it",
                audio.sample_rate(),
            ))
            .with_field("input.sample_rate"));
        }
        self.layout.check(audio)?;
        let det = match &mut self.detector {
            Some(d) => d,
            None => self.detector.insert(Detector::new(&self.cfg, audio.sample_rate(), audio.channels())),
        };
        match audio.f32_slice() {
            Some(s) => det.push(s),
            None => {
                audio.read_f32_into(&mut self.converted);
                det.push(&self.converted);
            }
        }
        let mut out = Ports::audio_output(audio.clone());
        if let Some(segments) = det.take_segments() {
            out.insert(SEGMENTS, segments);
        }
        Ok(out)
    }

    fn flush(&mut self, _ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        let segments = match &mut self.detector {
            Some(det) => {
                det.finish();
                det.take_segments().unwrap_or_else(|| PortValue::data(json!([])))
            }
            None => PortValue::data(json!([])),
        };
        Ok(Ports::new().with(SEGMENTS, segments))
    }

    fn is_heavy(&self, inputs: &NodeInputs) -> bool {
        // About 3 µs per frame: a second of 16 kHz audio takes ~100 µs. The first call also
        // plans the frame's FFT (milliseconds at the highest rates), so it runs off the runtime.
        self.detector.is_none() || inputs.samples() > super::INLINE_MAX_SAMPLES
    }

    fn custom_metrics(&self) -> Figures {
        let mut m = Figures::new();
        if let Some(d) = &self.detector {
            m.push(("frames", Figure::Count(d.frames_done)));
            m.push(("speech_frames", Figure::Count(d.speech_frames)));
            if let Some(f) = d.last {
                m.push(("last_frame_energy_db", Figure::Real(f.energy_db.into())));
                m.push(("last_frame_flatness", Figure::Real(f.flatness.into())));
            }
        }
        m
    }
}

pub(super) struct VadFactory;

impl NodeFactory for VadFactory {
    fn spec(&self) -> NodeSpec {
        NodeSpec::new("VADNode", "Voice activity detection from frame energy and spectral shape.")
            .alias("VAD")
            .details(DETAILS)
            .param(
                ParamSpec::number("threshold_db", -100.0, 0.0)
                    .default(-30.0)
                    .unit("dBFS")
                    .describe("quietest frame level (RMS) that may be speech"),
            )
            .param(ParamSpec::integer_choice("frame_ms", &[10, 20, 30]).default(30).unit("ms").describe("analysis frame"))
            .param(
                ParamSpec::integer("min_speech_ms", 0, 10_000)
                    .default(90)
                    .unit("ms")
                    .describe("speech must last this long to open a segment"),
            )
            .param(
                ParamSpec::integer("min_silence_ms", 0, 10_000)
                    .default(300)
                    .unit("ms")
                    .describe("hangover: silence this long closes a segment"),
            )
            .param(
                ParamSpec::integer("speech_pad_ms", 0, i64::from(MAX_PAD_MS))
                    .default(0)
                    .unit("ms")
                    .describe("speech kept before and after each segment"),
            )
            .input(PortSpec::audio(INPUT, "audio at 8 to 768 kHz; channels are averaged"))
            .output(PortSpec::audio(OUTPUT, "the input audio, unchanged and uncopied"))
            .output(PortSpec::data(SEGMENTS, "speech segments: `[{\"start_s\", \"end_s\", \"energy_db\"}]`, seconds from the start of the input and mean level in dBFS"))
    }

    fn create(&self, p: &Params) -> Box<dyn Node> {
        let cfg = VadConfig {
            threshold_db: p.f64("threshold_db") as f32,
            frame_ms: p.u32("frame_ms"),
            min_speech_ms: p.u32("min_speech_ms"),
            min_silence_ms: p.u32("min_silence_ms"),
            speech_pad_ms: p.u32("speech_pad_ms"),
        };
        Box::new(VadNode { cfg, detector: None, layout: check::StreamLayout::default(), converted: Vec::new() })
    }
}

/// The output port carrying the segments.
pub const SEGMENTS: &str = "segments";

/// The node's behaviour, for `docs/nodes.md`.
const DETAILS: &str = "Each frame (channels averaged, after a 5 Hz DC blocker, so a DC offset changes \
nothing) counts as speech when its level is at least `threshold_db`, its energy in the 150 Hz – 4 kHz band \
is at least 6 dB above the noise floor, its spectrum in that band is not flat (spectral flatness ≤ 0.3, \
from a real FFT), and at least 30 % of its energy lies in that band. So steady noise of any colour is not \
speech, and neither is hum. The noise floor is the lowest band level among the last 1.5 s of non-speech \
frames; until a frame has been judged non-speech there is none, so speech at the first sample is found. A \
stream that starts with 3 s of speech-like sound and no pause at all (a steady buzz) takes the quietest \
level of those 3 s as its floor, so a background present from the start does not stay speech. A sudden \
rise of a noise-like background is caught by the flatness test at once. Unvoiced sounds at the edge of a \
word (a leading \"s\" or \"th\") are noise-like, so a segment may start or end up to one such sound inside \
the speech.

A segment starts at the first of `min_speech_ms` of consecutive speech frames and ends at the last speech \
frame before `min_silence_ms` of non-speech; `speech_pad_ms` then widens it on both sides, never past the \
audio's ends, and two segments closer than twice the padding share the silence between them. In a stream, \
a segment is emitted with the chunk on which it has closed and its padding has been seen, and an open one \
when the stream closes; `ExecutePipeline` always returns `segments` (possibly empty). Segments are \
identical however the audio is chunked. Needs a sample rate of 8 to 768 kHz.";

#[cfg(test)]
mod tests;
