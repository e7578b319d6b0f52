//! `ShardedMap` against `HashMap`, and its frozen views against the map at freeze time.

use std::collections::HashMap;

use airomem::Freeze;
use airomem::collections::{FrozenMap, ShardedMap};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, u32),
    Remove(u8),
    Get(u8),
    GetMut(u8, u32),
    OrInsert(u8, u32),
    AndModify(u8),
    OrDefault(u8),
    Retain(u8),
    Clear,
    Freeze,
    /// Checks the oldest view still held and lets it go, so that the map's tables become its
    /// own again and their overlays fold back.
    Release,
}

fn op() -> impl Strategy<Value = Op> {
    // Keys from a small range, so that removes and updates hit.
    let key = 0u8..48;
    prop_oneof![
        8 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        3 => key.clone().prop_map(Op::Remove),
        2 => key.clone().prop_map(Op::Get),
        2 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::GetMut(k, v)),
        2 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::OrInsert(k, v)),
        2 => key.clone().prop_map(Op::AndModify),
        1 => key.prop_map(Op::OrDefault),
        1 => (2u8..5).prop_map(Op::Retain),
        1 => Just(Op::Clear),
        2 => Just(Op::Freeze),
        1 => Just(Op::Release),
    ]
}

fn key(k: u8) -> String {
    format!("key-{k}")
}

/// A view taken during the run, with what the map was and serialized to at that moment.
struct Taken {
    frozen: FrozenMap<String, u32, std::hash::RandomState>,
    model: HashMap<String, u32>,
    postcard: Vec<u8>,
    json: Vec<u8>,
}

fn run(shards: usize, split_at: usize, ops: &[Op]) {
    let mut map: ShardedMap<String, u32> = ShardedMap::with_shards(shards).split_at(split_at);
    let mut model: HashMap<String, u32> = HashMap::new();
    let mut taken = Vec::new();
    for op in ops {
        match op.clone() {
            Op::Insert(k, v) => assert_eq!(map.insert(key(k), v), model.insert(key(k), v)),
            Op::Remove(k) => assert_eq!(map.remove(&key(k)), model.remove(&key(k))),
            Op::Get(k) => {
                assert_eq!(map.get(&key(k)), model.get(&key(k)));
                assert_eq!(map.contains_key(key(k).as_str()), model.contains_key(&key(k)));
            }
            Op::GetMut(k, v) => {
                let ours = map.get_mut(&key(k)).map(|x| std::mem::replace(x, v));
                let theirs = model.get_mut(&key(k)).map(|x| std::mem::replace(x, v));
                assert_eq!(ours, theirs);
            }
            Op::OrInsert(k, v) => assert_eq!(*map.entry(key(k)).or_insert(v), *model.entry(key(k)).or_insert(v)),
            Op::AndModify(k) => {
                let ours = *map.entry(key(k)).and_modify(|x| *x = x.wrapping_add(7)).or_insert_with(|| 1);
                let theirs = *model.entry(key(k)).and_modify(|x| *x = x.wrapping_add(7)).or_insert_with(|| 1);
                assert_eq!(ours, theirs);
            }
            Op::OrDefault(k) => {
                *map.entry(key(k)).or_default() += 1;
                *model.entry(key(k)).or_default() += 1;
            }
            Op::Retain(m) => {
                map.retain(|_, v| *v % u32::from(m) != 0);
                model.retain(|_, v| *v % u32::from(m) != 0);
            }
            Op::Clear => {
                map.clear();
                model.clear();
            }
            Op::Release => {
                if !taken.is_empty() {
                    check(taken.remove(0));
                }
            }
            Op::Freeze => taken.push(Taken {
                frozen: map.freeze(),
                model: model.clone(),
                postcard: postcard::to_stdvec(&map).expect("postcard"),
                json: serde_json::to_vec(&map).expect("json"),
            }),
        }
        assert_eq!(map.len(), model.len());
        assert_eq!(map.is_empty(), model.is_empty());
    }
    let entries: HashMap<String, u32> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(entries, model);
    assert_eq!(map.iter().len(), model.len());
    assert_eq!(map.keys().count(), model.len());
    assert_eq!(map.values().map(|v| u64::from(*v)).sum::<u64>(), model.values().map(|v| u64::from(*v)).sum::<u64>());

    for t in taken {
        check(t);
    }
}

/// The view `t` shows and serializes to the map as it was when `t` was taken.
fn check(t: Taken) {
    {
        let seen: HashMap<String, u32> = t.frozen.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(seen, t.model, "a later write showed in the frozen view");
        assert_eq!(t.frozen.len(), t.model.len());
        for (k, v) in &t.model {
            assert_eq!(t.frozen.get(k), Some(v));
        }
        assert_eq!(postcard::to_stdvec(&t.frozen).expect("postcard"), t.postcard);
        assert_eq!(serde_json::to_vec(&t.frozen).expect("json"), t.json);
        let decoded: ShardedMap<String, u32> = postcard::from_bytes(&t.postcard).expect("decode postcard");
        assert_eq!(decoded.len(), t.model.len());
        assert!(t.model.iter().all(|(k, v)| decoded.get(k) == Some(v)));
        let decoded: ShardedMap<String, u32> = serde_json::from_slice(&t.json).expect("decode json");
        assert!(decoded.len() == t.model.len() && t.model.iter().all(|(k, v)| decoded.get(k) == Some(v)));
        // JSON of a map reads as the HashMap with the same entries.
        let as_value: serde_json::Value = serde_json::from_slice(&t.json).expect("json value");
        assert_eq!(as_value, serde_json::to_value(&t.model).expect("model json"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sharded_map_behaves_like_hash_map(
        shards in prop_oneof![Just(1usize), Just(3), Just(256)],
        split_at in prop_oneof![Just(1usize), Just(2), Just(8), Just(airomem::collections::SHARD_SPLIT_AT)],
        ops in prop::collection::vec(op(), 0..200),
    ) {
        run(shards, split_at, &ops);
    }
}

#[test]
fn a_write_after_a_freeze_goes_beside_the_shard_and_copies_nothing() {
    let mut map: ShardedMap<u32, u32> = ShardedMap::with_shards(16);
    map.extend((0..1000).map(|i| (i, i)));
    let frozen = map.freeze();
    assert_eq!(<ShardedMap<u32, u32> as Freeze>::copied(&frozen), 0);
    map.insert(7, 70);
    map.insert(7, 71);
    *map.get_mut(&7).expect("present") += 1;
    assert_eq!(map.remove(&8), Some(8));
    map.insert(5000, 1);
    assert_eq!(frozen.copied_shards(), 0, "changes to a shared shard go into its overlay");
    // Misses change nothing.
    assert_eq!(map.remove(&6000), None);
    assert_eq!(map.get_mut(&6000), None);
    assert_eq!((frozen.get(&7), frozen.get(&8), frozen.get(&5000)), (Some(&7), Some(&8), None));
    assert_eq!((map[&7], map.get(&8), map[&5000]), (72, None, 1));
    assert_eq!((map.len(), frozen.len()), (1000, 1000));
    map.clear();
    assert_eq!(frozen.len(), 1000);
    assert_eq!(frozen.copied_shards(), 16);
}

#[test]
fn an_overlay_past_a_quarter_of_its_shard_copies_the_shard_once() {
    let mut map: ShardedMap<u32, u32> = ShardedMap::with_shards(1).split_at(usize::MAX);
    map.extend((0..400).map(|i| (i, i)));
    let frozen = map.freeze();
    for i in 0..100 {
        map.insert(i, i + 1);
    }
    assert_eq!(frozen.copied_shards(), 0, "100 changes of 400 entries: overlaid");
    map.insert(100, 101);
    assert_eq!(frozen.copied_shards(), 1, "the 101st copies the shard");
    assert!((0..=100).all(|i| map[&i] == i + 1) && (0..=100).all(|i| frozen.get(&i) == Some(&i)));
}

#[test]
fn overlays_fold_back_once_the_view_is_gone() {
    let mut map: ShardedMap<u32, u32> = ShardedMap::with_shards(4).split_at(usize::MAX);
    map.extend((0..400).map(|i| (i, i)));
    let frozen = map.freeze();
    for i in 0..40 {
        map.insert(i, i + 1);
    }
    map.remove(&399);
    drop(frozen);
    // One write per shard folds every overlay back into its table, in place.
    for i in 1000..1004 {
        map.insert(i, i);
    }
    let again = map.freeze();
    map.insert(0, 0);
    assert_eq!(again.get(&0), Some(&1));
    assert_eq!(again.get(&399), None);
    assert_eq!(again.len(), 403);
    assert_eq!(map.len(), 403);
    assert_eq!(again.copied_shards(), 0);
}

#[test]
fn std_map_api() {
    let mut map: ShardedMap<String, u64> = ["a", "b", "c"].iter().map(|s| (s.to_string(), 1)).collect();
    for (_, v) in map.iter_mut() {
        *v += 1;
    }
    for v in map.values_mut() {
        *v *= 10;
    }
    for (_, v) in &mut map {
        *v += 1;
    }
    assert_eq!(map["b"], 21);
    let clone = map.clone();
    map.insert("d".into(), 4);
    assert_ne!(clone, map);
    map.remove("d");
    assert_eq!(clone, map);
    let mut total = 0;
    for (_, v) in &map {
        total += v;
    }
    assert_eq!(total, 63);
    let owned: HashMap<String, u64> = map.clone().into_iter().collect();
    assert_eq!(owned.len(), 3);
    assert_eq!(format!("{:?}", ShardedMap::<u8, u8>::new()), "{}");
    map.reserve(1000);
    assert_eq!(map.get_key_value("a"), Some((&"a".to_string(), &21)));
    assert_eq!(map.remove_entry("a"), Some(("a".to_string(), 21)));
    let mut small: ShardedMap<u8, u8> = ShardedMap::with_capacity(10);
    small.extend([(&1, &2)]);
    assert_eq!(small.shard_count(), 1);
    assert_eq!(ShardedMap::<u8, u8>::with_shards(100).shard_count(), 100);
    assert_eq!(ShardedMap::<u8, u8>::with_capacity(100_000).shard_count(), 512);
}

#[test]
fn a_large_map_decodes_to_the_same_entries() {
    // Past the size from which the shards are built on two threads.
    let map: ShardedMap<u64, String> = (0..100_000u64).map(|i| (i * 7919, i.to_string())).collect();
    let bytes = postcard::to_stdvec(&map).expect("encode");
    let decoded: ShardedMap<u64, String> = postcard::from_bytes(&bytes).expect("decode");
    assert_eq!(decoded, map);
    assert_eq!(decoded.shard_count(), 512, "100,000 entries in shards about half of 512 full");
    let as_std: HashMap<u64, String> = postcard::from_bytes(&bytes).expect("decode as HashMap");
    assert_eq!(as_std.len(), map.len());
    assert!(as_std.iter().all(|(k, v)| map.get(k) == Some(v)));
}

/// A map that grows splits one shard at a time and keeps its shards near
/// `SHARD_SPLIT_AT`, and a view taken part way keeps its entries while the map splits
/// (and so copies) every shard it shares.
#[test]
fn a_growing_map_adds_shards_one_at_a_time() {
    use airomem::collections::SHARD_SPLIT_AT;
    let mut map: ShardedMap<u64, u64> = ShardedMap::new();
    assert_eq!(map.shard_count(), 1);
    let mut frozen = None;
    for i in 0..200_000u64 {
        let before = map.shard_count();
        map.insert(i, i);
        assert!(map.shard_count() - before <= 1, "one write added more than one shard");
        if i == 50_000 {
            frozen = Some(map.freeze());
        }
    }
    let frozen = frozen.expect("taken");
    assert_eq!(frozen.len(), 50_001);
    assert!((0..=50_000).all(|i| frozen.get(&i) == Some(&i)));
    assert_eq!(frozen.get(&50_001), None);
    // The map has since doubled twice: every shard the view holds was split, none is shared.
    assert_eq!(frozen.copied_shards(), frozen.shard_count());
    let shards = map.shard_count();
    assert!((200_000 / SHARD_SPLIT_AT..=4 * 200_000 / SHARD_SPLIT_AT).contains(&shards), "{shards} shards");
    assert_eq!(map.len(), 200_000);
    assert!((0..200_000u64).all(|i| map[&i] == i));
}
