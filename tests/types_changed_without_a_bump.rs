//! Bytes that verify but do not decode with the current types are a type change, not damage:
//! the open fails with `Error::Decode` naming the file and the record, says that the types
//! changed without a new schema version, and leaves every file as it was. A snapshot in that
//! state is never passed over as damaged. Encoding failures are `Error::Encode`.

use std::collections::BTreeMap;
#[cfg(feature = "snapshot")]
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use airomem::{Error, PostcardSerializer, Store};
use serde::{Deserialize, Serialize};

/// The types as first released.
mod v1 {
    use super::*;

    #[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
    pub struct Notes {
        pub items: Vec<String>,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Command {
        Add { text: String },
    }

    impl airomem::State for Notes {
        type Command = Command;
        fn execute(&mut self, Command::Add { text }: Command) {
            self.items.push(text);
        }
    }
}

/// A field added to the command, and the schema version forgotten.
mod new_command_field {
    use super::*;

    #[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
    pub struct Notes {
        pub items: Vec<String>,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Command {
        Add {
            text: String,
            #[serde(default)]
            tag: u32,
        },
    }

    impl airomem::State for Notes {
        type Command = Command;
        fn execute(&mut self, Command::Add { text, .. }: Command) {
            self.items.push(text);
        }
    }
}

/// A field added to the state, and the schema version forgotten.
mod new_state_field {
    use super::*;

    #[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
    pub struct Notes {
        pub items: Vec<String>,
        pub added: u64,
    }

    impl airomem::State for Notes {
        type Command = super::v1::Command;
        fn execute(&mut self, super::v1::Command::Add { text }: super::v1::Command) {
            self.items.push(text);
            self.added += 1;
        }
    }
}

fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n != "airomem.lock"))
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

async fn write_v1(dir: &Path, snapshot: bool) -> Option<PathBuf> {
    let store: Store<v1::Notes, PostcardSerializer> = Store::open(PostcardSerializer, dir).await.expect("open v1");
    for n in 0..20 {
        store.commit(v1::Command::Add { text: format!("note {n}") }).await.expect("commit");
    }
    #[cfg(feature = "snapshot")]
    let path = if snapshot { Some(store.snapshot().await.expect("snapshot").path) } else { None };
    #[cfg(not(feature = "snapshot"))]
    let path = {
        let _ = snapshot;
        None
    };
    store.close().await.expect("close");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_record_that_no_longer_decodes_names_its_file_and_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("notes");
    write_v1(&dir, false).await;
    let before = files(&dir);
    let opened: Result<Store<new_command_field::Notes, PostcardSerializer>, Error> =
        Store::open(PostcardSerializer, &dir).await;
    match opened {
        Err(e @ Error::Decode { .. }) => {
            let Error::Decode { file, seq, .. } = &e else { unreachable!() };
            assert_eq!(file.as_deref(), Some(dir.join(format!("{:020}.journal", 1)).as_path()));
            assert_eq!(seq.map(|s| s.get()), Some(1));
            let text = e.to_string();
            assert!(text.contains("record #1 of") && text.contains("SCHEMA_VERSION"), "{text}");
        }
        Err(other) => panic!("expected Error::Decode, got {other}"),
        Ok(_) => panic!("opened a journal its types cannot read"),
    }
    assert_eq!(files(&dir), before, "a refused open changes no file");
}

/// A snapshot that verifies but does not decode was passed over as damaged, and the store
/// opened from the journal alone as if nothing had happened (or, once segments were pruned,
/// failed with advice to restore a backup).
#[cfg(feature = "snapshot")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_no_longer_decodes_is_a_type_change_not_damage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("notes");
    let snapshot = write_v1(&dir, true).await.expect("a snapshot");
    let before = files(&dir);
    let opened: Result<Store<new_state_field::Notes, PostcardSerializer>, Error> =
        Store::open(PostcardSerializer, &dir).await;
    match opened {
        Err(e @ Error::Decode { .. }) => {
            let Error::Decode { file, seq, .. } = &e else { unreachable!() };
            assert_eq!(file.as_deref(), Some(snapshot.as_path()));
            assert_eq!(seq.map(|s| s.get()), Some(20));
            let text = e.to_string();
            assert!(text.contains("snapshot") && text.contains("SCHEMA_VERSION"), "{text}");
        }
        Err(other) => panic!("expected Error::Decode, got {other}"),
        Ok(store) => panic!(
            "opened with the snapshot passed over as damaged: {:?}, state {:?}",
            store.recovery().snapshots_skipped,
            *store.query().expect("query")
        ),
    }
    assert_eq!(files(&dir), before, "a refused open changes no file");
}

/// A state JSON cannot represent (a map with non-string keys).
#[cfg(feature = "snapshot")]
#[derive(Serialize, Deserialize, Default)]
struct Grid {
    cells: HashMap<(u32, u32), u8>,
}

#[cfg(feature = "snapshot")]
impl airomem::State for Grid {
    type Command = ((u32, u32), u8);
    fn execute(&mut self, (at, value): ((u32, u32), u8)) {
        self.cells.insert(at, value);
    }
}

#[cfg(feature = "snapshot")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_does_not_encode_is_an_encode_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: Store<Grid, airomem::JsonSerializer> =
        Store::open(airomem::JsonSerializer, tmp.path()).await.expect("open");
    store.commit(((1, 2), 3)).await.expect("a tuple command encodes as a JSON array");
    match store.snapshot().await {
        Err(e @ Error::Encode { what: "state", .. }) => {
            assert!(e.to_string().starts_with("could not encode the state"))
        }
        other => panic!("expected Error::Encode for the state, got {other:?}"),
    }
    assert_eq!(store.query().expect("query").cells.len(), 1, "the store goes on");
}
