//! Random schema-1 histories (commands, snapshots, reopens, segment sizes) opened under
//! schema 2 give exactly `From` of the schema-1 model; more schema-2 commands, snapshots and
//! reopens then give the schema-2 model. Along the way the journal keeps its schema rules:
//! one version per segment, never decreasing, and nothing of schema 1 written after the
//! migration.

mod segment_files;

use std::path::Path;

use airomem::{Migration, PostcardSerializer, Seq, Store, StoreOptions};
use airomem_workspace::migration::{Tagged, TaggedLog};
use airomem_workspace::{Append, SeqLog};
use proptest::collection::vec;
use proptest::prelude::*;
use segment_files::{read_segment, segment_names};

#[derive(Debug, Clone)]
enum Op {
    Commit(u64),
    Snapshot,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![8 => any::<u16>().prop_map(|v| Op::Commit(v.into())), 1 => Just(Op::Snapshot), 1 => Just(Op::Reopen)]
}

fn append(value: u64) -> Append {
    Append { value, pad: vec![3; (value % 64) as usize], panic: false }
}

fn options(segment_size: u64) -> StoreOptions {
    StoreOptions::default().segment_size(segment_size)
}

/// Runs `ops` against the store of type `S` in `dir`, reopening it where they say; returns
/// the sequence number and value of every commit, in order.
async fn run<S>(dir: &Path, segment_size: u64, ops: &[Op]) -> (Store<S, PostcardSerializer>, Vec<(u64, u64)>)
where
    S: airomem::State<Command = Append>,
{
    let open = || Store::<S, PostcardSerializer>::open_with(PostcardSerializer, dir, options(segment_size));
    let mut store = open().await.expect("open");
    let mut committed = Vec::new();
    for op in ops {
        match op {
            Op::Commit(value) => {
                let receipt = store.commit(append(*value)).await.expect("commit");
                committed.push((receipt.seq.0, *value));
            }
            Op::Snapshot => {
                #[cfg(feature = "snapshot")]
                store.snapshot().await.expect("snapshot");
            }
            Op::Reopen => {
                store.close().await.expect("close");
                store = open().await.expect("reopen");
            }
        }
    }
    (store, committed)
}

/// Schema versions of the segments, oldest first.
fn segment_schemas(dir: &Path) -> Vec<u32> {
    segment_names(dir).iter().map(|n| read_segment(&dir.join(n)).schema).collect()
}

async fn check(segment_size: u64, v1_ops: Vec<Op>, v2_ops: Vec<Op>) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let (store, v1) = run::<SeqLog>(&dir, segment_size, &v1_ops).await;
    store.close().await.expect("close schema 1");
    prop_assert!(segment_schemas(&dir).iter().all(|&v| v == 1));

    let migrated = TaggedLog::from(SeqLog { entries: v1.clone() });
    let store = Store::<TaggedLog, PostcardSerializer>::open_with(PostcardSerializer, &dir, options(segment_size))
        .await
        .expect("open schema 2");
    prop_assert_eq!(&*store.query().expect("query"), &migrated);
    // A schema-1 snapshot is a schema-1 file even when it holds no command (one taken of an
    // empty store sits at Seq(0)): the open converts what it loads from it.
    let snapshotted = cfg!(feature = "snapshot") && v1_ops.iter().any(|op| matches!(op, Op::Snapshot));
    let expected_migrations = match v1.last() {
        Some(&(last, _)) => vec![Migration { from: 1, to: 2, after: Seq(last) }],
        None if snapshotted => vec![Migration { from: 1, to: 2, after: Seq(0) }],
        // A store that holds no command and no snapshot has nothing to convert.
        None => Vec::new(),
    };
    prop_assert_eq!(&store.recovery().migrations, &expected_migrations);
    let schemas = segment_schemas(&dir);
    prop_assert_eq!(schemas.last(), Some(&2), "commits after the migration go to a schema-2 segment");
    prop_assert!(schemas.windows(2).all(|w| w[0] <= w[1]), "schema versions decrease: {:?}", schemas);
    store.close().await.expect("close");

    let (store, v2) = run::<TaggedLog>(&dir, segment_size, &v2_ops).await;
    let mut model = migrated;
    model.entries.extend(v2.iter().map(|&(seq, value)| Tagged { seq, value, schema: 2 }));
    prop_assert_eq!(&*store.query().expect("query"), &model);
    store.close().await.expect("close");

    let store = Store::<TaggedLog, PostcardSerializer>::open_with(PostcardSerializer, &dir, options(segment_size))
        .await
        .expect("last reopen");
    prop_assert_eq!(&*store.query().expect("query"), &model);
    if cfg!(feature = "snapshot") {
        prop_assert!(store.recovery().migrations.is_empty(), "the sealed migration does not run again");
    }
    let schemas = segment_schemas(&dir);
    prop_assert!(schemas.windows(2).all(|w| w[0] <= w[1]), "schema versions decrease: {:?}", schemas);
    store.close().await.expect("close");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn schema_2_opens_any_schema_1_history_as_its_conversion(
        segment_size in prop_oneof![Just(300u64), Just(2000), Just(1 << 20)],
        v1_ops in vec(op(), 0..80),
        v2_ops in vec(op(), 0..30),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(check(segment_size, v1_ops, v2_ops))?;
    }
}

/// The case proptest found: a schema-1 store whose only history is a snapshot of the empty
/// state (at Seq(0)). The model once expected no conversion; the snapshot is a schema-1 file.
#[test]
fn a_schema_1_store_holding_only_an_empty_snapshot() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(check(300, vec![Op::Snapshot], Vec::new())).expect("check");
}
