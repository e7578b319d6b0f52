//! The rollback of a panicking command rebuilds the state from the files; if that rebuild
//! panics too (here: a command's `Deserialize`, met again while replaying the journal), the
//! state is half changed and cannot be put right. The store must refuse reads at once
//! rather than serve it, whichever thread the command ran in.

use std::collections::BTreeSet;
use std::sync::Mutex;

use airomem::{Durability, Error, PostcardSerializer, Store, StoreOptions};
use serde::{Deserialize, Deserializer, Serialize};

/// Values whose commands panic when they are decoded, each added once it was committed
/// (tests running at once use values of their own).
static TOUCHY: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

#[derive(Serialize, Deserialize, Default, Debug)]
struct Pair {
    a: u64,
    b: u64,
}

#[derive(Serialize, Deserialize, Debug)]
struct Add {
    #[serde(deserialize_with = "touchy")]
    value: u64,
    explode: bool,
}

fn touchy<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = u64::deserialize(deserializer)?;
    assert!(!TOUCHY.lock().expect("touchy").contains(&value), "a Deserialize that panics");
    Ok(value)
}

impl airomem::State for Pair {
    type Command = Add;
    fn execute(&mut self, add: Add) {
        self.a += add.value;
        assert!(!add.explode, "a command that panics half way");
        self.b += add.value;
    }
}

async fn half_applied_state_is_never_served(options: StoreOptions, value: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: Store<Pair, _> = Store::open_with(PostcardSerializer, tmp.path(), options).await.expect("open");
    store.commit(Add { value, explode: false }).await.expect("commit");
    TOUCHY.lock().expect("touchy").insert(value);
    let failed = store.commit(Add { value: value + 1, explode: true }).await;
    assert!(matches!(failed, Err(Error::CommandPanicked { .. })), "{failed:?}");
    match store.query() {
        Ok(pair) => panic!("a read was served from a state that could not be rebuilt: {:?}", *pair),
        Err(e) => assert!(matches!(e, Error::Broken { .. }), "{e}"),
    }
    let refused = store.commit(Add { value: value + 2, explode: false }).await;
    assert!(matches!(refused, Err(Error::Broken { .. })), "{refused:?}");
    drop(store.close().await);
    TOUCHY.lock().expect("touchy").remove(&value);
}

/// Under `OsBuffered` a lone commit runs in its caller's thread; its rollback is the writer
/// thread's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_panics_after_a_commit_in_the_callers_thread() {
    half_applied_state_is_never_served(StoreOptions::default().durability(Durability::OsBuffered), 1).await;
}

/// Under `Fsync` every commit goes through the writer thread, and so does its rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_panics_in_the_writer_thread() {
    half_applied_state_is_never_served(StoreOptions::default().durability(Durability::Fsync), 11).await;
}
