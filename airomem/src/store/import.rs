//! Bulk import from one task: commands committed in order, pipelined, without waiting for
//! each receipt before sending the next.
//!
//! Order holds because one task hands the commands to the writer one after the other, each
//! only once the previous one is in the writer's queue (back-pressure makes a send wait, never
//! reorder), and the writer takes its queue in order. The receipts are awaited behind, a
//! bounded window of them at a time, and settled in input order: after a failure too, so
//! that the error says exactly which of the commands behind the failed one committed.

use std::collections::VecDeque;
use std::ops::Range;

use airomem_core::{Seq, Serializer, State};
use tokio::sync::oneshot;

use super::Store;
use crate::Error;
use crate::write::request::{Committed, Reply};

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
    /// [`Error::ImportStopped`]: which command failed (`failed_at`; all before it were
    /// committed) and exactly which after it were committed anyway, having been handed over
    /// before the failure was known (`committed_after`). A retry therefore imports the
    /// failed command, mended or left out, and every later command `committed_after` does
    /// not list; those it lists must not be sent again. A retried command comes after the
    /// ones `committed_after` lists, so the input's order does not hold across a retry.
    ///
    /// ```
    /// use airomem::{Error, PostcardSerializer, PostcardStore, Store};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Default)]
    /// struct Ledger {
    ///     amounts: Vec<i64>,
    /// }
    ///
    /// impl airomem::State for Ledger {
    ///     type Command = i64;
    ///     fn execute(&mut self, amount: i64) {
    ///         assert!(amount != 0, "a zero amount is a bug upstream");
    ///         self.amounts.push(amount);
    ///     }
    /// }
    ///
    /// /// Imports `commands`, each once: a command that panics is mended by `mend` (or left
    /// /// out when it returns `None`), and what did not commit is imported again.
    /// async fn import_each_once(
    ///     store: &PostcardStore<Ledger>,
    ///     mut commands: Vec<i64>,
    ///     mend: impl Fn(i64) -> Option<i64>,
    /// ) -> Result<(), Error> {
    ///     loop {
    ///         let error = match store.import(commands.clone()).await {
    ///             Ok(_) => return Ok(()),
    ///             Err(error) => error,
    ///         };
    ///         let Error::ImportStopped { failed_at, committed_after, source, .. } = &error else {
    ///             return Err(error);
    ///         };
    ///         if !matches!(**source, Error::CommandPanicked { .. }) {
    ///             return Err(error); // the store stopped, or the command does not encode
    ///         }
    ///         let committed = |i: u64| committed_after.iter().any(|range| range.contains(&i));
    ///         let mut rest = Vec::new();
    ///         for (i, command) in (0u64..).zip(commands).skip(*failed_at as usize) {
    ///             if i == *failed_at {
    ///                 rest.extend(mend(command));
    ///             } else if !committed(i) {
    ///                 rest.push(command);
    ///             }
    ///         }
    ///         commands = rest;
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// # let dir = std::env::temp_dir().join(format!("airomem-import-retry-{}", std::process::id()));
    /// let store: PostcardStore<Ledger> = Store::open(PostcardSerializer, &dir).await?;
    /// let commands: Vec<i64> = (1..=1_000).map(|i| if i == 500 { 0 } else { i }).collect();
    /// import_each_once(&store, commands, |_| None).await?;
    /// let mut amounts = store.query()?.amounts.clone();
    /// amounts.sort_unstable();
    /// assert_eq!(amounts, (1..=1_000).filter(|&i| i != 500).collect::<Vec<_>>());
    /// # store.close().await?;
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok(())
    /// # }
    /// ```
    pub async fn import(&self, commands: impl IntoIterator<Item = S::Command>) -> Result<Imported, Error> {
        self.import_with_receipts(commands, |_, _| {}).await
    }

    /// [`Store::import`], handing `on_receipt` each command's index in `commands` and its
    /// receipt, in order, as they come: after a failure too, for each command that
    /// `committed_after` will list.
    pub async fn import_with_receipts(
        &self,
        commands: impl IntoIterator<Item = S::Command>,
        on_receipt: impl FnMut(u64, Committed),
    ) -> Result<Imported, Error> {
        let mut window: VecDeque<oneshot::Receiver<Result<Committed, Error>>> = VecDeque::new();
        let mut outcomes = Outcomes { on_receipt, settled: 0, first: None, last: None, failure: None };
        let mut commands = commands.into_iter().peekable();
        // A command refused before it was handed over (it does not encode, the store is
        // closed): settled after every command before it, so outcomes settle in input order.
        let mut refused = None;
        while let Some(command) = commands.next() {
            // Settle what is already answered: keeps the window short and stops early.
            while let Some(rx) = window.front_mut() {
                let outcome = match rx.try_recv() {
                    Ok(outcome) => outcome,
                    Err(oneshot::error::TryRecvError::Empty) => break,
                    Err(oneshot::error::TryRecvError::Closed) => Err(self.gone()),
                };
                window.pop_front();
                outcomes.settle(outcome);
            }
            if outcomes.failure.is_some() {
                break;
            }
            if window.len() >= WINDOW
                && let Some(rx) = window.pop_front()
            {
                outcomes.settle(rx.await.unwrap_or_else(|_| Err(self.gone())));
            }
            let (tx, rx) = oneshot::channel();
            // Knowing whether another follows means drawing it now instead of after the
            // send; an iterator slow to yield it keeps the writer waiting only one gap.
            let followed = commands.peek().is_some();
            if let Err(e) = self.send_followed(command, Reply::Receipt(tx), followed).await {
                refused = Some(e);
                break;
            }
            window.push_back(rx);
        }
        // Those handed over are committed (or not) whatever happens here: wait for them all,
        // so the report says exactly which were.
        while let Some(rx) = window.pop_front() {
            outcomes.settle(rx.await.unwrap_or_else(|_| Err(self.gone())));
        }
        if let Some(e) = refused {
            outcomes.settle(Err(e));
        }
        outcomes.finish()
    }
}

/// The first command of an import that failed, and which of those after it committed anyway.
struct Failure {
    failed_at: u64,
    source: Error,
    /// Sorted, disjoint, never adjacent: a command that commits right after the last range
    /// extends it.
    committed_after: Vec<Range<u64>>,
}

/// An import's outcomes so far, settled one command at a time in input order: the window
/// holds the receipts in the order the commands were handed over, so the next one settled is
/// always command `settled`, and every count the error reports follows from where the first
/// failure is and which commands after it committed.
struct Outcomes<F> {
    on_receipt: F,
    /// How many commands are settled: the index of the next one.
    settled: u64,
    first: Option<Seq>,
    last: Option<Seq>,
    failure: Option<Failure>,
}

impl<F: FnMut(u64, Committed)> Outcomes<F> {
    /// Settles the next command in input order.
    fn settle(&mut self, outcome: Result<Committed, Error>) {
        let index = self.settled;
        self.settled += 1;
        match outcome {
            Ok(receipt) => {
                (self.on_receipt)(index, receipt);
                self.first.get_or_insert(receipt.seq);
                self.last = Some(receipt.seq);
                if let Some(failure) = &mut self.failure {
                    match failure.committed_after.last_mut() {
                        Some(range) if range.end == index => range.end += 1,
                        _ => failure.committed_after.push(index..index + 1),
                    }
                }
            }
            Err(source) => {
                if self.failure.is_none() {
                    self.failure = Some(Failure { failed_at: index, source, committed_after: Vec::new() });
                }
            }
        }
    }

    /// What the import reports once every command it took is settled.
    fn finish(self) -> Result<Imported, Error> {
        let Outcomes { settled, first, last, failure, .. } = self;
        match failure {
            None => Ok(Imported { commands: settled, first, last }),
            // Every command before the failed one committed, and of those after it exactly
            // the ones listed.
            Some(Failure { failed_at, source, committed_after }) => Err(Error::ImportStopped {
                failed_at,
                committed: failed_at + committed_after.iter().map(|range| range.end - range.start).sum::<u64>(),
                last,
                committed_after,
                source: Box::new(source),
            }),
        }
    }
}
