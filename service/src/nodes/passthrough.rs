//! `PassThroughNode`: forwards its inputs unchanged (useful as a tap, a join point and in tests).

use serde_json::{Map, Value};

use super::{
    DATA, INPUT, Node, NodeContext, NodeError, NodeFactory, NodeInputs, NodeOutputs, OUTPUT, ParamError, Params,
};

/// Forwards `input` audio to `output` and `data` to `data`, sharing the buffers.
pub struct PassThroughNode;

impl Node for PassThroughNode {
    fn process(&mut self, mut inputs: NodeInputs, _ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        if let Some(audio) = inputs.remove(INPUT) {
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
    fn node_type(&self) -> &'static str {
        "PassThroughNode"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["PassThrough"]
    }

    fn input_ports(&self) -> &'static [&'static str] {
        &[INPUT, DATA]
    }

    fn output_ports(&self) -> &'static [&'static str] {
        &[OUTPUT, DATA]
    }

    fn create(&self, params: &Map<String, Value>) -> Result<Box<dyn Node>, Vec<ParamError>> {
        Params::new(params).finish()?;
        Ok(Box::new(PassThroughNode))
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
        let out = PassThroughNode.process(inputs, &ctx).unwrap();
        assert_eq!(out.audio(OUTPUT).unwrap().bytes().as_ptr(), ptr);
        assert_eq!(out.get(DATA).unwrap().as_data().unwrap(), &json!({"k": 1}));
    }

    #[test]
    fn rejects_any_parameter() {
        let params = json!({"gain": 2}).as_object().unwrap().clone();
        let errs = PassThroughFactory.create(&params).err().unwrap();
        assert_eq!(errs[0].param, "gain");
        assert!(errs[0].message.contains("takes no parameters"));
    }
}
