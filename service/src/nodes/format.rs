//! `FormatConverterNode`: converts samples between `f32`, `i16` and `i32`.
//!
//! The input is read in place (a `bytemuck` view of its bytes) when it is aligned, and through
//! one copy when it is not; the output is written once. Same-format input passes through as the
//! same buffer. Float to integer rounds to nearest (ties to even) and saturates; integer to
//! float divides by 2^15 or 2^31; `i16 ↔ i32` shifts by 16 bits (rounding on the way down).

use super::{
    Figure, Figures, INPUT, Node, NodeContext, NodeError, NodeFactory, NodeInputs, NodeOutputs, NodeSpec, OUTPUT,
    ParamSpec, Params, PortSpec, Ports, check,
};
use crate::audio::{AudioBuffer, OutputArena, SampleFormat, f32_to_i16, f32_to_i32, i16_to_f32, i32_to_f32};

/// `i32 → i16` keeping the top 16 bits, rounded to nearest with ties to even, saturating.
#[inline]
fn i32_to_i16(v: i32) -> i16 {
    let floor = v >> 16;
    let rest = v & 0xFFFF;
    let up = rest > 0x8000 || (rest == 0x8000 && floor & 1 == 1);
    (floor + i32::from(up)).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// Converts `audio` to `target`, writing the result into `arena`.
pub fn convert(audio: &AudioBuffer, target: SampleFormat, arena: &mut OutputArena) -> AudioBuffer {
    let (rate, ch) = (audio.sample_rate(), audio.channels());
    if audio.format() == target {
        return audio.clone();
    }
    match (audio.format(), target) {
        (SampleFormat::I16, SampleFormat::F32) => arena.write_map(&typed::<i16>(audio), target, rate, ch, i16_to_f32),
        (SampleFormat::I32, SampleFormat::F32) => arena.write_map(&typed::<i32>(audio), target, rate, ch, i32_to_f32),
        (SampleFormat::F32, SampleFormat::I16) => arena.write_map(&typed::<f32>(audio), target, rate, ch, f32_to_i16),
        (SampleFormat::F32, SampleFormat::I32) => arena.write_map(&typed::<f32>(audio), target, rate, ch, f32_to_i32),
        (SampleFormat::I16, SampleFormat::I32) => {
            arena.write_map(&typed::<i16>(audio), target, rate, ch, |v| i32::from(v) << 16)
        }
        (SampleFormat::I32, SampleFormat::I16) => arena.write_map(&typed::<i32>(audio), target, rate, ch, i32_to_i16),
        _ => unreachable!("equal formats returned above"),
    }
}

/// The samples as `T`: borrowed when aligned, decoded with one copy when not.
fn typed<T: bytemuck::Pod>(audio: &AudioBuffer) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice::<u8, T>(audio.bytes()) {
        Ok(s) if cfg!(target_endian = "little") => std::borrow::Cow::Borrowed(s),
        _ => std::borrow::Cow::Owned(
            audio
                .bytes()
                .chunks_exact(size_of::<T>())
                .map(|b| {
                    let mut v = T::zeroed();
                    let dst = bytemuck::bytes_of_mut(&mut v);
                    dst.copy_from_slice(b);
                    if cfg!(target_endian = "big") {
                        dst.reverse();
                    }
                    v
                })
                .collect(),
        ),
    }
}

pub struct FormatConverterNode {
    target: SampleFormat,
    arena: OutputArena,
    converted: u64,
    layout: check::StreamLayout,
}

impl FormatConverterNode {
    /// The output's bytes when it is wider than the input.
    fn widened_bytes(&self, audio: &crate::audio::AudioBuffer) -> Option<u64> {
        let wider = self.target.bytes_per_sample() > audio.format().bytes_per_sample();
        wider.then(|| (audio.num_samples() * self.target.bytes_per_sample()) as u64)
    }
}

impl Node for FormatConverterNode {
    fn output_bytes(&self, inputs: &NodeInputs) -> Option<u64> {
        self.widened_bytes(inputs.audio(INPUT).ok()?)
    }

    fn process(&mut self, inputs: NodeInputs, ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        let audio = check::audio_input(&inputs)?;
        self.layout.check(audio)?;
        if let Some(bytes) = self.widened_bytes(audio) {
            // i16 → f32 or i32 doubles the audio: the limit is checked before the copy is made.
            ctx.reserve_output(bytes)?;
        }
        self.converted += audio.num_samples() as u64;
        Ok(Ports::audio_output(convert(audio, self.target, &mut self.arena)))
    }

    fn is_heavy(&self, inputs: &NodeInputs) -> bool {
        // About a nanosecond per sample: up to a millisecond inline.
        inputs.samples() > 16 * super::INLINE_MAX_SAMPLES
    }

    fn custom_metrics(&self) -> Figures {
        Figures::from_iter([("target_format", Figure::Name(self.target.name()))])
    }
}

pub(super) struct FormatConverterFactory;

impl NodeFactory for FormatConverterFactory {
    fn spec(&self) -> NodeSpec {
        NodeSpec::new("FormatConverterNode", "Converts samples between f32, i16 and i32.")
            .alias("FormatConverter")
            .details(
                "Integers to float divide by 2^15 (i16) or 2^31 (i32). Float to integer multiplies by the same \
                 power of two, rounds to nearest (ties to even) and saturates: 1.0 becomes 32767, -1.0 becomes \
                 -32768, anything beyond ±1.0 clips. `i16 → i32` shifts left by 16 bits; `i32 → i16` keeps the \
                 top 16 bits, rounded to nearest. Input is read in place when its bytes are aligned and through \
                 one copy when not; input already in the target format passes through as the same buffer.",
            )
            .param(
                ParamSpec::choice("target_format", &["f32", "i16", "i32"]).required().describe("output sample format"),
            )
            .input(PortSpec::audio(INPUT, "audio in any format"))
            .output(PortSpec::audio(OUTPUT, "the same audio in `target_format`"))
    }

    fn create(&self, params: &Params) -> Box<dyn Node> {
        let target = SampleFormat::from_name(params.str("target_format")).expect("declared as one of the format names");
        Box::new(FormatConverterNode { target, arena: OutputArena::new(), converted: 0, layout: Default::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::PortValue;
    use bytes::Bytes;
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    fn run(target: &str, audio: AudioBuffer) -> Result<AudioBuffer, NodeError> {
        let mut n = FormatConverterFactory.build(json!({"target_format": target}).as_object().unwrap()).unwrap();
        let ctx = NodeContext::new("fc", "FormatConverterNode", CancellationToken::new());
        Ok(n.process(Ports::new().with(INPUT, PortValue::Audio(audio)), &ctx)?.audio(OUTPUT).unwrap().clone())
    }

    #[test]
    fn i16_edges_to_f32_and_back() {
        let out = run("f32", AudioBuffer::from_i16(vec![i16::MIN, -1, 0, 1, i16::MAX], 16_000, 1)).unwrap();
        assert_eq!(out.f32_slice().unwrap(), &[-1.0, -1.0 / 32_768.0, 0.0, 1.0 / 32_768.0, 32_767.0 / 32_768.0]);
        let back = run("i16", out).unwrap();
        assert_eq!(back.i16_slice().unwrap(), &[i16::MIN, -1, 0, 1, i16::MAX]);
    }

    #[test]
    fn f32_beyond_full_scale_saturates_and_rounds_to_nearest() {
        let x = vec![1.0, -1.0, 1.5, -1.5, 0.5 / 32_768.0, 1.5 / 32_768.0, 0.25];
        let out = run("i16", AudioBuffer::from_f32(x.clone(), 8_000, 1)).unwrap();
        assert_eq!(out.i16_slice().unwrap(), &[i16::MAX, i16::MIN, i16::MAX, i16::MIN, 0, 2, 8_192]);
        let out = run("i32", AudioBuffer::from_f32(x, 8_000, 1)).unwrap();
        assert_eq!(out.i32_slice().unwrap()[..4], [i32::MAX, i32::MIN, i32::MAX, i32::MIN]);
        assert_eq!(out.i32_slice().unwrap()[6], 1 << 29);
    }

    #[test]
    fn i16_and_i32_convert_directly() {
        let out = run("i32", AudioBuffer::from_i16(vec![i16::MIN, -1, 1, i16::MAX], 8_000, 1)).unwrap();
        assert_eq!(out.i32_slice().unwrap(), &[i32::MIN, -65_536, 65_536, 32_767 << 16]);
        let back = run("i16", out).unwrap();
        assert_eq!(back.i16_slice().unwrap(), &[i16::MIN, -1, 1, i16::MAX]);
        let halves = run("i16", AudioBuffer::from_i32(vec![0x8000, 0x18000, i32::MAX, -0x8000], 8_000, 1)).unwrap();
        assert_eq!(halves.i16_slice().unwrap(), &[0, 2, i16::MAX, 0], "ties go to even; the top saturates");
    }

    #[test]
    fn every_direction_round_trips_through_f32() {
        let ints: Vec<i32> = vec![i32::MIN, -123_456_789, 0, 987_654_321, i32::MAX - 1_000];
        let f = run("f32", AudioBuffer::from_i32(ints.clone(), 8_000, 1)).unwrap();
        let back = run("i32", f).unwrap();
        for (a, b) in back.i32_slice().unwrap().iter().zip(&ints) {
            assert!((i64::from(*a) - i64::from(*b)).abs() <= 128, "{a} vs {b}");
        }
    }

    #[test]
    fn same_format_passes_the_buffer_through() {
        let a = AudioBuffer::from_i16(vec![1, 2, 3], 8_000, 1);
        let ptr = a.bytes().as_ptr();
        assert_eq!(run("i16", a).unwrap().bytes().as_ptr(), ptr);
    }

    #[test]
    fn misaligned_input_is_read_with_one_copy() {
        let mut raw = vec![0xAAu8];
        for v in [-32_768i16, 16_384, 32_767] {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        let bytes = Bytes::from(raw).slice(1..);
        let a = AudioBuffer::from_wire(bytes, SampleFormat::I16, 8_000, 1, 3).unwrap();
        let out = run("f32", a).unwrap();
        assert_eq!(out.f32_slice().unwrap(), &[-1.0, 0.5, 32_767.0 / 32_768.0]);
    }

    #[test]
    fn stereo_layout_is_kept_and_target_is_required() {
        let out = run("i16", AudioBuffer::from_f32(vec![0.5, -0.5, 0.25, -0.25], 44_100, 2)).unwrap();
        assert_eq!((out.channels(), out.sample_rate(), out.frames()), (2, 44_100, 2));
        let errs = FormatConverterFactory.build(json!({}).as_object().unwrap()).err().unwrap();
        assert!(errs[0].to_string().contains("`target_format` is required"), "{}", errs[0]);
        let errs = FormatConverterFactory.build(json!({"target_format": "u8"}).as_object().unwrap()).err().unwrap();
        assert!(errs[0].to_string().contains("must be one of \"f32\", \"i16\", \"i32\", got \"u8\""), "{}", errs[0]);
    }

    #[test]
    fn nan_input_is_refused() {
        let err = run("i16", AudioBuffer::from_f32(vec![0.0, f32::NAN], 8_000, 1)).unwrap_err();
        assert!(err.message.contains("input sample 1 is NaN"), "{}", err.message);
    }
}
