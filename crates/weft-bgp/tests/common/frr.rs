//! FRR's `bgpd` alone (no zebra: `-Z`, no privilege changes: `-S`), config and vty socket
//! in a temp dir, passive on a free high port for weft at 127.0.0.2 (eBGP, FRR AS
//! [`FRR_AS`]); queried and changed through `vtysh --vty_socket <dir> -d bgpd`.

use std::path::PathBuf;

use serde_json::Value;

use super::{Daemon, HardeningDaemon, WEFT_AS, eventually, free_port, require, run};

pub const FRR_AS: u32 = 65003;

/// A running bgpd and its vtysh.
pub struct Frr {
    pub daemon: Daemon,
    vtysh: PathBuf,
    dir: String,
    pub port: u16,
}

impl Frr {
    /// bgpd with weft (127.0.0.2) as passive neighbor, or `None` (test skipped) when FRR is
    /// not installed. `extra` lines go in `router bgp` before the address families; IPv4
    /// unicast is always activated, IPv4 VPN too when `vpnv4`.
    pub fn start(extra: &[String], vpnv4: bool) -> Option<Self> {
        let bgpd = require("bgpd", "frr")?;
        let vtysh = require("vtysh", "frr")?;
        let dir = tempfile::Builder::new()
            .prefix("weft-frr-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let extra: String = extra.iter().map(|l| format!(" {l}\n")).collect();
        let vpn = if vpnv4 {
            " address-family ipv4 vpn\n  neighbor 127.0.0.2 activate\n exit-address-family\n"
        } else {
            ""
        };
        let conf = format!(
            r#"frr defaults traditional
hostname weft-frr
log stdout debugging
router bgp {FRR_AS}
 bgp router-id 10.255.0.4
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 127.0.0.2 remote-as {WEFT_AS}
 neighbor 127.0.0.2 passive
 neighbor 127.0.0.2 timers 3 9
 neighbor 127.0.0.2 timers connect 1
 neighbor 127.0.0.2 disable-connected-check
{extra} address-family ipv4 unicast
  neighbor 127.0.0.2 activate
 exit-address-family
{vpn}"#
        );
        let path = dir.path().to_string_lossy().into_owned();
        std::fs::write(dir.path().join("bgpd.conf"), conf).expect("write config");
        let conf_path = format!("{path}/bgpd.conf");
        let pid_path = format!("{path}/bgpd.pid");
        let port_s = port.to_string();
        let args = [
            "-f",
            &conf_path,
            "-p",
            &port_s,
            "-l",
            "127.0.0.1",
            "-Z",
            "-S",
            "-i",
            &pid_path,
            "--vty_socket",
            &path,
            "-P",
            "0",
            "--log",
            "stdout",
        ];
        let daemon = Daemon::spawn("bgpd", &bgpd, &args, dir).expect("bgpd starts");
        Some(Self {
            daemon,
            vtysh,
            dir: path,
            port,
        })
    }

    /// Runs `vtysh -c <command>…` against this bgpd.
    pub async fn vtysh(&self, commands: &[&str]) -> Result<String, String> {
        let mut args = vec!["--vty_socket", self.dir.as_str(), "-d", "bgpd"];
        for c in commands {
            args.push("-c");
            args.push(c);
        }
        run(&self.vtysh, &args).await
    }

    /// A `… json` show command, parsed.
    pub async fn json(&self, command: &str) -> Option<Value> {
        serde_json::from_str(&self.vtysh(&[command]).await.ok()?).ok()
    }

    /// Waits for bgpd's vty to answer.
    pub async fn ready(&self) -> Result<(), String> {
        eventually("bgpd's vty", || async {
            self.json("show bgp summary json").await.map(|_| ())
        })
        .await
    }

    /// The session with weft is Established on FRR's side.
    pub async fn established(&self) -> bool {
        self.json("show bgp summary json")
            .await
            .is_some_and(|v| v["ipv4Unicast"]["peers"]["127.0.0.2"]["state"] == "Established")
    }

    /// `configure terminal`, `router bgp`, then `lines`.
    pub async fn configure(&self, lines: &[&str]) -> Result<String, String> {
        let router = format!("router bgp {FRR_AS}");
        let mut all = vec!["configure terminal", router.as_str()];
        all.extend_from_slice(lines);
        self.vtysh(&all).await
    }

    /// FRR's IPv4 unicast table: prefix → its paths, or `None` if bgpd did not answer.
    pub async fn routes(&self) -> Option<serde_json::Map<String, Value>> {
        self.json("show bgp ipv4 unicast json").await?["routes"]
            .as_object()
            .cloned()
    }

    /// The sorted prefixes in FRR's IPv4 unicast table.
    pub async fn prefixes(&self) -> Option<Vec<String>> {
        let mut v: Vec<String> = self.routes().await?.keys().cloned().collect();
        v.sort();
        Some(v)
    }

    /// Whether FRR marks its path for `prefix` stale; `None` when it has no such route.
    pub async fn stale(&self, prefix: &str) -> Option<bool> {
        let routes = self.routes().await?;
        let paths = routes.get(prefix)?.as_array()?.clone();
        Some(
            paths
                .iter()
                .any(|p| p.get("stale").and_then(Value::as_bool).unwrap_or(false)),
        )
    }
}

impl HardeningDaemon for Frr {
    const NAME: &'static str = "FRR";
    const ASN: u32 = FRR_AS;

    fn port(&self) -> u16 {
        self.port
    }

    async fn ready(&self) -> Result<(), String> {
        Frr::ready(self).await
    }

    async fn established(&self) -> bool {
        Frr::established(self).await
    }

    async fn prefixes(&self) -> Option<Vec<String>> {
        Frr::prefixes(self).await
    }
}
