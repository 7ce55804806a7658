//! Kernel work for an attachment: the veth pair, its host end (name, alias, sysctls)
//! and its pod end (MAC, addresses, routes), plus the look-ups CHECK and GC need.
//!
//! Host-side functions take an rtnetlink handle opened in the host namespace; pod-side
//! ones a handle opened inside the pod's namespace (see [`crate::netns`]).

use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Prefix of every host-side veth weft creates.
pub const HOST_IF_PREFIX: &str = "weft";

/// Prefix of the ifalias weft stamps on its host veths: `weft:<containerId>:<ifName>`.
pub const HOST_ALIAS_PREFIX: &str = "weft:";

/// A kernel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
    /// A file (sysctl) could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kernel's state is not what was expected.
    #[error("{0}")]
    Unexpected(String),
}

impl KernelError {
    /// The positive errno of a netlink error, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Netlink { source, .. } => errno(source),
            _ => None,
        }
    }
}

/// The positive errno carried by an rtnetlink error.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Netlink { what, source }
}

/// The host end's name for an attachment: `weft` + the first 10 hex digits of an FNV-1a
/// hash of `containerId` and `ifName` (14 characters, within Linux's 15). Stable, so DEL
/// finds it again without any state file.
pub fn host_if_name(container_id: &str, if_name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in container_id.bytes().chain([0u8]).chain(if_name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{HOST_IF_PREFIX}{:010x}", hash >> 24)
}

/// The ifalias recording which attachment a host veth belongs to (read back by GC).
pub fn host_if_alias(container_id: &str, if_name: &str) -> String {
    format!("{HOST_ALIAS_PREFIX}{container_id}:{if_name}")
}

/// Splits an alias written by [`host_if_alias`] into `(containerId, ifName)`.
pub fn parse_host_if_alias(alias: &str) -> Option<(&str, &str)> {
    let rest = alias.strip_prefix(HOST_ALIAS_PREFIX)?;
    // Interface names cannot contain ':', container ids (per the spec) cannot either.
    let (cid, ifname) = rest.rsplit_once(':')?;
    (!cid.is_empty() && !ifname.is_empty()).then_some((cid, ifname))
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `xx:xx:xx:xx:xx:xx` (either case).
    pub fn parse(s: &str) -> Option<Mac> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in &mut out {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *slot = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(out))
    }

    fn from_bytes(b: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(b).ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// What is known about a link after a look-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MAC, if it has one.
    pub mac: Option<Mac>,
    /// Administratively up.
    pub up: bool,
    /// ifalias, if set.
    pub alias: Option<String>,
    /// `veth`, `vxlan`, … when the kernel says.
    pub is_veth: bool,
    /// MTU.
    pub mtu: Option<u32>,
}

impl LinkState {
    fn from_message(msg: &LinkMessage) -> LinkState {
        let mut st = LinkState {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            alias: None,
            is_veth: false,
            mtu: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => st.name = n.clone(),
                LinkAttribute::Address(a) => st.mac = Mac::from_bytes(a),
                LinkAttribute::IfAlias(a) => st.alias = Some(a.clone()),
                LinkAttribute::Mtu(m) => st.mtu = Some(*m),
                LinkAttribute::LinkInfo(infos) => {
                    st.is_veth = infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                _ => {}
            }
        }
        st
    }
}

/// Looks a link up by name; `Ok(None)` when there is none.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkState>, KernelError> {
    let mut stream = handle.link().get().match_name(name).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(LinkState::from_message(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("looking up link {name}"))(e)),
    }
}

/// Every link in the namespace.
pub async fn all_links(handle: &Handle) -> Result<Vec<LinkState>, KernelError> {
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing links"))?;
    Ok(msgs.iter().map(LinkState::from_message).collect())
}

/// Deletes the link called `name`; `Ok(false)` when it did not exist. Deleting either
/// end of a veth deletes the pair.
pub async fn delete_link_by_name(handle: &Handle, name: &str) -> Result<bool, KernelError> {
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
        Err(e) => Err(nl(format!("deleting link {name}"))(e)),
    }
}

/// Creates the veth pair: `host_name` in the handle's namespace, and its peer born
/// directly inside the namespace `pod_netns` as `pod_if_name`, with `pod_mac` and `mtu`
/// on it (no temporary name, nothing to rename, no window where the peer sits on the
/// host).
pub async fn create_veth(
    handle: &Handle,
    host_name: &str,
    pod_if_name: &str,
    pod_netns: BorrowedFd<'_>,
    pod_mac: Option<Mac>,
    mtu: Option<u32>,
) -> Result<(), KernelError> {
    let mut peer = LinkUnspec::new_with_name(pod_if_name).setns_by_fd(pod_netns.as_raw_fd());
    if let Some(mac) = pod_mac {
        peer = peer.address(mac.0.to_vec());
    }
    if let Some(mtu) = mtu {
        peer = peer.mtu(mtu);
    }
    let mut builder = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    handle
        .link()
        .add(builder.build())
        .execute()
        .await
        .map_err(nl(format!(
            "creating veth {host_name} with peer {pod_if_name} in the pod namespace"
        )))
}

/// Host end: sets the alias, brings it up, and returns its state.
pub async fn configure_host_end(
    handle: &Handle,
    host_name: &str,
    alias: &str,
) -> Result<LinkState, KernelError> {
    let link = link_by_name(handle, host_name)
        .await?
        .ok_or_else(|| KernelError::Unexpected(format!("host veth {host_name} vanished after creation")))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).alias(alias).up().build())
        .execute()
        .await
        .map_err(nl(format!("setting alias and up on {host_name}")))?;
    link_by_name(handle, host_name)
        .await?
        .ok_or_else(|| KernelError::Unexpected(format!("host veth {host_name} vanished after configuration")))
}

/// Host end sysctls, written through `/proc/sys` from a thread in the host namespace:
/// `proxy_arp=1` (the host end answers the pod's ARP for its gateway and neighbours),
/// `proxy_delay=0` (answer at once), and IPv4 `forwarding=1` on the interface.
pub fn write_host_sysctls(host_name: &str) -> Result<(), KernelError> {
    for (path, value) in [
        (format!("/proc/sys/net/ipv4/conf/{host_name}/proxy_arp"), "1"),
        (format!("/proc/sys/net/ipv4/neigh/{host_name}/proxy_delay"), "0"),
        (format!("/proc/sys/net/ipv4/conf/{host_name}/forwarding"), "1"),
    ] {
        std::fs::write(&path, value).map_err(|source| KernelError::Io {
            what: format!("writing {value} to {path}"),
            source,
        })?;
    }
    Ok(())
}

/// Reads one of the host end's sysctls back (CHECK, tests).
pub fn read_host_sysctl(host_name: &str, key: &str) -> std::io::Result<String> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{host_name}/{key}"))
        .map(|s| s.trim().to_string())
}

/// What to configure on the pod end, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    /// Interface name in the pod.
    pub if_name: String,
    /// Addresses with prefix length.
    pub addresses: Vec<IpNet>,
    /// Routes (destination, optional gateway), default route first.
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
}

/// Pod end: brings the interface up, adds the addresses, a link-scope host route to any
/// gateway outside the interface's subnets (so e.g. a /32 address still reaches its
/// gateway), then the routes. Returns the interface's state.
pub async fn configure_pod_end(handle: &Handle, plan: &PodPlan) -> Result<LinkState, KernelError> {
    let name = &plan.if_name;
    let link = link_by_name(handle, name).await?.ok_or_else(|| {
        KernelError::Unexpected(format!("{name} not found in the pod namespace after creation"))
    })?;
    let index = link.index;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("bringing {name} up")))?;
    for addr in &plan.addresses {
        match handle
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(nl(format!("adding address {addr} to {name}"))(e)),
        }
    }
    let mut onlink_gateways: Vec<IpAddr> = Vec::new();
    for gw in plan.routes.iter().filter_map(|(_, gw)| *gw) {
        if !plan.addresses.iter().any(|a| a.contains(&gw)) && !onlink_gateways.contains(&gw) {
            onlink_gateways.push(gw);
        }
    }
    for gw in onlink_gateways {
        let host = IpNet::from(gw);
        let msg = route_message(host, None, index)?;
        add_route(
            handle,
            msg,
            &format!("adding link route to gateway {gw} on {name}"),
        )
        .await?;
    }
    for (dst, gw) in &plan.routes {
        let msg = route_message(*dst, *gw, index)?;
        let what = match gw {
            Some(gw) => format!("adding route {dst} via {gw} on {name}"),
            None => format!("adding route {dst} on {name}"),
        };
        add_route(handle, msg, &what).await?;
    }
    link_by_name(handle, name)
        .await?
        .ok_or_else(|| KernelError::Unexpected(format!("{name} vanished from the pod namespace")))
}

async fn add_route(handle: &Handle, msg: RouteMessage, what: &str) -> Result<(), KernelError> {
    match handle.route().add(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(nl(what.to_string())(e)),
    }
}

fn route_message(dst: IpNet, gw: Option<IpAddr>, oif: u32) -> Result<RouteMessage, KernelError> {
    let bad = |e: &dyn fmt::Display| KernelError::Unexpected(format!("route {dst}: {e}"));
    // A route through a gateway is universe scope; one straight out of the interface
    // is on-link (link scope).
    let scope = if gw.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .map_err(|e| bad(&e))?
        .output_interface(oif)
        .scope(scope);
    if let Some(gw) = gw {
        builder = builder.gateway(gw).map_err(|e| bad(&e))?;
    }
    Ok(builder.build())
}

/// The addresses on the link with index `index`.
pub async fn addresses_of(handle: &Handle, index: u32) -> Result<Vec<IpNet>, KernelError> {
    let msgs: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing addresses"))?;
    let mut out = Vec::new();
    for msg in msgs.iter().filter(|m| m.header.index == index) {
        let addr = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = addr
            && let Ok(net) = IpNet::new(ip, msg.header.prefix_len)
        {
            out.push(net);
        }
    }
    Ok(out)
}

/// The main table's routes (both families) as (destination, gateway, output index).
pub async fn main_routes(handle: &Handle) -> Result<Vec<(IpNet, Option<IpAddr>, Option<u32>)>, KernelError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut query = RouteMessageBuilder::<IpAddr>::new().build();
        query.header.address_family = family;
        let msgs: Vec<RouteMessage> = handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing routes"))?;
        for msg in msgs {
            let mut dst: Option<IpAddr> = None;
            let mut gw = None;
            let mut oif = None;
            let mut table = u32::from(msg.header.table);
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(a) => dst = route_addr(a),
                    RouteAttribute::Gateway(a) => gw = route_addr(a),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if table != u32::from(netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            let dst = dst.unwrap_or(match family {
                AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
                _ => IpAddr::from([0u8; 4]),
            });
            if let Ok(net) = IpNet::new(dst, msg.header.destination_prefix_length) {
                out.push((net, gw, oif));
            }
        }
    }
    Ok(out)
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_short_stable_and_distinct() {
        let a = host_if_name("0123456789abcdef", "eth0");
        assert_eq!(a, host_if_name("0123456789abcdef", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("weft") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, host_if_name("0123456789abcdef", "eth1"));
        assert_ne!(a, host_if_name("0123456789abcdee", "eth0"));
    }

    #[test]
    fn alias_round_trip() {
        let alias = host_if_alias("abc-1.2_3", "net1");
        assert_eq!(alias, "weft:abc-1.2_3:net1");
        assert_eq!(parse_host_if_alias(&alias), Some(("abc-1.2_3", "net1")));
        assert_eq!(parse_host_if_alias("weft:"), None);
        assert_eq!(parse_host_if_alias("other:a:b"), None);
    }

    #[test]
    fn mac_parse_and_print() {
        let m = Mac::parse("02:AB:cd:00:01:ff").unwrap();
        assert_eq!(m.to_string(), "02:ab:cd:00:01:ff");
        assert!(Mac::parse("02:ab:cd:00:01").is_none());
        assert!(Mac::parse("02:ab:cd:00:01:ff:00").is_none());
        assert!(Mac::parse("zz:ab:cd:00:01:ff").is_none());
    }
}
