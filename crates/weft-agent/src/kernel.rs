//! The kernel edge of the reconciler: [`dump`] reads what weft owns into a
//! [`KernelState`], [`apply`] executes [`KernelOp`]s, [`reconcile`] is dump → diff →
//! apply. Everything goes through the rtnetlink handle it is given, so it acts in the
//! network namespace that handle's socket was opened in; sysctls are read and written
//! through `/proc/sys` of the *calling thread's* namespace, so run these on a thread in
//! the same namespace as the handle (the agent's own, or a `weft_cni::netns` thread —
//! never `setns` a tokio worker).
//!
//! Deleting something already gone is not an error (`ENOENT`, `ESRCH`, `ENODEV`,
//! `EADDRNOTAVAIL`), nor is adding a rule or address that exists (`EEXIST`). A failing
//! op does not stop the others: [`apply`] collects every failure (netavark's teardown
//! style) and the next reconcile retries.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteIpTunnel, RouteLwTunnelEncap, RouteMessage, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{
    Handle, IpVersion, LinkBridge, LinkDummy, LinkMessageBuilder, LinkUnspec, LinkVxlan, RouteMessageBuilder,
};
use weft_cni::link::{KernelError, errno, link_by_name};
use weft_model::ids::MacAddr;
use weft_model::node::{VN_TABLE_BASE, VXLAN_DEVICE};

use crate::dataplane::{
    AddressSpec, GW_DEVICE, KernelOp, KernelState, LinkKind, LinkSpec, NeighbourSpec, OWNED_LINKS, RouteKey,
    RouteKind, RouteSpec, RuleSpec, Scope, TunnelEncap, VxlanSpec, conf_sysctl,
};

const ENOENT: i32 = 2;
const EOPNOTSUPP: i32 = 95;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;

/// The sysctls weft owns (paths under `/proc/sys`); [`dump`] reads only these.
pub fn owned_sysctls() -> Vec<String> {
    vec![
        "net/ipv4/ip_forward".to_string(),
        conf_sysctl("all", "rp_filter"),
        conf_sysctl("default", "rp_filter"),
        conf_sysctl(VXLAN_DEVICE, "rp_filter"),
        crate::dataplane::RESERVED_PORTS_SYSCTL.to_string(),
    ]
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Netlink { what, source }
}

/// Ok when the error says "already gone" (for deletes).
fn tolerate_gone(r: Result<(), rtnetlink::Error>, what: String) -> Result<(), KernelError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(ENOENT | ESRCH | ENODEV | EADDRNOTAVAIL)) => Ok(()),
        Err(e) => Err(KernelError::Netlink { what, source: e }),
    }
}

/// Ok when the error says "already there" (for adds without replace semantics).
fn tolerate_exists(r: Result<(), rtnetlink::Error>, what: String) -> Result<(), KernelError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(KernelError::Netlink { what, source: e }),
    }
}

fn mac_from(bytes: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

// ===== dump =====

/// Reads everything weft owns in the handle's namespace (see [`crate::dataplane`] for
/// the list): `sysctl`, `ip -d link show weft-vxlan|weft-gw`, `ip addr show dev weft-gw`,
/// `ip neigh show dev weft-vxlan`, `ip route show table all` (tables ≥ 10000),
/// `ip rule show` (pref 1000, tables ≥ 10000). IPv4 only.
pub async fn dump(handle: &Handle) -> Result<KernelState, KernelError> {
    let mut out = KernelState::default();

    for key in owned_sysctls() {
        // A missing file is a missing device (weft-vxlan not created yet): not an error.
        if let Ok(v) = std::fs::read_to_string(format!("/proc/sys/{key}")) {
            out.sysctls.insert(key, v.trim().to_string());
        }
    }

    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing links (ip link show)"))?;
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    let mut owned_index: BTreeMap<String, u32> = BTreeMap::new();
    for msg in &links {
        let spec = link_spec(msg);
        names.insert(msg.header.index, spec.name.clone());
        out.devices.insert(spec.name.clone());
        if OWNED_LINKS.contains(&spec.name.as_str()) {
            let mut spec = spec;
            if spec.name == GW_DEVICE && spec.kind == LinkKind::Other("bridge".to_string()) {
                // The stand-in for kernels without the dummy driver (see `add_link`).
                spec.kind = LinkKind::Dummy;
            }
            owned_index.insert(spec.name.clone(), msg.header.index);
            out.links.insert(spec.name.clone(), spec);
        }
    }

    // Every address: the ones on weft-gw are owned; the others only tell which device
    // holds which address (the underlay device, see `dataplane::bind_underlay`).
    let addrs: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing addresses (ip addr show)"))?;
    let gw_index = owned_index.get(GW_DEVICE).copied();
    for msg in &addrs {
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let ip = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        let Some(ip @ IpAddr::V4(_)) = ip else {
            continue;
        };
        if let Some(name) = names.get(&msg.header.index) {
            out.local_addresses.entry(ip).or_insert_with(|| name.clone());
        }
        if Some(msg.header.index) == gw_index
            && let Ok(addr) = IpNet::new(ip, msg.header.prefix_len)
        {
            out.addresses.insert(AddressSpec {
                dev: GW_DEVICE.to_string(),
                addr,
            });
        }
    }

    if let Some(&vx_index) = owned_index.get(VXLAN_DEVICE) {
        let neighs: Vec<NeighbourMessage> = handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing neighbours (ip neigh show)"))?;
        for msg in neighs.iter().filter(|m| m.header.ifindex == vx_index) {
            let mut ip = None;
            let mut mac = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(IpAddr::V4(*v4)),
                    NeighbourAttribute::LinkLayerAddress(b) => mac = mac_from(b),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.neighbours.insert(
                    (VXLAN_DEVICE.to_string(), ip),
                    NeighbourSpec {
                        dev: VXLAN_DEVICE.to_string(),
                        ip,
                        mac,
                        permanent: msg.header.state == NeighbourState::Permanent,
                    },
                );
            }
        }
    }

    let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let routes: Vec<RouteMessage> = handle
        .route()
        .get(query)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing routes (ip route show table all)"))?;
    for msg in &routes {
        if let Some(spec) = route_spec(msg, &names)
            && spec.key.table >= VN_TABLE_BASE
        {
            out.routes.insert(spec.key, spec);
        }
    }

    let rules: Vec<RuleMessage> = handle
        .rule()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing rules (ip rule show)"))?;
    for msg in &rules {
        let spec = rule_spec(msg);
        if spec.is_owned() {
            out.rules.insert(spec);
        }
    }
    Ok(out)
}

fn link_spec(msg: &LinkMessage) -> LinkSpec {
    let mut spec = LinkSpec {
        name: String::new(),
        kind: LinkKind::Other(String::new()),
        mac: None,
        mtu: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    let mut vxlan = VxlanSpec {
        local: None,
        port: 0,
        external: false,
        learning: true,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => spec.name = n.clone(),
            LinkAttribute::Address(a) => spec.mac = mac_from(a),
            LinkAttribute::Mtu(m) => spec.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::Vxlan) => spec.kind = LinkKind::Vxlan(vxlan.clone()),
                        LinkInfo::Kind(InfoKind::Dummy) => spec.kind = LinkKind::Dummy,
                        LinkInfo::Kind(other) => spec.kind = LinkKind::Other(other.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(data)) => {
                            for d in data {
                                match d {
                                    InfoVxlan::Local(v4) => vxlan.local = Some(IpAddr::V4(*v4)),
                                    InfoVxlan::Local6(v6) => vxlan.local = Some(IpAddr::V6(*v6)),
                                    InfoVxlan::Port(p) => vxlan.port = *p,
                                    InfoVxlan::CollectMetadata(b) => vxlan.external = *b,
                                    InfoVxlan::Learning(b) => vxlan.learning = *b,
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // Kind and data may come in either order.
    if let LinkKind::Vxlan(_) = spec.kind {
        spec.kind = LinkKind::Vxlan(vxlan);
    }
    spec
}

fn route_spec(msg: &RouteMessage, names: &BTreeMap<u32, String>) -> Option<RouteSpec> {
    let h = &msg.header;
    if h.address_family != AddressFamily::Inet {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut dst: Option<IpAddr> = None;
    let mut via = None;
    let mut oif = None;
    let mut metric = 0;
    let mut encap_id = None;
    let mut encap_dst = None;
    let mut other_encap = false;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = route_addr(a),
            RouteAttribute::Gateway(a) => via = route_addr(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Encap(encaps) => {
                for e in encaps {
                    match e {
                        RouteLwTunnelEncap::Ip(RouteIpTunnel::Id(id)) => encap_id = Some(*id),
                        RouteLwTunnelEncap::Ip(RouteIpTunnel::Destination(d)) => encap_dst = Some(*d),
                        RouteLwTunnelEncap::Ip(_) => {}
                        _ => other_encap = true,
                    }
                }
            }
            _ => {}
        }
    }
    let dst = IpNet::new(
        dst.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        h.destination_prefix_length,
    )
    .ok()?
    .trunc();
    let kind = match h.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Unreachable => RouteKind::Unreachable,
        other => RouteKind::Other(u8::from(other)),
    };
    let scope = match h.scope {
        RouteScope::Universe => Scope::Universe,
        RouteScope::Link => Scope::Link,
        other => Scope::Other(u8::from(other)),
    };
    let encap = match (encap_id, encap_dst) {
        (Some(id), Some(dst)) if !other_encap => Some(TunnelEncap { id, dst }),
        (None, None) if !other_encap => None,
        // An encapsulation weft would not write: make it differ from anything desired.
        _ => Some(TunnelEncap {
            id: u64::MAX,
            dst: Ipv4Addr::UNSPECIFIED,
        }),
    };
    let dev = match kind {
        RouteKind::Unicast => oif.map(|i| names.get(&i).cloned().unwrap_or_else(|| format!("if{i}"))),
        _ => None,
    };
    Some(RouteSpec {
        key: RouteKey { table, dst, metric },
        kind,
        scope,
        dev,
        via,
        onlink: h.flags.contains(RouteFlags::Onlink),
        encap,
    })
}

fn rule_spec(msg: &RuleMessage) -> RuleSpec {
    let h = &msg.header;
    let mut spec = RuleSpec {
        priority: 0,
        table: u32::from(h.table),
        iif: None,
        tun_id: None,
        dst: None,
        src: None,
        fwmark: None,
    };
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Priority(p) => spec.priority = *p,
            RuleAttribute::Table(t) => spec.table = *t,
            RuleAttribute::Iifname(n) => spec.iif = Some(n.clone()),
            RuleAttribute::TunId(id) => spec.tun_id = Some(*id),
            RuleAttribute::FwMark(m) => spec.fwmark = Some(*m),
            RuleAttribute::Destination(ip) => spec.dst = IpNet::new(*ip, h.dst_len).ok(),
            RuleAttribute::Source(ip) => spec.src = IpNet::new(*ip, h.src_len).ok(),
            _ => {}
        }
    }
    if h.action != RuleAction::ToTable {
        // `goto`, `unreachable` … are not lookups: never weft's.
        spec.table = 0;
    }
    spec
}

// ===== apply =====

/// One op that failed, and why.
#[derive(Debug)]
pub struct OpFailure {
    /// The op.
    pub op: KernelOp,
    /// The error.
    pub error: KernelError,
}

/// Executes `ops` in order. Every op is tried; the failures are returned (empty when all
/// succeeded).
pub async fn apply(handle: &Handle, ops: &[KernelOp]) -> Vec<OpFailure> {
    let mut failures = Vec::new();
    for op in ops {
        if let Err(error) = apply_one(handle, op).await {
            failures.push(OpFailure {
                op: op.clone(),
                error,
            });
        }
    }
    failures
}

async fn index_of(handle: &Handle, dev: &str) -> Result<u32, KernelError> {
    link_by_name(handle, dev)
        .await?
        .map(|l| l.index)
        .ok_or_else(|| KernelError::Unexpected(format!("device {dev} does not exist")))
}

/// Executes one op; its `Display` is the `ip` command it replaces.
pub async fn apply_one(handle: &Handle, op: &KernelOp) -> Result<(), KernelError> {
    let what = op.to_string();
    match op {
        KernelOp::SetSysctl { key, value } => set_sysctl(key, value),
        KernelOp::AddLink(spec) => add_link(handle, spec).await,
        KernelOp::SetLink { name, mac, mtu, up } => {
            let index = index_of(handle, name).await?;
            let mut b = LinkUnspec::new_with_index(index);
            if let Some(mac) = mac {
                b = b.address(mac.0.to_vec());
            }
            if let Some(mtu) = mtu {
                b = b.mtu(*mtu);
            }
            b = if *up { b.up() } else { b.down() };
            handle.link().set(b.build()).execute().await.map_err(nl(what))
        }
        KernelOp::DelLink { name } => weft_cni::link::delete_link_by_name(handle, name).await.map(drop),
        KernelOp::AddAddress(a) => {
            let index = index_of(handle, &a.dev).await?;
            let r = handle
                .address()
                .add(index, a.addr.addr(), a.addr.prefix_len())
                .execute()
                .await;
            tolerate_exists(r, what)
        }
        KernelOp::DelAddress(a) => del_address(handle, a, what).await,
        KernelOp::ReplaceNeighbour(n) => {
            let index = index_of(handle, &n.dev).await?;
            let mut req = handle.neighbours().add(index, n.ip).replace();
            if let Some(mac) = n.mac {
                req = req.link_layer_address(&mac.0);
            }
            let state = if n.permanent {
                NeighbourState::Permanent
            } else {
                NeighbourState::Reachable
            };
            req.state(state).execute().await.map_err(nl(what))
        }
        KernelOp::DelNeighbour { dev, ip } => {
            let Some(link) = link_by_name(handle, dev).await? else {
                return Ok(()); // the device is gone, and its neighbours with it
            };
            let mut msg = NeighbourMessage::default();
            msg.header.family = match ip {
                IpAddr::V4(_) => AddressFamily::Inet,
                IpAddr::V6(_) => AddressFamily::Inet6,
            };
            msg.header.ifindex = link.index;
            msg.attributes.push(NeighbourAttribute::Destination(match ip {
                IpAddr::V4(v4) => NeighbourAddress::Inet(*v4),
                IpAddr::V6(v6) => NeighbourAddress::Inet6(*v6),
            }));
            tolerate_gone(handle.neighbours().del(msg).execute().await, what)
        }
        KernelOp::ReplaceRoute(r) => {
            let msg = route_message(handle, r).await?;
            handle
                .route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(nl(what))
        }
        KernelOp::DelRoute(r) => {
            let msg = route_delete_message(&r.key)?;
            tolerate_gone(handle.route().del(msg).execute().await, what)
        }
        KernelOp::AddRule(r) => {
            let mut req = handle.rule().add();
            *req.message_mut() = rule_message(r)?;
            tolerate_exists(req.execute().await, what)
        }
        KernelOp::DelRule(r) => {
            let msg = rule_message(r)?;
            tolerate_gone(handle.rule().del(msg).execute().await, what)
        }
    }
}

/// `sysctl -w KEY=VALUE` through `/proc/sys` of the calling thread's namespace.
fn set_sysctl(key: &str, value: &str) -> Result<(), KernelError> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|source| KernelError::Io {
        what: format!("writing {value} to {path}"),
        source,
    })
}

/// `ip link add NAME [address MAC] [mtu N] type vxlan external dstport P nolearning
/// [local IP] up`, or `… type dummy up`.
///
/// Some kernels are built without the dummy driver (`Unknown device type`, i.e.
/// `EOPNOTSUPP`; the lab's is one). A dummy is then replaced by an empty bridge
/// (`ip link add NAME type bridge`): with no ports it forwards nothing and, like a
/// dummy, only carries local addresses; [`dump`] reports it as a dummy again.
async fn add_link(handle: &Handle, spec: &LinkSpec) -> Result<(), KernelError> {
    let what = KernelOp::AddLink(spec.clone()).to_string();
    fn common<T>(mut b: LinkMessageBuilder<T>, spec: &LinkSpec) -> LinkMessageBuilder<T> {
        if let Some(mac) = spec.mac {
            b = b.address(mac.0.to_vec());
        }
        if let Some(mtu) = spec.mtu {
            b = b.mtu(mtu);
        }
        if spec.up { b.up() } else { b }
    }
    let msg = match &spec.kind {
        LinkKind::Vxlan(v) => {
            let mut b = LinkMessageBuilder::<LinkVxlan>::new(&spec.name)
                .collect_metadata(v.external)
                .port(v.port)
                .learning(v.learning);
            match v.local {
                Some(IpAddr::V4(l)) => b = b.local(l),
                Some(IpAddr::V6(l)) => b = b.local6(l),
                None => {}
            }
            common(b, spec).build()
        }
        LinkKind::Dummy => {
            let msg = common(LinkDummy::new(&spec.name), spec).build();
            match handle.link().add(msg).execute().await {
                Err(e) if errno(&e) == Some(EOPNOTSUPP) => {
                    tracing::info!(
                        link = %spec.name,
                        "the kernel has no dummy driver; using an empty bridge instead"
                    );
                    let b = LinkMessageBuilder::<LinkBridge>::new(&spec.name);
                    common(b, spec).build()
                }
                other => return other.map_err(nl(what)),
            }
        }
        LinkKind::Other(kind) => {
            return Err(KernelError::Unexpected(format!(
                "cannot create {} of type {kind:?}",
                spec.name
            )));
        }
    };
    handle.link().add(msg).execute().await.map_err(nl(what))
}

/// `ip addr del ADDR dev DEV`: finds the kernel's own message for the address and
/// deletes that.
async fn del_address(handle: &Handle, a: &AddressSpec, what: String) -> Result<(), KernelError> {
    let Some(link) = link_by_name(handle, &a.dev).await? else {
        return Ok(());
    };
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .set_address_filter(a.addr.addr())
        .set_prefix_length_filter(a.addr.prefix_len())
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("looking up {} on {}", a.addr, a.dev)))?;
    for msg in msgs {
        tolerate_gone(handle.address().del(msg).execute().await, what.clone())?;
    }
    Ok(())
}

/// The message for `ip route replace …`.
async fn route_message(handle: &Handle, r: &RouteSpec) -> Result<RouteMessage, KernelError> {
    let IpNet::V4(dst) = r.key.dst else {
        return Err(KernelError::Unexpected(format!("{} is not IPv4", r.key.dst)));
    };
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(r.key.table)
        .destination_prefix(dst.network(), dst.prefix_len())
        .protocol(RouteProtocol::Static)
        .kind(match r.kind {
            RouteKind::Unicast => RouteType::Unicast,
            RouteKind::Unreachable => RouteType::Unreachable,
            RouteKind::Other(t) => RouteType::from(t),
        })
        .scope(match r.scope {
            Scope::Universe => RouteScope::Universe,
            Scope::Link => RouteScope::Link,
            Scope::Other(s) => RouteScope::from(s),
        });
    if r.key.metric != 0 {
        b = b.priority(r.key.metric);
    }
    if let Some(dev) = &r.dev {
        b = b.output_interface(index_of(handle, dev).await?);
    }
    match r.via {
        Some(IpAddr::V4(gw)) => b = b.gateway(gw),
        Some(IpAddr::V6(gw)) => {
            return Err(KernelError::Unexpected(format!(
                "IPv6 gateway {gw} for an IPv4 route"
            )));
        }
        None => {}
    }
    if r.onlink {
        b = b.onlink();
    }
    if let Some(e) = r.encap {
        b = b.encap_ip(vec![RouteIpTunnel::Id(e.id), RouteIpTunnel::Destination(e.dst)]);
    }
    Ok(b.build())
}

/// The message for `ip route del DST table T [metric M]`: only the key, so the kernel
/// deletes whatever route has that identity, whatever its next hop.
fn route_delete_message(key: &RouteKey) -> Result<RouteMessage, KernelError> {
    let IpNet::V4(dst) = key.dst else {
        return Err(KernelError::Unexpected(format!("{} is not IPv4", key.dst)));
    };
    let mut msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(key.table)
        .destination_prefix(dst.network(), dst.prefix_len())
        .build();
    msg.header.scope = RouteScope::NoWhere;
    msg.header.kind = RouteType::Unspec;
    msg.header.protocol = RouteProtocol::Unspec;
    if key.metric != 0 {
        msg.attributes.push(RouteAttribute::Priority(key.metric));
    }
    Ok(msg)
}

/// The message for `ip rule add|del pref P [from S] [to D] [iif DEV] [tun_id N]
/// [fwmark M] lookup T` (IPv4).
fn rule_message(r: &RuleSpec) -> Result<RuleMessage, KernelError> {
    let mut msg = RuleMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.action = RuleAction::ToTable;
    // Tables above 255 go in FRA_TABLE; the header's byte says RT_TABLE_UNSPEC then.
    if r.table > 255 {
        msg.attributes.push(RuleAttribute::Table(r.table));
    } else {
        msg.header.table = r.table as u8;
    }
    msg.attributes.push(RuleAttribute::Priority(r.priority));
    if let Some(iif) = &r.iif {
        msg.attributes.push(RuleAttribute::Iifname(iif.clone()));
    }
    if let Some(id) = r.tun_id {
        msg.attributes.push(RuleAttribute::TunId(id));
    }
    if let Some(mark) = r.fwmark {
        msg.attributes.push(RuleAttribute::FwMark(mark));
    }
    for (net, is_dst) in [(r.dst, true), (r.src, false)] {
        let Some(net) = net else { continue };
        if !net.addr().is_ipv4() {
            return Err(KernelError::Unexpected(format!("rule prefix {net} is not IPv4")));
        }
        if is_dst {
            msg.header.dst_len = net.prefix_len();
            msg.attributes.push(RuleAttribute::Destination(net.addr()));
        } else {
            msg.header.src_len = net.prefix_len();
            msg.attributes.push(RuleAttribute::Source(net.addr()));
        }
    }
    Ok(msg)
}

// ===== reconcile =====

/// What one reconcile pass did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// The ops the diff produced (all attempted); empty when the kernel already matched.
    pub ops: Vec<KernelOp>,
    /// The ops that failed.
    pub failures: Vec<OpFailure>,
    /// The nftables table was rewritten (or removed) in this pass.
    pub nft_changed: bool,
    /// Why the nftables table could not be brought in line, if it could not.
    pub nft_error: Option<String>,
}

impl ReconcileReport {
    /// True when every op succeeded (the nftables table included).
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty() && self.nft_error.is_none()
    }
}

/// One felix-style pass: [`dump`] what weft owns, [`crate::dataplane::diff`] it against
/// `desired`, [`apply`] the difference. A converged kernel gets no writes at all.
pub async fn reconcile(handle: &Handle, desired: &KernelState) -> Result<ReconcileReport, KernelError> {
    let actual = dump(handle).await?;
    let (mut desired, warning) = crate::dataplane::bind_underlay(desired, &actual);
    if let Some(w) = warning {
        tracing::debug!(warning = %w, "underlay device not bound");
    }
    crate::dataplane::reserve_ports(&mut desired, &actual);
    let ops = crate::dataplane::diff(&desired, &actual);
    for op in &ops {
        tracing::debug!(op = %op, "applying");
    }
    let failures = apply(handle, &ops).await;
    Ok(ReconcileReport {
        ops,
        failures,
        ..Default::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dataplane::RULE_PREF;

    #[test]
    fn rule_and_route_messages_carry_the_identity() {
        let rule = RuleSpec {
            priority: RULE_PREF,
            table: 10_001,
            iif: Some("weft-vxlan".into()),
            tun_id: Some(1),
            dst: Some("10.0.0.1/32".parse().unwrap()),
            src: None,
            fwmark: None,
        };
        let msg = rule_message(&rule).expect("ipv4 rule");
        assert_eq!(rule_spec(&msg), rule);

        let key = RouteKey {
            table: 10_001,
            dst: "10.0.0.0/24".parse().unwrap(),
            metric: 7,
        };
        let msg = route_delete_message(&key).expect("ipv4 route");
        let spec = route_spec(&msg, &BTreeMap::new()).expect("parses");
        assert_eq!(spec.key, key);
    }
}
