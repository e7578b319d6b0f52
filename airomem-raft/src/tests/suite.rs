//! openraft's own storage conformance suite against the Raft log and the state machine, on
//! the real file system and on the simulated disk.

use std::path::PathBuf;
use std::sync::Arc;

use airomem::PostcardSerializer;
use airomem::storage::{StdStorage, Storage};
use airomem_workspace::sim::SimStorage;
use openraft::testing::{StoreBuilder, Suite};

use super::Recorder;
use crate::log::{LogOptions, LogStore};
use crate::state_machine::StateMachine;
use crate::types::{StorageError, TypeConfig};

type Machine = StateMachine<Recorder, PostcardSerializer>;

fn open(storage: Arc<dyn Storage>, dir: PathBuf) -> Result<(LogStore, Machine), crate::Error> {
    // Small segments, so that the suite's appends, truncations and purges cross segments.
    let options = LogOptions { max_segment_bytes: 256 };
    let log = LogStore::open(Arc::clone(&storage), &dir.join("log"), options)?;
    let machine = Machine::open(storage, &dir.join("snapshots"), PostcardSerializer, log.reader())?;
    Ok((log, machine))
}

fn storage_error(e: &crate::Error) -> StorageError {
    openraft::StorageIOError::read(e).into()
}

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, Machine, tempfile::TempDir> for OnDisk {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, Machine), StorageError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (log, machine) =
            open(Arc::new(StdStorage::default()), dir.path().to_path_buf()).map_err(|e| storage_error(&e))?;
        Ok((dir, log, machine))
    }
}

struct Simulated;

impl StoreBuilder<TypeConfig, LogStore, Machine, ()> for Simulated {
    async fn build(&self) -> Result<((), LogStore, Machine), StorageError> {
        let (log, machine) =
            open(Arc::new(SimStorage::new()), PathBuf::from("/node")).map_err(|e| storage_error(&e))?;
        Ok(((), log, machine))
    }
}

#[test]
fn openraft_suite_passes_on_the_file_system() {
    // `RUST_LOG=info` shows which of the suite's cases runs.
    drop(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init(),
    );
    Suite::test_all(OnDisk).expect("openraft's storage suite passes");
}

#[test]
fn openraft_suite_passes_on_the_simulated_disk() {
    Suite::test_all(Simulated).expect("openraft's storage suite passes");
}
