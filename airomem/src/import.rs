//! Bulk import from one task: commands committed in order, pipelined, without waiting for
//! each receipt before sending the next.
//!
//! Order holds because one task hands the commands to the writer one after the other, each
//! only once the previous one is in the writer's queue (back-pressure makes a send wait, never
//! reorder), and the writer takes its queue in order. The receipts are awaited behind, a
//! bounded window of them at a time.

use std::collections::VecDeque;

use airomem_core::{Seq, Serializer, State};
use tokio::sync::oneshot;

use crate::writer::Reply;
use crate::{Committed, Error, Store};

/// Receipts awaited at once at most: bounds the memory an import holds beyond the store's
/// own queue.
const WINDOW: usize = 16 * 1024;

/// What [`Store::import`] committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Imported {
    /// Commands committed.
    pub commands: u64,
    /// The sequence number of the first, if any.
    pub first: Option<Seq>,
    /// The sequence number of the last, if any.
    pub last: Option<Seq>,
}

impl<S: State, Z: Serializer> Store<S, Z> {
    /// Commits every command of `commands`, in order, from this one task, as fast as the
    /// store takes them: each is handed to the writer without waiting for the receipt of
    /// the one before, so they share batches and syncs as if many tasks committed them.
    /// Back-pressure (`max_pending_bytes`) applies as for single commits. Each command is
    /// committed as by [`Store::commit`], with the same durability; they are not atomic
    /// together (see [`Store::commit_all`] for that).
    ///
    /// Dropping the future (a timeout, an aborted task) stops the import: commands not yet
    /// handed to the writer are not committed; those already handed over are, and only
    /// their receipts are lost (as for [`Store::commit`]).
    ///
    /// Stops taking commands at the first one that fails (it does not encode, it panics, the
    /// store is poisoned...), waits for those already handed over, and returns
    /// [`Error::ImportStopped`] saying which command failed and how many were committed.
    pub async fn import(&self, commands: impl IntoIterator<Item = S::Command>) -> Result<Imported, Error> {
        self.import_with_receipts(commands, |_, _| {}).await
    }

    /// [`Store::import`], handing `on_receipt` each command's index in `commands` and its
    /// receipt, in order, as they come.
    pub async fn import_with_receipts(
        &self,
        commands: impl IntoIterator<Item = S::Command>,
        mut on_receipt: impl FnMut(u64, Committed),
    ) -> Result<Imported, Error> {
        let mut window: VecDeque<(u64, oneshot::Receiver<Result<Committed, Error>>)> = VecDeque::new();
        let mut imported = Imported::default();
        let mut failure: Option<(u64, Error)> = None;
        let mut settle =
            |index: u64, outcome: Result<Committed, Error>, failure: &mut Option<(u64, Error)>| match outcome {
                Ok(receipt) => {
                    on_receipt(index, receipt);
                    imported.commands += 1;
                    imported.first.get_or_insert(receipt.seq);
                    imported.last = Some(receipt.seq);
                }
                Err(e) => {
                    if failure.as_ref().is_none_or(|&(at, _)| index < at) {
                        *failure = Some((index, e));
                    }
                }
            };
        let mut commands = commands.into_iter().peekable();
        let mut index = 0u64;
        while let Some(command) = commands.next() {
            // Settle what is already answered: keeps the window short and stops early.
            while let Some((at, rx)) = window.front_mut() {
                let outcome = match rx.try_recv() {
                    Ok(outcome) => outcome,
                    Err(oneshot::error::TryRecvError::Empty) => break,
                    Err(oneshot::error::TryRecvError::Closed) => Err(self.gone()),
                };
                let at = *at;
                window.pop_front();
                settle(at, outcome, &mut failure);
            }
            if failure.is_some() {
                break;
            }
            if window.len() >= WINDOW
                && let Some((at, rx)) = window.pop_front()
            {
                let outcome = rx.await.unwrap_or_else(|_| Err(self.gone()));
                settle(at, outcome, &mut failure);
            }
            let (tx, rx) = oneshot::channel();
            // Knowing whether another follows means drawing it now instead of after the
            // send; an iterator slow to yield it keeps the writer waiting only one gap.
            let followed = commands.peek().is_some();
            if let Err(e) = self.send_followed(command, Reply::Receipt(tx), followed).await {
                settle(index, Err(e), &mut failure);
                break;
            }
            window.push_back((index, rx));
            index += 1;
        }
        // Those handed over are committed (or not) whatever happens here: wait for them all,
        // so the report is complete.
        while let Some((at, rx)) = window.pop_front() {
            let outcome = rx.await.unwrap_or_else(|_| Err(self.gone()));
            settle(at, outcome, &mut failure);
        }
        match failure {
            None => Ok(imported),
            Some((failed_at, source)) => Err(Error::ImportStopped {
                failed_at,
                committed: imported.commands,
                last: imported.last,
                source: Box::new(source),
            }),
        }
    }
}
