//! The processes a measurement runs: a variant's server, oha against it, and the sessions the
//! read and delete phases need.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::error::BoxError;

/// A server process, from its `listening on` line until [`Server::stop`]; dropping it kills
/// the process, so that a failed measurement leaves nothing behind.
pub struct Server {
    child: Child,
    /// `http://ADDR`.
    pub base: String,
}

impl Server {
    /// Starts `command` (which must listen on a port it prints as `listening on ADDR`) and
    /// waits for that line.
    pub fn start(mut command: Command) -> Result<Server, BoxError> {
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let stdout = child.stdout.take().ok_or("the server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            match lines.next() {
                Some(line) => {
                    if let Some(address) = line?.strip_prefix("listening on ") {
                        break address.to_string();
                    }
                }
                None => {
                    let status = child.wait()?;
                    return Err(format!("{command:?} exited before it listened: {status}").into());
                }
            }
        };
        // Read to the end, so that the server never finds its stdout closed.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Server { child, base: format!("http://{address}") })
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(mut self) -> Result<(), BoxError> {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if !sent.success() {
            return Err(format!("kill -TERM: {sent}").into());
        }
        let status = self.child.wait()?;
        if status.success() { Ok(()) } else { Err(format!("the server exited with {status} after SIGTERM").into()) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What oha measured for one route.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Answered requests per second (any status).
    pub requests_per_sec: f64,
    /// Latency percentiles and the slowest request, in milliseconds.
    pub p50_ms: f64,
    /// See [`Phase::p50_ms`].
    pub p99_ms: f64,
    /// See [`Phase::p50_ms`].
    pub max_ms: f64,
    /// Responses by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Requests that got no response, by oha's description of why.
    pub errors: BTreeMap<String, u64>,
}

impl Phase {
    /// The share of responses with `status`.
    pub fn share(&self, status: &str) -> f64 {
        let answered: u64 = self.statuses.values().sum();
        self.statuses.get(status).copied().unwrap_or(0) as f64 / answered.max(1) as f64
    }
}

/// Runs oha with `connections` connections and `args`, and reads its JSON report.
pub fn oha(oha: &Path, connections: u32, args: &[String]) -> Result<Phase, BoxError> {
    let output = Command::new(oha)
        .args(["--no-tui", "--output-format", "json", "-c", &connections.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        return Err(format!("oha {args:?}: {}: {}", output.status, String::from_utf8_lossy(&output.stderr)).into());
    }
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let seconds = |value: &Value| value.as_f64().ok_or_else(|| format!("oha's report lacks a figure: {report}"));
    let counts = |value: &Value| -> BTreeMap<String, u64> {
        value.as_object().into_iter().flatten().map(|(key, count)| (key.clone(), count.as_u64().unwrap_or(0))).collect()
    };
    let statuses = counts(&report["statusCodeDistribution"]);
    let answered: u64 = statuses.values().sum();
    if answered == 0 {
        return Err(format!("oha {args:?}: no request was answered: {report}").into());
    }
    Ok(Phase {
        requests_per_sec: answered as f64 / seconds(&report["summary"]["total"])?,
        p50_ms: seconds(&report["latencyPercentiles"]["p50"])? * 1e3,
        p99_ms: seconds(&report["latencyPercentiles"]["p99"])? * 1e3,
        max_ms: seconds(&report["summary"]["slowest"])? * 1e3,
        statuses,
        errors: counts(&report["errorDistribution"]),
    })
}

/// oha's version line.
pub fn oha_version(oha: &Path) -> Result<String, BoxError> {
    let output = Command::new(oha).arg("--version").output()?;
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// Creates `count` sessions through `base`'s API from `concurrency` clients; their tokens.
pub fn create_sessions(base: &str, count: u64, concurrency: u64) -> Result<Vec<String>, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let tasks: Vec<_> = (0..concurrency)
            .map(|first| {
                let (client, url) = (client.clone(), format!("{base}/sessions"));
                tokio::spawn(async move {
                    let mut tokens = Vec::new();
                    for user_id in (first..count).step_by(concurrency as usize) {
                        let response =
                            client.post(&url).json(&serde_json::json!({ "user_id": user_id })).send().await?;
                        if response.status() != reqwest::StatusCode::CREATED {
                            return Err(format!("create: {}", response.status()).into());
                        }
                        let body: Value = response.json().await?;
                        tokens.push(body["token"].as_str().ok_or("a token")?.to_string());
                    }
                    Ok::<_, BoxError>(tokens)
                })
            })
            .collect();
        let mut tokens = Vec::new();
        for task in tasks {
            tokens.extend(task.await??);
        }
        Ok(tokens)
    })
}

/// `base`'s `GET /stats`.
pub fn stats(base: &str) -> Result<Value, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build()?;
        Ok(client.get(format!("{base}/stats")).send().await?.json().await?)
    })
}
