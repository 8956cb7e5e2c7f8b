//! The protobuf codec of every generated service and client: prost's, timed. Encode and decode
//! durations go to `remotemedia_codec_duration_seconds{direction}`, so the share of a request's
//! time spent on the wire format can be read from the server's own metrics.

use std::marker::PhantomData;
use std::time::Instant;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use super::observe;

/// [`ProstCodec`] with its encode and decode calls timed.
#[derive(Debug, Clone)]
pub struct TimedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for TimedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for TimedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = TimedEncoder<T>;
    type Decoder = TimedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        TimedEncoder(ProstCodec::<T, U>::raw_encoder(BufferSettings::default()))
    }

    fn decoder(&mut self) -> Self::Decoder {
        TimedDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// Encodes with prost and records how long it took.
#[derive(Debug)]
pub struct TimedEncoder<T>(ProstEncoder<T>);

impl<T: Message> Encoder for TimedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let started = Instant::now();
        let result = self.0.encode(item, buf);
        observe::codec("encode", started.elapsed());
        result
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Decodes with prost and records how long it took.
#[derive(Debug)]
pub struct TimedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for TimedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let started = Instant::now();
        let result = self.0.decode(buf);
        observe::codec("decode", started.elapsed());
        result
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
