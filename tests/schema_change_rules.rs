//! The guide's table (docs/guide/changing-your-types.md) of which type changes need a new `State::SCHEMA_VERSION`, row by row,
//! with the two serializers a store uses: bytes written by the old type, read by the new one.
//! "Decodes as something else" is the dangerous outcome: no error, a different history.

use airomem::{JsonSerializer, PostcardSerializer, Serializer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Encodes `old` with `serializer` and decodes the bytes as `New`.
fn reread<Z: Serializer, New: DeserializeOwned>(serializer: Z, old: &impl Serialize) -> Option<New> {
    let mut bytes = Vec::new();
    serializer.encode(old, &mut bytes).expect("encode");
    serializer.decode(&bytes).ok()
}

#[test]
fn appending_a_variant_needs_no_new_version() {
    #[derive(Serialize)]
    enum Old {
        Create { id: u64 },
        Delete { id: u64 },
    }
    #[derive(Deserialize, Debug, PartialEq)]
    enum New {
        Create { id: u64 },
        Delete { id: u64 },
        Archive { id: u64 },
    }
    for old in [Old::Create { id: 7 }, Old::Delete { id: 8 }] {
        let expected = match old {
            Old::Create { id } => New::Create { id },
            Old::Delete { id } => New::Delete { id },
        };
        assert_eq!(reread::<_, New>(PostcardSerializer, &old).as_ref(), Some(&expected));
        assert_eq!(reread::<_, New>(JsonSerializer, &old).as_ref(), Some(&expected));
    }
}

#[test]
fn a_defaulted_field_needs_a_new_version_under_postcard_only() {
    #[derive(Serialize)]
    struct Old {
        id: u64,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    struct New {
        id: u64,
        #[serde(default)]
        note: String,
    }
    let old = Old { id: 7 };
    assert_eq!(reread::<_, New>(PostcardSerializer, &old), None, "postcard reads a field that is not there");
    assert_eq!(reread::<_, New>(JsonSerializer, &old), Some(New { id: 7, note: String::new() }));
}

#[test]
fn a_renamed_field_or_variant_needs_a_new_version_under_json_only_unless_aliased() {
    #[derive(Serialize)]
    enum Old {
        Create { user_id: u64 },
    }
    #[derive(Deserialize, Debug, PartialEq)]
    enum Renamed {
        Open { user: u64 },
    }
    #[derive(Deserialize, Debug, PartialEq)]
    enum Aliased {
        #[serde(alias = "Create")]
        Open {
            #[serde(alias = "user_id")]
            user: u64,
        },
    }
    let old = Old::Create { user_id: 7 };
    assert_eq!(reread::<_, Renamed>(PostcardSerializer, &old), Some(Renamed::Open { user: 7 }));
    assert_eq!(reread::<_, Renamed>(JsonSerializer, &old), None);
    assert_eq!(reread::<_, Aliased>(JsonSerializer, &old), Some(Aliased::Open { user: 7 }));
}

#[test]
fn reordered_fields_or_variants_decode_as_something_else_under_postcard() {
    #[derive(Serialize)]
    struct OldFields {
        granted: u64,
        revoked: u64,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    struct NewFields {
        revoked: u64,
        granted: u64,
    }
    let old = OldFields { granted: 1, revoked: 2 };
    assert_eq!(reread::<_, NewFields>(PostcardSerializer, &old), Some(NewFields { revoked: 1, granted: 2 }));
    assert_eq!(reread::<_, NewFields>(JsonSerializer, &old), Some(NewFields { revoked: 2, granted: 1 }));

    #[derive(Serialize)]
    enum OldVariants {
        Grant,
        #[expect(dead_code, reason = "only its position matters")]
        Revoke,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    enum NewVariants {
        Revoke,
        Grant,
    }
    assert_eq!(reread::<_, NewVariants>(PostcardSerializer, &OldVariants::Grant), Some(NewVariants::Revoke));
    assert_eq!(reread::<_, NewVariants>(JsonSerializer, &OldVariants::Grant), Some(NewVariants::Grant));
}

#[test]
fn a_retyped_field_needs_a_new_version_under_both() {
    #[derive(Serialize)]
    struct Old {
        balance: i64,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    struct New {
        balance: u64,
    }
    // Postcard's zigzag-encoded -1 is the varint 1: a different balance, and no error.
    assert_eq!(reread::<_, New>(PostcardSerializer, &Old { balance: -1 }), Some(New { balance: 1 }));
    assert_eq!(reread::<_, New>(JsonSerializer, &Old { balance: -1 }), None);
}
