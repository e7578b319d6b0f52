use std::fmt;
use std::io::Write;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::CodecError;

/// Identifies a serializer in file headers, so that a store is never decoded with the wrong one.
///
/// Ids below 256 are reserved for serializers shipped with airomem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SerializerId(pub u16);

impl fmt::Display for SerializerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("postcard (1)"),
            2 => f.write_str("json (2)"),
            n => write!(f, "custom ({n})"),
        }
    }
}

/// Turns commands and states into bytes and back.
///
/// Implementations must round-trip: decoding what was encoded gives an equal value. The
/// store relies on it twice: the command it applies in memory is the one decoded from the
/// journal bytes, and recovery decodes those same bytes again.
pub trait Serializer: Send + Sync + 'static {
    /// The id written into file headers.
    const ID: SerializerId;
    /// A human-readable name for errors and logs.
    const NAME: &'static str;

    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes one value that occupies all of `bytes`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;

    /// Writes the encoding of `value` into `out` as it goes: a snapshot of a frozen view
    /// streams through this into the compressor, never holding the whole image.
    ///
    /// The default encodes into a buffer and writes that (the whole image in memory once);
    /// the shipped serializers stream. The bytes must equal [`Serializer::encode`]'s.
    fn encode_to<T: Serialize + ?Sized, W: Write>(&self, value: &T, mut out: W) -> Result<(), CodecError> {
        let mut buffer = Vec::new();
        self.encode(value, &mut buffer)?;
        out.write_all(&buffer).map_err(|e| CodecError::Encode { serializer: Self::NAME, message: e.to_string() })
    }
}

/// The compact default: [postcard](https://docs.rs/postcard), a varint binary format.
#[derive(Clone, Copy, Debug, Default)]
pub struct PostcardSerializer;

impl Serializer for PostcardSerializer {
    const ID: SerializerId = SerializerId(1);
    const NAME: &'static str = "postcard";

    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        postcard::to_io(value, out)
            .map(drop)
            .map_err(|e| CodecError::Encode { serializer: Self::NAME, message: e.to_string() })
    }

    fn encode_to<T: Serialize + ?Sized, W: Write>(&self, value: &T, out: W) -> Result<(), CodecError> {
        postcard::to_io(value, out)
            .map(drop)
            .map_err(|e| CodecError::Encode { serializer: Self::NAME, message: e.to_string() })
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (value, rest) = postcard::take_from_bytes(bytes)
            .map_err(|e| CodecError::Decode { serializer: Self::NAME, message: e.to_string() })?;
        if rest.is_empty() {
            Ok(value)
        } else {
            Err(CodecError::Decode {
                serializer: Self::NAME,
                message: format!("{} bytes left over after the value", rest.len()),
            })
        }
    }
}

/// JSON through serde_json: larger and slower than postcard, but readable with any tool.
#[cfg(feature = "json")]
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonSerializer;

#[cfg(feature = "json")]
impl Serializer for JsonSerializer {
    const ID: SerializerId = SerializerId(2);
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, value)
            .map_err(|e| CodecError::Encode { serializer: Self::NAME, message: e.to_string() })
    }

    fn encode_to<T: Serialize + ?Sized, W: Write>(&self, value: &T, out: W) -> Result<(), CodecError> {
        serde_json::to_writer(out, value)
            .map_err(|e| CodecError::Encode { serializer: Self::NAME, message: e.to_string() })
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::Decode { serializer: Self::NAME, message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Cmd {
        Put { key: String, value: u64 },
        Delete(String),
    }

    fn round_trip<Z: Serializer>(z: &Z) {
        let values = [Cmd::Put { key: "k".into(), value: u64::MAX }, Cmd::Delete(String::new())];
        for value in values {
            let mut out = Vec::new();
            z.encode(&value, &mut out).expect("encodes");
            assert_eq!(z.decode::<Cmd>(&out).expect("decodes"), value);
        }
    }

    #[test]
    fn postcard_round_trips_and_rejects_trailing_bytes() {
        round_trip(&PostcardSerializer);
        let mut out = Vec::new();
        PostcardSerializer.encode(&Cmd::Delete("x".into()), &mut out).expect("encodes");
        out.push(0);
        assert!(matches!(
            PostcardSerializer.decode::<Cmd>(&out),
            Err(CodecError::Decode { serializer: "postcard", .. })
        ));
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trips() {
        round_trip(&JsonSerializer);
    }
}
