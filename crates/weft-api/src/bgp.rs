//! The controller's BGP speaker: peers from `BgpPeer` objects, every virtual network's
//! routes exported as VPNv4 (and IPv4 unicast for gateway routers), VPNv4 routes of
//! other clusters imported into the networks whose route targets ask for them.
//!
//! ```text
//!  ClusterConfig (ASN, routerId, bgpListenAddress/bgpPort) ─┐
//!  BgpPeer objects ─────────────────────────────────────────┤ run(): level-triggered
//!  networks, interfaces, services, Nodes (RoutingInputs) ───┤ reconcile on every commit,
//!                                                           v speaker event and 2 s tick
//!                      weft-bgp Speaker ── sessions ──> gateway routers, other clusters
//!                           │ Loc-RIB (VPNv4 from peers)
//!                           v import_routes (pure)
//!               Controller::set_imported ──> node_state (weft_routing::add_imported_routes)
//!                           ──> node watch ──> agents (NextHop::External, VXLAN to the VTEP)
//! ```
//!
//! Export ([`export_routes`], pure): for every endpoint of every network — a pod
//! interface's /32, a service VIP's /32 — one VPNv4 route with RD `routerId:VNI` (type
//! 1), label = the network's VNI, the network's export route targets (default
//! `target:ASN:VNI`) and next hop = the underlay address of the node hosting the
//! endpoint. For a VIP that is the node of the first ready backend (by node name): one
//! path, not multipath — the receiving cluster tunnels to that node, whose agent
//! DNATs traffic arriving over the tunnel to its *local* backends (so replies leave
//! through the conntrack entry that holds the NAT). A VIP is also exported in each pod
//! network connected to its service network (RD, VNI and targets of that network, as
//! TF leaks routes between connected VRFs): a remote network importing a pod network's
//! targets reaches the VIP, and the packets arrive in the table that routes to backends.
//! A LoadBalancer's floating IPs are exported the same way in the floating-IP pool's
//! network (its RD, VNI and export targets; reference §5.1), next hop again the node of
//! the first ready backend, whose agent DNATs them like external IPs; without a ready
//! backend they are withdrawn. A pod's floating IP (a `FloatingIp` object, see
//! [`FloatingIpRecord`]) is exported in its pool's network too while it is bound, next
//! hop the node of the pod it is bound to (whose agent does the 1:1 NAT); unbound (no
//! pod, not scheduled) it is withdrawn. Each route also carries a router-MAC extended
//! community (type 0x06, subtype 0x03, RFC 9135) with the MAC of that node's VXLAN
//! device, the inner destination MAC the node accepts; without it a remote VTEP could
//! not be programmed. The same prefixes go out as IPv4 unicast (no label) for peers
//! negotiating that family (gateway routers).
//!
//! Import ([`import_routes`], pure): a VPNv4 best path learned from an accepted peer
//! lands in each local network whose import route targets it carries, as an
//! [`ImportedRoute`] (next hop, VNI from the label, router MAC). Routes without a router
//! MAC, with a label above 2^20 or with a next hop that is one of our nodes are not
//! accepted.
//!
//! Overlap refusal: a `cluster` peer whose `remoteSubnets` overlap our pod, service or
//! ip-fabric subnets gets no session at all (nothing imported, nothing exported) and a
//! status naming both ranges (`weft bgp peers`, `weft status`).
//!
//! BGP is off unless ClusterConfig sets `routerId`, `bgpListenAddress` or `bgpPort`, or a
//! BgpPeer exists. The router ID is `routerId`, else the listen address when it is a
//! specific IPv4 address; without either the speaker does not start and the status says so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use weft_bgp::{
    ExtCommunity, Family, Path, PathAttributes, PathSource, PeerConfig, PeerId, Prefix4, Route,
    RouteDistinguisher, RouteKey, RouteTarget, Speaker, SpeakerConfig, SpeakerEvent, State,
};
use weft_model::bgp::{
    BgpFamily, BgpPeerRole, EffectiveBgpPeer, ImportedRoute, LocalSubnet, subnet_overlaps,
};
use weft_model::config::EffectiveConfig;
use weft_model::node::vtep_mac;
use weft_model::{
    FloatingIpRecord, InputKind, InputObject, InterfaceAttachment, MacAddr, ServiceRecord,
    VirtualNetworkRecord, Vni,
};

use crate::controller::{Controller, RoutingInputs};

/// Type and subtype of the router-MAC extended community (RFC 9135 §8.1).
const ROUTER_MAC: [u8; 2] = [0x06, 0x03];
/// Largest MPLS label value (20 bits): VNIs above it cannot be carried.
const MAX_LABEL: u32 = (1 << 20) - 1;
/// How often the speaker is reconciled without a trigger.
const TICK: Duration = Duration::from_secs(2);

/// The router-MAC extended community for `mac`.
pub fn router_mac_community(mac: MacAddr) -> ExtCommunity {
    let m = mac.0;
    ExtCommunity::Other([ROUTER_MAC[0], ROUTER_MAC[1], m[0], m[1], m[2], m[3], m[4], m[5]])
}

/// The router MAC a path carries, if any.
pub fn router_mac(attrs: &PathAttributes) -> Option<MacAddr> {
    attrs.ext_communities.iter().find_map(|c| match c {
        ExtCommunity::Other([t, s, m @ ..]) if [*t, *s] == ROUTER_MAC => {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(m);
            Some(MacAddr(mac))
        }
        _ => None,
    })
}

/// The RD weft gives a network's routes: type 1, `routerId:VNI` (`None` when the VNI
/// does not fit the 16-bit number).
pub fn route_distinguisher(router_id: Ipv4Addr, vni: Vni) -> Option<RouteDistinguisher> {
    Some(RouteDistinguisher::Ipv4 {
        ip: router_id,
        number: u16::try_from(vni.0).ok()?,
    })
}

fn parse_targets(
    network: &VirtualNetworkRecord,
    targets: &[String],
    notes: &mut BTreeSet<String>,
) -> Vec<RouteTarget> {
    let mut out = Vec::new();
    for t in targets {
        match t.parse::<RouteTarget>() {
            Ok(rt) => out.push(rt),
            Err(e) => {
                notes.insert(format!(
                    "network {}: route target {t:?} ignored: {e}",
                    network.fq_name
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One route the controller originates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Attributes (next hop, route targets, router MAC).
    pub attrs: PathAttributes,
    /// The VNI as the VPNv4 label; `None` for IPv4 unicast.
    pub label: Option<u32>,
}

/// Everything the controller should originate (see the module docs), keyed by RIB
/// destination, plus notes on what could not be exported. `floating_ips` are the pod
/// floating IPs (only bound ones are exported). Pure.
pub fn export_routes(
    router_id: Ipv4Addr,
    networks: &[VirtualNetworkRecord],
    interfaces: &[InterfaceAttachment],
    services: &[ServiceRecord],
    floating_ips: &[FloatingIpRecord],
    nodes: &[Node],
) -> (BTreeMap<RouteKey, Export>, Vec<String>) {
    let mut notes = BTreeSet::new();
    let underlay: BTreeMap<&str, Ipv4Addr> = nodes
        .iter()
        .filter_map(
            |n| match (n.metadata.name.as_deref(), weft_routing::node_internal_ip(n)) {
                (Some(name), Some(IpAddr::V4(ip))) => Some((name, ip)),
                _ => None,
            },
        )
        .collect();
    let by_name: BTreeMap<&str, &VirtualNetworkRecord> =
        networks.iter().map(|n| (n.fq_name.as_str(), n)).collect();
    let mut out: BTreeMap<RouteKey, Export> = BTreeMap::new();
    let mut add = |network: &VirtualNetworkRecord, ip: IpAddr, node: &str, notes: &mut BTreeSet<String>| {
        let IpAddr::V4(v4) = ip else { return };
        let Some(next_hop) = underlay.get(node).copied() else {
            notes.insert(format!(
                "node {node} has no IPv4 InternalIP; its endpoints are not exported"
            ));
            return;
        };
        let Some(rd) = route_distinguisher(router_id, network.vni) else {
            notes.insert(format!(
                "network {}: VNI {} does not fit a type-1 RD number (16 bits); not exported",
                network.fq_name, network.vni.0
            ));
            return;
        };
        if network.vni.0 > MAX_LABEL {
            notes.insert(format!(
                "network {}: VNI {} does not fit a 20-bit label; not exported",
                network.fq_name, network.vni.0
            ));
            return;
        }
        let Ok(prefix) = Prefix4::new(v4, 32) else { return };
        let targets = parse_targets(network, &network.export_targets, notes);
        let mac = router_mac_community(vtep_mac(node));
        let mut vpn = PathAttributes {
            next_hop: Some(next_hop),
            ..PathAttributes::default()
        };
        vpn.ext_communities = targets.iter().map(|rt| ExtCommunity::RouteTarget(*rt)).collect();
        vpn.ext_communities.push(mac);
        out.insert(
            RouteKey::Vpnv4 { rd, prefix },
            Export {
                attrs: vpn,
                label: Some(network.vni.0),
            },
        );
        // IPv4 unicast: one path per prefix; the first network (in name order) wins.
        out.entry(RouteKey::Ipv4(prefix)).or_insert(Export {
            attrs: PathAttributes {
                next_hop: Some(next_hop),
                ..PathAttributes::default()
            },
            label: None,
        });
    };
    let mut sorted: Vec<&InterfaceAttachment> = interfaces.iter().collect();
    sorted.sort_by(|a, b| (&a.network, a.ip).cmp(&(&b.network, b.ip)));
    for i in sorted {
        let (Some(network), Some(node)) = (by_name.get(i.network.as_str()), i.node.as_deref()) else {
            continue;
        };
        add(network, i.ip, node, &mut notes);
    }
    let mut services: Vec<&ServiceRecord> = services.iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for s in services {
        let node = s
            .backends
            .iter()
            .filter(|b| b.ready)
            .filter_map(|b| b.node.as_deref())
            .min();
        // No ready backend on a known node: nothing to point at (VIP and floating IPs
        // are withdrawn).
        let Some(node) = node else { continue };
        if let (Some(vip), Some(network)) = (s.vip, by_name.get(s.network.as_str())) {
            add(network, vip, node, &mut notes);
            // Leaked into every client network too (TF's route leaking between a pod
            // network and the service network it is connected to): a remote cluster
            // importing a pod network's targets reaches the VIP, and the traffic
            // arrives with that network's VNI, in the table that routes to backends.
            for client in weft_routing::services::client_networks(&by_name, &s.network) {
                if let Some(client) = by_name.get(client) {
                    add(client, vip, node, &mut notes);
                }
            }
        }
        // Floating IPs (reference §5.1): exported in the pool's network, with its RD,
        // VNI and export targets, so a gateway whose VRF imports that network's target
        // reaches them; the node DNATs them like external IPs.
        if s.floating_ips.is_empty() {
            continue;
        }
        match s.fip_network.as_deref().and_then(|fq| by_name.get(fq)) {
            Some(network) => {
                for ip in &s.floating_ips {
                    add(network, *ip, node, &mut notes);
                }
            }
            None => {
                notes.insert(format!(
                    "service {}/{}: floating-IP network {} is unknown; its floating IPs are not exported",
                    s.namespace,
                    s.name,
                    s.fip_network.as_deref().unwrap_or("(none)")
                ));
            }
        }
    }
    // Pod floating IPs (reference §5.1): while bound, in the pool's network with next
    // hop the node of the pod, which NATs them 1:1 to the pod's address.
    let mut floating_ips: Vec<&FloatingIpRecord> = floating_ips.iter().collect();
    floating_ips.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for f in floating_ips {
        let Some((ip, _, node)) = f.binding() else {
            continue;
        };
        match f.network.as_deref().and_then(|fq| by_name.get(fq)) {
            Some(network) => add(network, ip, node, &mut notes),
            None => {
                notes.insert(format!(
                    "FloatingIp {}/{}: floating-IP network {} is unknown; {ip} is not exported",
                    f.namespace,
                    f.name,
                    f.network.as_deref().unwrap_or("(none)")
                ));
            }
        }
    }
    (out, notes.into_iter().collect())
}

/// The VPNv4 best paths learned from accepted peers (`peers`: id → BgpPeer name) mapped
/// into the local networks whose import targets they carry. `own_underlays` are our
/// nodes' addresses (a route pointing at one of them is our own, echoed back). Returns
/// the imported routes (sorted) and, per peer name, how many of its destinations were
/// accepted into at least one network. Pure.
pub fn import_routes(
    routes: &[(Route, Path)],
    peers: &BTreeMap<PeerId, String>,
    networks: &[VirtualNetworkRecord],
    own_underlays: &BTreeSet<Ipv4Addr>,
) -> (Vec<ImportedRoute>, BTreeMap<String, usize>) {
    let mut notes = BTreeSet::new();
    let imports: Vec<(&VirtualNetworkRecord, BTreeSet<RouteTarget>)> = networks
        .iter()
        .map(|n| {
            (
                n,
                parse_targets(n, &n.import_targets, &mut notes)
                    .into_iter()
                    .collect(),
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    for (route, path) in routes {
        let (Route::Vpnv4(v), PathSource::Peer(id)) = (route, path.source) else {
            continue;
        };
        let Some(peer) = peers.get(&id) else { continue };
        let Some(next_hop) = path.attrs.next_hop else {
            continue;
        };
        if own_underlays.contains(&next_hop) || v.label > MAX_LABEL {
            continue;
        }
        let Some(mac) = router_mac(&path.attrs) else {
            continue;
        };
        let mut carried: BTreeSet<RouteTarget> = v.route_targets.iter().copied().collect();
        carried.extend(path.attrs.route_targets());
        let mut any = false;
        for (network, wanted) in &imports {
            if wanted.is_disjoint(&carried) {
                continue;
            }
            any = true;
            out.push(ImportedRoute {
                network: network.fq_name.clone(),
                prefix: v.prefix.net().into(),
                address: IpAddr::V4(next_hop),
                vni: Vni(v.label),
                vtep_mac: mac,
                rd: v.rd.to_string(),
                route_targets: carried.iter().map(RouteTarget::to_string).collect(),
                peer: peer.clone(),
            });
        }
        if any {
            *accepted.entry(peer.clone()).or_default() += 1;
        }
    }
    out.sort();
    out.dedup();
    (out, accepted)
}

/// Our subnets, for the overlap check with a `cluster` peer.
pub fn local_subnets(cfg: &EffectiveConfig) -> Vec<LocalSubnet> {
    let mut out = Vec::new();
    for (what, nets) in [
        ("pod subnet", &cfg.pod_subnets),
        ("service subnet", &cfg.service_subnets),
        ("ip-fabric subnet", &cfg.ip_fabric_subnets),
    ] {
        out.extend(nets.iter().map(|n| LocalSubnet {
            what: what.to_string(),
            net: *n,
        }));
    }
    out
}

/// Why a peer gets no session, if it must not: the overlap of its subnets with ours.
pub fn refusal(cfg: &EffectiveConfig, peer: &EffectiveBgpPeer) -> Option<String> {
    if peer.role != BgpPeerRole::Cluster {
        return None;
    }
    let overlaps = subnet_overlaps(&local_subnets(cfg), &peer.remote_subnets);
    if overlaps.is_empty() {
        None
    } else {
        Some(format!(
            "refused: subnets overlap, routes would be ambiguous ({}); renumber one cluster",
            overlaps.join("; ")
        ))
    }
}

/// The speaker's session settings for a peer.
pub fn peer_config(peer: &EffectiveBgpPeer) -> PeerConfig {
    let mut c = PeerConfig::new(peer.address, peer.asn);
    c.port = peer.port;
    c.passive = peer.passive;
    c.families = peer
        .families
        .iter()
        .map(|f| match f {
            BgpFamily::Ipv4Unicast => Family::Ipv4Unicast,
            BgpFamily::Vpnv4 => Family::Vpnv4,
        })
        .collect();
    // A controller wants a lost session back soon, not after the RFC's 120 s.
    c.connect_retry_secs = 3;
    c.idle_hold_secs = 1;
    c.password = peer.password.clone();
    c.local_address = peer.local_address;
    c.rr_client = peer.route_reflector_client;
    c
}

/// One peer as `weft bgp peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpPeerView {
    /// BgpPeer name.
    pub name: String,
    /// Neighbour address.
    pub address: IpAddr,
    /// Its TCP port.
    pub port: u16,
    /// Its AS.
    pub asn: u32,
    /// `router` or `cluster`.
    pub role: String,
    /// Configured families.
    pub families: Vec<String>,
    /// Session state (`Established`, `Active` …) or `Refused`.
    pub state: String,
    /// Seconds in Established, while established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// Destinations received from it.
    pub received: usize,
    /// Destinations imported into at least one network.
    pub accepted: usize,
    /// Destinations advertised to it.
    pub advertised: usize,
    /// Why the session last went down, or why it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Answer of `GET /v1/bgp/peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BgpPeersReport {
    /// Whether the speaker runs.
    pub enabled: bool,
    /// Our AS.
    pub asn: u32,
    /// Our router ID, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<Ipv4Addr>,
    /// Where the speaker listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The speaker's state in words.
    pub status: String,
    /// Routes originated.
    pub exported: usize,
    /// Every configured peer.
    pub peers: Vec<BgpPeerView>,
}

/// One route of a network, as `weft routes NETWORK` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRouteView {
    /// Destination.
    pub prefix: String,
    /// `pod`, `service` (this cluster's endpoints) or `imported` (over BGP).
    pub origin: String,
    /// The endpoint: `namespace/pod/interface`, `namespace/service`, or the BgpPeer name.
    pub source: String,
    /// Node hosting the endpoint (this cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Underlay next hop (the hosting node, or the remote VTEP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<IpAddr>,
    /// VNI traffic is encapsulated with.
    pub vni: u32,
    /// Route distinguisher (exported or received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rd: Option<String>,
    /// Route targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_targets: Vec<String>,
}

/// Answer of `GET /v1/bgp/routes?network=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRoutes {
    /// FQ name of the network.
    pub network: String,
    /// Its VNI.
    pub vni: u32,
    /// Route targets it imports.
    pub import_targets: Vec<String>,
    /// Route targets it exports.
    pub export_targets: Vec<String>,
    /// Its routes, this cluster's first, then imported ones, each sorted by prefix.
    pub routes: Vec<NetworkRouteView>,
}

/// What the BGP task shares with the API handlers (held in the [`Controller`]).
#[derive(Debug, Default)]
pub struct BgpShared {
    /// The running speaker.
    pub speaker: Option<Speaker>,
    /// Configured peers: name → (settings, speaker id, refusal).
    pub peers: BTreeMap<String, PeerSlot>,
    /// Routes imported into local networks (what node states get).
    pub imported: Arc<Vec<ImportedRoute>>,
    /// Destinations accepted per peer name.
    pub accepted: BTreeMap<String, usize>,
    /// Identity of the running speaker: AS, router ID, listen address.
    pub identity: Option<(u32, Ipv4Addr, Option<SocketAddr>)>,
    /// `disabled`, `ready`, `degraded` and why.
    pub state: String,
    /// Reason for `state`.
    pub reason: String,
    /// Routes originated.
    pub exported: usize,
}

/// One configured peer in [`BgpShared`].
#[derive(Debug, Clone)]
pub struct PeerSlot {
    /// Its validated settings.
    pub spec: EffectiveBgpPeer,
    /// Its id in the speaker (none while refused or not added).
    pub id: Option<PeerId>,
    /// Why it gets no session.
    pub refused: Option<String>,
}

/// The report of `weft bgp peers`.
pub async fn peers_report(c: &Controller) -> BgpPeersReport {
    let (speaker, slots, accepted, identity, state, reason, exported) = c.with_bgp(|b| {
        (
            b.speaker.clone(),
            b.peers.clone(),
            b.accepted.clone(),
            b.identity,
            b.state.clone(),
            b.reason.clone(),
            b.exported,
        )
    });
    let statuses = match &speaker {
        Some(s) => s.peers().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let cfg = c.config().await;
    let peers = slots
        .into_iter()
        .map(|(name, slot)| {
            let status = slot.id.and_then(|id| statuses.iter().find(|s| s.id == id));
            let state = match (&slot.refused, status) {
                (Some(_), _) => "Refused".to_string(),
                (None, Some(s)) => format!("{:?}", s.state),
                (None, None) => "Idle".to_string(),
            };
            BgpPeerView {
                address: slot.spec.address,
                port: slot.spec.port,
                asn: slot.spec.asn,
                role: slot.spec.role.to_string(),
                families: slot
                    .spec
                    .families
                    .iter()
                    .map(|f| f.as_str().to_string())
                    .collect(),
                state,
                uptime_secs: status
                    .filter(|s| s.state == State::Established)
                    .and_then(|s| s.state_for)
                    .map(|d| d.as_secs()),
                received: status.map_or(0, |s| s.received_routes),
                accepted: accepted.get(&name).copied().unwrap_or(0),
                advertised: status.map_or(0, |s| s.advertised_routes),
                last_error: slot
                    .refused
                    .clone()
                    .or_else(|| status.and_then(|s| s.last_down.clone())),
                name,
            }
        })
        .collect();
    BgpPeersReport {
        enabled: speaker.is_some(),
        asn: identity.map_or(cfg.asn, |i| i.0),
        router_id: identity.map(|i| i.1),
        listen: identity.and_then(|i| i.2),
        status: if reason.is_empty() {
            state
        } else {
            format!("{state}: {reason}")
        },
        exported,
        peers,
    }
}

/// The routes of one network (FQ name, or short name when unique) for `weft routes
/// NETWORK`: this cluster's endpoints with their node and next hop, and what BGP imported.
pub async fn network_routes(c: &Controller, network: &str) -> Result<NetworkRoutes, String> {
    let inputs = c.bgp_inputs().await;
    let matches: Vec<&VirtualNetworkRecord> = inputs
        .networks
        .iter()
        .filter(|n| n.fq_name == network || n.name == network)
        .collect();
    let n = match matches.as_slice() {
        [one] => *one,
        [] => {
            let mut names: Vec<&str> = inputs.networks.iter().map(|n| n.name.as_str()).collect();
            names.sort();
            return Err(format!("no network {network:?}; networks: {}", names.join(", ")));
        }
        many => {
            let names: Vec<&str> = many.iter().map(|n| n.fq_name.as_str()).collect();
            return Err(format!(
                "{network:?} is ambiguous: {}; give the FQ name",
                names.join(", ")
            ));
        }
    };
    let (identity, imported) = c.with_bgp(|b| (b.identity, b.imported.clone()));
    let router_id = identity.map(|i| i.1);
    let underlay: BTreeMap<&str, IpAddr> = inputs
        .nodes
        .iter()
        .filter_map(|node| {
            Some((
                node.metadata.name.as_deref()?,
                weft_routing::node_internal_ip(node)?,
            ))
        })
        .collect();
    let rd = router_id
        .and_then(|r| route_distinguisher(r, n.vni))
        .map(|rd| rd.to_string());
    let mut local = Vec::new();
    for i in inputs.interfaces.iter().filter(|i| i.network == n.fq_name) {
        local.push(NetworkRouteView {
            prefix: format!("{}/{}", i.ip, if i.ip.is_ipv4() { 32 } else { 128 }),
            origin: "pod".into(),
            source: format!("{}/{}/{}", i.namespace, i.pod, i.interface),
            node: i.node.clone(),
            next_hop: i.node.as_deref().and_then(|node| underlay.get(node).copied()),
            vni: n.vni.0,
            rd: rd.clone(),
            route_targets: n.export_targets.clone(),
        });
    }
    for s in inputs.services.iter().filter(|s| s.network == n.fq_name) {
        let Some(vip) = s.vip else { continue };
        let node = s
            .backends
            .iter()
            .filter(|b| b.ready)
            .filter_map(|b| b.node.clone())
            .min();
        local.push(NetworkRouteView {
            prefix: format!("{vip}/{}", if vip.is_ipv4() { 32 } else { 128 }),
            origin: "service".into(),
            source: format!("{}/{}", s.namespace, s.name),
            next_hop: node.as_deref().and_then(|node| underlay.get(node).copied()),
            node,
            vni: n.vni.0,
            rd: rd.clone(),
            route_targets: n.export_targets.clone(),
        });
    }
    local.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    let mut routes = local;
    routes.extend(
        imported
            .iter()
            .filter(|r| r.network == n.fq_name)
            .map(|r| NetworkRouteView {
                prefix: r.prefix.to_string(),
                origin: "imported".into(),
                source: r.peer.clone(),
                node: None,
                next_hop: Some(r.address),
                vni: r.vni.0,
                rd: Some(r.rd.clone()),
                route_targets: r.route_targets.clone(),
            }),
    );
    Ok(NetworkRoutes {
        network: n.fq_name.clone(),
        vni: n.vni.0,
        import_targets: n.import_targets.clone(),
        export_targets: n.export_targets.clone(),
        routes,
    })
}

/// The BGP task's private state between reconciles.
///
/// A reconcile runs on every commit, speaker event and [`TICK`]; most find nothing new.
/// The `*_from` fields remember what each step was last computed from, so a reconcile
/// whose inputs did not change skips it (no store scan, no export recomputation, no
/// Loc-RIB dump) and only retries what failed.
#[derive(Default)]
struct Runtime {
    speaker: Option<Speaker>,
    events: Option<broadcast::Receiver<SpeakerEvent>>,
    identity: Option<(u32, Ipv4Addr, Option<SocketAddr>)>,
    /// Peers added to the speaker: name → (settings, id).
    added: BTreeMap<String, (EffectiveBgpPeer, PeerId)>,
    exported: BTreeMap<RouteKey, Export>,
    /// Store revision the configuration and BgpPeers (valid ones, errors) were read at.
    config_from: Option<(u64, Arc<ConfigRead>)>,
    /// Routing inputs and router ID `exported` was fully originated from, with the
    /// notes of that pass.
    exports_from: Option<(Arc<RoutingInputs>, Ipv4Addr, Vec<String>)>,
    /// Routing inputs and peers the imports were last computed from; cleared when a
    /// speaker event says the Loc-RIB may have changed.
    imports_from: Option<(Arc<RoutingInputs>, BTreeMap<PeerId, String>)>,
}

/// The configuration and BgpPeers at one store revision.
struct ConfigRead {
    cfg: EffectiveConfig,
    peers: Vec<EffectiveBgpPeer>,
    bad: Vec<String>,
}

impl Runtime {
    async fn stop(&mut self) {
        if let Some(s) = self.speaker.take() {
            s.shutdown().await;
        }
        self.events = None;
        self.identity = None;
        self.added.clear();
        self.exported.clear();
        self.exports_from = None;
        self.imports_from = None;
    }

    /// The configuration and BgpPeers, read from the store once per revision.
    async fn read_config(&mut self, c: &Controller) -> Arc<ConfigRead> {
        // The revision first: a commit in between makes the cache look older than it
        // is, which only costs one more read.
        let revision = c.revision();
        if let Some((at, read)) = &self.config_from
            && *at == revision
        {
            return read.clone();
        }
        let cfg = c.config().await;
        let mut peers = Vec::new();
        let mut bad = Vec::new();
        for v in c.inputs(InputKind::BgpPeer, None).await {
            match InputObject::from_value(v) {
                Ok(InputObject::BgpPeer(p)) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    match p.spec.validate(&format!("BgpPeer {name}"), &name) {
                        Ok(e) => peers.push(e),
                        Err(e) => bad.push(e.to_string()),
                    }
                }
                Ok(_) => {}
                Err(e) => bad.push(e.to_string()),
            }
        }
        let read = Arc::new(ConfigRead { cfg, peers, bad });
        self.config_from = Some((revision, read.clone()));
        read
    }

    /// Brings the speaker in line with the configuration; returns (state, reason).
    async fn reconcile(&mut self, c: &Controller) -> (String, String) {
        let read = self.read_config(c).await;
        let cfg = &read.cfg;
        let enabled = cfg.bgp_listen.is_some() || !read.peers.is_empty();
        if !enabled {
            self.stop().await;
            c.set_imported(Vec::new(), BTreeMap::new());
            c.with_bgp(|b| {
                b.speaker = None;
                b.peers.clear();
                b.identity = None;
                b.exported = 0;
            });
            return (
                "disabled".into(),
                "no BgpPeer and no routerId/bgpListenAddress/bgpPort in ClusterConfig".into(),
            );
        }
        let router_id = cfg.router_id.or(match cfg.bgp_listen.map(|l| l.ip()) {
            Some(IpAddr::V4(v4)) if !v4.is_unspecified() => Some(v4),
            _ => None,
        });
        let Some(router_id) = router_id else {
            self.stop().await;
            return (
                "degraded".into(),
                "BGP is configured but has no router ID: set spec.routerId in ClusterConfig".into(),
            );
        };
        let identity = (cfg.asn, router_id, cfg.bgp_listen);
        if self.identity != Some(identity) {
            self.stop().await;
            // The controller is not on the forwarding path: routes it passes on between
            // clusters and gateways keep the hosting node as next hop.
            let config = SpeakerConfig {
                next_hop_unchanged: true,
                ..SpeakerConfig::new(cfg.asn, router_id, cfg.bgp_listen)
            };
            match Speaker::new(config).await {
                Ok(s) => {
                    tracing::info!(asn = cfg.asn, %router_id, listen = ?cfg.bgp_listen, "BGP speaker started");
                    self.events = Some(s.subscribe());
                    self.speaker = Some(s);
                    self.identity = Some(identity);
                }
                Err(e) => {
                    return (
                        "degraded".into(),
                        format!(
                            "cannot start the BGP speaker on {}: {e}",
                            cfg.bgp_listen
                                .map(|l| l.to_string())
                                .unwrap_or_else(|| "(no listener)".into())
                        ),
                    );
                }
            }
        }
        let Some(speaker) = self.speaker.clone() else {
            return ("degraded".into(), "the BGP speaker is not running".into());
        };

        // Peers: refused ones get no session; changed ones are re-added.
        let mut slots = BTreeMap::new();
        let desired: BTreeMap<&str, &EffectiveBgpPeer> =
            read.peers.iter().map(|p| (p.name.as_str(), p)).collect();
        let stale: Vec<String> = self
            .added
            .iter()
            .filter(|(name, (spec, _))| {
                desired.get(name.as_str()).copied() != Some(spec) || refusal(cfg, spec).is_some()
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, id)) = self.added.remove(&name) {
                let _ = speaker.remove_peer(id).await;
            }
        }
        let mut errors = read.bad.clone();
        for (&name, &spec) in &desired {
            let refused = refusal(cfg, spec);
            let mut id = self.added.get(name).map(|(_, id)| *id);
            if refused.is_none() && id.is_none() {
                match speaker.add_peer(peer_config(spec)).await {
                    Ok(new) => {
                        self.added.insert(name.to_string(), (spec.clone(), new));
                        id = Some(new);
                    }
                    Err(e) => errors.push(format!("BgpPeer {name}: {e}")),
                }
            }
            slots.insert(
                name.to_string(),
                PeerSlot {
                    spec: spec.clone(),
                    id,
                    refused,
                },
            );
        }

        // Exports: recomputed when the routing inputs or the router ID changed, or the
        // last pass did not originate everything; only changed routes reach the speaker.
        let inputs = c.bgp_inputs().await;
        let notes = match &self.exports_from {
            Some((from, id, notes)) if Arc::ptr_eq(from, &inputs) && *id == router_id => notes.clone(),
            _ => {
                let (desired_exports, notes) = export_routes(
                    router_id,
                    &inputs.networks,
                    &inputs.interfaces,
                    &inputs.services,
                    &inputs.floating_ips,
                    &inputs.nodes,
                );
                let gone: Vec<RouteKey> = self
                    .exported
                    .keys()
                    .filter(|k| !desired_exports.contains_key(k))
                    .copied()
                    .collect();
                for key in gone {
                    let _ = speaker.withdraw(key).await;
                    self.exported.remove(&key);
                }
                let mut complete = true;
                for (key, export) in &desired_exports {
                    if self.exported.get(key) != Some(export) {
                        if speaker
                            .originate_with(*key, export.attrs.clone(), export.label)
                            .await
                            .is_err()
                        {
                            complete = false;
                            break;
                        }
                        self.exported.insert(*key, export.clone());
                    }
                }
                self.exports_from = complete.then(|| (inputs.clone(), router_id, notes.clone()));
                notes
            }
        };

        // Imports: recomputed when the Loc-RIB (speaker event), the peers or the
        // routing inputs changed.
        let by_id: BTreeMap<PeerId, String> = self
            .added
            .iter()
            .map(|(name, (_, id))| (*id, name.clone()))
            .collect();
        let unchanged = matches!(&self.imports_from,
            Some((from, ids)) if Arc::ptr_eq(from, &inputs) && *ids == by_id);
        if !unchanged {
            let own: BTreeSet<Ipv4Addr> = inputs
                .nodes
                .iter()
                .filter_map(|n| match weft_routing::node_internal_ip(n) {
                    Some(IpAddr::V4(v4)) => Some(v4),
                    _ => None,
                })
                .collect();
            match speaker.routes().await {
                Ok(routes) => {
                    let (imported, accepted) = import_routes(&routes, &by_id, &inputs.networks, &own);
                    c.set_imported(imported, accepted);
                    self.imports_from = Some((inputs.clone(), by_id));
                }
                Err(_) => {
                    // Speaker gone: nothing imported (retried on the next pass).
                    c.set_imported(Vec::new(), BTreeMap::new());
                    self.imports_from = None;
                }
            }
        }
        let exported = self.exported.len();
        let refused: Vec<String> = slots
            .iter()
            .filter_map(|(name, s)| s.refused.as_ref().map(|r| format!("BgpPeer {name} {r}")))
            .collect();
        let imported_count = c.with_bgp(|b| b.imported.len());
        c.with_bgp(|b| {
            b.speaker = Some(speaker.clone());
            b.peers = slots;
            b.identity = self.identity;
            b.exported = exported;
        });
        errors.extend(refused);
        errors.extend(notes);
        if errors.is_empty() {
            (
                "ready".into(),
                format!(
                    "AS {} router ID {router_id}: {} peer(s), {exported} route(s) exported, {imported_count} imported",
                    cfg.asn,
                    desired.len()
                ),
            )
        } else {
            ("degraded".into(), errors.join("; "))
        }
    }
}

/// Runs the controller's BGP speaker until the controller closes its streams (server
/// shutdown): reconciles on every commit, every speaker event (coalesced) and every
/// [`TICK`].
pub async fn run(controller: Arc<Controller>) {
    let (_always, leader) = tokio::sync::watch::channel(true);
    run_while_leader(controller, leader).await;
}

/// [`run`], but the speaker only runs while `leader` says this replica is the elected
/// leader (HA controllers on etcd): BGP sessions are work that must happen once, so a
/// follower keeps none open and reports `standby`; on taking over it starts the speaker
/// from the configuration in the store, and peers see one session move between replicas.
pub async fn run_while_leader(controller: Arc<Controller>, mut leader: tokio::sync::watch::Receiver<bool>) {
    let mut rt = Runtime::default();
    let mut commits = controller.subscribe_commits();
    let mut closing = controller.subscribe_closing();
    let mut leader_can_change = true;
    loop {
        if !*leader.borrow_and_update() {
            rt.stop().await;
            controller.with_bgp(|b| {
                b.state = "standby".into();
                b.reason = "this controller replica is not the leader; the leader runs BGP".into();
            });
            tokio::select! {
                r = leader.wait_for(|l| *l) => if r.is_err() { break },
                _ = closing.wait_for(|c| *c) => break,
            }
            continue;
        }
        let (state, reason) = rt.reconcile(&controller).await;
        controller.with_bgp(|b| {
            b.state = state;
            b.reason = reason;
        });
        let rib_changed = {
            let event = async {
                match rt.events.as_mut() {
                    Some(rx) => {
                        let _ = rx.recv().await;
                        // Coalesce a burst (a full table arriving) into one reconcile.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        while rx.try_recv().is_ok() {}
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                changed = commits.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    commits.borrow_and_update();
                    false
                }
                () = event => true,
                () = tokio::time::sleep(TICK) => false,
                // A leadership that never changes (embedded store) has no sender left:
                // stop polling it rather than spin on its error.
                r = leader.changed(), if leader_can_change => {
                    if r.is_err() {
                        leader_can_change = false;
                    }
                    false
                }
                _ = closing.wait_for(|c| *c) => break,
            }
        };
        if rib_changed {
            rt.imports_from = None;
        }
    }
    rt.stop().await;
    controller.with_bgp(|b| {
        b.speaker = None;
        b.state = "disabled".into();
        b.reason = "the controller is shutting down".into();
    });
}

#[cfg(test)]
mod tests;
