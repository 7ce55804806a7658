//! Names of everything a lab makes, all derived from the lab name so that `down` can
//! find leftovers after a crash: namespaces `wl-<lab>-…`, the state directory
//! `/run/weft/lab/<lab>/`, and the lab's processes (their command lines name that
//! directory, or they live in one of the lab's namespaces).

use std::fmt;
use std::path::PathBuf;

use anyhow::{Result, bail};

/// Root of every lab's state directory.
pub const STATE_ROOT: &str = "/run/weft/lab";

/// Where `ip netns add` puts named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Longest lab name: keeps namespace names and unix socket paths short.
pub const MAX_LAB_NAME: usize = 6;

/// Most nodes a lab can have (underlay addresses 192.0.2.11 …).
pub const MAX_NODES: usize = 32;

/// A validated lab name: 1 to 6 lower-case letters and digits, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabName(String);

impl LabName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<LabName> {
        let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let starts = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if name.is_empty() || name.len() > MAX_LAB_NAME || !ok_chars || !starts {
            bail!(
                "invalid lab name {name:?}: expected 1 to {MAX_LAB_NAME} lower-case letters or digits, \
                 starting with a letter (it prefixes namespace names, wl-<lab>-…)"
            );
        }
        Ok(LabName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Prefix of every namespace of this lab: `wl-<lab>-`.
    pub fn prefix(&self) -> String {
        format!("wl-{}-", self.0)
    }

    /// The underlay namespace (holds the bridge every node is plugged into).
    pub fn underlay_ns(&self) -> String {
        format!("wl-{}-ul", self.0)
    }

    /// Namespace of node `index` (1-based).
    pub fn node_ns(&self, index: usize) -> String {
        format!("wl-{}-n{index}", self.0)
    }

    /// Namespace of pod `namespace/pod`.
    pub fn pod_ns(&self, namespace: &str, pod: &str) -> String {
        format!("wl-{}-p{}", self.0, short_hash(&format!("{namespace}/{pod}")))
    }

    /// The lab's state directory.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(&self.0)
    }

    /// Directory of node `index`.
    pub fn node_dir(&self, index: usize) -> PathBuf {
        self.state_dir().join(format!("n{index}"))
    }
}

impl fmt::Display for LabName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Kubernetes name of node `index`: `node-<index>`, as in `examples/namespaces`, whose
/// pods say `spec.nodeName: node-1`.
pub fn node_name(index: usize) -> String {
    format!("node-{index}")
}

/// Parses what a user may type for a node: `node-2`, `n2` or `2`; 1-based index.
pub fn parse_node(s: &str, nodes: usize) -> Result<usize> {
    let digits = s
        .strip_prefix("node-")
        .or_else(|| s.strip_prefix('n'))
        .unwrap_or(s);
    match digits.parse::<usize>() {
        Ok(i) if (1..=nodes).contains(&i) => Ok(i),
        _ => bail!("no node {s:?} in this lab: expected node-1 … node-{nodes} (or n1 … n{nodes})"),
    }
}

/// Underlay address of node `index`: 192.0.2.<10+index> (TEST-NET-1, used only inside
/// the lab's own namespaces).
pub fn underlay_ip(index: usize) -> String {
    format!("192.0.2.{}", 10 + index)
}

/// Prefix length of the underlay.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;

/// 8 hex digits of FNV-1a over `s`: short, stable names for pod namespaces.
pub fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", (h ^ (h >> 32)) as u32)
}

/// Splits `NS/POD` (a bare `POD` means `default/POD`).
pub fn split_pod(s: &str) -> Result<(String, String)> {
    let (ns, pod) = s.split_once('/').unwrap_or(("default", s));
    if ns.is_empty() || pod.is_empty() || pod.contains('/') {
        bail!("expected NAMESPACE/POD, found {s:?}");
    }
    Ok((ns.to_string(), pod.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names() {
        assert!(LabName::new("weft").is_ok());
        assert!(LabName::new("t1234a").is_ok());
        for bad in ["", "toolong1", "Weft", "1abc", "a-b", "a b", "a/b"] {
            assert!(LabName::new(bad).is_err(), "{bad}");
        }
        let l = LabName::new("ab").unwrap();
        assert_eq!(l.underlay_ns(), "wl-ab-ul");
        assert_eq!(l.node_ns(2), "wl-ab-n2");
        assert!(l.pod_ns("default", "web").starts_with("wl-ab-p"));
        assert_eq!(l.pod_ns("default", "web").len(), "wl-ab-p".len() + 8);
        assert_ne!(l.pod_ns("default", "web"), l.pod_ns("default", "web2"));
        assert_eq!(l.state_dir(), PathBuf::from("/run/weft/lab/ab"));
        // A lab's prefix never matches another lab's namespaces.
        assert!(
            !LabName::new("t12")
                .unwrap()
                .node_ns(1)
                .starts_with(&LabName::new("t1").unwrap().prefix())
        );
    }

    #[test]
    fn nodes_and_pods() {
        assert_eq!(parse_node("node-2", 2).unwrap(), 2);
        assert_eq!(parse_node("n1", 2).unwrap(), 1);
        assert_eq!(parse_node("1", 2).unwrap(), 1);
        assert!(parse_node("node-3", 2).is_err());
        assert!(parse_node("n0", 2).is_err());
        assert!(parse_node("x", 2).is_err());
        assert_eq!(underlay_ip(1), "192.0.2.11");
        assert_eq!(node_name(1), "node-1");
        assert_eq!(split_pod("a/b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(split_pod("b").unwrap(), ("default".into(), "b".into()));
        assert!(split_pod("a/").is_err());
        assert!(split_pod("a/b/c").is_err());
        assert_eq!(short_hash("x"), short_hash("x"));
        assert_eq!(short_hash("x").len(), 8);
    }
}
