//! A command that encodes to more than a record may hold is refused with a typed error before
//! it reaches the journal: it takes no sequence number, and the store stays usable.

use airomem::{Durability, Error, JournalError, PostcardSerializer, Store, StoreOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default, Debug)]
struct Notes {
    notes: Vec<String>,
}

impl airomem::State for Notes {
    type Command = String;
    fn execute(&mut self, note: String) {
        self.notes.push(note);
    }
}

#[tokio::test]
async fn a_command_larger_than_a_record_is_refused_and_the_store_goes_on() {
    refused_and_the_store_goes_on(Durability::Fsync).await;
}

/// Under `OsBuffered` a lone commit is encoded and refused in its caller's thread.
#[tokio::test]
async fn a_command_larger_than_a_record_is_refused_in_its_callers_thread() {
    refused_and_the_store_goes_on(Durability::OsBuffered).await;
}

async fn refused_and_the_store_goes_on(durability: Durability) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::default().durability(durability);
    let store: Store<Notes, PostcardSerializer> =
        Store::open_with(PostcardSerializer, tmp.path(), options).await.expect("open");
    store.commit("small".to_string()).await.expect("commit");

    let huge = "x".repeat(airomem_journal::MAX_PAYLOAD_LEN + 1);
    match store.commit(huge).await {
        Err(Error::Journal(e)) => match &*e {
            JournalError::RecordTooLarge { len, max } => {
                assert_eq!(*max, airomem_journal::MAX_PAYLOAD_LEN);
                assert!(*len > *max, "the error names the encoded size");
            }
            other => panic!("expected RecordTooLarge, got {other}"),
        },
        other => panic!("expected a journal error, got {other:?}"),
    }

    let after = store.commit("after".to_string()).await.expect("the store is not poisoned");
    assert_eq!(after.seq.get(), 2, "the refused command took no sequence number");
    assert_eq!(store.query().expect("query").notes, ["small", "after"]);
    drop(store);
    let store: Store<Notes, PostcardSerializer> = Store::open(PostcardSerializer, tmp.path()).await.expect("reopen");
    assert_eq!(store.query().expect("query").notes, ["small", "after"]);
}
