//! `ChannelMixerNode`: changes the channel count. Downmixing averages, upmixing duplicates:
//! output channel `j` of `M` is the average of the input channels `i` with `i % M == j` when
//! there are more inputs than outputs (so stereo → mono averages L and R, and 5.1 → stereo
//! averages channels 0, 2, 4 into L and 1, 3, 5 into R), and a copy of input channel `j % N`
//! when there are fewer.

use super::{
    INPUT, Node, NodeContext, NodeError, NodeFactory, NodeInputs, NodeOutputs, NodeSpec, OUTPUT, ParamSpec, Params,
    PortSpec, Ports, check,
};
use crate::audio::{AudioBuffer, MAX_CHANNELS, OutputArena, SampleFormat};

pub struct ChannelMixerNode {
    output_channels: u32,
    arena: OutputArena,
    scratch: Vec<f32>,
    mixed: Vec<f32>,
    /// Averaging weight per output channel, for `weights_for` input channels.
    weights: Vec<f32>,
    weights_for: usize,
    layout: check::StreamLayout,
}

impl ChannelMixerNode {
    /// The output's bytes when it has more channels than the input.
    /// Downmixes 32-bit integer audio to `m` channels: each output sample is the exact average
    /// of its inputs, rounded half to even (summed in f64, which holds up to 2^22 of them
    /// exactly; in f32 most samples would move by up to 64 steps).
    fn downmix_i32(&mut self, audio: &AudioBuffer, m: usize) -> AudioBuffer {
        let n = audio.channels() as usize;
        let samples = audio.i32_samples();
        self.arena.write_typed(
            audio.frames() * m,
            SampleFormat::I32,
            audio.sample_rate(),
            m as u32,
            |out: &mut [i32]| {
                for (frame, mixed) in samples.chunks_exact(n).zip(out.chunks_exact_mut(m)) {
                    for (j, o) in mixed.iter_mut().enumerate() {
                        let (sum, count) = frame
                            .iter()
                            .skip(j)
                            .step_by(m)
                            .fold((0.0f64, 0u32), |(s, c), &v| (s + f64::from(v), c + 1));
                        *o = (sum / f64::from(count)).round_ties_even() as i32;
                    }
                }
            },
        )
    }

    fn upmixed_bytes(&self, audio: &crate::audio::AudioBuffer) -> Option<u64> {
        let (n, m) = (audio.channels() as usize, self.output_channels as usize);
        (m > n).then(|| (audio.frames() * m * audio.format().bytes_per_sample()) as u64)
    }
}

impl Node for ChannelMixerNode {
    fn output_bytes(&self, inputs: &NodeInputs) -> Option<u64> {
        self.upmixed_bytes(inputs.audio(INPUT).ok()?)
    }

    fn process(&mut self, inputs: NodeInputs, ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        let audio = check::audio_input(&inputs)?;
        self.layout.check(audio)?;
        let (n, m) = (audio.channels() as usize, self.output_channels as usize);
        if n == m {
            return Ok(Ports::audio_output(audio.clone()));
        }
        let frames = audio.frames();
        let width = audio.format().bytes_per_sample();
        if let Some(bytes) = self.upmixed_bytes(audio) {
            // Up to 256 channels from one: the limit is checked before the copy is made.
            ctx.reserve_output(bytes)?;
            // Duplication copies whole samples, so every format is copied exactly.
            let src = audio.bytes();
            let out = self.arena.write_raw(frames * m * width, audio.format(), audio.sample_rate(), m as u32, |out| {
                for (f, dst) in out.chunks_exact_mut(m * width).enumerate() {
                    for (j, sample) in dst.chunks_exact_mut(width).enumerate() {
                        let i = f * n + j % n;
                        sample.copy_from_slice(&src[i * width..(i + 1) * width]);
                    }
                }
            });
            return Ok(Ports::audio_output(out));
        }
        if audio.format() == SampleFormat::I32 {
            return Ok(Ports::audio_output(self.downmix_i32(audio, m)));
        }
        audio.read_f32_into(&mut self.scratch);
        self.mixed.clear();
        self.mixed.resize(frames * m, 0.0);
        if m == 1 {
            // The common downmix, kept branch- and modulo-free so it vectorises.
            let scale = 1.0 / n as f32;
            for (frame, out) in self.scratch.chunks_exact(n).zip(&mut self.mixed) {
                *out = frame.iter().sum::<f32>() * scale;
            }
        } else {
            // Output channel j averages inputs j, j + m, j + 2m, ... below n.
            if self.weights.len() != m || self.weights_for != n {
                self.weights = (0..m).map(|j| 1.0 / (n - j).div_ceil(m) as f32).collect();
                self.weights_for = n;
            }
            for (frame, out) in self.scratch.chunks_exact(n).zip(self.mixed.chunks_exact_mut(m)) {
                for inputs in frame.chunks(m) {
                    for (o, s) in out.iter_mut().zip(inputs) {
                        *o += s;
                    }
                }
                for (o, w) in out.iter_mut().zip(&self.weights) {
                    *o *= w;
                }
            }
        }
        Ok(Ports::audio_output(self.arena.write(&self.mixed, audio.format(), audio.sample_rate(), m as u32)))
    }
}

pub(super) struct ChannelMixerFactory;

impl NodeFactory for ChannelMixerFactory {
    fn spec(&self) -> NodeSpec {
        NodeSpec::new("ChannelMixerNode", "Changes the channel count: downmix by averaging, upmix by duplication.")
            .alias("ChannelMixer")
            .details(
                "With `N` input and `M` output channels: when `M < N`, output channel `j` is the average of the \
                 input channels `i` with `i % M == j` (stereo → mono averages left and right; 5.1 → stereo \
                 averages channels 0, 2, 4 into left and 1, 3, 5 into right); when `M > N`, output channel `j` \
                 is a copy of input channel `j % N`, exact in every format. 32-bit integer averages are \
                 exact, rounded half to even. Equal counts pass the buffer through.",
            )
            .param(
                ParamSpec::integer("output_channels", 1, i64::from(MAX_CHANNELS))
                    .required()
                    .unit("channels")
                    .describe("channel count of the output"),
            )
            .input(PortSpec::audio(INPUT, "audio with any channel count"))
            .output(PortSpec::audio(OUTPUT, "the audio with `output_channels` channels, in the input's format"))
    }

    fn create(&self, params: &Params) -> Box<dyn Node> {
        Box::new(ChannelMixerNode {
            output_channels: params.u32("output_channels"),
            arena: OutputArena::new(),
            scratch: Vec::new(),
            mixed: Vec::new(),
            weights: Vec::new(),
            weights_for: 0,
            layout: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{AudioBuffer, SampleFormat};
    use crate::nodes::PortValue;
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    fn run(channels: u32, audio: AudioBuffer) -> AudioBuffer {
        let mut n = ChannelMixerFactory.build(json!({"output_channels": channels}).as_object().unwrap()).unwrap();
        let ctx = NodeContext::new("mix", "ChannelMixerNode", CancellationToken::new());
        n.process(Ports::new().with(INPUT, PortValue::Audio(audio)), &ctx).unwrap().audio(OUTPUT).unwrap().clone()
    }

    #[test]
    fn stereo_to_mono_averages() {
        let out = run(1, AudioBuffer::from_f32(vec![1.0, 0.0, 0.5, -0.5, -1.0, -1.0], 8_000, 2));
        assert_eq!((out.channels(), out.f32_slice().unwrap()), (1, &[0.5, 0.0, -1.0][..]));
    }

    #[test]
    fn six_channels_to_stereo_average_alternate_channels() {
        let frame = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
        let out = run(2, AudioBuffer::from_f32(frame.to_vec(), 48_000, 6));
        assert_eq!(out.f32_slice().unwrap(), &[2.0, 20.0]);
    }

    #[test]
    fn mono_to_stereo_duplicates_exactly_in_every_format() {
        let out = run(2, AudioBuffer::from_i16(vec![1, -2, i16::MAX], 8_000, 1));
        assert_eq!(
            (out.format(), out.i16_slice().unwrap()),
            (SampleFormat::I16, &[1, 1, -2, -2, i16::MAX, i16::MAX][..])
        );
        let out = run(3, AudioBuffer::from_i32(vec![7, 8], 8_000, 2));
        assert_eq!(out.i32_slice().unwrap(), &[7, 8, 7]);
    }

    #[test]
    fn integer_downmix_rounds_back_to_the_format() {
        let out = run(1, AudioBuffer::from_i16(vec![100, 201, i16::MIN, i16::MIN], 8_000, 2));
        assert_eq!(out.i16_slice().unwrap(), &[150, i16::MIN]);
    }

    #[test]
    fn same_count_passes_through_and_bad_params_are_named() {
        let a = AudioBuffer::from_f32(vec![0.1, 0.2], 8_000, 2);
        let ptr = a.bytes().as_ptr();
        assert_eq!(run(2, a).bytes().as_ptr(), ptr);
        let errs = ChannelMixerFactory.build(json!({"output_channels": 0}).as_object().unwrap()).err().unwrap();
        assert!(
            errs[0].to_string().contains("`output_channels` must be an integer between 1 and 256, got 0"),
            "{}",
            errs[0]
        );
    }
}
