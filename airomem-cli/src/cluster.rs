//! `airomem cluster`: a replicated group's status, members and membership changes, through
//! the admin endpoint of any of its nodes (the address a node's `TcpTransport` listens at),
//! authenticated with the cluster secret.
//!
//! Exit codes of its own, besides 0 and 2 (usage, the secret file): [`EXIT_UNREACHABLE`],
//! [`EXIT_REFUSED`], [`EXIT_DENIED`], [`EXIT_UNKNOWN`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use airomem_raft::{AdminClient, Error, Members, Secret, Status};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::outcome::{EXIT_ERROR, Failure, Outcome};

/// The node could not be reached, did not answer, or knows no leader: nothing was changed by
/// this call (unless it timed out after sending a change: see [`EXIT_UNKNOWN`]).
pub(crate) const EXIT_UNREACHABLE: u8 = 3;
/// The group refused the change and made none (below the minimum voters, no such member).
pub(crate) const EXIT_REFUSED: u8 = 4;
/// The node refused the connection: the secrets differ (or the protocol versions do).
pub(crate) const EXIT_DENIED: u8 = 5;
/// A change was sent but its outcome is unknown (no answer in time, the leader changed):
/// it may still happen. Ask `members`.
pub(crate) const EXIT_UNKNOWN: u8 = 6;

/// The default `--timeout` of `status` and `members`.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The default `--timeout` of a membership change: adding a learner waits for it to catch up,
/// which for a large state is a snapshot transfer.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// The node's status: id, role, the leader it knows, term, last log, commit and applied
    /// index (and applied command), snapshot and purged index.
    Status(Target),
    /// The group's voters and learners with their addresses, and the leader (asked of the
    /// leader, through the node given).
    Members(Target),
    /// Add node ID, listening for peers at LEARNER_ADDR, as a learner (it receives the log
    /// but does not vote). Returns once the learner has caught up with the leader's log,
    /// which for a large state takes a snapshot transfer: minutes (see --timeout; progress
    /// on stderr, on a terminal). Open the new node first.
    AddLearner {
        #[command(flatten)]
        target: Target,
        /// The new node's id.
        id: u64,
        /// Where the new node listens for peers (`host:port`), as the others will reach it.
        learner_addr: String,
    },
    /// Make learners voters.
    Promote {
        #[command(flatten)]
        target: Target,
        /// The learners to promote.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Remove node ID (voter or learner) from the group. Refused (exit 4) if it would leave
    /// fewer voters than the leader's minimum, unless --force.
    Remove {
        #[command(flatten)]
        target: Target,
        /// The node to remove.
        id: u64,
        /// Remove it even below the minimum number of voters.
        #[arg(long)]
        force: bool,
    },
}

/// Which node to ask, and how.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// A node's raft address (where it listens for peers), `host:port`. Changes sent to a
    /// follower go on to the leader.
    #[arg(long, value_name = "ADDR")]
    node: String,
    /// The file holding the cluster secret (trailing whitespace ignored).
    #[arg(long, value_name = "FILE", env = "AIROMEM_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// How long to wait for the answer [default: 10s; 10m for membership changes].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl Target {
    fn secret(&self) -> Result<Secret, Failure> {
        let Some(file) = &self.secret_file else {
            return Err("no cluster secret: pass --secret-file FILE or set AIROMEM_SECRET_FILE".into());
        };
        Ok(Secret::from_file(file)?)
    }

    fn client(&self, default_timeout: Duration) -> Result<AdminClient, Failure> {
        Ok(AdminClient::new(self.node.clone(), self.secret()?).timeout(self.timeout.unwrap_or(default_timeout)))
    }
}

pub(crate) fn run(command: ClusterCommand) -> Result<Outcome, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            ClusterCommand::Status(target) => status(&target).await,
            ClusterCommand::Members(target) => members(&target).await,
            ClusterCommand::AddLearner { target, id, learner_addr } => add_learner(&target, id, &learner_addr).await,
            ClusterCommand::Promote { target, ids } => promote(&target, &ids).await,
            ClusterCommand::Remove { target, id, force } => remove(&target, id, force).await,
        }
    })
}

async fn status(target: &Target) -> Result<Outcome, Failure> {
    let client = target.client(QUERY_TIMEOUT)?;
    let status = client.status().await.map_err(|e| ClusterError::query(&target.node, e))?;
    if target.json {
        let mut report = json!({"node": target.node});
        extend(&mut report, serde_json::to_value(&status)?);
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_status(&target.node, &status);
    }
    Ok(Outcome::Clean)
}

async fn members(target: &Target) -> Result<Outcome, Failure> {
    let client = target.client(QUERY_TIMEOUT)?;
    let members = client.members().await.map_err(|e| ClusterError::query(&target.node, e))?;
    if target.json {
        let mut report = json!({"node": target.node});
        extend(&mut report, serde_json::to_value(&members)?);
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_members(&members);
    }
    Ok(Outcome::Clean)
}

async fn add_learner(target: &Target, id: u64, addr: &str) -> Result<Outcome, Failure> {
    let client = target.client(CHANGE_TIMEOUT)?;
    eprintln!("adding node {id} ({addr}) as a learner; waiting for it to catch up with the leader");
    let done = tokio::select! {
        done = client.add_learner(id, addr) => done,
        () = catch_up_progress(target, id, addr) => unreachable!("the progress loop never ends"),
    };
    done.map_err(|e| ClusterError::change(&target.node, e, false))?;
    report_change(
        target,
        json!({"change": "add_learner", "id": id, "addr": addr}),
        &format!("node {id} ({addr}) added as a learner and caught up"),
    )
    .await
}

async fn promote(target: &Target, ids: &[u64]) -> Result<Outcome, Failure> {
    let client = target.client(CHANGE_TIMEOUT)?;
    client.promote(ids.iter().copied()).await.map_err(|e| ClusterError::change(&target.node, e, false))?;
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    report_change(target, json!({"change": "promote", "ids": ids}), &format!("promoted to voter: {list}")).await
}

async fn remove(target: &Target, id: u64, force: bool) -> Result<Outcome, Failure> {
    let client = target.client(CHANGE_TIMEOUT)?;
    client.remove(id, force).await.map_err(|e| ClusterError::change(&target.node, e, !force))?;
    report_change(target, json!({"change": "remove", "id": id, "force": force}), &format!("node {id} removed")).await
}

/// Reports a change made, with the members after it (asked of the leader; `null` in JSON,
/// with a warning, if that question fails: the change itself is done).
async fn report_change(target: &Target, change: Value, done: &str) -> Result<Outcome, Failure> {
    let client = target.client(QUERY_TIMEOUT)?;
    let members = match client.members().await {
        Ok(members) => Some(members),
        Err(e) => {
            eprintln!("airomem: the change is done, but asking for the members after it failed: {e}");
            None
        }
    };
    if target.json {
        let mut report = json!({"node": target.node});
        extend(&mut report, change);
        report["members"] = members.as_ref().map(serde_json::to_value).transpose()?.unwrap_or(Value::Null);
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{done}");
        if let Some(members) = &members {
            print_members(members);
        }
    }
    Ok(Outcome::Clean)
}

/// A progress line on stderr while a learner catches up (shown on a terminal only): its
/// applied index against the commit index of the node asked. Runs until dropped.
async fn catch_up_progress(target: &Target, id: u64, addr: &str) {
    let bar = indicatif::ProgressBar::new_spinner();
    let (Ok(node), Ok(secret)) = (target.client(QUERY_TIMEOUT), target.secret()) else {
        return std::future::pending().await;
    };
    if bar.is_hidden() {
        return std::future::pending().await;
    }
    let learner = AdminClient::new(addr.to_owned(), secret).timeout(QUERY_TIMEOUT);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let applied = learner.status().await.ok().and_then(|s| s.applied_index);
        let committed = node.status().await.ok().and_then(|s| s.commit_index);
        bar.set_message(format!(
            "node {id}: applied index {} of {}",
            applied.map_or_else(|| "-".into(), |i| i.to_string()),
            committed.map_or_else(|| "-".into(), |i| i.to_string())
        ));
        bar.tick();
    }
}

/// `extra`'s fields added to the object `report`.
fn extend(report: &mut Value, extra: Value) {
    if let (Some(report), Value::Object(extra)) = (report.as_object_mut(), extra) {
        report.extend(extra);
    }
}

fn index(i: Option<u64>) -> String {
    i.map_or_else(|| "-".into(), |i| i.to_string())
}

fn print_status(node: &str, s: &Status) {
    let role = serde_json::to_value(s.role).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    println!("node            {node}");
    println!("id              {}", s.id);
    println!("role            {role}");
    println!("leader          {}", index(s.leader));
    println!("term            {}", s.term);
    println!("last log index  {}", index(s.last_log_index));
    println!("commit index    {}", index(s.commit_index));
    println!("applied index   {} (command {})", index(s.applied_index), s.applied_seq);
    println!("snapshot index  {}", index(s.snapshot_index));
    println!("purged index    {}", index(s.purged_index));
}

fn print_members(m: &Members) {
    let width = m.voters.keys().chain(m.learners.keys()).map(|id| id.to_string().len()).max().unwrap_or(1);
    for (kind, nodes) in [("voter", &m.voters), ("learner", &m.learners)] {
        for (id, addr) in nodes {
            let leader = if m.leader == Some(*id) { "  leader" } else { "" };
            println!("{kind:<7}  {id:>width$}  {addr}{leader}");
        }
    }
    println!(
        "{} voter(s), {} learner(s), leader {}",
        m.voters.len(),
        m.learners.len(),
        m.leader.map_or_else(|| "unknown".into(), |l| l.to_string())
    );
}

/// A cluster command's failure, with its exit code.
#[derive(Debug)]
pub(crate) struct ClusterError {
    code: u8,
    message: String,
}

impl ClusterError {
    /// The exit code.
    pub(crate) fn code(&self) -> u8 {
        self.code
    }

    /// A question (status, members) failed: it changed nothing.
    fn query(node: &str, e: Error) -> ClusterError {
        match e {
            Error::Indeterminate { reason } => {
                ClusterError { code: EXIT_UNREACHABLE, message: cannot_reach(node, &reason) }
            }
            e => ClusterError::change(node, e, false),
        }
    }

    /// A change failed; `hint_force`: a refusal below the minimum can be forced.
    fn change(node: &str, e: Error, hint_force: bool) -> ClusterError {
        let (code, message) = match e {
            Error::Refused { reason } => {
                let hint = if hint_force && reason.contains("minimum") { " (--force removes it anyway)" } else { "" };
                (EXIT_REFUSED, format!("refused, nothing changed: {reason}{hint}"))
            }
            Error::Denied { reason } => (
                EXIT_DENIED,
                format!("{node} refused the connection: {reason} (is --secret-file this cluster's secret?)"),
            ),
            Error::Unavailable { reason } => (EXIT_UNREACHABLE, cannot_reach(node, &reason)),
            Error::Indeterminate { reason } => {
                (EXIT_UNKNOWN, format!("the outcome is unknown (it may still happen; see `members`): {reason}"))
            }
            other => (EXIT_ERROR, other.to_string()),
        };
        ClusterError { code, message }
    }
}

fn cannot_reach(node: &str, reason: &str) -> String {
    format!("cannot reach the cluster through {node}: {reason}")
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClusterError {}
