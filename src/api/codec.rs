//! The protobuf codec of every allot service: tonic-prost's, except that a request whose bytes
//! do not decode as the method's message (wrong wire types, truncated, invalid UTF-8 in a
//! string) is INVALID_ARGUMENT with reason `MALFORMED_MESSAGE`, not tonic's INTERNAL — the
//! caller's bug, not ours. build.rs points the generated code here (`codec_path`).

use tonic::{
    Code, Status,
    codec::{BufferSettings, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::error::{Error, Reason};

/// [`ProstCodec`] with [`MalformedAsInvalid`] decoding.
#[derive(Debug, Clone, Default)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MalformedAsInvalid<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        MalformedAsInvalid(self.0.decoder())
    }
}

/// A [`ProstDecoder`] whose decode errors are INVALID_ARGUMENT.
#[derive(Debug)]
pub struct MalformedAsInvalid<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for MalformedAsInvalid<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                Error::new(
                    Code::InvalidArgument,
                    Reason::MalformedMessage,
                    format!("the message does not decode: {}", status.message()),
                )
                .into()
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
