//! VPNv4 (RFC 4364: route distinguisher, MPLS label, route-target extended communities)
//! interop with BIRD 2 and FRR, both ways with BIRD and FRR → weft. A small self-contained
//! daemon harness (modelled on interop_bird.rs / interop_frr.rs); each daemon runs in a temp
//! dir, passive on a free high port, and weft connects from 127.0.0.2 over eBGP. Skipped
//! with a message when a daemon is not installed.
//!
//! ```text
//!   weft Speaker (AS 65000, 127.0.0.2) ──TCP──► bird (AS 65002, vpn4 mpls channel, table vpntab)
//!                                                 static sv: 64512:100 10.10.0.0/24 mpls 100, RT 64512:200
//!   weft Speaker (AS 65000, 127.0.0.2) ──TCP──► bgpd -Z (AS 65003, ipv4 vpn)
//!                                                 vrf red: network 10.5.0.0/24, rd 65003:5,
//!                                                 label 300, rt 65003:500, export vpn
//! ```
//!
//! FRR originates VPNv4 without zebra or a kernel VRF device: `router bgp … vrf red` with
//! `rd/label/rt vpn …` and `export vpn` leaks the VRF's `network` into the VPN table.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

use tokio::sync::broadcast;
use weft_bgp::{
    Family, PeerConfig, PeerId, Prefix4, Route, RouteDistinguisher, RouteKey, RouteTarget, Speaker,
    SpeakerEvent, State, Vpnv4Route,
};

mod common;
use common::bird::BIRD_AS;
use common::frr::FRR_AS;
use common::{
    Daemon, WEFT_AS, WEFT_LOCAL, check_with_log, daemon_peer, eventually, free_port, require, run,
    wait_event, wait_state, weft_speaker,
};

/// A weft speaker (AS 65000) with one peer, the daemon on 127.0.0.1:`port`, from 127.0.0.2.
async fn weft_with_peer(port: u16, asn: u32) -> (Speaker, PeerId) {
    let weft = weft_speaker(None).await;
    let peer = PeerConfig {
        local_address: Some(WEFT_LOCAL),
        families: vec![Family::Ipv4Unicast, Family::Vpnv4],
        ..daemon_peer(port, asn)
    };
    let id = weft.add_peer(peer).await.unwrap();
    (weft, id)
}

async fn wait_established(s: &Speaker, peer: PeerId) -> Result<(), String> {
    wait_state(s, peer, State::Established).await
}

/// Shuts weft down; on error, panics with the daemon's log tail.
async fn check(daemon: &Daemon, weft: &Speaker, result: Result<(), String>) {
    weft.shutdown().await;
    check_with_log(daemon, result);
}

fn p(s: &str) -> Prefix4 {
    s.parse().unwrap()
}

/// The first VPNv4 route weft receives for `prefix`.
async fn received_vpnv4(
    events: &mut broadcast::Receiver<SpeakerEvent>,
    prefix: Prefix4,
) -> Result<Vpnv4Route, String> {
    wait_event(events, &format!("VPNv4 {prefix} at weft"), |e| match e {
        SpeakerEvent::RouteReceived {
            route: Route::Vpnv4(v),
            ..
        } if v.prefix == prefix => Some(v.clone()),
        _ => None,
    })
    .await
}

// ---------------------------------------------------------------- BIRD

struct Bird {
    daemon: Daemon,
    birdc: PathBuf,
    sock: String,
    port: u16,
}

impl Bird {
    fn start() -> Option<Self> {
        let bird = require("bird", "bird2")?;
        let birdc = require("birdc", "bird2")?;
        let dir = tempfile::Builder::new()
            .prefix("weft-bird-vpn-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        // A device next hop (`via "lo"`) is what BIRD accepts for a labelled static route
        // here: `via 127.0.0.1 mpls 100` is rejected as an invalid next hop (loopback).
        // BIRD 2.0.12 only passes a route's own label stack on when it announces the
        // route's gateway (iBGP, or a single-hop peer on that interface); with next-hop-self
        // (our multihop eBGP session) it sends the implicit-null label 3 instead
        // (proto/bgp/packets.c, bgp_update_next_hop_ip: "TODO: Use local MPLS assigned
        // label"), so weft must see label 3, not 100.
        let conf = format!(
            r#"
router id 10.255.0.3;
log stderr all;
vpn4 table vpntab;
protocol device {{ }}
protocol static sv {{
  disabled;
  vpn4 {{ table vpntab; }};
  route 64512:100 10.10.0.0/24 via "lo" mpls 100 {{ bgp_ext_community.add((rt, 64512, 200)); }};
}}
protocol bgp weft {{
  local 127.0.0.1 port {port} as {BIRD_AS};
  neighbor 127.0.0.2 as {WEFT_AS};
  passive on;
  multihop;
  hold time 9;
  keepalive time 3;
  connect retry time 1;
  error wait time 1, 2;
  vpn4 mpls {{ table vpntab; import all; export all; }};
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

    async fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-s", self.sock.as_str()];
        all.extend_from_slice(args);
        run(&self.birdc, &all).await
    }

    async fn established(&self) -> bool {
        self.birdc(&["show", "protocols", "weft"])
            .await
            .is_ok_and(|o| o.contains("Established"))
    }

    /// `show route table vpntab all` output, if it mentions `needle`.
    async fn vpn_table_with(&self, needle: &str) -> Option<String> {
        let out = self
            .birdc(&["show", "route", "table", "vpntab", "all"])
            .await
            .ok()?;
        out.contains(needle).then_some(out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_vpnv4_routes_with_rd_label_and_route_target_both_ways() {
    let Some(bird) = Bird::start() else {
        return;
    };
    let (weft, peer) = weft_with_peer(bird.port, BIRD_AS).await;
    let mut events = weft.subscribe();
    let result = async {
        wait_established(&weft, peer).await?;
        eventually("BIRD to see the session established", || async {
            bird.established().await.then_some(())
        })
        .await?;
        let st = weft.peers().await.map_err(|e| e.to_string())?;
        let families = st[0]
            .negotiated
            .as_ref()
            .map(|n| n.families.clone())
            .unwrap_or_default();
        if !families.contains(&Family::Vpnv4) {
            return Err(format!("VPNv4 not negotiated with BIRD: {families:?}"));
        }

        // BIRD → weft
        bird.birdc(&["enable", "sv"]).await?;
        let got = received_vpnv4(&mut events, p("10.10.0.0/24")).await?;
        let want = Vpnv4Route {
            rd: RouteDistinguisher::As2 {
                asn: 64512,
                number: 100,
            },
            prefix: p("10.10.0.0/24"),
            // implicit null (RFC 3032), see the comment on BIRD's static route
            label: 3,
            route_targets: vec![RouteTarget::As2 {
                asn: 64512,
                value: 200,
            }],
        };
        if got != want {
            return Err(format!("received {got:?} from BIRD, expected {want:?}"));
        }

        // weft → BIRD
        let ours = Vpnv4Route {
            rd: RouteDistinguisher::As2 {
                asn: 64512,
                number: 7,
            },
            prefix: p("10.47.0.0/24"),
            label: 5001,
            route_targets: vec![RouteTarget::As2 {
                asn: 64512,
                value: 8_000_001,
            }],
        };
        weft.originate(Route::Vpnv4(ours), Some(Ipv4Addr::new(172, 16, 0, 5)))
            .await
            .map_err(|e| e.to_string())?;
        let shown = eventually("64512:7 10.47.0.0/24 in BIRD's vpntab", || {
            bird.vpn_table_with("64512:7 10.47.0.0/24")
        })
        .await?;
        let ours_text = shown
            .split("64512:7 10.47.0.0/24")
            .nth(1)
            .unwrap_or_default()
            .split("64512:100 ")
            .next()
            .unwrap_or_default();
        for needle in [
            "BGP.as_path: 65000",
            "BGP.next_hop: 172.16.0.5",
            "BGP.mpls_label_stack: 5001",
            "(rt, 64512, 8000001)",
        ] {
            if !ours_text.contains(needle) {
                return Err(format!("BIRD's VPNv4 route lacks `{needle}`:\n{shown}"));
            }
        }

        // withdrawals both ways
        weft.withdraw(RouteKey::Vpnv4 {
            rd: RouteDistinguisher::As2 {
                asn: 64512,
                number: 7,
            },
            prefix: p("10.47.0.0/24"),
        })
        .await
        .map_err(|e| e.to_string())?;
        eventually("64512:7 10.47.0.0/24 gone from BIRD", || async {
            let out = bird
                .birdc(&["show", "route", "table", "vpntab", "all"])
                .await
                .ok()?;
            (!out.contains("64512:7 10.47.0.0/24")).then_some(())
        })
        .await?;
        bird.birdc(&["disable", "sv"]).await?;
        wait_event(&mut events, "withdrawal of 64512:100 10.10.0.0/24", |e| match e {
            SpeakerEvent::RouteWithdrawn {
                key: RouteKey::Vpnv4 { rd, prefix },
                ..
            } if *prefix == p("10.10.0.0/24")
                && *rd
                    == (RouteDistinguisher::As2 {
                        asn: 64512,
                        number: 100,
                    }) =>
            {
                Some(())
            }
            _ => None,
        })
        .await?;
        Ok(())
    }
    .await;
    check(&bird.daemon, &weft, result).await;
}

// ---------------------------------------------------------------- FRR

struct Frr {
    daemon: Daemon,
    vtysh: PathBuf,
    dir: String,
    port: u16,
}

impl Frr {
    fn start() -> Option<Self> {
        let bgpd = require("bgpd", "frr")?;
        let vtysh = require("vtysh", "frr")?;
        let dir = tempfile::Builder::new()
            .prefix("weft-frr-vpn-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
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
 address-family ipv4 unicast
  neighbor 127.0.0.2 activate
 exit-address-family
 address-family ipv4 vpn
  neighbor 127.0.0.2 activate
 exit-address-family
router bgp {FRR_AS} vrf red
 bgp router-id 10.255.0.4
 no bgp ebgp-requires-policy
 no bgp network import-check
 address-family ipv4 unicast
  rd vpn export 65003:5
  label vpn export 300
  rt vpn both 65003:500
  export vpn
  import vpn
 exit-address-family
"#
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

    async fn vtysh(&self, commands: &[&str]) -> Result<String, String> {
        let mut args = vec!["--vty_socket", self.dir.as_str(), "-d", "bgpd"];
        for c in commands {
            args.push("-c");
            args.push(c);
        }
        run(&self.vtysh, &args).await
    }

    async fn established(&self) -> bool {
        let Ok(out) = self.vtysh(&["show bgp summary json"]).await else {
            return false;
        };
        serde_json::from_str::<serde_json::Value>(&out)
            .is_ok_and(|v| v["ipv4Unicast"]["peers"]["127.0.0.2"]["state"] == "Established")
    }

    /// `network` / `no network` in VRF red's IPv4 unicast, leaked into the VPN table.
    async fn vrf_network(&self, line: &str) -> Result<String, String> {
        self.vtysh(&[
            "configure terminal",
            "router bgp 65003 vrf red",
            "address-family ipv4 unicast",
            line,
        ])
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_vrf_leaks_vpnv4_with_rd_label_and_route_target_to_weft() {
    let Some(frr) = Frr::start() else {
        return;
    };
    let (weft, peer) = weft_with_peer(frr.port, FRR_AS).await;
    let mut events = weft.subscribe();
    let result = async {
        wait_established(&weft, peer).await?;
        eventually("FRR to see the session established", || async {
            frr.established().await.then_some(())
        })
        .await?;

        frr.vrf_network("network 10.5.0.0/24").await?;
        let got = received_vpnv4(&mut events, p("10.5.0.0/24")).await?;
        let want = Vpnv4Route {
            rd: RouteDistinguisher::As2 {
                asn: 65003,
                number: 5,
            },
            prefix: p("10.5.0.0/24"),
            label: 300,
            route_targets: vec![RouteTarget::As2 {
                asn: 65003,
                value: 500,
            }],
        };
        if got != want {
            return Err(format!("received {got:?} from FRR, expected {want:?}"));
        }

        frr.vrf_network("no network 10.5.0.0/24").await?;
        wait_event(&mut events, "withdrawal of 65003:5 10.5.0.0/24", |e| match e {
            SpeakerEvent::RouteWithdrawn {
                key: RouteKey::Vpnv4 { rd, prefix },
                ..
            } if *prefix == p("10.5.0.0/24")
                && *rd
                    == (RouteDistinguisher::As2 {
                        asn: 65003,
                        number: 5,
                    }) =>
            {
                Some(())
            }
            _ => None,
        })
        .await?;
        Ok(())
    }
    .await;
    check(&frr.daemon, &weft, result).await;
}
