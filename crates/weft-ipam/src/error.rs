//! Errors of the address and VNI allocators. Every message names the pool (or VNI
//! range), the address and, where there is one, the object holding it, so an operator
//! can act on it without reading code. Errors are `Serialize` so the API can return
//! them as structured JSON (`{"kind": "in_use", "pool": ..., ...}`).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Why an address inside a subnet can never be assigned to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservedKind {
    /// The first address of the subnet (network address / IPv6 subnet-router anycast).
    Network,
    /// The last address of an IPv4 subnet.
    Broadcast,
    /// The last usable address, which the vRouter answers as the default gateway.
    Gateway,
    /// The address just below the gateway, which the vRouter answers as DNS server.
    Dns,
}

impl ReservedKind {
    /// The short machine-readable name: `network`, `broadcast`, `gateway` or `dns`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservedKind::Network => "network",
            ReservedKind::Broadcast => "broadcast",
            ReservedKind::Gateway => "gateway",
            ReservedKind::Dns => "dns",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ReservedKind::Network => "network address",
            ReservedKind::Broadcast => "broadcast address",
            ReservedKind::Gateway => "gateway address",
            ReservedKind::Dns => "DNS server address",
        }
    }
}

impl fmt::Display for ReservedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong when building a pool or allocating from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IpamError {
    /// A pool was given an empty subnet list.
    #[error("pool {pool} has no subnets; give it at least one CIDR such as 10.32.0.0/12")]
    NoSubnets {
        /// The pool's name.
        pool: String,
    },

    /// A subnet was written with host bits set (`10.32.1.0/12`), which is almost
    /// always a typo; refusing it is safer than guessing.
    #[error("subnet {subnet} of pool {pool} has host bits set; did you mean {network}?")]
    HostBitsSet {
        /// The pool's name.
        pool: String,
        /// The subnet as given.
        subnet: IpNet,
        /// The same prefix with the host bits cleared.
        network: IpNet,
    },

    /// A subnet cannot hold its reserved addresses plus at least one assignable one.
    #[error(
        "subnet {subnet} of pool {pool} is too small: after the network{}, gateway and DNS \
         addresses it has no address left to assign; use a /29 or larger for IPv4, /126 or larger \
         for IPv6",
        if .subnet.addr().is_ipv4() { ", broadcast" } else { "" }
    )]
    SubnetTooSmall {
        /// The pool's name.
        pool: String,
        /// The offending subnet.
        subnet: IpNet,
    },

    /// Two subnets of one pool share addresses, so uniqueness could not be guaranteed.
    #[error("subnets {first} and {second} of pool {pool} overlap; list each address range once")]
    OverlappingSubnets {
        /// The pool's name.
        pool: String,
        /// The earlier subnet in the list.
        first: IpNet,
        /// The later subnet in the list that overlaps it.
        second: IpNet,
    },

    /// An address was requested that lies in none of the pool's subnets.
    #[error("address {ip} is not in pool {pool} ({}); pick an address inside one of its subnets", list(.subnets))]
    OutOfRange {
        /// The pool's name.
        pool: String,
        /// The requested address.
        ip: IpAddr,
        /// The pool's subnets.
        subnets: Vec<IpNet>,
    },

    /// An address was requested that is reserved (network, broadcast, gateway, DNS).
    #[error(
        "address {ip} is the {} of its subnet in pool {pool} and is never assigned; pick another address",
        .what.describe()
    )]
    Reserved {
        /// The pool's name.
        pool: String,
        /// The requested address.
        ip: IpAddr,
        /// Which reserved role the address has.
        what: ReservedKind,
    },

    /// An address was requested that another object already holds.
    #[error(
        "address {ip} in pool {pool} is already assigned to {owner}; release it there first or pick another address"
    )]
    InUse {
        /// The pool's name.
        pool: String,
        /// The requested address.
        ip: IpAddr,
        /// The object currently holding the address.
        owner: String,
    },

    /// Every assignable address of the pool is taken.
    #[error(
        "pool {pool} ({}) has no free address ({in_use} in use); delete unused objects or add a subnet to the pool",
        list(.subnets)
    )]
    Exhausted {
        /// The pool's name.
        pool: String,
        /// The pool's subnets.
        subnets: Vec<IpNet>,
        /// How many addresses are assigned (equal to the pool's capacity).
        in_use: u128,
    },

    /// A resize would remove or change a subnet that still has assigned addresses.
    #[error(
        "cannot remove or change subnet {removed_subnet} of pool {pool}: {count} address{} still assigned \
         ({}); delete those objects first or keep the subnet unchanged",
        if *.count == 1 { " is" } else { "es are" },
        owners(.addresses, *.count)
    )]
    SubnetInUse {
        /// The pool's name.
        pool: String,
        /// The subnet that would be removed or changed.
        removed_subnet: IpNet,
        /// The first few assignments in that subnet, as (address, owner).
        addresses: Vec<(IpAddr, String)>,
        /// How many addresses in that subnet are assigned in total.
        count: usize,
    },

    /// A VNI range is empty or does not fit in VXLAN's 24-bit field.
    #[error("VNI range {min}..={max} is invalid: it must be non-empty and within 0..=16777215 (24 bits)")]
    InvalidVniRange {
        /// Requested lowest VNI.
        min: u32,
        /// Requested highest VNI.
        max: u32,
    },

    /// A VNI outside the allocator's range was requested.
    #[error("VNI {vni} is outside the allowed range {min}..={max}")]
    VniOutOfRange {
        /// The requested VNI.
        vni: u32,
        /// Lowest allowed VNI.
        min: u32,
        /// Highest allowed VNI.
        max: u32,
    },

    /// A VNI was requested that another network already holds.
    #[error("VNI {vni} is already assigned to {owner}; release it there first or pick another VNI")]
    VniInUse {
        /// The requested VNI.
        vni: u32,
        /// The object currently holding the VNI.
        owner: String,
    },

    /// Every VNI in the range is taken.
    #[error("no free VNI in {min}..={max} ({in_use} in use); delete unused networks")]
    VniExhausted {
        /// Lowest allowed VNI.
        min: u32,
        /// Highest allowed VNI.
        max: u32,
        /// How many VNIs are assigned.
        in_use: u32,
    },
}

/// `10.32.0.0/12, fd00::/64`
fn list(subnets: &[IpNet]) -> String {
    subnets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `10.47.255.252 (Pod dev/web eth0), 10.47.255.251 (Pod dev/db eth0) and 3 more`
fn owners(addresses: &[(IpAddr, String)], count: usize) -> String {
    let mut text = addresses
        .iter()
        .map(|(ip, owner)| format!("{ip} ({owner})"))
        .collect::<Vec<_>>()
        .join(", ");
    if count > addresses.len() {
        text.push_str(&format!(" and {} more", count - addresses.len()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_serialize_with_a_kind_tag_and_round_trip() {
        let err = IpamError::Reserved {
            pool: "k8s-pod-ipam".into(),
            ip: IpAddr::from([10, 47, 255, 254]),
            what: ReservedKind::Gateway,
        };
        let json = serde_json::to_value(&err).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            json,
            serde_json::json!({"kind": "reserved", "pool": "k8s-pod-ipam", "ip": "10.47.255.254", "what": "gateway"})
        );
        let in_use = IpamError::SubnetInUse {
            pool: "p".into(),
            removed_subnet: "10.0.0.0/24".parse().unwrap_or_else(|e| panic!("{e}")),
            addresses: vec![(IpAddr::from([10, 0, 0, 252]), "Pod dev/web eth0".into())],
            count: 1,
        };
        let json = serde_json::to_value(&in_use).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["kind"], "subnet_in_use");
        assert_eq!(json["removed_subnet"], "10.0.0.0/24");
        assert_eq!(
            json["addresses"][0],
            serde_json::json!(["10.0.0.252", "Pod dev/web eth0"])
        );
        for e in [err, in_use] {
            let text = serde_json::to_string(&e).unwrap_or_else(|e| panic!("{e}"));
            let back: IpamError = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, e);
        }
    }

    #[test]
    fn reserved_kind_names() {
        let names: Vec<String> = [
            ReservedKind::Network,
            ReservedKind::Broadcast,
            ReservedKind::Gateway,
            ReservedKind::Dns,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(names, ["network", "broadcast", "gateway", "dns"]);
    }
}
