//! A leader cut off while commands wait on it, caught up from a snapshot after the heal and
//! then elected again, must commit (issue 22, section 4). The commands it had appended were
//! never committed; the snapshot install purged them from its log without truncating them,
//! so openraft never answered their `client_write`. Its proposer held its two slots for them
//! forever, and once elected again it proposed nothing: every commit anywhere in the group
//! was `Indeterminate`.

use std::time::Duration;

use airomem_raft::Error;
use futures::future::join_all;

use crate::{Cluster, ledger, wait_until};

/// The leader that is cut off, then elected again.
const OLD: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_caught_up_from_a_snapshot_commits_once_elected_again() {
    // Only the old leader stands on its own election timer; the others stand through the
    // watchdog, later, so that when the new leader is cut off the old one is elected.
    let cluster = Cluster::start(3, |c| {
        let c = c.snapshot_every(20).logs_kept_after_snapshot(2).commit_timeout(Duration::from_secs(3));
        if c.id() == OLD { c } else { c.election_timer(false) }
    })
    .await;
    assert_eq!(cluster.leader().await, OLD, "the bootstrapping node stands first");
    let mut values = vec![1];
    cluster.node(OLD).commit(1).await.expect("commits");
    cluster.converge(&ledger(&values)).await;

    // Eight commands reach the isolated leader (a node always reaches itself), which appends
    // them and cannot commit them; meanwhile the majority elects a leader and commits 200
    // commands, snapshotting every 20 entries and purging all but 2 behind each snapshot.
    cluster.network.isolate(OLD);
    let waiting = join_all((0..8).map(|i| cluster.node(OLD).commit(1_000 + i)));
    let majority = async {
        cluster.leader_among(&[OLD]).await;
        for value in 2..=201 {
            cluster.node(2).commit(value).await.expect("the majority commits");
        }
    };
    let (outcomes, ()) = tokio::join!(waiting, majority);
    values.extend(2..=201);
    for outcome in outcomes {
        assert!(matches!(outcome, Err(Error::Indeterminate { .. })), "an isolated leader's commit: {outcome:?}");
    }

    // Healed, the old leader steps down and, its log's divergence point being purged on the
    // leader, catches up from a snapshot.
    cluster.network.heal();
    cluster.converge(&ledger(&values)).await;
    wait_until("the old leader to install a snapshot", || {
        cluster.node(OLD).status().snapshot_index.is_some_and(|index| index >= 20)
    })
    .await;

    // Elected again: cut off whoever leads, until the old leader wins.
    let mut leader = cluster.leader().await;
    for _ in 0..10 {
        if leader == OLD {
            break;
        }
        cluster.network.isolate(leader);
        cluster.leader_among(&[leader]).await;
        cluster.network.heal();
        leader = cluster.leader().await;
    }
    assert_eq!(leader, OLD, "the old leader was not elected again in 10 rounds");

    // Every node commits through it, and none of the eight commands ever ran.
    for id in 1..=3 {
        let value = 300 + id;
        let receipt = cluster
            .node(id)
            .commit(value)
            .await
            .unwrap_or_else(|e| panic!("node {id} commits through the re-elected leader: {e:?}"));
        values.push(value);
        assert_eq!(receipt.seq, values.len() as u64);
    }
    cluster.converge(&ledger(&values)).await;
    cluster.close().await;
}
