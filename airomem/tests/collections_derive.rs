//! `#[derive(Freeze)]`, imbl's collections and `ByClone`: a view serializes to the bytes of
//! the value as it was at the freeze, whatever changes after.
#![cfg(all(feature = "derive", feature = "imbl"))]

use std::collections::HashMap;
use std::fmt::Debug;

use airomem::collections::{ByClone, ShardedMap};
use airomem::imbl;
use airomem::{Freeze, PostcardSerializer, SnapshotView};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Freeze)]
struct Sessions {
    tokens: ShardedMap<String, u64>,
    users: imbl::OrdMap<u64, String>,
    queue: imbl::Vector<u32>,
    tags: imbl::HashSet<String>,
    names: imbl::OrdSet<String>,
    by_id: imbl::HashMap<u64, u64>,
    created: u64,
    r#type: Option<u8>,
    limits: ByClone<Vec<u32>>,
    ratio: (f64, bool),
    boxed: Box<u64>,
    nested: Nested,
}

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Freeze)]
struct Nested {
    counts: ShardedMap<u32, u32>,
}

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Freeze)]
struct Pair(u64, ShardedMap<u8, u8>);

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Freeze)]
struct Newtype(ShardedMap<u16, u16>);

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Freeze)]
struct Unit;

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Freeze)]
struct Generic<K: std::hash::Hash + Eq + Clone + Send, V: Send>
where
    V: Clone,
{
    map: ShardedMap<K, V>,
    extra: Option<V>,
}

/// Freezes `value`, changes it with `change`, and checks that the view still serializes to
/// the bytes (postcard and JSON) the value had at the freeze, and decodes to that value.
fn check<T>(mut value: T, change: impl FnOnce(&mut T)) -> u64
where
    T: Freeze + Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let before = value.clone();
    let postcard = postcard::to_stdvec(&value).expect("postcard");
    let json = serde_json::to_vec(&value).expect("json");
    let frozen = value.freeze();
    change(&mut value);
    assert_ne!(value, before, "the change changed nothing");
    assert_eq!(postcard::to_stdvec(&frozen).expect("postcard"), postcard);
    assert_eq!(serde_json::to_vec(&frozen).expect("json"), json);
    let decoded: T = postcard::from_bytes(&postcard).expect("decode postcard");
    assert_eq!(decoded, before);
    let decoded: T = serde_json::from_slice(&json).expect("decode json");
    assert_eq!(decoded, before);
    // `before` shares the shards too: only without it does a copied shard have one owner.
    drop(before);
    T::copied(&frozen)
}

fn sessions() -> Sessions {
    let mut s = Sessions::default();
    for i in 0..200u64 {
        s.tokens.insert(format!("token-{i}"), i);
        s.users.insert(i, format!("user-{i}"));
        s.queue.push_back(i as u32);
        s.tags.insert(format!("tag-{}", i % 7));
        s.names.insert(format!("name-{i}"));
        s.by_id.insert(i, i * 2);
        s.nested.counts.insert(i as u32, 1);
    }
    s.created = 42;
    s.r#type = Some(3);
    s.limits = ByClone(vec![1, 2, 3]);
    s.ratio = (0.5, true);
    s.boxed = Box::new(9);
    s
}

#[test]
fn derived_view_serializes_as_the_struct_was() {
    let copied = check(sessions(), |s| {
        s.tokens.insert("token-1".into(), 1000);
        s.tokens.remove("token-2");
        s.users.insert(1, "changed".into());
        s.queue.push_back(7);
        s.tags.insert("new".into());
        s.names.remove("name-3");
        s.by_id.insert(1000, 1);
        s.created += 1;
        s.r#type = None;
        s.limits.push(4);
        s.ratio.1 = false;
        *s.boxed = 10;
        *s.nested.counts.get_mut(&5).expect("present") += 1;
        // `entry` hands out a shard's table itself, so a shard a view holds is copied: one
        // in each map, which the derived view's count must add up.
        *s.tokens.entry("token-3".into()).or_default() += 1;
        *s.nested.counts.entry(6).or_default() += 1;
    });
    // The other writes went into the shards' overlays and copied nothing.
    assert_eq!(copied, 2);
}

#[test]
fn every_field_change_stays_out_of_the_view() {
    type Change = fn(&mut Sessions);
    let changes: [Change; 8] = [
        |s| s.created = 1,
        |s| s.users = imbl::OrdMap::new(),
        |s| s.queue.clear(),
        |s| s.tags.clear(),
        |s| s.limits.clear(),
        |s| *s.boxed = 0,
        |s| s.nested.counts.clear(),
        |s| s.tokens.retain(|_, v| *v % 2 == 0),
    ];
    for change in changes {
        check(sessions(), change);
    }
}

#[test]
fn derived_tuple_newtype_unit_and_generic_structs() {
    let mut pair = Pair(1, ShardedMap::new());
    pair.1.insert(1, 1);
    check(pair, |p| {
        p.0 = 2;
        p.1.insert(2, 2);
    });
    let mut newtype = Newtype::default();
    newtype.0.insert(3, 3);
    assert_eq!(check(newtype, |n| *n.0.get_mut(&3).expect("present") = 4), 1);
    let _view = Unit.freeze();
    assert_eq!(postcard::to_stdvec(&Unit.freeze()).expect("postcard"), postcard::to_stdvec(&Unit).expect("postcard"));
    assert_eq!(serde_json::to_string(&Unit.freeze()).expect("json"), serde_json::to_string(&Unit).expect("json"));
    let mut generic: Generic<String, u64> = Generic { map: ShardedMap::new(), extra: Some(1) };
    generic.map.insert("a".into(), 1);
    check(generic, |g| {
        g.map.insert("b".into(), 2);
        g.extra = None;
    });
}

#[test]
fn by_clone_is_transparent() {
    let wrapped = ByClone(HashMap::from([(1u8, 2u8)]));
    assert_eq!(serde_json::to_string(&wrapped).expect("json"), r#"{"1":2}"#);
    let back: ByClone<HashMap<u8, u8>> = serde_json::from_str(r#"{"1":2}"#).expect("decode");
    assert_eq!(back, wrapped);
    assert_eq!(*ByClone::from(5u8), 5);
    assert_eq!(ByClone(7u8).into_inner(), 7);
}

#[test]
fn snapshot_view_of_a_derived_state_writes_its_bytes_and_reports_copies() {
    let mut state = sessions();
    let expected = postcard::to_stdvec(&state).expect("postcard");
    let view: SnapshotView<PostcardSerializer> = SnapshotView::of(&state);
    // Through `entry`, which copies the shard the view holds (an `insert` would not).
    *state.tokens.entry("token-7".into()).or_default() = 0;
    let mut written = Vec::new();
    let copied = view.write_to(&PostcardSerializer, &mut written).expect("write");
    assert_eq!(written, expected);
    assert_eq!(copied, 1);
}

/// A public state with a private field type, and a generic one over a private type: the
/// derive's hidden views must compile without privacy errors or warnings.
pub mod visibility {
    use airomem::Freeze;
    use airomem::collections::ShardedMap;
    use serde::{Deserialize, Serialize};

    /// Public, with a private field type.
    #[derive(Serialize, Deserialize, Default, Freeze)]
    pub struct Public {
        inner: Private,
        wrapped: Wrapper<Private>,
        count: u64,
    }

    #[derive(Serialize, Deserialize, Default, Freeze)]
    struct Private {
        map: ShardedMap<u8, u8>,
    }

    /// Public and generic, instantiated with a private type.
    #[derive(Serialize, Deserialize, Default, Freeze)]
    pub struct Wrapper<T> {
        value: Option<T>,
    }
}

#[test]
fn views_of_nested_private_and_generic_fields() {
    let state = visibility::Public::default();
    let frozen = state.freeze();
    assert_eq!(postcard::to_stdvec(&frozen).expect("postcard"), postcard::to_stdvec(&state).expect("postcard"));
    assert_eq!(serde_json::to_string(&frozen).expect("json"), serde_json::to_string(&state).expect("json"));
}
