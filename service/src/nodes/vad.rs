//! `VADNode`: voice activity detection from frame energy and spectral shape.
//!
//! Each frame (10, 20 or 30 ms of the channel average) is speech-like when all of these hold:
//! - its level is at least `threshold_db` (RMS, dBFS);
//! - its energy in the speech band (150 Hz – 4 kHz) stands at least 6 dB above the noise floor:
//!   the lowest such level among the last 1.5 s of frames judged not to be speech (minimum
//!   statistics). Measured over a band of many FFT bins, stationary noise of any colour (white,
//!   pink, brown, hum) varies little from frame to frame, so it never rises 6 dB above its own
//!   floor, and a long utterance does not lift the floor to its own level;
//! - its spectrum in that band is not flat (spectral flatness ≤ 0.3): voiced speech is harmonic
//!   (median flatness about 0.02 in recorded speech), while white noise (about 0.55), pink noise
//!   (about 0.4) and clicks are flat;
//! - most of its energy (≥ 30 %) lies in that band, which rules out hum and rumble.
//!
//! A segment opens after `min_speech_ms` of consecutive speech-like frames (starting at the
//! first of them) and closes after `min_silence_ms` without one (ending at the last speech-like
//! frame). Segments carry their start, end and mean level. In a stream a segment is emitted on
//! the chunk where it closes, and an open one is emitted when the stream is flushed. The audio
//! itself passes through untouched.
//!
//! The spectrum comes from a real FFT (`realfft`, the real-input front end of `rustfft`).

use std::collections::VecDeque;
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex, num_complex::Complex};
use serde_json::{Map, Value, json};

use super::{
    Node, NodeContext, NodeError, NodeFactory, NodeInputs, NodeOutputs, OUTPUT, ParamError, Params, PortValue, Ports,
    check,
};

/// Margin above the noise floor a speech frame needs, in dB.
const NOISE_MARGIN_DB: f32 = 6.0;
/// How far back the noise floor looks.
const NOISE_WINDOW_MS: u32 = 1_500;
/// Flatness at or above which a frame is noise-like.
const MAX_FLATNESS: f32 = 0.3;
/// Share of the frame's energy that must lie in the speech band.
const MIN_BAND_RATIO: f32 = 0.3;
const BAND_LOW_HZ: f32 = 150.0;
const BAND_HIGH_HZ: f32 = 4_000.0;
/// Lowest input rate: the speech band reaches 4 kHz.
const MIN_RATE: u32 = 8_000;
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

/// Segmentation state for one stream.
struct Detector {
    sample_rate: u32,
    channels: u32,
    frame_len: usize,
    analyzer: Analyzer,
    /// Mono samples of the frame being filled.
    frame: Vec<f32>,
    /// Frames analysed so far.
    frames_done: u64,
    /// Mono samples of the frames analysed so far.
    samples_done: u64,
    /// Levels of recent non-speech frames, for the noise floor.
    recent: VecDeque<f32>,
    noise_window: usize,
    min_speech_frames: u64,
    min_silence_frames: u64,
    threshold_db: f32,
    /// First frame of the current run of speech-like frames.
    run_start: Option<u64>,
    /// The open segment: first frame, last speech-like frame, summed mean squares and count.
    open: Option<(u64, u64, f64, u64)>,
    closed: Vec<Segment>,
    last: Option<FrameFeatures>,
    speech_frames: u64,
}

impl Detector {
    fn new(cfg: &VadConfig, sample_rate: u32, channels: u32) -> Self {
        let frame_len = (sample_rate as usize * cfg.frame_ms as usize / 1_000).max(1);
        let frames_for = |ms: u32| u64::from(ms).div_ceil(u64::from(cfg.frame_ms)).max(1);
        let noise_window = (NOISE_WINDOW_MS / cfg.frame_ms) as usize;
        Self {
            sample_rate,
            channels,
            frame_len,
            analyzer: Analyzer::new(frame_len, sample_rate),
            frame: Vec::with_capacity(frame_len),
            frames_done: 0,
            samples_done: 0,
            recent: VecDeque::with_capacity(noise_window + 1),
            noise_window,
            min_speech_frames: frames_for(cfg.min_speech_ms),
            min_silence_frames: frames_for(cfg.min_silence_ms),
            threshold_db: cfg.threshold_db,
            run_start: None,
            open: None,
            closed: Vec::with_capacity(8),
            last: None,
            speech_frames: 0,
        }
    }

    /// The time at the start of frame `frames`, never past the audio seen so far.
    fn seconds(&self, frames: u64) -> f64 {
        let samples = (frames * self.frame_len as u64).min(self.samples_done + self.frame.len() as u64);
        samples as f64 / f64::from(self.sample_rate)
    }

    /// Adds interleaved samples, analysing every frame they complete.
    fn push(&mut self, samples: &[f32]) {
        let ch = self.channels as usize;
        let scale = 1.0 / ch as f32;
        for frame in samples.chunks_exact(ch) {
            let mono = if ch == 1 { frame[0] } else { frame.iter().sum::<f32>() * scale };
            self.frame.push(mono);
            if self.frame.len() == self.frame_len {
                self.finish_frame();
                self.samples_done += self.frame_len as u64;
                self.frame.clear();
            }
        }
    }

    fn finish_frame(&mut self) {
        let f = self.analyzer.analyze(&self.frame);
        self.last = Some(f);
        let noise_floor = self.recent.iter().copied().fold(f.band_db, f32::min);
        let speech = f.energy_db >= self.threshold_db
            && f.band_db >= noise_floor + NOISE_MARGIN_DB
            && f.flatness <= MAX_FLATNESS
            && f.band_ratio >= MIN_BAND_RATIO;
        if !speech {
            // Only frames judged not to be speech feed the floor, so a long utterance does not
            // raise it to its own quietest syllables.
            if self.recent.len() == self.noise_window {
                self.recent.pop_front();
            }
            self.recent.push_back(f.band_db);
        }
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
            self.closed.push(Segment {
                start_s: self.seconds(start),
                end_s: self.seconds(last + 1),
                energy_db: (energy_db * 100.0).round() / 100.0,
            });
        }
    }

    /// Analyses a final partial frame (if it is at least half a frame; the FFT pads it with
    /// silence) and closes the open segment.
    fn finish(&mut self) {
        let tail = self.frame.len();
        if tail * 2 >= self.frame_len {
            self.finish_frame();
        }
        self.samples_done += tail as u64;
        self.frame.clear();
        self.close();
    }

    fn take_segments(&mut self) -> Option<PortValue> {
        if self.closed.is_empty() {
            return None;
        }
        let list = self.closed.drain(..).map(Segment::to_json).collect();
        Some(PortValue::data(Value::Array(list)))
    }
}

#[derive(Debug, Clone, Copy)]
struct VadConfig {
    threshold_db: f32,
    frame_ms: u32,
    min_speech_ms: u32,
    min_silence_ms: u32,
}

/// Detects speech in `input`, passing the audio through on `output` and the segments on
/// `segments`.
pub struct VadNode {
    cfg: VadConfig,
    detector: Option<Detector>,
    converted: Vec<f32>,
}

impl Node for VadNode {
    fn process(&mut self, inputs: NodeInputs, _ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        let audio = check::audio_input(&inputs)?;
        if audio.sample_rate() < MIN_RATE {
            return Err(NodeError::invalid_input(format!(
                "input sample_rate {} Hz is below the {MIN_RATE} Hz the speech band needs",
                audio.sample_rate(),
            ))
            .with_field("input.sample_rate"));
        }
        let det = match &mut self.detector {
            Some(d) => {
                check::same_layout(audio, d.sample_rate, d.channels)?;
                d
            }
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
            out.insert("segments", segments);
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
        Ok(Ports::new().with("segments", segments))
    }

    fn is_heavy(&self, inputs: &NodeInputs) -> bool {
        // About 3 µs per frame: a second of 16 kHz audio takes ~100 µs.
        inputs.samples() > super::INLINE_MAX_SAMPLES
    }

    fn custom_metrics(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(d) = &self.detector {
            m.insert("frames".into(), json!(d.frames_done));
            m.insert("speech_frames".into(), json!(d.speech_frames));
            if let Some(f) = d.last {
                m.insert("last_frame_energy_db".into(), json!(f.energy_db));
                m.insert("last_frame_flatness".into(), json!(f.flatness));
            }
        }
        m
    }
}

pub(super) struct VadFactory;

impl NodeFactory for VadFactory {
    fn node_type(&self) -> &'static str {
        "VADNode"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["VAD"]
    }

    fn output_ports(&self) -> &'static [&'static str] {
        &[OUTPUT, "segments"]
    }

    fn create(&self, params: &Map<String, Value>) -> Result<Box<dyn Node>, Vec<ParamError>> {
        let mut p = Params::new(params);
        let threshold_db = p.f64_in("threshold_db", -100.0, 0.0, -30.0) as f32;
        let frame_ms = p.u32_in("frame_ms", 10, 30).unwrap_or(30);
        if ![10, 20, 30].contains(&frame_ms) {
            p.error("frame_ms", format!("must be 10, 20 or 30, got {frame_ms}"));
        }
        let min_speech_ms = p.u32_in("min_speech_ms", 0, 10_000).unwrap_or(90);
        let min_silence_ms = p.u32_in("min_silence_ms", 0, 10_000).unwrap_or(300);
        p.finish()?;
        let cfg = VadConfig { threshold_db, frame_ms, min_speech_ms, min_silence_ms };
        Ok(Box::new(VadNode { cfg, detector: None, converted: Vec::new() }))
    }
}

#[cfg(test)]
mod tests;
