//! Input checks shared by the audio nodes, with errors that name the input and the offending
//! value (the executor adds the node).

use super::{INPUT, NodeError, Ports};
use crate::audio::{AudioBuffer, SampleFormat};

/// The node's `input` audio, refused if it is missing or holds NaN/Inf samples. Empty audio is
/// valid: a node given none returns an empty `output` in its output layout.
pub fn audio_input(inputs: &Ports) -> Result<&AudioBuffer, NodeError> {
    let audio = inputs.audio(INPUT).map_err(|e| NodeError::invalid_input(format!("{e}")).with_field(INPUT))?;
    if let Some(samples) = audio.f32_slice() {
        // The common case: a branch-free (vectorised) scan, then the slow search only on failure.
        if all_finite(samples) {
            return Ok(audio);
        }
    }
    if let Some((index, value)) = audio.first_non_finite() {
        return Err(NodeError::invalid_input(format!("input sample {index} is {value}; audio must be finite"))
            .with_field(INPUT));
    }
    Ok(audio)
}

/// Refuses a chunk whose rate, channel count or sample format differs from the stream's first
/// chunk (as VALIDATION: a stream's layout is fixed by its first chunk).
pub fn same_layout(audio: &AudioBuffer, rate: u32, channels: u32, format: SampleFormat) -> Result<(), NodeError> {
    if audio.sample_rate() != rate {
        return Err(NodeError::unsupported_audio(format!(
            "input sample_rate changed from {rate} Hz to {} Hz within the stream",
            audio.sample_rate()
        ))
        .with_field("input.sample_rate"));
    }
    if audio.channels() != channels {
        return Err(NodeError::unsupported_audio(format!(
            "input channels changed from {channels} to {} within the stream",
            audio.channels()
        ))
        .with_field("input.channels"));
    }
    if audio.format() != format {
        return Err(NodeError::unsupported_audio(format!(
            "input format changed from {format} to {} within the stream",
            audio.format()
        ))
        .with_field("input.format"));
    }
    Ok(())
}

/// The rate, channel count and sample format a stream's first chunk fixed, for nodes that keep
/// no other state about their input (one per node instance: a unary call gets a fresh one).
#[derive(Debug, Default)]
pub struct StreamLayout(Option<(u32, u32, SampleFormat)>);

impl StreamLayout {
    /// Records the first chunk's layout; refuses a later chunk with another one (see
    /// [`same_layout`]). Empty chunks fix the layout too: they carry a rate, channels and format.
    pub fn check(&mut self, audio: &AudioBuffer) -> Result<(), NodeError> {
        match self.0 {
            Some((rate, channels, format)) => same_layout(audio, rate, channels, format),
            None => {
                self.0 = Some((audio.sample_rate(), audio.channels(), audio.format()));
                Ok(())
            }
        }
    }
}

/// Whether every sample is finite, checked a block at a time without early exits inside a
/// block so the compiler can vectorise it.
fn all_finite(samples: &[f32]) -> bool {
    samples.chunks(256).all(|block| block.iter().fold(true, |ok, s| ok & s.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_layout_refuses_a_chunk_of_another_rate_channel_count_or_format() {
        let mut layout = StreamLayout::default();
        let chunk = |rate, channels| AudioBuffer::from_f32(vec![0.0; 2 * channels as usize], rate, channels);
        layout.check(&chunk(16_000, 1)).unwrap();
        layout.check(&chunk(16_000, 1)).unwrap();
        let err = layout.check(&AudioBuffer::from_i16(vec![0; 2], 16_000, 1)).unwrap_err();
        assert_eq!(err.kind, super::super::NodeErrorKind::Validation);
        assert!(err.message.contains("input format changed from f32 to i16 within the stream"), "{}", err.message);
        let err = layout.check(&chunk(8_000, 1)).unwrap_err();
        assert_eq!(err.kind, super::super::NodeErrorKind::Validation);
        assert!(err.message.contains("changed from 16000 Hz to 8000 Hz"), "{}", err.message);
        let err = layout.check(&chunk(16_000, 2)).unwrap_err();
        assert!(err.message.contains("channels changed from 1 to 2"), "{}", err.message);
    }

    #[test]
    fn all_finite_spots_any_nan_or_infinity() {
        let mut x = vec![0.5f32; 1_000];
        assert!(all_finite(&x));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            x[777] = bad;
            assert!(!all_finite(&x), "{bad}");
        }
    }
}
