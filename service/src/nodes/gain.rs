//! `GainNode`: scales audio by a gain in decibels (or a linear factor), keeping its format.

use super::{
    Figure, Figures, INPUT, Node, NodeContext, NodeError, NodeFactory, NodeInputs, NodeOutputs, NodeSpec, OUTPUT,
    ParamSpec, Params, PortSpec, Ports, check,
};
use crate::audio::{OutputArena, SampleFormat};

/// Multiplies every sample by `factor`. Integer audio is scaled in float and converted back
/// with rounding and saturation, so a boost clips instead of wrapping around; 32-bit integers
/// in f64, whose 53-bit mantissa holds them exactly (f32's 24 bits would change most of them,
/// even at unity gain).
pub struct GainNode {
    factor: f64,
    scratch: Vec<f32>,
    arena: OutputArena,
    clipped: u64,
    layout: check::StreamLayout,
}

impl GainNode {
    pub fn new(factor: f64) -> Self {
        Self { factor, scratch: Vec::new(), arena: OutputArena::new(), clipped: 0, layout: Default::default() }
    }
}

impl Node for GainNode {
    fn process(&mut self, inputs: NodeInputs, _ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        let audio = check::audio_input(&inputs)?;
        self.layout.check(audio)?;
        if audio.format() == SampleFormat::I32 {
            let factor = self.factor;
            let scale = |v: i32| (f64::from(v) * factor).round_ties_even();
            let samples = audio.i32_samples();
            self.clipped +=
                samples.iter().filter(|&&v| !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&scale(v))).count()
                    as u64;
            let out = self.arena.write_map(&samples, SampleFormat::I32, audio.sample_rate(), audio.channels(), |v| {
                scale(v).clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
            });
            return Ok(Ports::audio_output(out));
        }
        audio.read_f32_into(&mut self.scratch);
        let factor = self.factor as f32;
        let mut clipped = 0u64;
        for s in &mut self.scratch {
            *s *= factor;
            clipped += u64::from(s.abs() > 1.0);
        }
        self.clipped += clipped;
        let out = self.arena.write(&self.scratch, audio.format(), audio.sample_rate(), audio.channels());
        Ok(Ports::audio_output(out))
    }

    fn custom_metrics(&self) -> Figures {
        Figures::from_iter([("samples_over_full_scale", Figure::Count(self.clipped))])
    }
}

pub(super) struct GainFactory;

impl NodeFactory for GainFactory {
    fn spec(&self) -> NodeSpec {
        NodeSpec::new("GainNode", "Scales audio by a gain in decibels or a linear factor, keeping its format.")
            .alias("Gain")
            .at_most_one_of(&["gain_db", "gain"])
            .details(
                "Integer audio is scaled in floating point (32-bit integers in double precision, exactly) \
                 and converted back with rounding and saturation, so a boost clips instead of wrapping \
                 around; `custom_metrics.samples_over_full_scale` counts the samples beyond full scale \
                 (clipped, for integer audio; float audio keeps them). Give `gain_db` or `gain`, not both; \
                 with neither, the audio passes at 0 dB, unchanged.",
            )
            .param(
                ParamSpec::number("gain_db", -120.0, 60.0)
                    .unit("dB")
                    .describe("gain in decibels (0 dB when neither this nor `gain` is given)"),
            )
            .param(ParamSpec::number("gain", 0.0, 1_000.0).describe("linear gain factor, instead of `gain_db`"))
            .input(PortSpec::audio(INPUT, "audio in any format"))
            .output(PortSpec::audio(OUTPUT, "the scaled audio, in the input's format"))
    }

    fn create(&self, params: &Params) -> Box<dyn Node> {
        let factor = match params.opt_f64("gain") {
            Some(linear) => linear,
            None => 10f64.powf(params.opt_f64("gain_db").unwrap_or(0.0) / 20.0),
        };
        Box::new(GainNode::new(factor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{AudioBuffer, SampleFormat};
    use crate::nodes::{ParamError, PortValue};
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;

    fn ctx() -> NodeContext {
        NodeContext::new("g", "GainNode", CancellationToken::new())
    }

    fn run(node: &mut Box<dyn Node>, audio: AudioBuffer) -> Result<AudioBuffer, NodeError> {
        let out = node.process(Ports::new().with(INPUT, PortValue::Audio(audio)), &ctx())?;
        Ok(out.audio(OUTPUT).unwrap().clone())
    }

    fn create(params: Value) -> Result<Box<dyn Node>, Vec<ParamError>> {
        GainFactory.build(params.as_object().unwrap())
    }

    #[test]
    fn six_db_doubles_float_audio() {
        let mut node = create(json!({"gain_db": 6.020599913279624})).unwrap();
        let out = run(&mut node, AudioBuffer::from_f32(vec![0.25, -0.125], 8_000, 1)).unwrap();
        let s = out.as_f32();
        assert!((s[0] - 0.5).abs() < 1e-6 && (s[1] + 0.25).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn integer_audio_keeps_its_format_and_saturates() {
        let mut node = create(json!({"gain": 4.0})).unwrap();
        let out = run(&mut node, AudioBuffer::from_i16(vec![1_000, 20_000, -20_000], 8_000, 1)).unwrap();
        assert_eq!(out.format(), SampleFormat::I16);
        assert_eq!(out.i16_slice().unwrap(), &[4_000, i16::MAX, i16::MIN]);
        assert_eq!(node.custom_metrics().as_slice(), [("samples_over_full_scale", Figure::Count(2))]);
    }

    #[test]
    fn bad_params_are_all_reported() {
        let errs = create(json!({"gain_db": "loud", "gain": 2000.0})).err().unwrap();
        let params: Vec<&str> = errs.iter().map(|e| e.param.as_str()).collect();
        assert_eq!(params, ["gain_db", "gain", "gain"], "each value, then the two together");
        assert!(errs[0].message.contains("must be a number between -120 and 60, got \"loud\""), "{}", errs[0]);
        let errs = create(json!({"gain_db": -6, "gain": 2.0})).err().unwrap();
        assert_eq!(errs[0].to_string(), "parameter `gain` cannot be combined with `gain_db`; give one of them");
    }

    #[test]
    fn nan_input_is_rejected_naming_the_sample() {
        let mut node = create(json!({})).unwrap();
        let err = run(&mut node, AudioBuffer::from_f32(vec![0.0, f32::NAN], 8_000, 1)).unwrap_err();
        assert_eq!(err.kind, crate::nodes::NodeErrorKind::InvalidInput);
        assert!(err.message.contains("input sample 1 is NaN"), "{}", err.message);
    }

    #[test]
    fn empty_input_gives_empty_output_in_the_same_layout() {
        let mut node = create(json!({"gain_db": -6})).unwrap();
        let out = run(&mut node, AudioBuffer::from_i16(vec![], 8_000, 2)).unwrap();
        assert_eq!(out, AudioBuffer::from_i16(vec![], 8_000, 2));
    }
}
