//! The workspace's binaries as child processes of a test, pointed at a world on our own
//! servers: their environment ([`process_env_with`]), starting them ([`spawn_binary`]) under
//! the one child-process guard ([`KillOnDrop`]), waiting for their exit without blocking the
//! runtime, and reading their JSON logs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::NetNs;
use crate::harness::{signal, World};

/// `world.process_env()` with `remove` taken out and `set` put in (replacing what is there),
/// e.g. the machine's `BUYONCE_AMQP_URL` replaced by `BUYONCE_AMQP_URL_FILE`.
pub fn process_env_with(
    world: &World,
    set: &[(&str, String)],
    remove: &[&str],
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = world.process_env().into_iter().collect();
    for key in remove {
        env.remove(*key);
    }
    for (k, v) in set {
        env.insert((*k).to_owned(), v.clone());
    }
    env.into_iter().collect()
}

/// A child process killed (SIGKILL) and reaped when dropped, so an early return or a panic
/// never leaves a worker behind, retrying against servers that are gone. Derefs to
/// [`std::process::Child`]: [`signal`], [`wait_exit`] and the `Child` methods take it as it is.
#[derive(Debug)]
pub struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// Guards `child`.
    pub fn new(child: std::process::Child) -> KillOnDrop {
        KillOnDrop(child)
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self) -> Option<std::process::ExitStatus> {
        signal(&self.0, libc::SIGTERM);
        self.0.wait().ok()
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts a workspace binary with exactly `env`, stdout and stderr into `log`.
pub fn spawn_binary(
    name: &str,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<KillOnDrop> {
    let cmd = std::process::Command::new(crate::harness::binary(name));
    spawn_logged(cmd, name, args, env, log)
}

/// [`spawn_binary`] inside a network namespace (`ip netns exec`, which execs the binary in
/// place: the guarded pid is the binary's). Declare `ns` before the guard, so the process is
/// killed before its namespace goes.
pub fn spawn_binary_in(
    ns: &NetNs,
    name: &str,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<KillOnDrop> {
    let cmd = ns.command(crate::harness::binary(name));
    spawn_logged(cmd, name, args, env, log)
}

fn spawn_logged(
    mut cmd: std::process::Command,
    name: &str,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<KillOnDrop> {
    let file = std::fs::File::create(log).context("log file")?;
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .map(KillOnDrop)
        .with_context(|| format!("starting {name}"))
}

/// Waits for a child to exit without blocking the runtime (fakecloud runs on it); `None`
/// when it is still running after `timeout`.
pub async fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The first JSON log line in `log` whose `message` is `message`, as a JSON object.
pub fn find_log_event(log: &Path, message: &str) -> Option<serde_json::Value> {
    log_events(log)
        .into_iter()
        .find(|v| v["message"].as_str() == Some(message))
}

/// Every JSON log line in `log` (a missing file has none; other lines are skipped).
pub fn log_events(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}
