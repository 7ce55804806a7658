//! What the node's kernel should look like, as data: [`desired`] renders a [`NodeState`]
//! plus the CNI attachments into a [`KernelState`], and [`diff`] turns a desired and an
//! observed [`KernelState`] into the [`KernelOp`]s that make the kernel match. Both are
//! pure functions: no netlink, no files, no clock (felix's calculation / dataplane split,
//! style.md §3.4). [`crate::kernel`] reads the kernel into the same type and applies the
//! ops.
//!
//! ```text
//!  NodeState ─┐                      kernel::dump ──> actual ─┐
//!             ├─ desired() ─> desired ───────────────────────┴─ diff() ─> [KernelOp] ─> kernel::apply
//!  attachments┘
//! ```
//!
//! # What weft owns (and therefore reads, diffs and may delete)
//!
//! * sysctls listed in [`desired`] (`ip_forward`, `rp_filter`, and with fabric SNAT
//!   `ip_local_reserved_ports`, merged with what the node already reserves), nothing else;
//! * the links [`VXLAN_DEVICE`] (`weft-vxlan`) and [`GW_DEVICE`] (`weft-gw`), and the
//!   IPv4 addresses on `weft-gw`;
//! * IPv4 policy rules with preference [`RULE_PREF`] whose table is ≥ [`VN_TABLE_BASE`],
//!   and the two rules with preference [`MARK_RULE_PREF`] and weft's service marks
//!   (`fwmark` [`MARK_TO_BACKEND`] `lookup` [`SERVICE_TABLE`], `fwmark` [`MARK_REPLY`]
//!   `lookup main`), present while a NodePort or external IP exists;
//! * IPv4 routes in tables ≥ [`VN_TABLE_BASE`] (including [`SERVICE_TABLE`], the
//!   backends of NodePort / external-IP services);
//! * IPv4 neighbour entries on `weft-vxlan`;
//! * the nftables table `inet weft` ([`crate::nft`], applied by the agent next to the
//!   ops of this module).
//!
//! Everything else (the main table, other rules, the pods' veths, which `weft-cni`
//! creates and deletes) is never touched. The overlay is IPv4 only for now: IPv6
//! interfaces, routes and underlays are skipped with a warning.
//!
//! # Packet paths
//!
//! ```text
//!  pod A ── vethA ─ rule iif vethA ─> table T ─┬─ 10.x/32 dev vethB              (same node)
//!                                              ├─ 10.y/32 via 169.254.c.d dev weft-vxlan onlink
//!                                              │          encap ip id VNI dst <peer underlay>
//!                                              └─ unreachable default            (ICMP at once)
//!  weft-vxlan ─ rule iif weft-vxlan tun_id VNI ─> table T  (decapsulated traffic)
//!  fabric-SNAT pod ─ table T has no route (only the cluster ranges unreachable)
//!             ─> main ─> underlay, SNAT to the node; replies: rule fwmark MARK_TO_POD
//!             to <pod> ─> table T
//!  another cluster's VIP traffic, DNATed to a local backend (VNI lost with the NAT)
//!             ─ rule fwmark MARK_TO_POD to <backend> ─> its table
//!  node's own packets (ICMP errors, probes) ─ rule to <pod ip> iif lo ─> table T
//!  ip-fabric-forwarding pod ─ table T: own remote pods <pod>/32 via <peer underlay>
//!             dev <underlay> onlink (native, no encapsulation); outside the cluster
//!             ─> main ─> underlay with the pod's own address (no NAT)
//!  underlay ─ rule iif <underlay> to <local fabric pod> ─> table T
//! ```
//!
//! The underlay device (the one holding [`NodeState::underlay_ip`]) is not known when
//! rendering: routes and rules name it [`UNDERLAY_DEVICE`], and [`bind_underlay`]
//! replaces that name with the observed device (from [`crate::kernel::dump`]) before
//! [`diff`].
//!
//! Remote next hops: every remote route goes `via` a per-peer link-local address
//! ([`peer_next_hops`]) that has one permanent neighbour entry naming the peer's VXLAN
//! MAC, so the inner frame carries the MAC the peer's `weft-vxlan` accepts. One neighbour
//! per *peer* (not per remote pod) keeps the neighbour table as small as the node count.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use weft_model::ids::MacAddr;
use weft_model::node::{
    NextHop, NodeRoute, NodeState, SERVICE_TABLE, VN_TABLE_BASE, VXLAN_DEVICE, VXLAN_PORT, VtepPeer,
};

use crate::attachment::Attachments;
use crate::nft::{MARK_REPLY, MARK_RULE_PREF, MARK_TO_BACKEND, MARK_TO_POD, has_outside_services};

/// The main routing table (`lookup main`): where replies of connections from outside
/// the pod networks are routed (see [`crate::nft`]).
pub const MAIN_TABLE: u32 = 254;

/// Preference of every policy rule weft installs (and the only one it owns).
pub const RULE_PREF: u32 = 1000;

/// The dummy device carrying every network's gateway address (as a /32). On kernels
/// without the dummy driver it is an empty bridge instead (see [`crate::kernel::dump`]).
pub const GW_DEVICE: &str = "weft-gw";

/// MTU of the overlay: 1500 minus the VXLAN overhead (outer IPv4 20 + UDP 8 + VXLAN 8
/// + inner Ethernet 14 = 50 bytes).
pub const OVERLAY_MTU: u32 = 1450;

/// The loopback device; `iif lo` in a rule matches packets the node itself sends.
pub const LOOPBACK: &str = "lo";

/// Stand-in for the underlay device in a rendered state (routes' `dev`, rules' `iif`);
/// [`bind_underlay`] replaces it with the device holding the node's underlay address.
/// Not a valid interface name (`:`), so it never names a real device.
pub const UNDERLAY_DEVICE: &str = "weft:underlay";

/// Links weft owns, by name.
pub const OWNED_LINKS: [&str; 2] = [VXLAN_DEVICE, GW_DEVICE];

/// A sysctl under `/proc/sys`, e.g. `net/ipv4/ip_forward`.
pub type SysctlKey = String;

/// Everything weft owns in one network namespace, desired or observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelState {
    /// Sysctl path (relative to `/proc/sys`) → value, trimmed.
    pub sysctls: BTreeMap<SysctlKey, String>,
    /// Owned links by name.
    pub links: BTreeMap<String, LinkSpec>,
    /// Addresses on owned links.
    pub addresses: BTreeSet<AddressSpec>,
    /// Neighbour entries on owned links, keyed by (device, address).
    pub neighbours: BTreeMap<(String, IpAddr), NeighbourSpec>,
    /// Routes in weft's tables, keyed by what the kernel treats as the route's identity.
    pub routes: BTreeMap<RouteKey, RouteSpec>,
    /// Policy rules.
    pub rules: BTreeSet<RuleSpec>,
    /// Observed only, never owned: the names of every link in the namespace (filled by
    /// [`crate::kernel::dump`], empty in a desired state). [`diff`] uses it to skip
    /// routes through a pod veth that no longer exists (a pod that died without CNI
    /// DEL): such a route cannot be installed, and retrying it would only fail until
    /// DEL or GC drops the attachment.
    pub devices: BTreeSet<String>,
    /// Observed only, never owned: the device holding each local IPv4 address (filled by
    /// [`crate::kernel::dump`]); [`bind_underlay`] finds the underlay device here.
    pub local_addresses: BTreeMap<IpAddr, String>,
    /// Desired only: the node's underlay address, whose device replaces
    /// [`UNDERLAY_DEVICE`] ([`bind_underlay`]).
    pub underlay_ip: Option<IpAddr>,
}

impl KernelState {
    /// Number of objects described (for logs).
    pub fn len(&self) -> usize {
        self.sysctls.len()
            + self.links.len()
            + self.addresses.len()
            + self.neighbours.len()
            + self.routes.len()
            + self.rules.len()
    }

    /// True when nothing is described.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A link weft owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// Interface name.
    pub name: String,
    /// Type and type-specific settings; a change here means delete and re-create.
    pub kind: LinkKind,
    /// MAC; `None` in a desired state means "whatever the kernel picked".
    pub mac: Option<MacAddr>,
    /// MTU; `None` in a desired state means "the kernel's default".
    pub mtu: Option<u32>,
    /// Administratively up.
    pub up: bool,
}

/// Type of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// `type vxlan`.
    Vxlan(VxlanSpec),
    /// `type dummy`.
    Dummy,
    /// Anything else found under an owned name (it will be replaced).
    Other(String),
}

/// The VXLAN settings weft cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// `local`: the node's underlay address, if known.
    pub local: Option<IpAddr>,
    /// `dstport`.
    pub port: u16,
    /// `external` (collect_metadata): one device for every VNI, the VNI comes from the
    /// route's `encap ip id`.
    pub external: bool,
    /// `[no]learning`.
    pub learning: bool,
}

/// An address on an owned link (`ip addr add ADDR dev DEV`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddressSpec {
    /// Device.
    pub dev: String,
    /// Address and prefix length.
    pub addr: IpNet,
}

/// A neighbour entry (`ip neigh replace IP lladdr MAC dev DEV nud permanent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourSpec {
    /// Device.
    pub dev: String,
    /// Protocol address.
    pub ip: IpAddr,
    /// Link-layer address, if the entry has one.
    pub mac: Option<MacAddr>,
    /// `nud permanent`.
    pub permanent: bool,
}

/// What identifies a route in the kernel: two routes with the same key cannot coexist,
/// and `ip route replace` swaps one for the other atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    /// Table id.
    pub table: u32,
    /// Destination prefix (normalised: host bits cleared).
    pub dst: IpNet,
    /// Metric (`metric N`, 0 for weft's routes).
    pub metric: u32,
}

/// Type of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// A normal route.
    Unicast,
    /// `unreachable`: the lookup fails with an ICMP host-unreachable.
    Unreachable,
    /// Any other type (raw `rtm_type`).
    Other(u8),
}

/// Scope of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `scope global` (routes via a gateway, unreachable routes).
    Universe,
    /// `scope link` (directly attached destination).
    Link,
    /// Anything else (raw value).
    Other(u8),
}

/// A lightweight-tunnel encapsulation (`encap ip id VNI dst ADDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelEncap {
    /// Tunnel id: the VNI.
    pub id: u64,
    /// Outer destination: the remote node's underlay address.
    pub dst: Ipv4Addr,
}

/// A route in one of weft's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Identity (table, destination, metric).
    pub key: RouteKey,
    /// Type.
    pub kind: RouteKind,
    /// Scope.
    pub scope: Scope,
    /// Output device, by name.
    pub dev: Option<String>,
    /// Gateway (`via`).
    pub via: Option<IpAddr>,
    /// `onlink`: the gateway is reachable on `dev` without a covering route.
    pub onlink: bool,
    /// Lightweight tunnel encapsulation.
    pub encap: Option<TunnelEncap>,
}

/// An IPv4 policy rule (`ip rule add pref P [iif DEV] [to PFX] [tun_id N] lookup T`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleSpec {
    /// `pref`.
    pub priority: u32,
    /// `lookup`: table id.
    pub table: u32,
    /// `iif`.
    pub iif: Option<String>,
    /// `tun_id`: the VNI of decapsulated traffic.
    pub tun_id: Option<u64>,
    /// `to`.
    pub dst: Option<IpNet>,
    /// `from`.
    pub src: Option<IpNet>,
    /// `fwmark` (exact match): weft's service marks ([`crate::nft`]), or a foreign rule
    /// that squats weft's preference.
    pub fwmark: Option<u32>,
}

impl RuleSpec {
    /// True for a rule in weft's space: preference [`RULE_PREF`] with a table ≥
    /// [`VN_TABLE_BASE`], or preference [`MARK_RULE_PREF`] with one of weft's marks.
    pub fn is_owned(&self) -> bool {
        (self.priority == RULE_PREF && self.table >= VN_TABLE_BASE)
            || (self.priority == MARK_RULE_PREF && matches!(self.fwmark, Some(MARK_TO_BACKEND | MARK_REPLY)))
    }
}

/// One kernel change. `Display` prints the equivalent `ip` / `sysctl` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelOp {
    /// `sysctl -w KEY=VALUE`.
    SetSysctl {
        /// Path under `/proc/sys`.
        key: SysctlKey,
        /// Value.
        value: String,
    },
    /// `ip link add NAME [address MAC] [mtu N] type … && ip link set NAME up`.
    AddLink(LinkSpec),
    /// `ip link set NAME [address MAC] [mtu N] up|down`.
    SetLink {
        /// Interface name.
        name: String,
        /// New MAC, when it must change.
        mac: Option<MacAddr>,
        /// New MTU, when it must change.
        mtu: Option<u32>,
        /// Administrative state.
        up: bool,
    },
    /// `ip link del NAME`.
    DelLink {
        /// Interface name.
        name: String,
    },
    /// `ip addr add ADDR dev DEV`.
    AddAddress(AddressSpec),
    /// `ip addr del ADDR dev DEV`.
    DelAddress(AddressSpec),
    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
    ReplaceNeighbour(NeighbourSpec),
    /// `ip neigh del IP dev DEV`.
    DelNeighbour {
        /// Device.
        dev: String,
        /// Address.
        ip: IpAddr,
    },
    /// `ip route replace …` (creates or atomically replaces).
    ReplaceRoute(RouteSpec),
    /// `ip route del …`.
    DelRoute(RouteSpec),
    /// `ip rule add …`.
    AddRule(RuleSpec),
    /// `ip rule del …`.
    DelRule(RuleSpec),
}

// ===== rendering: NodeState + attachments -> desired KernelState =====

/// The per-peer next hop used by remote routes, derived from the peer's underlay address:
/// `169.254.C.D` for an IPv4 underlay `A.B.C.D` (the low 16 bits of an IPv6 one).
///
/// Why link-local: the address only names "the peer" between a route and its permanent
/// neighbour entry on `weft-vxlan`; it never appears in a packet, and 169.254/16 is
/// never routed, so it cannot shadow a real destination. Why derived: a restarted agent
/// (or one that gets the same state again) computes the same address, so reconciling
/// changes nothing. The low 16 bits are collision-free for any underlay inside a /16
/// (the lab's is a /24). Should two peers still map to the same address (a wider
/// underlay), or to 169.254.0.0 / 169.254.255.255, the later peer in (underlay address,
/// node name) order takes the next free address: deterministic for a given peer list.
pub fn peer_next_hops(peers: &[VtepPeer]) -> BTreeMap<String, Ipv4Addr> {
    let mut ordered: Vec<&VtepPeer> = peers.iter().collect();
    ordered.sort_by(|a, b| (a.underlay_ip, &a.node).cmp(&(b.underlay_ip, &b.node)));
    let mut used: BTreeSet<u16> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for peer in ordered {
        if out.contains_key(&peer.node) {
            continue;
        }
        let low = match peer.underlay_ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                u16::from_be_bytes([o[2], o[3]])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                u16::from_be_bytes([o[14], o[15]])
            }
        };
        let mut candidate = low;
        // At most 65536 probes; the set can hold at most 65534 usable values.
        for _ in 0..=u16::MAX as u32 {
            if candidate != 0 && candidate != u16::MAX && !used.contains(&candidate) {
                break;
            }
            candidate = candidate.wrapping_add(1);
        }
        if candidate == 0 || candidate == u16::MAX || used.contains(&candidate) {
            continue; // more than 65534 peers: nothing left to hand out
        }
        used.insert(candidate);
        let [c, d] = candidate.to_be_bytes();
        out.insert(peer.node.clone(), Ipv4Addr::new(169, 254, c, d));
    }
    out
}

/// Path of the IPv4 sysctl `key` of device `dev` (`net/ipv4/conf/DEV/KEY`).
pub fn conf_sysctl(dev: &str, key: &str) -> SysctlKey {
    format!("net/ipv4/conf/{dev}/{key}")
}

/// The device an interface sysctl belongs to, if `key` is one (`net/ipv4/conf/DEV/…`,
/// with `all` and `default` not counted as devices).
pub fn sysctl_device(key: &str) -> Option<&str> {
    let dev = key.strip_prefix("net/ipv4/conf/")?.split('/').next()?;
    (dev != "all" && dev != "default").then_some(dev)
}

/// The desired kernel state for `state` with the pods' `attachments` (pure).
pub fn desired(state: &NodeState, attachments: &Attachments) -> KernelState {
    render(state, attachments).0
}

/// [`desired`], plus a warning for everything of `state` that could not be rendered
/// (IPv6, a route to an unknown peer, a local route to a pod not attached yet …).
pub fn render(state: &NodeState, attachments: &Attachments) -> (KernelState, Vec<String>) {
    let mut out = KernelState::default();
    let mut warnings = Vec::new();

    // Sysctls: forwarding, and no reverse-path filtering — traffic is asymmetric through
    // the tables (a decapsulated packet's source is reachable via the table, which the
    // rp_filter lookup does not consult because it ignores tun_id).
    for (key, value) in [
        ("net/ipv4/ip_forward".to_string(), "1"),
        (conf_sysctl("all", "rp_filter"), "0"),
        (conf_sysctl("default", "rp_filter"), "0"),
        (conf_sysctl(VXLAN_DEVICE, "rp_filter"), "0"),
    ] {
        out.sysctls.insert(key, value.to_string());
    }

    // Fabric SNAT's port pools are kept from the node's own connections (as TF's agent
    // does): the node's ephemeral range covers them, and a local socket holding one of
    // them would collide with a translated connection. [`reserve_ports`] merges this
    // with what the node already reserves.
    if state
        .networks
        .iter()
        .any(|n| n.outside.as_ref().is_some_and(|o| o.fabric_snat))
    {
        out.sysctls
            .insert(RESERVED_PORTS_SYSCTL.to_string(), snat_port_ranges().to_string());
    }

    out.underlay_ip = state.underlay_ip.filter(IpAddr::is_ipv4);
    let local = match state.underlay_ip {
        Some(ip) => Some(ip),
        None => {
            warnings.push(format!(
                "node {} has no underlay address yet: {VXLAN_DEVICE} is created without `local`",
                state.node
            ));
            None
        }
    };
    out.links.insert(
        VXLAN_DEVICE.to_string(),
        LinkSpec {
            name: VXLAN_DEVICE.to_string(),
            kind: LinkKind::Vxlan(VxlanSpec {
                local,
                port: VXLAN_PORT,
                external: true,
                learning: false,
            }),
            mac: Some(state.vtep_mac),
            mtu: Some(OVERLAY_MTU),
            up: true,
        },
    );
    out.links.insert(
        GW_DEVICE.to_string(),
        LinkSpec {
            name: GW_DEVICE.to_string(),
            kind: LinkKind::Dummy,
            mac: None,
            mtu: None,
            up: true,
        },
    );

    // Gateways: one /32 each on weft-gw, a normal (global scope) local address, so the
    // host veth answers the pod's ARP for its gateway (arp_ignore 0) and the node owns it.
    for network in &state.networks {
        match network.gateway {
            Some(IpAddr::V4(gw)) => {
                out.addresses.insert(AddressSpec {
                    dev: GW_DEVICE.to_string(),
                    addr: IpNet::from(IpAddr::V4(gw)),
                });
            }
            Some(IpAddr::V6(gw)) => warnings.push(format!(
                "network {}: IPv6 gateway {gw} skipped (the overlay is IPv4 only)",
                network.fq_name
            )),
            None => {}
        }
    }

    // Tables: entry from the overlay, and a default that fails fast.
    for network in &state.networks {
        if network.table < VN_TABLE_BASE {
            warnings.push(format!(
                "network {}: table {} is below {VN_TABLE_BASE}, which weft does not own; skipped",
                network.fq_name, network.table
            ));
            continue;
        }
        out.rules.insert(RuleSpec {
            priority: RULE_PREF,
            table: network.table,
            iif: Some(VXLAN_DEVICE.to_string()),
            tun_id: Some(u64::from(network.vni.0)),
            dst: None,
            src: None,
            fwmark: None,
        });
        // Fabric SNAT: only the cluster's own ranges fail fast; a lookup for anything
        // else finds no route here and goes on to `main` (the underlay), where the
        // agent's nftables table source-NATs it to the node's address.
        let unreachable: Vec<IpNet> = match &network.outside {
            None => vec![IpNet::V4(Default::default())],
            Some(snat) => snat
                .cluster_subnets
                .iter()
                .filter(|n| n.addr().is_ipv4())
                .copied()
                .collect(),
        };
        for dst in unreachable {
            insert_route(
                &mut out,
                &mut warnings,
                RouteSpec {
                    key: RouteKey {
                        table: network.table,
                        dst,
                        metric: 0,
                    },
                    kind: RouteKind::Unreachable,
                    scope: Scope::Universe,
                    dev: None,
                    via: None,
                    onlink: false,
                    encap: None,
                },
            );
        }
    }

    // Local interfaces: traffic from the veth enters the table; the pod's /32 in it.
    let mut host_ifs: BTreeMap<String, (String, Ipv4Addr)> = BTreeMap::new();
    for iface in &state.interfaces {
        let key = iface.key();
        let Some(att) = attachments.get(&key) else {
            continue; // not attached yet: the CNI ADD has not finished
        };
        if iface.table < VN_TABLE_BASE {
            continue; // warned above through its network, or invalid
        }
        let IpAddr::V4(ip) = iface.ip else {
            warnings.push(format!("{key}: IPv6 address {} skipped (IPv4 only)", iface.ip));
            continue;
        };
        host_ifs.insert(key.clone(), (att.host_if_name.clone(), ip));
        out.rules.insert(RuleSpec {
            priority: RULE_PREF,
            table: iface.table,
            iif: Some(att.host_if_name.clone()),
            tun_id: None,
            dst: None,
            src: None,
            fwmark: None,
        });
        // The node's own packets to the pod (ICMP errors from `unreachable default`,
        // kubelet probes) are routed by the output lookup, which never matches an
        // `iif <veth>` rule: give them the table too.
        out.rules.insert(RuleSpec {
            priority: RULE_PREF,
            table: iface.table,
            iif: Some(LOOPBACK.to_string()),
            tun_id: None,
            dst: Some(IpNet::from(IpAddr::V4(ip))),
            src: None,
            fwmark: None,
        });
        // Packets NAT turned towards this pod from outside its table come marked
        // MARK_TO_POD: another cluster's connections to a VIP it backs (DNATed as they
        // leave the tunnel, which loses the VNI), replies to its fabric-SNAT or
        // floating-IP connections and new connections to its floating IP (from the
        // underlay). Its table routes them to its veth.
        let backend_here = state.services.iter().any(|s| {
            s.vip.is_some()
                && s.ports.iter().any(|p| {
                    p.backends
                        .iter()
                        .any(|b| b.ip == iface.ip && b.node.as_deref() == Some(state.node.as_str()))
                })
        });
        let nat_here = state.networks.iter().any(|n| {
            n.table == iface.table
                && n.outside
                    .as_ref()
                    .is_some_and(|o| o.fabric_snat || !iface.floating_ips.is_empty())
        });
        if backend_here || nat_here {
            out.rules.insert(RuleSpec {
                priority: RULE_PREF,
                table: iface.table,
                iif: None,
                tun_id: None,
                dst: Some(IpNet::from(IpAddr::V4(ip))),
                src: None,
                fwmark: Some(MARK_TO_POD),
            });
        }
        // IP fabric forwarding: packets from the underlay to the pod (from its peers on
        // other nodes, or from outside the cluster) enter its table. Only from the
        // underlay device, so other pods' traffic never matches it.
        let fabric_here = state
            .networks
            .iter()
            .any(|n| n.table == iface.table && n.ip_fabric_forwarding);
        if fabric_here {
            out.rules.insert(RuleSpec {
                priority: RULE_PREF,
                table: iface.table,
                iif: Some(UNDERLAY_DEVICE.to_string()),
                tun_id: None,
                dst: Some(IpNet::from(IpAddr::V4(ip))),
                src: None,
                fwmark: None,
            });
        }
        insert_route(
            &mut out,
            &mut warnings,
            local_route(iface.table, IpNet::from(IpAddr::V4(ip)), &att.host_if_name),
        );
    }

    // The tables' routes: local ones to the attached veth, remote ones into the tunnel.
    // Routes imported over BGP name their VTEP by address and MAC: each distinct one is
    // a pseudo-peer (`bgp:ADDRESS`) with its own link-local next hop and neighbour entry,
    // exactly like a node of this cluster.
    let externals = external_peers(state, &mut warnings);
    let next_hops = peer_next_hops(
        &state
            .peers
            .iter()
            .filter(|p| p.node != state.node)
            .chain(externals.iter())
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut used_peers: BTreeSet<&str> = BTreeSet::new();
    for network in &state.networks {
        if network.table < VN_TABLE_BASE {
            continue;
        }
        for route in &network.routes {
            if network.ip_fabric_forwarding
                && route.network == network.fq_name
                && let NextHop::Remote { node, .. } = &route.next_hop
            {
                render_native(
                    &mut out,
                    &mut warnings,
                    network.table,
                    route.prefix.trunc(),
                    node,
                    state,
                );
                continue;
            }
            render_route(
                &mut out,
                &mut warnings,
                network.table,
                route,
                &RouteContext {
                    state,
                    host_ifs: &host_ifs,
                    next_hops: &next_hops,
                    externals: &externals,
                },
                &mut used_peers,
            );
        }
    }

    // Connections from outside the pod networks (NodePort, external IPs): the agent's
    // nftables table marks their packets; the original direction goes to the backends
    // in SERVICE_TABLE (which fails fast like a network's table), the replies to the
    // underlay through the main table. Both rules come before the pods' rules.
    if has_outside_services(state) {
        for (mark, table) in [(MARK_TO_BACKEND, SERVICE_TABLE), (MARK_REPLY, MAIN_TABLE)] {
            out.rules.insert(RuleSpec {
                priority: MARK_RULE_PREF,
                table,
                iif: None,
                tun_id: None,
                dst: None,
                src: None,
                fwmark: Some(mark),
            });
        }
        insert_route(
            &mut out,
            &mut warnings,
            RouteSpec {
                key: RouteKey {
                    table: SERVICE_TABLE,
                    dst: IpNet::V4(Default::default()),
                    metric: 0,
                },
                kind: RouteKind::Unreachable,
                scope: Scope::Universe,
                dev: None,
                via: None,
                onlink: false,
                encap: None,
            },
        );
        for route in &state.service_routes {
            render_route(
                &mut out,
                &mut warnings,
                SERVICE_TABLE,
                route,
                &RouteContext {
                    state,
                    host_ifs: &host_ifs,
                    next_hops: &next_hops,
                    externals: &externals,
                },
                &mut used_peers,
            );
        }
    }

    // One permanent neighbour per peer a route uses.
    for peer in state.peers.iter().chain(externals.iter()) {
        if !used_peers.contains(peer.node.as_str()) {
            continue;
        }
        if let Some(hop) = next_hops.get(&peer.node) {
            let ip = IpAddr::V4(*hop);
            out.neighbours.insert(
                (VXLAN_DEVICE.to_string(), ip),
                NeighbourSpec {
                    dev: VXLAN_DEVICE.to_string(),
                    ip,
                    mac: Some(peer.vtep_mac),
                    permanent: true,
                },
            );
        }
    }

    (out, warnings)
}

/// What [`render_route`] needs besides the route.
struct RouteContext<'a> {
    state: &'a NodeState,
    /// Attached local interfaces: key → (host veth, pod address).
    host_ifs: &'a BTreeMap<String, (String, Ipv4Addr)>,
    next_hops: &'a BTreeMap<String, Ipv4Addr>,
    /// Pseudo-peers of the VTEPs of routes imported over BGP ([`external_peers`]).
    externals: &'a [VtepPeer],
}

/// Name of the pseudo-peer standing for an external VTEP (node names never contain ':').
pub fn external_peer_name(address: IpAddr) -> String {
    format!("bgp:{address}")
}

/// One pseudo-peer per distinct external VTEP address used by a route of `state`
/// (`NextHop::External`), sorted by address. An address announced with two MACs keeps
/// the first (in route order) and warns; the node's own address is skipped with a warning.
pub fn external_peers(state: &NodeState, warnings: &mut Vec<String>) -> Vec<VtepPeer> {
    let mut found: BTreeMap<IpAddr, MacAddr> = BTreeMap::new();
    let routes = state
        .networks
        .iter()
        .flat_map(|n| n.routes.iter())
        .chain(state.service_routes.iter());
    for route in routes {
        if let NextHop::External {
            address, vtep_mac, ..
        } = &route.next_hop
        {
            if Some(*address) == state.underlay_ip {
                warnings.push(format!(
                    "{}: imported next hop {address} is this node's own address; skipped",
                    route.prefix
                ));
                continue;
            }
            match found.get(address) {
                Some(mac) if mac != vtep_mac => warnings.push(format!(
                    "external VTEP {address} is announced with MACs {mac} and {vtep_mac}; using {mac}"
                )),
                Some(_) => {}
                None => {
                    found.insert(*address, *vtep_mac);
                }
            }
        }
    }
    found
        .into_iter()
        .map(|(address, mac)| VtepPeer {
            node: external_peer_name(address),
            underlay_ip: address,
            vtep_mac: mac,
        })
        .collect()
}

/// Renders one route of the state into `table`: a local one to the attached veth, a
/// remote one into the tunnel (recording the peer in `used_peers`).
fn render_route<'a>(
    out: &mut KernelState,
    warnings: &mut Vec<String>,
    table: u32,
    route: &NodeRoute,
    ctx: &RouteContext<'a>,
    used_peers: &mut BTreeSet<&'a str>,
) {
    let dst = route.prefix.trunc();
    if !dst.addr().is_ipv4() {
        warnings.push(format!("table {table}: IPv6 route {dst} skipped (IPv4 only)"));
        return;
    }
    match &route.next_hop {
        NextHop::Local { interface } => match ctx.host_ifs.get(interface) {
            Some((host_if, ip)) if dst == IpNet::from(IpAddr::V4(*ip)) => {
                insert_route(out, warnings, local_route(table, dst, host_if));
            }
            Some((host_if, ip)) => {
                // A destination behind the pod (a service chain's far side): the
                // pod's address is the gateway, reached on its veth.
                let mut route = local_route(table, dst, host_if);
                route.scope = Scope::Universe;
                route.via = Some(IpAddr::V4(*ip));
                route.onlink = true;
                insert_route(out, warnings, route);
            }
            None => warnings.push(format!(
                "table {table}: {dst} goes to local interface {interface}, which is not attached yet"
            )),
        },
        NextHop::Remote { node, vni } => {
            render_tunnel(out, warnings, table, dst, node, *vni, ctx, used_peers);
        }
        NextHop::External { address, vni, .. } => {
            let node = external_peer_name(*address);
            render_tunnel(out, warnings, table, dst, &node, *vni, ctx, used_peers);
        }
    }
}

/// Renders a route into the tunnel towards peer `node` (a node of this cluster, or an
/// external VTEP's pseudo-peer), recording the peer in `used_peers`.
#[allow(clippy::too_many_arguments)]
fn render_tunnel<'a>(
    out: &mut KernelState,
    warnings: &mut Vec<String>,
    table: u32,
    dst: IpNet,
    node: &str,
    vni: weft_model::Vni,
    ctx: &RouteContext<'a>,
    used_peers: &mut BTreeSet<&'a str>,
) {
    let peers = ctx.state.peers.iter().chain(ctx.externals.iter());
    let Some((peer, peer_ip)) = peer_underlay(peers, table, dst, node, warnings) else {
        return;
    };
    let Some(hop) = ctx.next_hops.get(node) else {
        warnings.push(format!(
            "table {table}: {dst} is on node {node}, which has no next-hop address; skipped"
        ));
        return;
    };
    used_peers.insert(peer.node.as_str());
    insert_route(
        out,
        warnings,
        RouteSpec {
            key: RouteKey {
                table,
                dst,
                metric: 0,
            },
            kind: RouteKind::Unicast,
            scope: Scope::Universe,
            dev: Some(VXLAN_DEVICE.to_string()),
            via: Some(IpAddr::V4(*hop)),
            onlink: true,
            encap: Some(TunnelEncap {
                id: u64::from(vni.0),
                dst: peer_ip,
            }),
        },
    );
}

/// The peer named `node` among `peers` and its IPv4 underlay address; `None`, with a
/// warning naming the route, when it is unknown or IPv6.
fn peer_underlay<'p>(
    mut peers: impl Iterator<Item = &'p VtepPeer>,
    table: u32,
    dst: IpNet,
    node: &str,
    warnings: &mut Vec<String>,
) -> Option<(&'p VtepPeer, Ipv4Addr)> {
    let Some(peer) = peers.find(|p| p.node == node) else {
        warnings.push(format!(
            "table {table}: {dst} is on node {node}, which is not among the peers; skipped"
        ));
        return None;
    };
    match peer.underlay_ip {
        IpAddr::V4(ip) => Some((peer, ip)),
        IpAddr::V6(ip) => {
            warnings.push(format!(
                "table {table}: {dst} is on node {node} whose underlay {ip} is IPv6; skipped"
            ));
            None
        }
    }
}

/// Renders a route of an ip-fabric-forwarding network to one of its own pods on node
/// `node`: natively through the underlay (`via <peer underlay> dev <underlay> onlink`),
/// no encapsulation.
fn render_native(
    out: &mut KernelState,
    warnings: &mut Vec<String>,
    table: u32,
    dst: IpNet,
    node: &str,
    state: &NodeState,
) {
    if !dst.addr().is_ipv4() {
        warnings.push(format!("table {table}: IPv6 route {dst} skipped (IPv4 only)"));
        return;
    }
    let Some((_, peer_ip)) = peer_underlay(state.peers.iter(), table, dst, node, warnings) else {
        return;
    };
    insert_route(
        out,
        warnings,
        RouteSpec {
            key: RouteKey {
                table,
                dst,
                metric: 0,
            },
            kind: RouteKind::Unicast,
            scope: Scope::Universe,
            dev: Some(UNDERLAY_DEVICE.to_string()),
            via: Some(IpAddr::V4(peer_ip)),
            onlink: true,
            encap: None,
        },
    );
}

/// The sysctl that keeps ports from the node's own ephemeral port choice.
pub const RESERVED_PORTS_SYSCTL: &str = "net/ipv4/ip_local_reserved_ports";

/// Fabric SNAT's TCP and UDP port pools (adjacent), as `first-last`.
fn snat_port_ranges() -> String {
    use weft_model::node::{SNAT_TCP_PORTS, SNAT_UDP_PORTS};
    let first = SNAT_TCP_PORTS.0.min(SNAT_UDP_PORTS.0);
    let last = SNAT_TCP_PORTS.1.max(SNAT_UDP_PORTS.1);
    format!("{first}-{last}")
}

/// Port ranges of an `ip_local_reserved_ports` value (`"1000,56000-58047"`); `None` when
/// it does not parse.
fn port_ranges(text: &str) -> Option<Vec<(u16, u16)>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => p.parse().ok().map(|n| (n, n)),
        })
        .collect()
}

/// Makes `desired`'s [`RESERVED_PORTS_SYSCTL`] the union of what the node reserves now
/// (`actual`) and what weft needs, so reservations made by others are kept; when the
/// node already reserves all of weft's ports, `desired` equals `actual` (no write).
pub fn reserve_ports(desired: &mut KernelState, actual: &KernelState) {
    let Some(ours) = desired.sysctls.get(RESERVED_PORTS_SYSCTL).cloned() else {
        return;
    };
    let now = actual
        .sysctls
        .get(RESERVED_PORTS_SYSCTL)
        .cloned()
        .unwrap_or_default();
    let (Some(have), Some(want)) = (port_ranges(&now), port_ranges(&ours)) else {
        return; // unreadable: write ours (the kernel refuses a bad value itself)
    };
    let covered = |port: u16| have.iter().any(|(a, b)| *a <= port && port <= *b);
    let all_reserved = want.iter().all(|(a, b)| (*a..=*b).all(covered));
    let value = if all_reserved {
        now
    } else if now.trim().is_empty() {
        ours
    } else {
        format!("{},{ours}", now.trim())
    };
    desired.sysctls.insert(RESERVED_PORTS_SYSCTL.to_string(), value);
}

/// Replaces [`UNDERLAY_DEVICE`] in `desired` (routes' `dev`, rules' `iif`) with the
/// device that holds `desired.underlay_ip` in `actual` ([`KernelState::local_addresses`]).
/// When no device holds it (or the address is unknown), the routes and rules naming the
/// underlay are left out, with a warning (pure).
pub fn bind_underlay(desired: &KernelState, actual: &KernelState) -> (KernelState, Option<String>) {
    let uses = desired
        .routes
        .values()
        .any(|r| r.dev.as_deref() == Some(UNDERLAY_DEVICE))
        || desired
            .rules
            .iter()
            .any(|r| r.iif.as_deref() == Some(UNDERLAY_DEVICE));
    if !uses {
        return (desired.clone(), None);
    }
    let dev = desired
        .underlay_ip
        .and_then(|ip| actual.local_addresses.get(&ip))
        .cloned();
    let mut out = desired.clone();
    let warning = match &dev {
        Some(_) => None,
        None => Some(match desired.underlay_ip {
            Some(ip) => format!("no device holds the underlay address {ip}: ip-fabric routes skipped"),
            None => "the underlay address is unknown: ip-fabric routes skipped".to_string(),
        }),
    };
    out.routes = desired
        .routes
        .iter()
        .filter_map(|(k, r)| {
            if r.dev.as_deref() != Some(UNDERLAY_DEVICE) {
                return Some((*k, r.clone()));
            }
            let mut r = r.clone();
            r.dev = Some(dev.clone()?);
            Some((*k, r))
        })
        .collect();
    out.rules = desired
        .rules
        .iter()
        .filter_map(|r| {
            if r.iif.as_deref() != Some(UNDERLAY_DEVICE) {
                return Some(r.clone());
            }
            let mut r = r.clone();
            r.iif = Some(dev.clone()?);
            Some(r)
        })
        .collect();
    (out, warning)
}

fn local_route(table: u32, dst: IpNet, host_if: &str) -> RouteSpec {
    RouteSpec {
        key: RouteKey {
            table,
            dst,
            metric: 0,
        },
        kind: RouteKind::Unicast,
        scope: Scope::Link,
        dev: Some(host_if.to_string()),
        via: None,
        onlink: false,
        encap: None,
    }
}

/// Inserts a route unless its key is taken; the first route for a key wins (interfaces
/// are rendered before the tables' route lists, so a pod's own /32 wins).
fn insert_route(out: &mut KernelState, warnings: &mut Vec<String>, route: RouteSpec) {
    match out.routes.get(&route.key) {
        None => {
            out.routes.insert(route.key, route);
        }
        Some(existing) if *existing == route => {}
        Some(existing) => warnings.push(format!(
            "table {}: {} has two next hops ({} and {}); keeping the first",
            route.key.table,
            route.key.dst,
            RouteDisplay(existing),
            RouteDisplay(&route)
        )),
    }
}

// ===== diff: desired vs actual -> ops =====

/// The ops that turn `actual` into `desired` (pure). Empty when they already match, so
/// a converged reconcile issues no netlink writes. Routes through a device that is
/// neither owned nor present in `actual.devices` are skipped.
///
/// Order: global sysctls; links (create, re-create, set); their sysctls; gateway
/// addresses; neighbours; routes; rules; then deletions, rules first and links last, so
/// nothing is removed before its replacement is in place.
pub fn diff(desired: &KernelState, actual: &KernelState) -> Vec<KernelOp> {
    let mut ops = Vec::new();

    // Links that must be created from scratch (absent, or wrong type/settings): what the
    // kernel has on them now will be gone after the delete, so treat it as absent.
    let mut recreated: BTreeSet<&str> = BTreeSet::new();
    let mut link_ops = Vec::new();
    for (name, want) in &desired.links {
        match actual.links.get(name) {
            None => {
                recreated.insert(name);
                link_ops.push(KernelOp::AddLink(want.clone()));
            }
            Some(have) if have.kind != want.kind => {
                recreated.insert(name);
                link_ops.push(KernelOp::DelLink { name: name.clone() });
                link_ops.push(KernelOp::AddLink(want.clone()));
            }
            Some(have) => {
                let mac = want.mac.filter(|m| have.mac != Some(*m));
                let mtu = want.mtu.filter(|m| have.mtu != Some(*m));
                if mac.is_some() || mtu.is_some() || have.up != want.up {
                    link_ops.push(KernelOp::SetLink {
                        name: name.clone(),
                        mac,
                        mtu,
                        up: want.up,
                    });
                }
            }
        }
    }
    let gone = |dev: &str| recreated.contains(dev);

    let mut link_sysctls = Vec::new();
    for (key, value) in &desired.sysctls {
        let on_fresh_link = sysctl_device(key).is_some_and(gone);
        if on_fresh_link || actual.sysctls.get(key) != Some(value) {
            let op = KernelOp::SetSysctl {
                key: key.clone(),
                value: value.clone(),
            };
            if sysctl_device(key).is_some() {
                link_sysctls.push(op);
            } else {
                ops.push(op);
            }
        }
    }
    ops.extend(link_ops);
    ops.extend(link_sysctls);

    for addr in &desired.addresses {
        if gone(&addr.dev) || !actual.addresses.contains(addr) {
            ops.push(KernelOp::AddAddress(addr.clone()));
        }
    }
    for (key, want) in &desired.neighbours {
        if gone(&want.dev) || actual.neighbours.get(key) != Some(want) {
            ops.push(KernelOp::ReplaceNeighbour(want.clone()));
        }
    }
    let device_missing = |dev: &str| !desired.links.contains_key(dev) && !actual.devices.contains(dev);
    for (key, want) in &desired.routes {
        if want.dev.as_deref().is_some_and(device_missing) {
            continue;
        }
        let through_fresh_link = want.dev.as_deref().is_some_and(gone);
        if through_fresh_link || actual.routes.get(key) != Some(want) {
            ops.push(KernelOp::ReplaceRoute(want.clone()));
        }
    }
    for rule in &desired.rules {
        if !actual.rules.contains(rule) {
            ops.push(KernelOp::AddRule(rule.clone()));
        }
    }

    // Deletions of what weft owns but no longer wants.
    for rule in &actual.rules {
        if !desired.rules.contains(rule) {
            ops.push(KernelOp::DelRule(rule.clone()));
        }
    }
    for (key, have) in &actual.routes {
        if !desired.routes.contains_key(key) && !have.dev.as_deref().is_some_and(gone) {
            ops.push(KernelOp::DelRoute(have.clone()));
        }
    }
    for (key, have) in &actual.neighbours {
        if !desired.neighbours.contains_key(key) && !gone(&have.dev) {
            ops.push(KernelOp::DelNeighbour {
                dev: have.dev.clone(),
                ip: have.ip,
            });
        }
    }
    for addr in &actual.addresses {
        if !desired.addresses.contains(addr) && !gone(&addr.dev) {
            ops.push(KernelOp::DelAddress(addr.clone()));
        }
    }
    for name in actual.links.keys() {
        if !desired.links.contains_key(name) {
            ops.push(KernelOp::DelLink { name: name.clone() });
        }
    }
    ops
}

// ===== display as `ip` commands =====

struct RouteDisplay<'a>(&'a RouteSpec);

impl fmt::Display for RouteDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        match r.kind {
            RouteKind::Unicast => {}
            RouteKind::Unreachable => write!(f, "unreachable ")?,
            RouteKind::Other(t) => write!(f, "type {t} ")?,
        }
        if r.key.dst.prefix_len() == 0 {
            write!(f, "default")?;
        } else {
            write!(f, "{}", r.key.dst)?;
        }
        if let Some(via) = r.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &r.dev {
            write!(f, " dev {dev}")?;
        }
        if r.onlink {
            write!(f, " onlink")?;
        }
        if let Some(e) = r.encap {
            write!(f, " encap ip id {} dst {}", e.id, e.dst)?;
        }
        match r.scope {
            Scope::Link => write!(f, " scope link")?,
            Scope::Universe => {}
            Scope::Other(s) => write!(f, " scope {s}")?,
        }
        if r.key.metric != 0 {
            write!(f, " metric {}", r.key.metric)?;
        }
        write!(f, " table {}", r.key.table)
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pref {}", self.priority)?;
        if let Some(src) = self.src {
            write!(f, " from {src}")?;
        }
        if let Some(dst) = self.dst {
            write!(f, " to {dst}")?;
        }
        if let Some(iif) = &self.iif {
            write!(f, " iif {iif}")?;
        }
        if let Some(id) = self.tun_id {
            write!(f, " tun_id {id}")?;
        }
        if let Some(mark) = self.fwmark {
            write!(f, " fwmark {mark:#x}")?;
        }
        write!(f, " lookup {}", self.table)
    }
}

impl fmt::Display for KernelOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelOp::SetSysctl { key, value } => write!(f, "sysctl -w {}={value}", key.replace('/', ".")),
            KernelOp::AddLink(l) => {
                write!(f, "ip link add {}", l.name)?;
                if let Some(mac) = l.mac {
                    write!(f, " address {mac}")?;
                }
                if let Some(mtu) = l.mtu {
                    write!(f, " mtu {mtu}")?;
                }
                match &l.kind {
                    LinkKind::Dummy => write!(f, " type dummy")?,
                    LinkKind::Vxlan(v) => {
                        write!(f, " type vxlan")?;
                        if v.external {
                            write!(f, " external")?;
                        }
                        write!(f, " dstport {}", v.port)?;
                        write!(f, "{}", if v.learning { " learning" } else { " nolearning" })?;
                        if let Some(local) = v.local {
                            write!(f, " local {local}")?;
                        }
                    }
                    LinkKind::Other(k) => write!(f, " type {k}")?,
                }
                if l.up {
                    write!(f, " && ip link set {} up", l.name)?;
                }
                Ok(())
            }
            KernelOp::SetLink { name, mac, mtu, up } => {
                write!(f, "ip link set {name}")?;
                if let Some(mac) = mac {
                    write!(f, " address {mac}")?;
                }
                if let Some(mtu) = mtu {
                    write!(f, " mtu {mtu}")?;
                }
                write!(f, "{}", if *up { " up" } else { " down" })
            }
            KernelOp::DelLink { name } => write!(f, "ip link del {name}"),
            KernelOp::AddAddress(a) => write!(f, "ip addr add {} dev {}", a.addr, a.dev),
            KernelOp::DelAddress(a) => write!(f, "ip addr del {} dev {}", a.addr, a.dev),
            KernelOp::ReplaceNeighbour(n) => {
                write!(f, "ip neigh replace {}", n.ip)?;
                if let Some(mac) = n.mac {
                    write!(f, " lladdr {mac}")?;
                }
                write!(f, " dev {}", n.dev)?;
                if n.permanent {
                    write!(f, " nud permanent")?;
                }
                Ok(())
            }
            KernelOp::DelNeighbour { dev, ip } => write!(f, "ip neigh del {ip} dev {dev}"),
            KernelOp::ReplaceRoute(r) => write!(f, "ip route replace {}", RouteDisplay(r)),
            KernelOp::DelRoute(r) => write!(f, "ip route del {}", RouteDisplay(r)),
            KernelOp::AddRule(r) => write!(f, "ip rule add {r}"),
            KernelOp::DelRule(r) => write!(f, "ip rule del {r}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
