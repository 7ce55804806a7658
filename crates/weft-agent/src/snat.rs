//! Fabric-SNAT port use, so exhaustion is reported instead of silent. Each node
//! translates its SNAT pods' connections to its own address with TF's port pools (1,024
//! TCP and 1,024 UDP ports); the kernel may reuse a port for different destinations, so
//! the pool runs out per destination address and port. [`port_use`] (pure) counts the
//! translated ports per destination in the node's conntrack table
//! (`/proc/self/net/nf_conntrack`); [`failed_insertions`] (pure) sums the conntrack
//! insertion failures and drops (`/proc/self/net/stat/nf_conntrack`), which is how the
//! kernel fails a connection it cannot translate. [`Agent::run_snat_monitor`] reads both
//! every few seconds, logs each destination whose pool is exhausted and writes
//! `snat.json` in the state directory (`weft lab` and tests read it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_model::node::{SNAT_TCP_PORTS, SNAT_UDP_PORTS};

use crate::agent::Agent;

/// File in the agent's state directory with the last [`SnatReport`].
pub const SNAT_FILE: &str = "snat.json";

/// How often the monitor looks.
const PERIOD: Duration = Duration::from_secs(2);

/// Translated ports in use towards one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortUse {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Destination address.
    pub destination: IpAddr,
    /// Destination port.
    pub port: u16,
    /// Pool ports in use towards it.
    pub used: usize,
    /// Size of the pool.
    pub pool: usize,
    /// New connections towards it fail: 90 % of the pool is in use (the kernel tries
    /// at most 128 ports before it drops a new connection), or the kernel failed
    /// translations while at least half of it was in use.
    pub exhausted: bool,
}

/// What `snat.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnatReport {
    /// Destinations with translated connections, busiest first.
    pub destinations: Vec<PortUse>,
    /// Conntrack insertion failures and drops since the agent started.
    pub failed_insertions: u64,
}

fn pool_of(protocol: &str) -> Option<(u16, u16)> {
    match protocol {
        "tcp" => Some(SNAT_TCP_PORTS),
        "udp" => Some(SNAT_UDP_PORTS),
        _ => None,
    }
}

/// Counts translated pool ports per (protocol, destination, port) in `conntrack` (the
/// text of `/proc/net/nf_conntrack`): entries whose reply goes to `node_ip` on a pool
/// port while the original source is another address. `exhausted` is left false.
pub fn port_use(conntrack: &str, node_ip: Ipv4Addr) -> Vec<PortUse> {
    let node = IpAddr::V4(node_ip);
    let mut ports: BTreeMap<(String, IpAddr, u16), BTreeSet<u16>> = BTreeMap::new();
    for line in conntrack.lines() {
        let mut fields = line.split_whitespace();
        let (Some("ipv4"), Some(_), Some(protocol)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Some((lo, hi)) = pool_of(protocol) else {
            continue;
        };
        // key=value pairs: the first src/dst/sport/dport are the original direction,
        // the second the reply.
        let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for kv in line.split_whitespace() {
            if let Some((k, v)) = kv.split_once('=') {
                seen.entry(k).or_default().push(v);
            }
        }
        let get = |k: &str, i: usize| seen.get(k).and_then(|v| v.get(i)).copied();
        let (Some(osrc), Some(odst), Some(odport), Some(rdst), Some(rdport)) = (
            get("src", 0).and_then(|v| v.parse::<IpAddr>().ok()),
            get("dst", 0).and_then(|v| v.parse::<IpAddr>().ok()),
            get("dport", 0).and_then(|v| v.parse::<u16>().ok()),
            get("dst", 1).and_then(|v| v.parse::<IpAddr>().ok()),
            get("dport", 1).and_then(|v| v.parse::<u16>().ok()),
        ) else {
            continue;
        };
        if rdst != node || osrc == node || !(lo..=hi).contains(&rdport) {
            continue;
        }
        ports
            .entry((protocol.to_string(), odst, odport))
            .or_default()
            .insert(rdport);
    }
    let mut out: Vec<PortUse> = ports
        .into_iter()
        .map(|((protocol, destination, port), used)| {
            let pool = pool_of(&protocol).map_or(0, |(lo, hi)| usize::from(hi - lo) + 1);
            PortUse {
                protocol,
                destination,
                port,
                used: used.len(),
                pool,
                exhausted: false,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.used
            .cmp(&a.used)
            .then_with(|| (&a.protocol, a.destination, a.port).cmp(&(&b.protocol, b.destination, b.port)))
    });
    out
}

/// Sums the `insert_failed` and `drop` columns over every CPU line of `stat` (the text
/// of `/proc/net/stat/nf_conntrack`, hexadecimal).
pub fn failed_insertions(stat: &str) -> u64 {
    let mut lines = stat.lines();
    let Some(header) = lines.next() else { return 0 };
    let columns: Vec<&str> = header.split_whitespace().collect();
    let wanted: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == "insert_failed" || **c == "drop")
        .map(|(i, _)| i)
        .collect();
    lines
        .map(|l| {
            let values: Vec<&str> = l.split_whitespace().collect();
            wanted
                .iter()
                .filter_map(|i| values.get(*i).and_then(|v| u64::from_str_radix(v, 16).ok()))
                .sum::<u64>()
        })
        .sum()
}

/// Marks the destinations whose pool is exhausted, given how many translations failed
/// since the last look and which were exhausted then (they stay so while at least half
/// of their pool is in use).
pub fn mark_exhausted(
    destinations: &mut [PortUse],
    new_failures: u64,
    before: &BTreeSet<(String, IpAddr, u16)>,
) {
    for d in destinations {
        let busy = d.used * 2 >= d.pool;
        let was = before.contains(&(d.protocol.clone(), d.destination, d.port));
        // The kernel tries at most 128 ports from a random start before it gives up,
        // so new connections already fail (silently: the SYN is dropped) when only a
        // few ports are free.
        let nearly_full = d.used * 10 >= d.pool * 9;
        d.exhausted = nearly_full || (busy && (new_failures > 0 || was));
    }
}

impl Agent {
    /// Watches fabric-SNAT port use while this node has SNAT networks (see the module
    /// docs). Never returns.
    pub async fn run_snat_monitor(self) {
        let mut last_failures: Option<u64> = None;
        let mut reported: BTreeSet<(String, IpAddr, u16)> = BTreeSet::new();
        loop {
            tokio::time::sleep(PERIOD).await;
            let Some(state) = self.node_state() else { continue };
            let Some(IpAddr::V4(node_ip)) = state.underlay_ip else {
                continue;
            };
            if !state.networks.iter().any(|n| n.outside.is_some()) {
                continue;
            }
            let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
            let failures = failed_insertions(&read("/proc/self/net/stat/nf_conntrack"));
            let new_failures = last_failures.map_or(0, |l| failures.saturating_sub(l));
            let baseline = *last_failures.get_or_insert(failures);
            last_failures = Some(failures);
            let mut destinations = port_use(&read("/proc/self/net/nf_conntrack"), node_ip);
            mark_exhausted(&mut destinations, new_failures, &reported);
            let now: BTreeSet<(String, IpAddr, u16)> = destinations
                .iter()
                .filter(|d| d.exhausted)
                .map(|d| (d.protocol.clone(), d.destination, d.port))
                .collect();
            for d in destinations.iter().filter(|d| d.exhausted) {
                if !reported.contains(&(d.protocol.clone(), d.destination, d.port)) {
                    tracing::warn!(
                        protocol = %d.protocol,
                        destination = %d.destination,
                        port = d.port,
                        used = d.used,
                        pool = d.pool,
                        "fabric SNAT port pool exhausted: new connections from SNAT pods to this destination fail"
                    );
                }
            }
            reported = now;
            let report = SnatReport {
                destinations,
                failed_insertions: failures.saturating_sub(baseline),
            };
            let path = self.config().state_dir.join(SNAT_FILE);
            if let Ok(text) = serde_json::to_vec_pretty(&report)
                && let Err(e) = std::fs::write(&path, text)
            {
                tracing::debug!(error = %e, "cannot write {}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);

    fn entry(
        proto: &str,
        src: &str,
        dst: &str,
        sport: u16,
        dport: u16,
        reply_dst: &str,
        reply_dport: u16,
    ) -> String {
        let num = if proto == "tcp" { 6 } else { 17 };
        format!(
            "ipv4     2 {proto}      {num} 115 ESTABLISHED src={src} dst={dst} sport={sport} dport={dport} src={dst} dst={reply_dst} sport={dport} dport={reply_dport} [ASSURED] mark=0 zone=0 use=2\n"
        )
    }

    #[test]
    fn counts_translated_pool_ports_per_destination() {
        let mut text = String::new();
        for i in 0..3 {
            text += &entry(
                "tcp",
                "10.47.255.251",
                "203.0.113.10",
                40000 + i,
                80,
                "192.0.2.11",
                56000 + i,
            );
        }
        // Same port towards another destination: counted there.
        text += &entry(
            "tcp",
            "10.47.255.251",
            "203.0.113.11",
            40000,
            80,
            "192.0.2.11",
            56000,
        );
        text += &entry(
            "udp",
            "10.47.255.251",
            "203.0.113.10",
            5000,
            53,
            "192.0.2.11",
            57024,
        );
        // Not translated (reply to the pod itself), the node's own connection, a port
        // outside the pool: not counted.
        text += &entry(
            "tcp",
            "10.47.255.251",
            "203.0.113.10",
            40010,
            80,
            "10.47.255.251",
            40010,
        );
        text += &entry(
            "tcp",
            "192.0.2.11",
            "203.0.113.10",
            56100,
            80,
            "192.0.2.11",
            56100,
        );
        text += &entry(
            "tcp",
            "10.47.255.251",
            "203.0.113.10",
            40011,
            80,
            "192.0.2.11",
            40011,
        );
        text += "ipv4     2 icmp     1 29 src=10.47.255.251 dst=203.0.113.10 type=8 code=0 id=1 src=203.0.113.10 dst=192.0.2.11 type=0 code=0 id=1 mark=0 use=1\n";
        let use_ = port_use(&text, NODE);
        assert_eq!(use_.len(), 3, "{use_:#?}");
        assert_eq!(
            (
                use_[0].protocol.as_str(),
                use_[0].destination,
                use_[0].port,
                use_[0].used,
                use_[0].pool
            ),
            ("tcp", "203.0.113.10".parse().unwrap(), 80, 3, 1024)
        );
        assert!(
            use_.iter()
                .any(|u| u.protocol == "udp" && u.used == 1 && u.pool == 1024)
        );
    }

    #[test]
    fn exhaustion_needs_a_full_pool_or_failures_at_half() {
        let mut d = vec![PortUse {
            protocol: "tcp".into(),
            destination: "203.0.113.10".parse().unwrap(),
            port: 80,
            used: 600,
            pool: 1024,
            exhausted: false,
        }];
        let none = BTreeSet::new();
        mark_exhausted(&mut d, 0, &none);
        assert!(!d[0].exhausted);
        mark_exhausted(&mut d, 3, &none);
        assert!(d[0].exhausted);
        let was: BTreeSet<_> = [("tcp".to_string(), d[0].destination, 80)].into();
        mark_exhausted(&mut d, 0, &was);
        assert!(d[0].exhausted, "stays exhausted while busy");
        d[0].used = 100;
        mark_exhausted(&mut d, 3, &was);
        assert!(
            !d[0].exhausted,
            "failures with a mostly free pool are something else"
        );
        d[0].used = 1024;
        mark_exhausted(&mut d, 0, &none);
        assert!(d[0].exhausted);
        d[0].used = 922;
        mark_exhausted(&mut d, 0, &none);
        assert!(d[0].exhausted, "90 % in use");
        d[0].used = 900;
        mark_exhausted(&mut d, 0, &none);
        assert!(!d[0].exhausted);
    }

    #[test]
    fn failed_insertions_sum_hex_columns_over_cpus() {
        let stat = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 0000000a 00000001 00000000 00000000  00000000 00000000 00000000 00000000\n\
                    00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000000 00000000 00000000  00000000 00000000 00000000 00000000\n";
        assert_eq!(failed_insertions(stat), 13);
        assert_eq!(failed_insertions(""), 0);
    }
}
