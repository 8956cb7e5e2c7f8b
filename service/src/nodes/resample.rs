//! `AudioResampleNode`: sample-rate conversion with rubato.
//!
//! Input arrives in chunks of any size and goes through a FIFO into a resampler that always sees
//! the same fixed-size blocks, so the output does not depend on how the input was chunked: a
//! stream's concatenated outputs equal the one-shot output sample for sample. The resampler's
//! delay is trimmed from the start and the tail is flushed at the end, so the output lines up
//! with the input (a sine keeps its phase) and has exactly `round(frames × out / in)` frames.
//!
//! The resampler is rubato's synchronous FFT resampler (windowed-sinc anti-aliasing with a
//! Blackman-Harris² window, about 140 dB of stopband attenuation at every quality), run with its
//! filter and FFT plans shared by every stream at the same rates and quality (see [`fft`]). The
//! quality sets the FFT block length, which trades latency against how close to Nyquist the
//! passband stays flat:
//!
//! | quality | block (input frames) | flat within 0.1 dB up to | block + delay at 48 → 16 kHz |
//! | --- | --- | --- | --- |
//! | `high` | 1024 – 2048 | 0.92 × the lower Nyquist | 32 + 16 ms |
//! | `medium` | 512 – 1024 | 0.85 × | 16 + 8 ms |
//! | `low` | 256 – 512 | 0.75 × | 8 + 4 ms |
//!
//! Within each range the length with the fastest FFT is chosen. A rate pair's filter and plans
//! are built on first use and kept for later requests and streams.
//!
//! Blocks are a multiple of `input_rate / gcd(input_rate, output_rate)` frames, so unusual rate
//! pairs (44 101 → 16 000 Hz) get long blocks and more latency; the output still lines up.

mod fft;

use fft::Fft;
pub use fft::{HELD_LIMIT as MEMORY_LIMIT, HELD_MAX_BYTES as MEMORY_MAX_BYTES};

use super::{
    Figure, Figures, INPUT, Node, NodeContext, NodeError, NodeErrorKind, NodeFactory, NodeInputs, NodeOutputs,
    NodeSpec, OUTPUT, ParamSpec, Params, PortSpec, Ports, check,
};
use crate::audio::{AudioBuffer, OutputArena, SampleFormat};

/// Highest sample rate accepted, in Hz.
pub const MAX_RATE: u32 = 768_000;
/// Lowest sample rate accepted, in Hz.
pub const MIN_RATE: u32 = 1_000;

/// Resampling quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    Low,
    Medium,
    High,
}

impl Quality {
    fn name(self) -> &'static str {
        match self {
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        }
    }

    /// Shortest FFT block, in input frames, that keeps the passband of this quality flat.
    fn block(self) -> usize {
        match self {
            Quality::High => 1024,
            Quality::Medium => 512,
            Quality::Low => 256,
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Input and output frames per FFT block for a rate pair at a quality.
///
/// A block is a whole number of the pair's smallest blocks (`rate / gcd` frames on each side):
/// - at least the quality's block length of input;
/// - at least a third of it of output. The filter's transition band is as narrow as the shorter
///   block allows, so at a large down-sampling ratio a block sized by its input alone left the
///   output side short, and the passband fell away: 96 → 8 kHz lost 7.7 dB at 0.9 × Nyquist
///   with 128 output frames. A third is what 48 → 16 kHz, the pair the docs' figures are for,
///   has anyway, so its blocks are unchanged;
/// - an even count, so the filter's centre, and with it the delay, is a whole number of frames
///   on both sides;
/// - among the counts up to twice the least, the one whose input FFT length has the most
///   factors of two (the fastest transforms).
fn block_frames(input_rate: u32, output_rate: u32, quality: Quality) -> (usize, usize) {
    let (fin, fout) = (input_rate as usize, output_rate as usize);
    let g = gcd(fin, fout);
    let (min_in, min_out) = (fin / g, fout / g);
    let target = quality.block();
    let first = target.div_ceil(min_in).max((target / 3).div_ceil(min_out)).max(1);
    let first = first + first % 2;
    let blocks = (first..=2 * first)
        .step_by(2)
        .max_by_key(|k| ((2 * k * min_in).trailing_zeros(), std::cmp::Reverse(*k)))
        .unwrap_or(first);
    (blocks * min_in, blocks * min_out)
}

/// The refusal of a resampler whose filter or buffers (`needs` bytes) would take the server's
/// resamplers past their memory maximum, `held` bytes being taken.
fn too_much_held(input_rate: u32, output_rate: u32, needs: usize, held: usize) -> NodeError {
    let g = gcd(input_rate as usize, output_rate as usize);
    let mib = |b: usize| b.div_ceil(1 << 20);
    NodeError::new(
        NodeErrorKind::ResourceLimit,
        format!(
            "resampling {input_rate} → {output_rate} Hz needs {} MiB of filter or buffers, and the server's resamplers \
             already hold {} of their {} MiB ({}): a ratio that reduces to large numbers ({}:{}) needs long filters; \
             resample from or to a rate with a simpler ratio, or retry once other streams end",
            mib(needs),
            mib(held),
            mib(fft::HELD_MAX_BYTES),
            fft::HELD_LIMIT,
            input_rate as usize / g,
            output_rate as usize / g,
        ),
    )
    .with_field("input.sample_rate")
    .with_context(serde_json::json!({
        "limit": fft::HELD_LIMIT,
        "limit_bytes": fft::HELD_MAX_BYTES,
        "needed_bytes": needs,
        "held_bytes": held,
    }))
}

/// Resampling state of one stream (or one request).
struct Stream {
    input_rate: u32,
    channels: usize,
    format: SampleFormat,
    /// `None` when input and output rates are equal: the audio passes through untouched.
    resampler: Option<Fft>,
    /// Input frames not yet consumed by the resampler, interleaved.
    pending: Vec<f32>,
    /// Output of the current node call, interleaved.
    collected: Vec<f32>,
    /// Leading output frames still to drop (the resampler delay).
    to_trim: usize,
    frames_in: u64,
    frames_out: u64,
    /// The bytes of `pending`, `collected` and the overlap, counted in the server-wide total of
    /// the resamplers' memory.
    _held: Option<fft::Held>,
}

impl Stream {
    fn new(input_rate: u32, output_rate: u32, quality: Quality, audio: &AudioBuffer) -> Result<Self, NodeError> {
        let channels = audio.channels() as usize;
        let resampler = if input_rate == output_rate {
            None
        } else {
            let design = fft::design(input_rate, output_rate, quality).map_err(|e| match e {
                fft::DesignError::Full { needs, held } => too_much_held(input_rate, output_rate, needs, held),
                fft::DesignError::Plan(e) => NodeError::internal(format!("cannot build the resampler: {e}")),
            })?;
            Some(Fft::new(design, channels))
        };
        let (block_in, block_out, delay) =
            resampler.as_ref().map_or((0, 0, 0), |r| (r.design().block_in, r.design().block_out, r.design().delay()));
        let buffers = (2 * block_in + 3 * block_out) * channels * std::mem::size_of::<f32>();
        let held = resampler
            .as_ref()
            .map(|_| fft::Held::take(buffers).map_err(|held| too_much_held(input_rate, output_rate, buffers, held)))
            .transpose()?;
        Ok(Self {
            _held: held,
            input_rate,
            channels,
            format: audio.format(),
            pending: Vec::with_capacity(2 * block_in * channels),
            collected: Vec::with_capacity(2 * block_out * channels),
            to_trim: delay,
            resampler,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// Resamples new input. Whole blocks are read straight from `input` when nothing is pending
    /// (no copy); only the remainder that does not fill a block is kept for the next call.
    fn feed(&mut self, input: &[f32], ctx: &NodeContext) -> Result<(), NodeError> {
        let ch = self.channels;
        if self.pending.is_empty() {
            let consumed = self.whole_blocks(input, ctx)?;
            self.pending.extend_from_slice(&input[consumed * ch..]);
        } else {
            self.pending.extend_from_slice(input);
            // Moved out while the resampler reads it, then put back, keeping its allocation.
            let pending = std::mem::take(&mut self.pending);
            let consumed = self.whole_blocks(&pending, ctx);
            self.pending = pending;
            self.pending.drain(..consumed? * ch);
        }
        Ok(())
    }

    /// Runs the resampler over as many whole blocks as `data` (interleaved) holds; returns the
    /// frames consumed.
    fn whole_blocks(&mut self, data: &[f32], ctx: &NodeContext) -> Result<usize, NodeError> {
        let Some(r) = self.resampler.as_mut() else { return Ok(0) };
        let ch = self.channels;
        let block = r.design().block_in;
        let mut consumed = 0;
        while data.len() / ch - consumed >= block {
            let input = &data[consumed * ch..(consumed + block) * ch];
            resample_block(r, input, ch, &mut self.collected, &mut self.to_trim)?;
            consumed += block;
            ctx.check_cancelled()?;
        }
        Ok(consumed)
    }

    /// Feeds the pending remainder as a last, short block (the resampler pads it with silence).
    fn last_block(&mut self) -> Result<(), NodeError> {
        let Some(r) = self.resampler.as_mut() else { return Ok(()) };
        if !self.pending.is_empty() {
            resample_block(r, &self.pending, self.channels, &mut self.collected, &mut self.to_trim)?;
        }
        self.pending.clear();
        Ok(())
    }

    /// Feeds silence until the output reaches `target` frames, then cuts it there.
    fn finish(&mut self, target: u64) -> Result<(), NodeError> {
        let ch = self.channels;
        let Some(r) = self.resampler.as_mut() else { return Ok(()) };
        while self.frames_out + ((self.collected.len() / ch) as u64) < target {
            resample_block(r, &[], ch, &mut self.collected, &mut self.to_trim)?;
        }
        let keep = (target - self.frames_out) as usize * ch;
        self.collected.truncate(keep);
        Ok(())
    }
}

/// One block of interleaved `input` (at most a block; less is padded with silence) through the
/// resampler, its output appended to `out` after dropping any of the delay still to trim.
fn resample_block(
    r: &mut Fft,
    input: &[f32],
    ch: usize,
    out: &mut Vec<f32>,
    to_trim: &mut usize,
) -> Result<(), NodeError> {
    let start = out.len();
    out.resize(start + r.design().block_out * ch, 0.0);
    r.block(input, &mut out[start..]).map_err(|e| NodeError::internal(format!("resampler failed: {e}")))?;
    let skip = r.design().block_out.min(*to_trim);
    if skip > 0 {
        *to_trim -= skip;
        out.drain(start..start + skip * ch);
    }
    Ok(())
}

/// Resamples `input` audio to `output_rate`, keeping its format and channel count.
pub struct ResampleNode {
    output_rate: u32,
    expected_input_rate: Option<u32>,
    quality: Quality,
    stream: Option<Stream>,
    converted: Vec<f32>,
    arena: OutputArena,
}

impl ResampleNode {
    pub fn new(output_rate: u32, expected_input_rate: Option<u32>, quality: Quality) -> Self {
        Self {
            output_rate,
            expected_input_rate,
            quality,
            stream: None,
            converted: Vec::new(),
            arena: OutputArena::new(),
        }
    }

    /// Hands out what the stream collected in this call as one buffer, empty when the filter
    /// delay has not been filled yet.
    fn emit(&mut self) -> Ports {
        let Some(st) = self.stream.as_mut() else { return Ports::new() };
        if st.collected.is_empty() {
            return Ports::audio_output(AudioBuffer::empty(st.format, self.output_rate, st.channels as u32));
        }
        let out = self.arena.write(&st.collected, st.format, self.output_rate, st.channels as u32);
        st.frames_out += (st.collected.len() / st.channels) as u64;
        st.collected.clear();
        Ports::audio_output(out)
    }
}

impl ResampleNode {
    /// What an upsampling call holds at once: its output as f32 and in the input's format.
    fn upsampled_bytes(&self, audio: &AudioBuffer) -> Option<u64> {
        (self.output_rate > audio.sample_rate()).then(|| {
            let frames = (audio.frames() as u64 * u64::from(self.output_rate)).div_ceil(u64::from(audio.sample_rate()));
            frames * u64::from(audio.channels()) * (4 + audio.format().bytes_per_sample() as u64)
        })
    }
}

impl Node for ResampleNode {
    fn output_bytes(&self, inputs: &NodeInputs) -> Option<u64> {
        self.upsampled_bytes(inputs.audio(INPUT).ok()?)
    }

    fn process(&mut self, inputs: NodeInputs, ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        let audio = check::audio_input(&inputs)?;
        if let Some(expected) = self.expected_input_rate
            && audio.sample_rate() != expected
        {
            return Err(NodeError::unsupported_audio(format!(
                "input audio is {} Hz but parameter input_rate is {expected} Hz",
                audio.sample_rate()
            ))
            .with_field("input.sample_rate"));
        }
        if !(MIN_RATE..=MAX_RATE).contains(&audio.sample_rate()) {
            return Err(NodeError::unsupported_audio(format!(
                "input sample_rate {} Hz is outside {MIN_RATE}..={MAX_RATE} Hz",
                audio.sample_rate()
            ))
            .with_field("input.sample_rate"));
        }
        if let Some(bytes) = self.upsampled_bytes(audio) {
            // Upsampling multiplies the audio (768× from 1 kHz to 768 kHz), collected as f32 and
            // then written in the input's format: the limit is checked before either is made.
            ctx.reserve_output(bytes)?;
        }
        match &self.stream {
            Some(st) => check::same_layout(audio, st.input_rate, st.channels as u32, st.format)?,
            None => {
                let st = Stream::new(audio.sample_rate(), self.output_rate, self.quality, audio)?;
                self.stream = Some(st);
            }
        }
        let st = self.stream.as_mut().expect("created above");
        st.frames_in += audio.frames() as u64;
        if st.resampler.is_none() {
            // Same rate: the input is the output, shared rather than copied.
            st.frames_out += audio.frames() as u64;
            return Ok(Ports::audio_output(audio.clone()));
        }
        match audio.f32_slice() {
            Some(s) => st.feed(s, ctx)?,
            None => {
                audio.read_f32_into(&mut self.converted);
                st.feed(&self.converted, ctx)?;
            }
        }
        Ok(self.emit())
    }

    fn flush(&mut self, _ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        let Some(st) = self.stream.as_mut() else { return Ok(Ports::new()) };
        if st.resampler.is_none() {
            return Ok(Ports::audio_output(AudioBuffer::empty(st.format, self.output_rate, st.channels as u32)));
        }
        st.last_block()?;
        let target = (st.frames_in as f64 * f64::from(self.output_rate) / f64::from(st.input_rate)).round() as u64;
        st.finish(target)?;
        Ok(self.emit())
    }

    fn is_heavy(&self, inputs: &NodeInputs) -> bool {
        // The first call may plan the rate pair's filter and FFTs (when nothing has used that pair
        // yet): well under a millisecond for common rate pairs, about a second for a co-prime pair
        // such as 767 881 → 1 000 Hz, so it never runs on the async runtime, however short its
        // input.
        self.stream.is_none() || inputs.samples() > super::INLINE_MAX_SAMPLES
    }

    fn custom_metrics(&self) -> Figures {
        let mut m = Figures::new();
        m.push(("quality", Figure::Name(self.quality.name())));
        if let Some(st) = &self.stream {
            m.push(("input_rate", Figure::Count(st.input_rate.into())));
            m.push(("frames_in", Figure::Count(st.frames_in)));
            m.push(("frames_out", Figure::Count(st.frames_out)));
        }
        m
    }
}

pub(super) struct ResampleFactory;

impl NodeFactory for ResampleFactory {
    fn spec(&self) -> NodeSpec {
        let (min, max) = (i64::from(MIN_RATE), i64::from(MAX_RATE));
        NodeSpec::new("AudioResampleNode", "Sample-rate conversion with rubato, delay-free and chunking-independent.")
            .alias("AudioResample")
            .details(DETAILS)
            .param(ParamSpec::integer("output_rate", min, max).required().unit("Hz").describe("target sample rate"))
            .param(
                ParamSpec::integer("input_rate", min, max)
                    .unit("Hz")
                    .describe("if given, input at any other rate is refused"),
            )
            .param(
                ParamSpec::choice("quality", &["low", "medium", "high"])
                    .default("high")
                    .describe("FFT block length: latency against how close to Nyquist the passband stays flat"),
            )
            .input(PortSpec::audio(INPUT, "audio at any rate from 1 to 768 kHz, any format and channel count"))
            .output(PortSpec::audio(OUTPUT, "the audio at `output_rate`, in the input's format and channel count"))
    }

    fn create(&self, params: &Params) -> Box<dyn Node> {
        let quality = match params.str("quality") {
            "low" => Quality::Low,
            "medium" => Quality::Medium,
            _ => Quality::High,
        };
        Box::new(ResampleNode::new(params.u32("output_rate"), params.opt_u32("input_rate"), quality))
    }
}

/// The node's behaviour, for `docs/nodes.md`.
const DETAILS: &str = "rubato's synchronous FFT resampler (windowed sinc, Blackman-Harris² window). The \
output keeps the input's format and channel count and has exactly `round(frames × output_rate / \
input_rate)` frames. The resampler's delay is removed, so the output lines up with the input (a sine keeps \
its phase to within 10⁻⁶ rad). Input is fed through a FIFO in fixed blocks, so a stream's chunk outputs, \
concatenated, equal the one-shot output sample for sample.

| quality | flat within 0.1 dB up to | stopband | delay added in a stream (48 → 16 kHz) |
| --- | --- | --- | --- |
| `high` | ≥ 0.92 × the lower Nyquist | ≥ 135 dB measured (spec ≥ 90 dB) | 32 ms block + 16 ms filter |
| `medium` | ≥ 0.85 × | ≥ 135 dB | 16 ms + 8 ms |
| `low` | ≥ 0.75 × | ≥ 135 dB | 8 ms + 4 ms |

Rate pairs with a large `input_rate / gcd(input_rate, output_rate)` (an \"odd\" rate such as 44 101 Hz) need \
long FFT blocks, whatever the quality: four times that many input frames, so for rates that share no factor \
(44 101 → 16 000 Hz) a block is 4 s of input, a stream's first output comes after 4 s, and the filter rings \
for about a second around abrupt starts and stops. Large down-sampling ratios need long blocks too: a \
block holds at least a third of the quality's block length of output (512 frames at `high`), which keeps the \
passband as flat as at 48 → 16 kHz, so 96 → 8 kHz at `high` works in blocks of 64 ms and 48 kHz → 1 kHz in \
blocks of 0.5 s. Equal rates pass the buffer through without copying. The filter and FFT plans of a rate pair are built once and shared by every request and stream at that pair \
and quality; a stream keeps only its filter overlap. The server's resamplers hold at most 512 MiB between them \
(filters and streams' buffers: under 1 MiB for a pair of common rates, about 100 MiB for 383 999 → 384 000 Hz); \
a resampler that would pass it is refused with ERROR_TYPE_RESOURCE_LIMIT naming `resampler_memory_bytes`.";

#[cfg(test)]
mod tests;
