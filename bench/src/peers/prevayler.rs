//! prevayler-rs 0.2: a Prevalent System library on async-std. Each transaction is executed,
//! then written to the redo log as a JSON line with `write` and a `flush` of async-std's
//! file cache; it never calls `fsync` or `fdatasync`. A new redo log file is started every
//! 64,000 transactions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{PoisonError, RwLock};

use airomem_workspace::SessionsCommand;
use async_std::task::block_on;
use prevayler_rs::serializer::JsonSerializer;
use prevayler_rs::{PrevaylerBuilder, Transaction};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use super::peer::{Commands, Peer};
use crate::measure::BoxError;

/// The session state as prevayler-rs holds it.
#[derive(Serialize, Deserialize, Default, Debug)]
pub struct SessionsPrevalent {
    tokens: HashMap<String, u64>,
}

impl Transaction<SessionsPrevalent> for SessionsCommand {
    fn execute(self, data: &mut SessionsPrevalent) {
        match self {
            SessionsCommand::CreateSession { token, user_id } => {
                data.tokens.insert(token, user_id);
            }
            SessionsCommand::DeleteSession { token } => {
                data.tokens.remove(&token);
            }
        }
    }
}

type Inner = prevayler_rs::Prevayler<SessionsCommand, SessionsPrevalent, JsonSerializer>;

/// A prevayler-rs store behind the lock its `&mut self` API needs for concurrent use.
pub struct Prevayler {
    inner: RwLock<Inner>,
}

/// prevayler-rs's errors implement neither `Display` nor `Error`.
fn error(e: prevayler_rs::error::PrevaylerError) -> BoxError {
    format!("prevayler-rs: {e:?}").into()
}

impl Prevayler {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Peer for Prevayler {
    fn open(dir: &Path, _runtime: &Handle) -> Result<Self, BoxError> {
        let inner = block_on(
            PrevaylerBuilder::new()
                .path(dir.as_os_str().to_os_string())
                .serializer(JsonSerializer::new())
                .data(SessionsPrevalent::default())
                .build(),
        )
        .map_err(error)?;
        Ok(Prevayler { inner: RwLock::new(inner) })
    }

    fn commit(&self, command: SessionsCommand) -> Result<(), BoxError> {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        block_on(inner.execute_transaction(command)).map_err(error)
    }

    fn sessions(&self) -> Result<usize, BoxError> {
        Ok(self.read().query().tokens.len())
    }

    fn lookup_sum(&self, tokens: &[String]) -> Result<u64, BoxError> {
        let mut sum = 0;
        for token in tokens {
            sum += self.read().query().tokens.get(token).copied().unwrap_or(0);
        }
        Ok(sum)
    }

    fn build(dir: &Path, runtime: &Handle, commands: Commands) -> Result<(), BoxError> {
        // Its commits never sync: the plain API is the fastest it has.
        let peer = Prevayler::open(dir, runtime)?;
        {
            let mut inner = peer.inner.write().unwrap_or_else(PoisonError::into_inner);
            block_on(async {
                for command in commands {
                    inner.execute_transaction(command).await.map_err(error)?;
                }
                Ok::<_, BoxError>(())
            })?;
        }
        peer.close()?;
        // The library never syncs; make the data set durable before it is measured.
        crate::measure::sync_disks()?;
        Ok(())
    }

    fn recover(dir: &Path, runtime: &Handle) -> Result<Self, BoxError> {
        Prevayler::open(dir, runtime)
    }

    fn recovered_equals(&self, expected: &HashMap<String, u64>) -> Result<bool, BoxError> {
        Ok(self.read().query().tokens == *expected)
    }

    fn close(self) -> Result<(), BoxError> {
        // Every transaction was written (not synced) before it returned; nothing is buffered.
        drop(self.inner);
        Ok(())
    }
}
