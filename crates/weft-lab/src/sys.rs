//! Operating-system plumbing: bounded command runs (`ip`, the CNI plugin), detached
//! processes with pids and log files, finding and ending processes, namespaces.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{Pid, getpgid};
use tokio::io::AsyncWriteExt;

/// Bound on one `ip` invocation.
pub const IP_TIMEOUT: Duration = Duration::from_secs(20);

/// True when running as root (the lab creates namespaces and links).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `cmd` to completion with `stdin` and a time bound; the child is killed if the
/// bound expires.
pub async fn run_bounded(
    cmd: &mut tokio::process::Command,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Output> {
    let shown = format!("{:?}", cmd.as_std());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
    if let Some(mut input) = child.stdin.take() {
        // A child that exits without reading its stdin is not an error here.
        let _ = input.write_all(stdin).await;
        drop(input);
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.with_context(|| format!("waiting for {shown}")),
        Err(_) => bail!("{shown} did not finish within {timeout:?}"),
    }
}

/// Runs `ip ARGS…`; its stdout, or an error naming the command and its stderr.
pub async fn ip(args: &[&str]) -> Result<String> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(args);
    let out = run_bounded(&mut cmd, b"", IP_TIMEOUT).await?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of all named network namespaces.
pub async fn netns_list() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"]).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// True when the named namespace exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new(crate::names::NETNS_DIR).join(name).exists()
}

/// Pids of the processes inside a named namespace.
pub async fn netns_pids(name: &str) -> Vec<u32> {
    match ip(&["netns", "pids", name]).await {
        Ok(out) => out.lines().filter_map(|l| l.trim().parse().ok()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Starts a process detached from us: its own process group, stdin from /dev/null,
/// stdout and stderr appended to `log`. Returns its pid.
pub fn spawn_detached(program: &Path, args: &[String], envs: &[(&str, &str)], log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let err = out.try_clone().context("duplicating the log file handle")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // The lab's processes must never pick up the caller's controller or cluster.
    for var in [
        "KUBECONFIG",
        "WEFT_STORE",
        "WEFT_DATA_DIR",
        "WEFT_LISTEN",
        "WEFT_SERVER",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} {}", program.display(), args.join(" ")))?;
    // Dropping a std Child neither kills nor waits; `reap` collects it when it exits.
    Ok(child.id())
}

/// Collects `pid` if it is our exited child (no-op otherwise).
fn reap(pid: u32) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
    }
}

/// True when `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    reap(pid);
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3, after the parenthesised command name, is the state.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The command line of `pid`, arguments separated by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    Some(parts.join(" "))
}

/// Pids (other than ours) whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && *pid > 1)
        .filter(|pid| cmdline(*pid).is_some_and(|c| c.contains(needle)))
        .collect()
}

fn signal(pid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 {
        return;
    }
    let p = Pid::from_raw(raw);
    // Our detached processes lead their own group: signal the whole group.
    if getpgid(Some(p)) == Ok(p) {
        let _ = killpg(p, sig);
    }
    let _ = kill(p, sig);
}

/// Ends `pids`: SIGTERM, then SIGKILL for those still there after `grace`; waits
/// (bounded) until they are gone. Returns the pids that could not be ended.
pub async fn terminate(pids: &[u32], grace: Duration) -> Vec<u32> {
    let mut left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    for p in &left {
        signal(*p, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left.retain(|p| alive(*p));
    }
    for p in &left {
        signal(*p, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left.retain(|p| alive(*p));
    }
    left
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Writes `sysctl` (a path under /proc/sys) inside a named namespace.
pub fn write_sysctl_in(netns: &str, sysctl: &str, value: &str) -> Result<()> {
    let path = Path::new(crate::names::NETNS_DIR).join(netns);
    let file = format!("/proc/sys/{sysctl}");
    weft_cni::run_in_netns(&path, || std::fs::write(&file, value))
        .with_context(|| format!("entering {netns}"))?
        .with_context(|| format!("writing {file} in {netns}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_named() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(cmdline(me).is_some());
        assert!(!alive(u32::MAX - 1));
        assert!(processes_matching("definitely-not-a-weft-lab-process-xyz").is_empty());
    }

    #[tokio::test]
    async fn detached_process_is_terminated() {
        let dir = std::env::temp_dir().join(format!("weft-lab-sys-{}", std::process::id()));
        let log = dir.join("sleep.log");
        let pid = spawn_detached(Path::new("sleep"), &["30".to_string()], &[], &log).unwrap();
        assert!(alive(pid));
        assert!(terminate(&[pid], Duration::from_secs(2)).await.is_empty());
        assert!(!alive(pid));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn bounded_run_times_out() {
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("5");
        let err = run_bounded(&mut cmd, b"", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
    }
}
