//! `PassThroughNode`: forwards its inputs unchanged (useful as a tap, a join point and in tests).

use super::{
    DATA, INPUT, Node, NodeContext, NodeError, NodeFactory, NodeInputs, NodeOutputs, NodeSpec, OUTPUT, Params,
    PortSpec, PortValue, check,
};

/// Forwards `input` audio to `output` and `data` to `data`, sharing the buffers.
#[derive(Default)]
pub struct PassThroughNode {
    /// A stream's layout is fixed by its first chunk, here as at the nodes that read samples.
    layout: check::StreamLayout,
}

impl Node for PassThroughNode {
    fn process(&mut self, mut inputs: NodeInputs, _ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        if let Some(audio) = inputs.remove(INPUT) {
            if let PortValue::Audio(a) = &audio {
                self.layout.check(a)?;
            }
            inputs.insert(OUTPUT, audio);
        }
        Ok(inputs)
    }

    fn is_heavy(&self, _inputs: &NodeInputs) -> bool {
        false
    }
}

pub(super) struct PassThroughFactory;

impl NodeFactory for PassThroughFactory {
    fn spec(&self) -> NodeSpec {
        NodeSpec::new("PassThroughNode", "Forwards its audio and data unchanged: a join point, a tap, a source.")
            .alias("PassThrough")
            .details(
                "`input` goes to `output` and `data` to `data`, sharing the buffers (no copy). Several \
                 connections into one port are mixed (audio) or collected into an array (data) before the \
                 node runs, so it also serves as a mixer or a join.",
            )
            .input(PortSpec::audio(INPUT, "audio, passed to `output`"))
            .input(PortSpec::data(DATA, "any JSON, passed to `data`"))
            .output(PortSpec::audio(OUTPUT, "the input audio, unchanged"))
            .output(PortSpec::data(DATA, "the input data, unchanged"))
    }

    fn create(&self, _params: &Params) -> Box<dyn Node> {
        Box::new(PassThroughNode::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::AudioBuffer;
    use crate::nodes::{PortValue, Ports};
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn forwards_audio_and_data_without_copying() {
        let audio = AudioBuffer::from_f32(vec![0.5; 8], 8_000, 1);
        let ptr = audio.bytes().as_ptr();
        let inputs = Ports::new().with(INPUT, PortValue::Audio(audio)).with(DATA, PortValue::data(json!({"k": 1})));
        let ctx = NodeContext::new("p", "PassThroughNode", CancellationToken::new());
        let out = PassThroughNode::default().process(inputs, &ctx).unwrap();
        assert_eq!(out.audio(OUTPUT).unwrap().bytes().as_ptr(), ptr);
        assert_eq!(out.get(DATA).unwrap().as_data().unwrap(), &json!({"k": 1}));
    }

    #[test]
    fn rejects_any_parameter() {
        let params = json!({"gain": 2}).as_object().unwrap().clone();
        let errs = PassThroughFactory.build(&params).err().unwrap();
        assert_eq!(errs[0].param, "gain");
        assert!(errs[0].message.contains("takes no parameters"));
    }
}
