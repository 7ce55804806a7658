//! Shared helpers for the interop tests: free ports, temp dirs, daemon guards that kill
//! their process on drop, bounded waits, and a weft speaker wired for tests.

#![allow(dead_code, reason = "each interop test file uses a different subset")]

pub mod bird;
pub mod frr;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio::time::timeout;
use weft_bgp::{Family, PeerConfig, PeerId, Prefix4, Route, Speaker, SpeakerConfig, SpeakerEvent, State};

pub const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Bound on every wait in the interop tests.
pub const WAIT: Duration = Duration::from_secs(45);
pub const WEFT_AS: u32 = 65000;
pub const WEFT_ID: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
/// weft connects to the daemons from here, so that its next-hop-self differs from the
/// daemon's own address (a NEXT_HOP equal to its own address is rejected, RFC 4271 §6.3).
pub const WEFT_LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
pub const GOBGP_AS: u32 = 65001;

/// Finds a daemon binary on PATH or in the usual sbin/libexec places.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/lib/frr", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The binary, or `None` after printing why the test is skipped.
pub fn require(name: &str, package: &str) -> Option<PathBuf> {
    let found = find_binary(name);
    if found.is_none() {
        eprintln!(
            "SKIPPED: `{name}` not found; install the `{package}` package (scripts/install-deps) to run this test"
        );
    }
    found
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A running daemon; killed (and reaped) when dropped, its temp dir removed with it.
pub struct Daemon {
    pub name: &'static str,
    child: Child,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl Daemon {
    /// Starts `bin args…` with stdout and stderr in `<dir>/<name>.log`.
    pub fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[&str],
        dir: tempfile::TempDir,
    ) -> std::io::Result<Self> {
        Self::spawn_with_env(name, bin, args, &[], dir)
    }

    /// [`Daemon::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &'static str,
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
    ) -> std::io::Result<Self> {
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()?;
        Ok(Self {
            name,
            child,
            dir,
            log,
        })
    }

    /// The daemon's output so far (for failure messages).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a short command (a daemon's CLI) with a bound; returns stdout, or stderr as error.
pub async fn run(bin: &Path, args: &[&str]) -> Result<String, String> {
    let out = timeout(
        Duration::from_secs(15),
        tokio::process::Command::new(bin)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{} {args:?} timed out", bin.display()))?
    .map_err(|e| format!("{} {args:?}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} {args:?} failed: {}{}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Polls `f` every 200 ms until it returns `Some`, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    timeout(WAIT, async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .map_err(|_| format!("timed out after {WAIT:?} waiting for {what}"))
}

/// A weft speaker that only connects out.
pub async fn weft_speaker(hook: Option<fn(&[u8])>) -> Speaker {
    let mut cfg = SpeakerConfig::new(WEFT_AS, WEFT_ID, Some(SocketAddr::new(LO, 0)));
    cfg.frame_hook = hook;
    Speaker::new(cfg).await.expect("speaker starts")
}

/// Peer settings for a daemon on 127.0.0.1:`port`, with short timers for tests.
pub fn daemon_peer(port: u16, asn: u32) -> PeerConfig {
    PeerConfig {
        port,
        hold_secs: 9,
        connect_retry_secs: 1,
        idle_hold_secs: 1,
        ..PeerConfig::new(LO, asn)
    }
}

/// Panics with the tail of `daemon`'s log when `result` is an error.
pub fn check_with_log(daemon: &Daemon, result: Result<(), String>) {
    if let Err(e) = result {
        panic!("{e}\n--- {} log (tail) ---\n{}", daemon.name, daemon.log());
    }
}

/// Speaker settings for the graceful-restart tests: connects out only, forwarding state
/// preserved, and the Restart State bit set when `restarted`.
pub fn gr_speaker_config(restarted: bool) -> SpeakerConfig {
    let mut cfg = SpeakerConfig::new(WEFT_AS, WEFT_ID, Some(SocketAddr::new(LO, 0)));
    cfg.restarted = restarted;
    cfg.forwarding_preserved = true;
    cfg
}

/// IPv4-unicast-only peer settings from [`WEFT_LOCAL`] for a daemon on 127.0.0.1:`port`,
/// with graceful restart (`restart_secs`) and TCP MD5 (`password`) when given.
pub fn hardening_peer(port: u16, asn: u32, restart_secs: Option<u16>, password: Option<&str>) -> PeerConfig {
    PeerConfig {
        local_address: Some(WEFT_LOCAL),
        graceful_restart_secs: restart_secs,
        password: password.map(str::to_string),
        families: vec![Family::Ipv4Unicast],
        ..daemon_peer(port, asn)
    }
}

/// A GR-capable weft speaker ([`gr_speaker_config`]) originating `prefixes` (next hop
/// 172.16.0.5), peered ([`hardening_peer`], no password) with the daemon on `port`.
pub async fn gr_weft_with_routes(
    port: u16,
    asn: u32,
    restarted: bool,
    restart_secs: u16,
    prefixes: &[&str],
) -> (Speaker, PeerId) {
    let weft = Speaker::new(gr_speaker_config(restarted))
        .await
        .expect("speaker starts");
    for p in prefixes {
        let px: Prefix4 = p.parse().expect("a prefix");
        weft.originate(Route::Ipv4(px), Some(Ipv4Addr::new(172, 16, 0, 5)))
            .await
            .expect("originate");
    }
    let id = weft
        .add_peer(hardening_peer(port, asn, Some(restart_secs), None))
        .await
        .expect("add peer");
    (weft, id)
}

/// `v` as owned strings, sorted (to compare with a daemon's sorted prefixes).
pub fn sorted_owned(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A daemon with weft (127.0.0.2) as passive neighbor, as the FRR and BIRD hardening
/// tests drive it.
#[allow(
    async_fn_in_trait,
    reason = "test-only trait, used with concrete types on one runtime"
)]
pub trait HardeningDaemon {
    /// How failure and wait messages name it ("FRR", "BIRD").
    const NAME: &'static str;
    /// Its AS number.
    const ASN: u32;
    /// Its BGP port on 127.0.0.1.
    fn port(&self) -> u16;
    /// Waits for its CLI to answer.
    async fn ready(&self) -> Result<(), String>;
    /// The session with weft is Established on its side.
    async fn established(&self) -> bool;
    /// The sorted IPv4 prefixes it holds from weft, or `None` if it did not answer.
    async fn prefixes(&self) -> Option<Vec<String>>;
}

/// A fresh GR-capable weft speaker ([`gr_weft_with_routes`]) advertises `prefixes` to `d`,
/// then goes down without a NOTIFICATION; returns when it went down, once `d` saw the
/// session drop.
pub async fn advertise_then_go_down<D: HardeningDaemon>(
    d: &D,
    restart_secs: u16,
    prefixes: &[&str],
) -> Result<Instant, String> {
    d.ready().await?;
    let (weft, id) = gr_weft_with_routes(d.port(), D::ASN, false, restart_secs, prefixes).await;
    wait_state(&weft, id, State::Established).await?;
    let want = sorted_owned(prefixes);
    eventually(&format!("weft's routes in {}", D::NAME), || async {
        (d.prefixes().await? == want).then_some(())
    })
    .await?;
    let down_at = Instant::now();
    weft.shutdown_for_restart().await;
    eventually(&format!("{} to see the session drop", D::NAME), || async {
        (!d.established().await).then_some(())
    })
    .await?;
    Ok(down_at)
}

/// With `d` configured for TCP MD5 with `secret`: no session forms with a wrong password
/// or none (10 s each), one forms with `secret`.
pub async fn md5_session_forms_with_the_right_password_only<D: HardeningDaemon>(
    d: &D,
    secret: &str,
) -> Result<(), String> {
    d.ready().await?;
    for (what, password) in [
        ("a wrong password", Some("not-the-password")),
        ("no password", None),
    ] {
        let weft = weft_speaker(None).await;
        let id = weft
            .add_peer(hardening_peer(d.port(), D::ASN, None, password))
            .await
            .expect("add peer");
        tokio::time::sleep(Duration::from_secs(10)).await;
        let st = weft.peers().await.expect("peers");
        let daemon_up = d.established().await;
        weft.shutdown().await;
        if daemon_up || st.iter().any(|p| p.id == id && p.state == State::Established) {
            return Err(format!("a session formed with {what}: {st:?}"));
        }
    }
    let weft = weft_speaker(None).await;
    let id = weft
        .add_peer(hardening_peer(d.port(), D::ASN, None, Some(secret)))
        .await
        .expect("add peer");
    let res = async {
        wait_state(&weft, id, State::Established).await?;
        eventually(&format!("{} to see the session established", D::NAME), || async {
            d.established().await.then_some(())
        })
        .await
    }
    .await;
    weft.shutdown().await;
    res
}

/// Waits for our session to `peer` to reach `state`.
pub async fn wait_state(s: &Speaker, peer: PeerId, state: State) -> Result<(), String> {
    eventually(&format!("{peer} to reach {state:?}"), || async {
        s.peers()
            .await
            .ok()?
            .iter()
            .any(|p| p.id == peer && p.state == state)
            .then_some(())
    })
    .await
}

/// Waits for an event matching `pick`, for at most [`WAIT`].
pub async fn wait_event<T>(
    rx: &mut broadcast::Receiver<SpeakerEvent>,
    what: &str,
    mut pick: impl FnMut(&SpeakerEvent) -> Option<T>,
) -> Result<T, String> {
    timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if let Some(v) = pick(&ev) {
                        return Ok(v);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(format!("event stream ended: {e}")),
            }
        }
    })
    .await
    .map_err(|_| format!("timed out after {WAIT:?} waiting for {what}"))?
}

/// A peer's last session-down reason.
pub async fn last_down(s: &Speaker, peer: PeerId) -> Option<String> {
    s.peers()
        .await
        .ok()?
        .into_iter()
        .find(|p| p.id == peer)?
        .last_down
}

/// gobgpd's TOML config: AS `asn` listening on 127.0.0.1:`port`, with `neighbors` (each
/// from [`gobgpd_neighbor`]).
pub fn gobgpd_config(asn: u32, router_id: Ipv4Addr, port: u16, neighbors: &[String]) -> String {
    format!(
        r#"[global.config]
  as = {asn}
  router-id = "{router_id}"
  port = {port}
  local-address-list = ["127.0.0.1"]
{}"#,
        neighbors.concat()
    )
}

/// A passive gobgpd neighbor, with a TCP MD5 `password` if given and `extra` (TOML tables
/// of the neighbor: timers, address families, graceful restart).
pub fn gobgpd_neighbor(address: IpAddr, asn: u32, password: Option<&str>, extra: &str) -> String {
    let auth = password
        .map(|p| format!("    auth-password = \"{p}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{address}"
    peer-as = {asn}
{auth}  [neighbors.transport.config]
    passive-mode = true
{extra}"#
    )
}

/// gobgpd on 127.0.0.1 (AS [`GOBGP_AS`], free BGP and API ports, generated config in a temp
/// dir) with weft at [`WEFT_LOCAL`] as its one passive neighbor, and its `gobgp` CLI.
pub struct GoBgp {
    pub daemon: Daemon,
    cli: PathBuf,
    pub api_port: u16,
    pub bgp_port: u16,
}

impl GoBgp {
    /// Starts gobgpd, or returns `None` (test skipped) when it is not installed. The
    /// neighbor gets `password` for TCP MD5 and `extra` (TOML tables of the neighbor:
    /// address families, graceful restart) after its short test timers.
    pub fn start(password: Option<&str>, extra: &str) -> Option<Self> {
        let gobgpd = require("gobgpd", "gobgpd")?;
        let cli = require("gobgp", "gobgpd")?;
        let dir = tempfile::Builder::new()
            .prefix("weft-gobgp-")
            .tempdir()
            .expect("temp dir");
        let (bgp_port, api_port) = (free_port(), free_port());
        let timers = r#"  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
    connect-retry = 1
    idle-hold-time-after-reset = 1
"#;
        let conf = gobgpd_config(
            GOBGP_AS,
            Ipv4Addr::new(10, 255, 0, 2),
            bgp_port,
            &[gobgpd_neighbor(
                WEFT_LOCAL,
                WEFT_AS,
                password,
                &format!("{timers}{extra}"),
            )],
        );
        std::fs::write(dir.path().join("gobgpd.toml"), conf).expect("write config");
        let api = format!("127.0.0.1:{api_port}");
        let daemon = Daemon::spawn(
            "gobgpd",
            &gobgpd,
            &[
                "-f",
                "gobgpd.toml",
                "--api-hosts",
                &api,
                "--pprof-disable",
                "-p",
                "-l",
                "debug",
            ],
            dir,
        )
        .expect("gobgpd starts");
        Some(Self {
            daemon,
            cli,
            api_port,
            bgp_port,
        })
    }

    /// Runs `gobgp <args>` against this daemon's API.
    pub async fn cli(&self, args: &[&str]) -> Result<String, String> {
        let port = self.api_port.to_string();
        let mut all = vec!["-u", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        run(&self.cli, &all).await
    }

    /// `gobgp -j <args>`, parsed.
    pub async fn json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.cli(&all).await.ok()?).ok()
    }

    /// The session with weft is Established on gobgpd's side.
    pub async fn established(&self) -> bool {
        self.json(&["neighbor"])
            .await
            .is_some_and(|v| v[0]["state"]["session_state"] == 6)
    }

    /// Waits for gobgpd's API to answer.
    pub async fn ready(&self) -> Result<(), String> {
        eventually("gobgpd's API", || async {
            self.cli(&["global"]).await.ok().map(|_| ())
        })
        .await
    }
}
