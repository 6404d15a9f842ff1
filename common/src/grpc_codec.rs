//! The `ppo.v1` gRPC codec: prost's encoding, and a decoding whose failure says what it is by its type. A body that
//! does not decode as the expected message becomes `INVALID_ARGUMENT` with the rejection reason `malformed`
//! (prost's `DecodeError`, not a message text, decides it); tonic's own codec answers `INTERNAL`, which a server
//! would have to tell from its other internal errors by the message text.

use crate::metrics::reason;
use prost::Message;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

/// The codec the generated client and server of `ppo.v1` use (`build.rs`).
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(PhantomData)
    }
}

/// Decodes `U`; a failure is [`malformed`].
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| malformed(&e))
    }
}

/// The status of a body that is not a protobuf message of the expected type.
pub fn malformed(e: &prost::DecodeError) -> Status {
    crate::wire::with_reason(
        Status::invalid_argument(format!("the request could not be decoded as a protobuf message of ppo.v1: {e}")),
        reason::MALFORMED,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_decode_failure_is_malformed() {
        let e = crate::wire::pb::Rollout::decode(&b"\xff\xff\xff"[..]).unwrap_err();
        let status = malformed(&e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(crate::wire::rejection_reason(&status), Some(reason::MALFORMED));
    }
}
