//! `AudioChunkerNode`: re-frames a stream into chunks of a fixed length.
//!
//! Each call emits, as one buffer, every whole chunk the input completes (usually zero or one
//! for short stream chunks); the remainder waits for the next call and is emitted, short, when
//! the stream is flushed. The length is given as `chunk_samples` (frames, that is samples per
//! channel) or `chunk_ms` (converted at the input's rate). Samples keep their format and are
//! copied at most once; input that already is a whole number of chunks, with nothing pending,
//! passes through as the same buffer.

use super::{
    Figure, Figures, INPUT, Node, NodeContext, NodeError, NodeFactory, NodeInputs, NodeOutputs, NodeSpec, OUTPUT,
    ParamSpec, Params, PortSpec, Ports, check,
};
use crate::audio::{AudioBuffer, OutputArena, SampleFormat};

#[derive(Debug, Clone, Copy)]
enum Length {
    Frames(usize),
    Millis(u32),
}

pub struct AudioChunkerNode {
    length: Length,
    /// Layout of the stream and the resolved chunk length in frames.
    layout: Option<(SampleFormat, u32, u32, usize)>,
    pending: Vec<u8>,
    arena: OutputArena,
    chunks: u64,
}

impl Node for AudioChunkerNode {
    fn process(&mut self, inputs: NodeInputs, ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        let audio = check::audio_input(&inputs)?;
        let (format, rate, channels, chunk_frames) = match self.layout {
            Some((format, rate, channels, frames)) => {
                check::same_layout(audio, rate, channels, format)?;
                (format, rate, channels, frames)
            }
            None => {
                let frames = match self.length {
                    Length::Frames(f) => f,
                    Length::Millis(ms) => {
                        (u64::from(audio.sample_rate()) * u64::from(ms)).div_ceil(1_000).max(1) as usize
                    }
                };
                let layout = (audio.format(), audio.sample_rate(), audio.channels(), frames);
                self.layout = Some(layout);
                layout
            }
        };
        let frame_bytes = channels as usize * format.bytes_per_sample();
        let chunk_bytes = chunk_frames * frame_bytes;
        if self.pending.is_empty() && audio.bytes().len().is_multiple_of(chunk_bytes) {
            self.chunks += (audio.bytes().len() / chunk_bytes) as u64;
            return Ok(Ports::audio_output(audio.clone()));
        }
        // What the node holds between calls (up to a chunk of 10 minutes) counts against the
        // run's memory limit with this call's output: no limit saw it before, and a stream could
        // keep hundreds of MB waiting for a chunk to fill.
        ctx.reserve_output((self.pending.len() + audio.bytes().len()) as u64)?;
        self.pending.extend_from_slice(audio.bytes());
        let whole = self.pending.len() / chunk_bytes * chunk_bytes;
        if whole == 0 {
            return Ok(Ports::audio_output(AudioBuffer::empty(format, rate, channels)));
        }
        self.chunks += (whole / chunk_bytes) as u64;
        let out = self.arena.write_bytes(&self.pending[..whole], format, rate, channels);
        self.pending.drain(..whole);
        Ok(Ports::audio_output(out))
    }

    fn flush(&mut self, _ctx: &NodeContext) -> Result<NodeOutputs, NodeError> {
        match self.layout {
            Some((format, rate, channels, _)) if !self.pending.is_empty() => {
                let out = self.arena.write_bytes(&self.pending, format, rate, channels);
                self.pending.clear();
                self.chunks += 1;
                Ok(Ports::audio_output(out))
            }
            Some((format, rate, channels, _)) => Ok(Ports::audio_output(AudioBuffer::empty(format, rate, channels))),
            None => Ok(Ports::new()),
        }
    }

    fn custom_metrics(&self) -> Figures {
        let mut m = Figures::from_iter([("chunks", Figure::Count(self.chunks))]);
        if let Some((_, _, _, frames)) = self.layout {
            m.push(("chunk_frames", Figure::Count(frames as u64)));
        }
        m
    }
}

pub(super) struct AudioChunkerFactory;

impl NodeFactory for AudioChunkerFactory {
    fn spec(&self) -> NodeSpec {
        NodeSpec::new(
            "AudioChunkerNode",
            "Re-frames a stream into chunks of a fixed length, flushing the remainder on close.",
        )
        .alias("AudioChunker")
        .one_of(&["chunk_samples", "chunk_ms"])
        .example(serde_json::json!({"chunk_ms": 20}))
        .details(
            "Each call emits, as one buffer, every whole chunk its input completes (usually zero or one for \
                 short stream chunks); the remainder waits for the next call and is emitted, short, when the \
                 stream is flushed. Give `chunk_samples` or `chunk_ms`, not both. Samples keep their format and \
                 are copied at most once; input that already is a whole number of chunks, with nothing \
                 pending, passes through as the same buffer. The audio waiting for a chunk to fill counts \
                 against the request's or stream's memory limit (`max_memory_bytes`).",
        )
        .param(
            ParamSpec::integer("chunk_samples", 1, 10_000_000)
                .unit("samples")
                .describe("chunk length in frames (samples per channel)"),
        )
        .param(
            ParamSpec::integer("chunk_ms", 1, 600_000)
                .unit("ms")
                .describe("chunk length in milliseconds, at the input's rate (rounded up)"),
        )
        .input(PortSpec::audio(INPUT, "audio in chunks of any size"))
        .output(PortSpec::audio(OUTPUT, "whole chunks, in the input's format"))
    }

    fn create(&self, params: &Params) -> Box<dyn Node> {
        let length = match params.opt_u32("chunk_samples") {
            Some(frames) => Length::Frames(frames as usize),
            None => Length::Millis(params.u32("chunk_ms")),
        };
        Box::new(AudioChunkerNode { length, layout: None, pending: Vec::new(), arena: OutputArena::new(), chunks: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::AudioBuffer;
    use crate::nodes::PortValue;
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;

    fn chunker(params: Value) -> Box<dyn Node> {
        AudioChunkerFactory.build(params.as_object().unwrap()).unwrap()
    }

    fn feed(n: &mut Box<dyn Node>, samples: Vec<i16>) -> Option<Vec<i16>> {
        let ctx = NodeContext::new("ch", "AudioChunkerNode", CancellationToken::new());
        let out = n
            .process(Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_i16(samples, 1_000, 1))), &ctx)
            .unwrap();
        out.audio(OUTPUT).ok().map(|a| a.i16_slice().unwrap().to_vec())
    }

    #[test]
    fn reframes_a_stream_and_flushes_the_remainder() {
        let mut n = chunker(json!({"chunk_samples": 4}));
        assert_eq!(feed(&mut n, vec![1, 2, 3]), Some(vec![]), "no whole chunk yet: an empty output");
        assert_eq!(feed(&mut n, vec![4, 5]), Some(vec![1, 2, 3, 4]));
        assert_eq!(feed(&mut n, vec![6, 7, 8, 9, 10, 11, 12]), Some(vec![5, 6, 7, 8, 9, 10, 11, 12]));
        assert_eq!(feed(&mut n, vec![13]), Some(vec![]));
        let ctx = NodeContext::new("ch", "AudioChunkerNode", CancellationToken::new());
        let tail = n.flush(&ctx).unwrap();
        assert_eq!(tail.audio(OUTPUT).unwrap().i16_slice().unwrap(), &[13]);
        assert_eq!(n.custom_metrics()[0], ("chunks", Figure::Count(4)));
    }

    #[test]
    fn chunk_ms_uses_the_input_rate_and_whole_chunks_pass_through() {
        let mut n = chunker(json!({"chunk_ms": 2}));
        let a = AudioBuffer::from_i16(vec![1, 2, 3, 4], 1_000, 1);
        let ptr = a.bytes().as_ptr();
        let ctx = NodeContext::new("ch", "AudioChunkerNode", CancellationToken::new());
        let out = n.process(Ports::new().with(INPUT, PortValue::Audio(a)), &ctx).unwrap();
        assert_eq!(out.audio(OUTPUT).unwrap().bytes().as_ptr(), ptr);
    }

    #[test]
    fn stereo_chunks_are_counted_in_frames() {
        let mut n = chunker(json!({"chunk_samples": 2}));
        let ctx = NodeContext::new("ch", "AudioChunkerNode", CancellationToken::new());
        let out = n
            .process(Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_f32(vec![0.0; 6], 8_000, 2))), &ctx)
            .unwrap();
        assert_eq!(out.audio(OUTPUT).unwrap().frames(), 2);
    }

    #[test]
    fn exactly_one_length_is_required() {
        let errs = AudioChunkerFactory.build(json!({}).as_object().unwrap()).err().unwrap();
        assert!(errs[0].to_string().contains("`chunk_samples` or `chunk_ms` is required"), "{}", errs[0]);
        let errs =
            AudioChunkerFactory.build(json!({"chunk_samples": 2, "chunk_ms": 3}).as_object().unwrap()).err().unwrap();
        assert!(errs[0].to_string().contains("cannot be combined"), "{}", errs[0]);
    }
}
