//! BIRD: `bird -c <conf> -s <sock> -f` in a temp dir, passive on a free high port for weft
//! at 127.0.0.2 (eBGP, BIRD AS [`BIRD_AS`], protocol `weft`); driven through `birdc`.
//!
//! BIRD refuses a loopback neighbour as "directly connected", hence `multihop`.

use std::path::PathBuf;

use weft_bgp::Prefix4;

use super::{Daemon, HardeningDaemon, WEFT_AS, eventually, free_port, require, run};

pub const BIRD_AS: u32 = 65002;

/// A running bird and its birdc.
pub struct Bird {
    pub daemon: Daemon,
    birdc: PathBuf,
    sock: String,
    pub port: u16,
}

impl Bird {
    /// bird with weft (127.0.0.2) as passive neighbor, or `None` (test skipped) when bird is
    /// not installed. `extra` lines go in the protocol. With `static_s4`, a disabled static
    /// protocol `s4` holds 10.3.0.0/24 (enable it with birdc to advertise it) and the
    /// protocol exports all; without, it exports nothing.
    pub fn start(extra: &[String], static_s4: bool) -> Option<Self> {
        let bird = require("bird", "bird2")?;
        let birdc = require("birdc", "bird2")?;
        let dir = tempfile::Builder::new()
            .prefix("weft-bird-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let extra: String = extra.iter().map(|l| format!("  {l}\n")).collect();
        let (s4, export) = if static_s4 {
            (
                "protocol static s4 {\n  disabled;\n  ipv4;\n  route 10.3.0.0/24 blackhole;\n}\n",
                "all",
            )
        } else {
            ("", "none")
        };
        let conf = format!(
            r#"
router id 10.255.0.3;
log stderr all;
protocol device {{ }}
{s4}protocol bgp weft {{
  local 127.0.0.1 port {port} as {BIRD_AS};
  neighbor 127.0.0.2 as {WEFT_AS};
  passive on;
  multihop;
  hold time 9;
  keepalive time 3;
  connect retry time 1;
  error wait time 1, 2;
{extra}  ipv4 {{ import all; export {export}; }};
}}
"#
        );
        std::fs::write(dir.path().join("bird.conf"), conf).expect("write config");
        let sock = dir.path().join("bird.ctl").to_string_lossy().into_owned();
        let daemon =
            Daemon::spawn("bird", &bird, &["-c", "bird.conf", "-s", &sock, "-f"], dir).expect("bird starts");
        Some(Self {
            daemon,
            birdc,
            sock,
            port,
        })
    }

    /// Runs `birdc <args>` against this bird.
    pub async fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-s", self.sock.as_str()];
        all.extend_from_slice(args);
        run(&self.birdc, &all).await
    }

    /// Waits for bird's control socket to answer.
    pub async fn ready(&self) -> Result<(), String> {
        eventually("bird's control socket", || async {
            self.birdc(&["show", "status"]).await.ok().map(|_| ())
        })
        .await
    }

    /// The session with weft is Established on BIRD's side.
    pub async fn established(&self) -> bool {
        self.birdc(&["show", "protocols", "weft"])
            .await
            .is_ok_and(|o| o.contains("Established"))
    }

    /// `show route for <prefix> all` output, if BIRD has the prefix.
    pub async fn route(&self, prefix: &str) -> Option<String> {
        let out = self.birdc(&["show", "route", prefix, "all"]).await.ok()?;
        out.contains(prefix).then_some(out)
    }

    /// The sorted prefixes BIRD learned from weft, or `None` if bird did not answer.
    pub async fn prefixes(&self) -> Option<Vec<String>> {
        let out = self.birdc(&["show", "route", "protocol", "weft"]).await.ok()?;
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.contains('/') && w.parse::<Prefix4>().is_ok())
            .map(str::to_string)
            .collect();
        v.sort();
        Some(v)
    }

    /// Whether BIRD holds weft's routes as stale: it runs the neighbor's restart timer
    /// (`Neighbor graceful restart active`). BIRD 2.0 does not mark stale routes in
    /// `show route`; the routes themselves are checked with [`Bird::prefixes`].
    pub async fn helping(&self) -> Option<bool> {
        let out = self.birdc(&["show", "protocols", "all", "weft"]).await.ok()?;
        Some(out.contains("Neighbor graceful restart active"))
    }
}

impl HardeningDaemon for Bird {
    const NAME: &'static str = "BIRD";
    const ASN: u32 = BIRD_AS;

    fn port(&self) -> u16 {
        self.port
    }

    async fn ready(&self) -> Result<(), String> {
        Bird::ready(self).await
    }

    async fn established(&self) -> bool {
        Bird::established(self).await
    }

    async fn prefixes(&self) -> Option<Vec<String>> {
        Bird::prefixes(self).await
    }
}
