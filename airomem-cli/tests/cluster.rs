//! `airomem cluster`, run as a process against a real group: three nodes (then a fourth)
//! over TCP on loopback in the test process, the binary talking to them through their admin
//! endpoint with the secret from a file. Every `--json` answer is checked whole; every
//! failure by its exit code and message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use airomem::{PostcardSerializer, State};
use airomem_raft::{NodeConfig, ReplicatedStore, Role, Secret, TcpConfig, TcpTransport};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    total: u64,
}

impl State for Counter {
    type Command = u64;
    fn execute(&mut self, n: u64) {
        self.total += n;
    }
}

type Node = ReplicatedStore<Counter>;

const SECRET: &str = "the cli test cluster's secret";
const OTHER_SECRET: &str = "some other cluster's secret!";

/// The exit codes the binary documents.
const EXIT_USAGE: i32 = 2;
const EXIT_UNREACHABLE: i32 = 3;
const EXIT_REFUSED: i32 = 4;
const EXIT_DENIED: i32 = 5;

/// Runs the binary (on a blocking thread: the nodes keep running on the runtime), with
/// `AIROMEM_SECRET_FILE` set to `env_secret` or unset.
async fn run(args: &[&str], env_secret: Option<&Path>) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env_secret = env_secret.map(Path::to_path_buf);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_airomem"));
        command.args(&args).env_remove("AIROMEM_SECRET_FILE");
        if let Some(file) = env_secret {
            command.env("AIROMEM_SECRET_FILE", file);
        }
        let out = command.output().expect("run the airomem binary");
        (
            out.status.code().expect("exited, not killed"),
            String::from_utf8(out.stdout).expect("utf-8 stdout"),
            String::from_utf8(out.stderr).expect("utf-8 stderr"),
        )
    })
    .await
    .expect("the binary ran")
}

/// Runs a `--json` command that must succeed, and parses its one JSON document.
async fn json_of(args: &[&str]) -> Value {
    let (code, stdout, stderr) = run(args, None).await;
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}): {stdout}"))
}

/// A listener on a free loopback port, held until its node serves on it
/// (`TcpTransport::from_listener`): a port released in between can be taken by an outgoing
/// connection.
fn free_port() -> (SocketAddr, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds a free port");
    (listener.local_addr().expect("has an address"), listener)
}

/// A loopback address where nothing listens.
fn free_addr() -> SocketAddr {
    free_port().0
}

fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, format!("{secret}\n")).expect("writes the secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    file
}

/// Opens node `id` listening at `addrs[id]`, knowing the others. Timings generous enough
/// for a loaded machine: no election while the test runs.
async fn open(id: u64, addrs: &BTreeMap<u64, SocketAddr>, listener: std::net::TcpListener, root: &Path) -> Node {
    let secret = Secret::new(SECRET).expect("long enough");
    let tcp = addrs
        .iter()
        .filter(|&(&peer, _)| peer != id)
        .fold(TcpConfig::new(addrs[&id], secret), |config, (&peer, addr)| config.peer(peer, addr.to_string()));
    let transport = TcpTransport::from_listener(listener, tcp).expect("serves on its listener");
    let config = NodeConfig::new(id, root.join(format!("node-{id}")))
        .heartbeat(Duration::from_millis(100))
        .election_timeout(Duration::from_millis(1500), Duration::from_millis(3000))
        .commit_timeout(Duration::from_secs(20));
    Node::open(config, PostcardSerializer, &transport).await.expect("the node opens")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn addr_map(addrs: &BTreeMap<u64, SocketAddr>, ids: &[u64]) -> Value {
    ids.iter().map(|id| (id.to_string(), json!(addrs[id].to_string()))).collect::<serde_json::Map<_, _>>().into()
}

/// Status and members of every node as the group reports them in process, the membership
/// changes (a fourth node added, caught up and promoted; removals down to the minimum and,
/// forced, below it), and the wrong secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_inspected_and_changed_through_the_binary() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let secret = secret_file(root.path(), "cluster.secret", SECRET);
    let secret = secret.to_str().expect("utf-8 path");
    let mut listeners: BTreeMap<u64, _> = (1..=3).map(|id| (id, free_port())).collect();
    let mut addrs: BTreeMap<u64, SocketAddr> = listeners.iter().map(|(&id, (addr, _))| (id, *addr)).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let (_, listener) = listeners.remove(&id).expect("bound above");
        nodes.insert(id, open(id, &addrs, listener, root.path()).await);
    }
    nodes[&1].bootstrap(1..=3).await.expect("bootstraps");
    for n in 1..=3 {
        nodes[&1].commit(n).await.expect("commits");
    }
    // Every node has applied everything and follows the same leader.
    let leader = nodes[&1].status().leader.expect("a leader after a commit");
    wait_until("every node to apply everything and know the leader", || {
        nodes.values().all(|n| {
            let s = n.status();
            s.applied_seq == 3 && s.leader == Some(leader) && s.applied_index == nodes[&leader].status().commit_index
        })
    })
    .await;
    let follower = *nodes.keys().find(|&&id| id != leader).expect("a follower");
    let at = addrs[&follower].to_string();

    // status --json: the node asked, every field of its status.
    let status = json_of(&["cluster", "status", "--node", &at, "--secret-file", secret, "--json"]).await;
    let known = nodes[&follower].status();
    assert_eq!(known.role, Role::Follower);
    let expected = json!({
        "node": at,
        "id": follower,
        "role": "follower",
        "leader": leader,
        "term": known.term,
        "last_log_index": known.last_log_index,
        "commit_index": known.commit_index,
        "applied_index": known.applied_index,
        "applied_seq": 3,
        "snapshot_index": known.snapshot_index,
        "purged_index": known.purged_index,
    });
    assert_eq!(status, expected);
    assert_eq!(status["applied_index"], status["commit_index"]);

    // The secret from the environment instead; text output, aligned.
    let (code, text, stderr) = run(&["cluster", "status", "--node", &at], Some(Path::new(secret))).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains(&format!("id              {follower}\n")), "{text}");
    assert!(text.contains("role            follower\n"), "{text}");
    assert!(text.contains(&format!("leader          {leader}\n")), "{text}");
    assert!(text.contains("applied index   ") && text.contains("(command 3)\n"), "{text}");

    // members --json, asked of a follower: the leader's view.
    let members = json_of(&["cluster", "members", "--node", &at, "--secret-file", secret, "--json"]).await;
    let expected = json!({"node": at, "voters": addr_map(&addrs, &[1, 2, 3]), "learners": {}, "leader": leader});
    assert_eq!(members, expected);
    let (code, text, stderr) = run(&["cluster", "members", "--node", &at, "--secret-file", secret], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains(&format!("voter    {leader}  {}  leader\n", addrs[&leader])), "{text}");
    assert!(text.ends_with(&format!("3 voter(s), 0 learner(s), leader {leader}\n")), "{text}");

    // add-learner: node 4 joins and has caught up when the command returns.
    let (four_addr, four_listener) = free_port();
    addrs.insert(4, four_addr);
    nodes.insert(4, open(4, &addrs, four_listener, root.path()).await);
    let four = addrs[&4].to_string();
    let added =
        json_of(&["cluster", "add-learner", "--node", &at, "--secret-file", secret, "--json", "4", &four]).await;
    let expected = json!({
        "node": at, "change": "add_learner", "id": 4, "addr": four,
        "members": {"voters": addr_map(&addrs, &[1, 2, 3]), "learners": addr_map(&addrs, &[4]), "leader": leader},
    });
    assert_eq!(added, expected);
    assert_eq!(nodes[&4].query().expect("reads").total, 6, "caught up before the command returned");
    assert_eq!(nodes[&4].status().role, Role::Learner);

    // promote.
    let promoted = json_of(&["cluster", "promote", "--node", &at, "--secret-file", secret, "--json", "4"]).await;
    let expected = json!({
        "node": at, "change": "promote", "ids": [4],
        "members": {"voters": addr_map(&addrs, &[1, 2, 3, 4]), "learners": {}, "leader": leader},
    });
    assert_eq!(promoted, expected);

    // remove: four voters go down to three (the minimum).
    let removed = json_of(&["cluster", "remove", "--node", &at, "--secret-file", secret, "--json", "4"]).await;
    let expected = json!({
        "node": at, "change": "remove", "id": 4, "force": false,
        "members": {"voters": addr_map(&addrs, &[1, 2, 3]), "learners": {}, "leader": leader},
    });
    assert_eq!(removed, expected);

    // ... and no further without --force: refused, nothing changed, exit 4.
    let victim = *[1, 2, 3].iter().find(|&&id| id != leader && id != follower).expect("the other follower");
    let victim_id = victim.to_string();
    let (code, stdout, stderr) =
        run(&["cluster", "remove", "--node", &at, "--secret-file", secret, "--json", &victim_id], None).await;
    assert_eq!(code, EXIT_REFUSED, "{stderr}");
    assert_eq!(stdout, "", "no document on a failure");
    assert!(stderr.starts_with("airomem: refused, nothing changed: "), "{stderr}");
    assert!(stderr.contains("below the minimum of 3") && stderr.contains("--force"), "{stderr}");
    let members = json_of(&["cluster", "members", "--node", &at, "--secret-file", secret, "--json"]).await;
    assert_eq!(members["voters"], addr_map(&addrs, &[1, 2, 3]), "nothing changed");

    // With --force it goes.
    let forced =
        json_of(&["cluster", "remove", "--node", &at, "--secret-file", secret, "--json", "--force", &victim_id]).await;
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != victim).collect();
    let expected = json!({
        "node": at, "change": "remove", "id": victim, "force": true,
        "members": {"voters": addr_map(&addrs, &survivors), "learners": {}, "leader": leader},
    });
    assert_eq!(forced, expected);
    nodes[&leader].commit(10).await.expect("two voters still commit");

    // The wrong secret: refused by the node, exit 5, saying so.
    let wrong = secret_file(root.path(), "other.secret", OTHER_SECRET);
    let wrong = wrong.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = run(&["cluster", "status", "--node", &at, "--secret-file", wrong], None).await;
    assert_eq!(code, EXIT_DENIED, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.starts_with(&format!("airomem: {at} refused the connection: ")), "{stderr}");
    assert!(stderr.contains("cluster secret"), "{stderr}");
    let (code, _, stderr) = run(&["cluster", "promote", "--node", &at, "--secret-file", wrong, "4"], None).await;
    assert_eq!(code, EXIT_DENIED, "{stderr}");

    for (_, node) in nodes {
        node.close().await.expect("closes");
    }
}

/// Nothing listening: exit 3. No secret, or an unreadable or short one: exit 2, saying what
/// to pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_before_any_group_answers() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let secret = secret_file(root.path(), "cluster.secret", SECRET);
    let secret = secret.to_str().expect("utf-8 path");
    let nowhere = free_addr().to_string();

    for args in [
        &["cluster", "status", "--node", &nowhere, "--secret-file", secret][..],
        &["cluster", "members", "--node", &nowhere, "--secret-file", secret, "--json"][..],
        &["cluster", "remove", "--node", &nowhere, "--secret-file", secret, "3"][..],
    ] {
        let (code, stdout, stderr) = run(args, None).await;
        assert_eq!(code, EXIT_UNREACHABLE, "{args:?}: {stderr}");
        assert_eq!(stdout, "");
        assert!(stderr.starts_with(&format!("airomem: cannot reach the cluster through {nowhere}: ")), "{stderr}");
    }

    let (code, _, stderr) = run(&["cluster", "status", "--node", &nowhere], None).await;
    assert_eq!(code, EXIT_USAGE);
    assert_eq!(stderr, "airomem: no cluster secret: pass --secret-file FILE or set AIROMEM_SECRET_FILE\n");

    let missing = root.path().join("missing.secret");
    let missing = missing.to_str().expect("utf-8 path");
    let (code, _, stderr) = run(&["cluster", "status", "--node", &nowhere], Some(Path::new(missing))).await;
    assert_eq!(code, EXIT_USAGE);
    assert!(stderr.starts_with(&format!("airomem: read the cluster secret {missing}: ")), "{stderr}");

    let short = secret_file(root.path(), "short.secret", "short");
    let (code, _, stderr) =
        run(&["cluster", "status", "--node", &nowhere, "--secret-file", short.to_str().expect("utf-8")], None).await;
    assert_eq!(code, EXIT_USAGE);
    assert!(stderr.contains("at least 16 are needed"), "{stderr}");
}
