use thiserror::Error;

/// A value could not be turned into bytes, or bytes back into a value.
///
/// When decoding fails on bytes whose checksum verified, the bytes are what was written:
/// the Rust type changed incompatibly since. Bump [`crate::State::SCHEMA_VERSION`] when
/// changing command or state types, so that such a store is refused up front.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The serializer could not encode the value.
    #[error("{serializer} could not encode the value: {message}")]
    Encode {
        /// Name of the serializer.
        serializer: &'static str,
        /// What the serializer reported.
        message: String,
    },
    /// The serializer could not decode the bytes.
    #[error("{serializer} could not decode the bytes: {message}")]
    Decode {
        /// Name of the serializer.
        serializer: &'static str,
        /// What the serializer reported.
        message: String,
    },
}
