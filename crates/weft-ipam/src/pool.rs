//! Flat-subnet address pools, allocated "from the end" like Tungsten Fabric.
//!
//! Layout of every subnet (10.32.0.0/12 as the example):
//!
//! | address          | role                                        |
//! |------------------|---------------------------------------------|
//! | 10.32.0.0        | network, reserved                           |
//! | 10.32.0.1 …      | assignable (reached last)                   |
//! | 10.47.255.252    | assignable, handed out first                |
//! | 10.47.255.253    | DNS server, reserved                        |
//! | 10.47.255.254    | gateway = last usable address, reserved     |
//! | 10.47.255.255    | broadcast (IPv4 only), reserved             |
//!
//! IPv6 subnets have no broadcast address, so the gateway is the subnet's last address
//! and the DNS server the one below it.
//!
//! Internally each subnet numbers its assignable addresses by *slot*: slot 0 is the
//! highest one (10.47.255.252), slot 1 the next one down, and so on. The pool walks
//! the subnets in the order given, each from slot 0 upwards (i.e. addresses downwards),
//! with a cursor that only moves forward and wraps after the last subnet. Only the
//! free slots are stored, as ranges ([`FreeRanges`]), so finding the next free address
//! is a logarithmic look-up however large the pool or however fragmented it gets.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::error::{IpamError, ReservedKind};
use crate::ranges::FreeRanges;

/// How many (address, owner) pairs a [`IpamError::SubnetInUse`] lists.
const SHOWN_OWNERS: usize = 5;

/// The gateway of `subnet`: its last usable address (10.47.255.254 for 10.32.0.0/12,
/// `x.y.z.254` for a /24; the last address for IPv6, which has no broadcast).
///
/// Works for any subnet, in a pool or not (a NetworkAttachmentDefinition's own subnet
/// follows the same rule). Host bits are ignored. `None` if the subnet is too small to
/// have a gateway distinct from its network/broadcast addresses (IPv4 /31, /32, IPv6 /128).
pub fn gateway(subnet: IpNet) -> Option<IpAddr> {
    let (v4, first, last) = bounds(subnet);
    let gw = if v4 { last.checked_sub(1)? } else { last };
    (gw > first).then(|| to_addr(v4, gw))
}

/// The DNS server address of `subnet`: the address just below the [`gateway`]
/// (10.47.255.253 for 10.32.0.0/12). The vRouter answers DNS on it.
///
/// `None` if the subnet is too small to have one (IPv4 /31, /32, IPv6 /127, /128).
pub fn dns_server(subnet: IpNet) -> Option<IpAddr> {
    let (v4, first, last) = bounds(subnet);
    let dns = if v4 {
        last.checked_sub(2)?
    } else {
        last.checked_sub(1)?
    };
    (dns > first).then(|| to_addr(v4, dns))
}

/// Family, first and last address of `net` (host bits ignored) as integers.
fn bounds(net: IpNet) -> (bool, u128, u128) {
    match net.trunc() {
        IpNet::V4(n) => (
            true,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Only ever called with values computed from a subnet of the same family, so an IPv4
/// value always fits in 32 bits.
fn to_addr(v4: bool, value: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

/// One subnet of a pool, with its reserved addresses and its free slots.
#[derive(Debug, Clone)]
struct Subnet {
    net: IpNet,
    v4: bool,
    /// Network address.
    first: u128,
    /// Last address (broadcast for IPv4, gateway for IPv6).
    last: u128,
    /// Highest assignable address = slot 0 (just below the DNS server).
    top: u128,
    /// Number of assignable addresses: `first + 1 ..= top`.
    hosts: u128,
    free: FreeRanges,
}

impl Subnet {
    /// Checks `net` and lays it out; all slots free.
    fn new(pool: &str, net: IpNet) -> Result<Self, IpamError> {
        if net.trunc() != net {
            return Err(IpamError::HostBitsSet {
                pool: pool.to_owned(),
                subnet: net,
                network: net.trunc(),
            });
        }
        let (v4, first, last) = bounds(net);
        // Reserved above the assignable range: gateway, DNS, and the broadcast for IPv4.
        let reserved_top = if v4 { 3 } else { 2 };
        let too_small = || IpamError::SubnetTooSmall {
            pool: pool.to_owned(),
            subnet: net,
        };
        let top = last.checked_sub(reserved_top).ok_or_else(too_small)?;
        if top <= first {
            return Err(too_small());
        }
        let hosts = top - first;
        Ok(Self {
            net,
            v4,
            first,
            last,
            top,
            hosts,
            free: FreeRanges::all(hosts),
        })
    }

    fn addr(&self, slot: u128) -> IpAddr {
        to_addr(self.v4, self.top - slot)
    }

    /// Network, broadcast, gateway or DNS, if `value` (inside this subnet) is one of them.
    fn reserved(&self, value: u128) -> Option<ReservedKind> {
        let gateway = if self.v4 { self.last - 1 } else { self.last };
        if value == self.first {
            Some(ReservedKind::Network)
        } else if self.v4 && value == self.last {
            Some(ReservedKind::Broadcast)
        } else if value == gateway {
            Some(ReservedKind::Gateway)
        } else if value == gateway - 1 {
            Some(ReservedKind::Dns)
        } else {
            None
        }
    }

    /// The slot of an address inside this subnet that is not reserved.
    fn slot(&self, value: u128) -> u128 {
        self.top - value
    }

    fn first_addr(&self) -> IpAddr {
        to_addr(self.v4, self.first)
    }

    fn last_addr(&self) -> IpAddr {
        to_addr(self.v4, self.last)
    }
}

/// Where the next allocation starts looking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    subnet: usize,
    slot: u128,
}

/// An IPAM pool: one or more subnets shared by every virtual network attached to it
/// (Tungsten Fabric's flat-subnet IPAM), so addresses are unique pool-wide.
///
/// Pure in-memory state. It is not persisted: after a restart the caller rebuilds it
/// by [`reserve`](Pool::reserve)-ing every address recorded on the stored objects.
#[derive(Debug, Clone)]
pub struct Pool {
    name: String,
    nets: Vec<IpNet>,
    subnets: Vec<Subnet>,
    owners: BTreeMap<IpAddr, String>,
    cursor: Cursor,
}

/// Validates a subnet list and lays every subnet out, all free.
fn layout(pool: &str, nets: &[IpNet]) -> Result<Vec<Subnet>, IpamError> {
    if nets.is_empty() {
        return Err(IpamError::NoSubnets {
            pool: pool.to_owned(),
        });
    }
    let subnets = nets
        .iter()
        .map(|&net| Subnet::new(pool, net))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[i + 1..] {
            if a.contains(&b.network()) || b.contains(&a.network()) {
                return Err(IpamError::OverlappingSubnets {
                    pool: pool.to_owned(),
                    first: *a,
                    second: *b,
                });
            }
        }
    }
    Ok(subnets)
}

impl Pool {
    /// A pool named `name` (e.g. `k8s-pod-ipam`) over `subnets`, all addresses free.
    ///
    /// Refuses an empty list, subnets with host bits set, overlapping subnets, and
    /// subnets too small to hold their reserved addresses plus one assignable address
    /// (IPv4 smaller than /29, IPv6 smaller than /126), naming the subnet.
    pub fn new(name: impl Into<String>, subnets: Vec<IpNet>) -> Result<Pool, IpamError> {
        let name = name.into();
        let laid_out = layout(&name, &subnets)?;
        Ok(Pool {
            name,
            nets: subnets,
            subnets: laid_out,
            owners: BTreeMap::new(),
            cursor: Cursor::default(),
        })
    }

    /// The pool's name, as used in error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's subnets, in allocation order.
    pub fn subnets(&self) -> &[IpNet] {
        &self.nets
    }

    /// The subnet of this pool that contains `ip` (reserved addresses included), so the
    /// caller can find the prefix length, [`gateway`] and [`dns_server`] for an interface.
    pub fn subnet_of(&self, ip: IpAddr) -> Option<IpNet> {
        self.find(ip).map(|(_, subnet)| subnet.net)
    }

    /// True if `ip` lies in any of the pool's subnets (reserved addresses included).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.find(ip).is_some()
    }

    fn find(&self, ip: IpAddr) -> Option<(usize, &Subnet)> {
        self.subnets
            .iter()
            .enumerate()
            .find(|(_, subnet)| subnet.net.contains(&ip))
    }

    /// Assigns the next free address to `owner` (e.g. `Pod dev/web eth0`).
    ///
    /// Addresses are handed out from the top of each subnet downwards (10.47.255.252,
    /// .251, … for 10.32.0.0/12), subnet after subnet. The search continues from where
    /// the previous one stopped, so a just-released address is not handed out again
    /// (which could hit stale conntrack/ARP state) until the cursor has wrapped around
    /// past the bottom of the last subnet.
    pub fn allocate(&mut self, owner: &str) -> Result<IpAddr, IpamError> {
        let n = self.subnets.len();
        let Cursor { subnet: start, slot } = self.cursor;
        // From the cursor to the bottom of its subnet, then every subnet from its top,
        // ending with the cursor's own subnet again (its part above the cursor).
        let found = self
            .subnets
            .get(start)
            .and_then(|s| s.free.first_at_or_after(slot))
            .map(|slot| (start, slot))
            .or_else(|| {
                (1..=n).map(|k| (start + k) % n).find_map(|i| {
                    self.subnets
                        .get(i)
                        .and_then(|s| s.free.first_at_or_after(0))
                        .map(|slot| (i, slot))
                })
            });
        let Some((index, slot, subnet)) =
            found.and_then(|(index, slot)| self.subnets.get_mut(index).map(|subnet| (index, slot, subnet)))
        else {
            return Err(IpamError::Exhausted {
                pool: self.name.clone(),
                subnets: self.nets.clone(),
                in_use: self.owners.len() as u128,
            });
        };
        subnet.free.take(slot);
        let ip = subnet.addr(slot);
        self.cursor = if slot + 1 < subnet.hosts {
            Cursor {
                subnet: index,
                slot: slot + 1,
            }
        } else {
            Cursor {
                subnet: (index + 1) % n,
                slot: 0,
            }
        };
        self.owners.insert(ip, owner.to_owned());
        Ok(ip)
    }

    /// Assigns the specific address `ip` to `owner`: a Kubernetes-chosen ClusterIP, a
    /// user-requested address, or an allocation restored from storage after a restart.
    ///
    /// Idempotent: reserving an address already held by the same owner succeeds.
    /// Does not move the allocation cursor.
    pub fn reserve(&mut self, ip: IpAddr, owner: &str) -> Result<(), IpamError> {
        let pool = &self.name;
        let Some((index, subnet)) = self.find(ip) else {
            return Err(IpamError::OutOfRange {
                pool: pool.clone(),
                ip,
                subnets: self.nets.clone(),
            });
        };
        let value = to_int(ip);
        if let Some(what) = subnet.reserved(value) {
            return Err(IpamError::Reserved {
                pool: pool.clone(),
                ip,
                what,
            });
        }
        if let Some(current) = self.owners.get(&ip) {
            if current == owner {
                return Ok(());
            }
            return Err(IpamError::InUse {
                pool: pool.clone(),
                ip,
                owner: current.clone(),
            });
        }
        let slot = subnet.slot(value);
        if let Some(subnet) = self.subnets.get_mut(index) {
            subnet.free.take(slot);
        }
        self.owners.insert(ip, owner.to_owned());
        Ok(())
    }

    /// Frees `ip` and returns who held it; `None` (and no change) if it was not assigned.
    pub fn release(&mut self, ip: IpAddr) -> Option<String> {
        let owner = self.owners.remove(&ip)?;
        let value = to_int(ip);
        if let Some(subnet) = self.subnets.iter_mut().find(|subnet| subnet.net.contains(&ip)) {
            let slot = subnet.slot(value);
            subnet.free.give(slot);
        }
        Some(owner)
    }

    /// Who holds `ip`, if anyone.
    pub fn owner(&self, ip: IpAddr) -> Option<&str> {
        self.owners.get(&ip).map(String::as_str)
    }

    /// Number of assigned addresses.
    pub fn in_use(&self) -> usize {
        self.owners.len()
    }

    /// Number of assignable addresses (reserved ones excluded), e.g. 1,048,572 for a /12.
    /// Saturates at `u128::MAX` for absurdly large IPv6 pools.
    pub fn capacity(&self) -> u128 {
        self.subnets
            .iter()
            .fold(0u128, |total, subnet| total.saturating_add(subnet.hosts))
    }

    /// Every assignment as (address, owner), in address order (IPv4 before IPv6).
    pub fn allocations(&self) -> impl Iterator<Item = (IpAddr, &str)> {
        self.owners.iter().map(|(ip, owner)| (*ip, owner.as_str()))
    }

    /// Replaces the subnet list.
    ///
    /// Adding subnets, reordering them and removing or changing subnets without
    /// assignments is fine. Removing or changing (shrinking, growing, moving) a subnet
    /// that still has assignments is refused with [`IpamError::SubnetInUse`] naming the
    /// subnet and some owners: their addresses, gateway or DNS server would change under
    /// them. On error the pool is unchanged.
    pub fn resize(&mut self, new_subnets: Vec<IpNet>) -> Result<(), IpamError> {
        let mut laid_out = layout(&self.name, &new_subnets)?;
        for old in &self.subnets {
            if new_subnets.contains(&old.net) {
                continue;
            }
            let mut held = self.owners.range(old.first_addr()..=old.last_addr()).peekable();
            if held.peek().is_some() {
                let addresses = held
                    .by_ref()
                    .take(SHOWN_OWNERS)
                    .map(|(ip, owner)| (*ip, owner.clone()))
                    .collect::<Vec<_>>();
                let count = addresses.len() + held.count();
                return Err(IpamError::SubnetInUse {
                    pool: self.name.clone(),
                    removed_subnet: old.net,
                    addresses,
                    count,
                });
            }
        }
        // Kept subnets keep their free slots; every assignment lies in a kept subnet.
        let mut cursor = Cursor::default();
        for (index, new) in laid_out.iter_mut().enumerate() {
            if let Some((old_index, old)) = self
                .subnets
                .iter()
                .enumerate()
                .find(|(_, old)| old.net == new.net)
            {
                new.free = old.free.clone();
                if old_index == self.cursor.subnet {
                    cursor = Cursor {
                        subnet: index,
                        slot: self.cursor.slot,
                    };
                }
            }
        }
        self.nets = new_subnets;
        self.subnets = laid_out;
        self.cursor = cursor;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("bad test CIDR {s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
    }

    fn pool(subnets: &[&str]) -> Pool {
        Pool::new("k8s-pod-ipam", subnets.iter().map(|s| net(s)).collect())
            .unwrap_or_else(|e| panic!("test pool: {e}"))
    }

    fn alloc(pool: &mut Pool, owner: &str) -> IpAddr {
        pool.allocate(owner)
            .unwrap_or_else(|e| panic!("allocate for {owner}: {e}"))
    }

    #[test]
    fn first_addresses_count_down_from_252() {
        let mut p = pool(&["10.32.0.0/12"]);
        assert_eq!(alloc(&mut p, "Pod dev/web eth0"), ip("10.47.255.252"));
        assert_eq!(alloc(&mut p, "Pod dev/db eth0"), ip("10.47.255.251"));
        assert_eq!(alloc(&mut p, "Pod dev/cache eth0"), ip("10.47.255.250"));
        assert_eq!(p.in_use(), 3);
        assert_eq!(p.owner(ip("10.47.255.252")), Some("Pod dev/web eth0"));
        assert_eq!(p.owner(ip("10.47.255.249")), None);
    }

    #[test]
    fn gateway_and_dns_are_last_usable_addresses() {
        assert_eq!(gateway(net("10.32.0.0/12")), Some(ip("10.47.255.254")));
        assert_eq!(dns_server(net("10.32.0.0/12")), Some(ip("10.47.255.253")));
        assert_eq!(gateway(net("192.168.7.0/24")), Some(ip("192.168.7.254")));
        assert_eq!(dns_server(net("192.168.7.0/24")), Some(ip("192.168.7.253")));
        assert_eq!(gateway(net("fd00::/64")), Some(ip("fd00::ffff:ffff:ffff:ffff")));
        assert_eq!(
            dns_server(net("fd00::/64")),
            Some(ip("fd00::ffff:ffff:ffff:fffe"))
        );
        // Host bits are ignored.
        assert_eq!(gateway(net("10.32.1.7/12")), Some(ip("10.47.255.254")));
    }

    #[test]
    fn gateway_and_dns_of_tiny_subnets() {
        assert_eq!(gateway(net("10.0.0.0/30")), Some(ip("10.0.0.2")));
        assert_eq!(dns_server(net("10.0.0.0/30")), Some(ip("10.0.0.1")));
        assert_eq!(gateway(net("10.0.0.0/31")), None);
        assert_eq!(dns_server(net("10.0.0.0/31")), None);
        assert_eq!(gateway(net("10.0.0.0/32")), None);
        assert_eq!(gateway(net("fd00::/127")), Some(ip("fd00::1")));
        assert_eq!(dns_server(net("fd00::/127")), None);
        assert_eq!(gateway(net("fd00::/128")), None);
    }

    #[test]
    fn subnet_of_and_contains() {
        let p = pool(&["10.32.0.0/12", "fd00::/64"]);
        assert_eq!(p.subnet_of(ip("10.40.1.2")), Some(net("10.32.0.0/12")));
        assert_eq!(p.subnet_of(ip("10.47.255.254")), Some(net("10.32.0.0/12")));
        assert_eq!(p.subnet_of(ip("fd00::1")), Some(net("fd00::/64")));
        assert_eq!(p.subnet_of(ip("10.48.0.0")), None);
        assert!(p.contains(ip("10.32.0.0")));
        assert!(!p.contains(ip("192.168.0.1")));
        assert!(!p.contains(ip("fd01::1")));
        assert_eq!(p.name(), "k8s-pod-ipam");
        assert_eq!(p.subnets(), &[net("10.32.0.0/12"), net("fd00::/64")]);
    }

    #[test]
    fn capacity_excludes_reserved_addresses() {
        assert_eq!(pool(&["10.32.0.0/12"]).capacity(), 1_048_572);
        assert_eq!(pool(&["10.0.0.0/29"]).capacity(), 4);
        assert_eq!(pool(&["fd00::/64"]).capacity(), (1u128 << 64) - 3);
        assert_eq!(pool(&["10.0.0.0/29", "10.0.1.0/24"]).capacity(), 4 + 252);
        assert_eq!(pool(&["::/0"]).capacity(), u128::MAX - 2);
    }

    #[test]
    fn exhausting_a_29_hands_out_exactly_four_addresses() {
        let mut p = pool(&["10.0.0.0/29"]);
        let got: Vec<IpAddr> = (0..4)
            .map(|i| alloc(&mut p, &format!("Pod dev/p{i} eth0")))
            .collect();
        assert_eq!(
            got,
            vec![ip("10.0.0.4"), ip("10.0.0.3"), ip("10.0.0.2"), ip("10.0.0.1")]
        );
        let err = p.allocate("Pod dev/late eth0");
        assert_eq!(
            err,
            Err(IpamError::Exhausted {
                pool: "k8s-pod-ipam".into(),
                subnets: vec![net("10.0.0.0/29")],
                in_use: 4
            })
        );
        assert_eq!(p.in_use(), 4);
    }

    #[test]
    fn exhausted_message_names_pool_subnets_and_count() {
        let err = IpamError::Exhausted {
            pool: "k8s-pod-ipam".into(),
            subnets: vec![net("10.32.0.0/12")],
            in_use: 1_048_572,
        };
        assert_eq!(
            err.to_string(),
            "pool k8s-pod-ipam (10.32.0.0/12) has no free address (1048572 in use); \
             delete unused objects or add a subnet to the pool"
        );
    }

    #[test]
    fn released_address_is_not_reused_before_wrap_around() {
        let mut p = pool(&["10.32.0.0/12"]);
        let a = alloc(&mut p, "Pod dev/a eth0");
        alloc(&mut p, "Pod dev/b eth0");
        assert_eq!(p.release(a), Some("Pod dev/a eth0".to_owned()));
        assert_eq!(alloc(&mut p, "Pod dev/c eth0"), ip("10.47.255.250"));
        assert_eq!(p.owner(a), None);
    }

    #[test]
    fn wrap_around_reuses_freed_addresses_from_the_top() {
        let mut p = pool(&["10.0.0.0/29"]);
        for i in 0..4 {
            alloc(&mut p, &format!("p{i}"));
        }
        // Free .3 and .1 (cursor is at the bottom, so the next search wraps to the top).
        p.release(ip("10.0.0.3"));
        p.release(ip("10.0.0.1"));
        assert_eq!(alloc(&mut p, "q0"), ip("10.0.0.3"));
        p.release(ip("10.0.0.4"));
        // Cursor is below .3: .1 comes before the (wrapped-around) .4.
        assert_eq!(alloc(&mut p, "q1"), ip("10.0.0.1"));
        assert_eq!(alloc(&mut p, "q2"), ip("10.0.0.4"));
        assert!(p.allocate("q3").is_err());
    }

    #[test]
    fn wrap_around_happens_only_after_the_last_subnet() {
        let mut p = pool(&["10.0.0.0/29", "10.0.1.0/29"]);
        let first = alloc(&mut p, "a");
        assert_eq!(first, ip("10.0.0.4"));
        p.release(first);
        let rest: Vec<IpAddr> = (0..7).map(|i| alloc(&mut p, &format!("b{i}"))).collect();
        assert_eq!(
            rest,
            [
                "10.0.0.3", "10.0.0.2", "10.0.0.1", "10.0.1.4", "10.0.1.3", "10.0.1.2", "10.0.1.1"
            ]
            .map(ip)
            .to_vec()
        );
        // Only now does the freed 10.0.0.4 come back.
        assert_eq!(alloc(&mut p, "c"), ip("10.0.0.4"));
    }

    #[test]
    fn moves_to_the_next_subnet_when_one_is_full() {
        let mut p = pool(&["10.0.0.0/29", "fd00::/64"]);
        for i in 0..4 {
            alloc(&mut p, &format!("p{i}"));
        }
        assert_eq!(alloc(&mut p, "v6"), ip("fd00::ffff:ffff:ffff:fffd"));
    }

    #[test]
    fn allocation_skips_reserved_specific_addresses() {
        let mut p = pool(&["10.32.0.0/12"]);
        p.reserve(ip("10.47.255.251"), "Service default/kubernetes")
            .unwrap_or_else(|e| panic!("reserve: {e}"));
        assert_eq!(alloc(&mut p, "a"), ip("10.47.255.252"));
        assert_eq!(alloc(&mut p, "b"), ip("10.47.255.250"));
    }

    #[test]
    fn reserve_refuses_network_broadcast_gateway_and_dns() {
        let mut p = pool(&["10.32.0.0/12", "fd00::/64"]);
        for (addr, what) in [
            ("10.32.0.0", ReservedKind::Network),
            ("10.47.255.255", ReservedKind::Broadcast),
            ("10.47.255.254", ReservedKind::Gateway),
            ("10.47.255.253", ReservedKind::Dns),
            ("fd00::", ReservedKind::Network),
            ("fd00::ffff:ffff:ffff:ffff", ReservedKind::Gateway),
            ("fd00::ffff:ffff:ffff:fffe", ReservedKind::Dns),
        ] {
            assert_eq!(
                p.reserve(ip(addr), "x"),
                Err(IpamError::Reserved {
                    pool: "k8s-pod-ipam".into(),
                    ip: ip(addr),
                    what
                }),
                "{addr}"
            );
        }
        let message = p.reserve(ip("10.47.255.254"), "x").err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some(
                "address 10.47.255.254 is the gateway address of its subnet in pool k8s-pod-ipam \
                 and is never assigned; pick another address"
            )
        );
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn reserve_outside_the_pool_names_its_subnets() {
        let mut p = pool(&["10.32.0.0/12", "fd00::/64"]);
        let err = p.reserve(ip("10.96.0.10"), "Service kube-system/kube-dns");
        assert_eq!(
            err,
            Err(IpamError::OutOfRange {
                pool: "k8s-pod-ipam".into(),
                ip: ip("10.96.0.10"),
                subnets: vec![net("10.32.0.0/12"), net("fd00::/64")],
            })
        );
        assert_eq!(
            err.err().map(|e| e.to_string()).as_deref(),
            Some(
                "address 10.96.0.10 is not in pool k8s-pod-ipam (10.32.0.0/12, fd00::/64); \
                 pick an address inside one of its subnets"
            )
        );
    }

    #[test]
    fn reserve_in_use_names_the_current_owner() {
        let mut p = pool(&["10.32.0.0/12"]);
        let a = alloc(&mut p, "Pod dev/web eth0");
        let err = p.reserve(a, "Pod dev/other eth0");
        assert_eq!(
            err,
            Err(IpamError::InUse {
                pool: "k8s-pod-ipam".into(),
                ip: a,
                owner: "Pod dev/web eth0".into()
            })
        );
        assert!(
            err.err()
                .map(|e| e.to_string())
                .is_some_and(|m| m.contains("Pod dev/web eth0"))
        );
        assert_eq!(p.owner(a), Some("Pod dev/web eth0"));
    }

    #[test]
    fn reserve_by_the_same_owner_is_idempotent() {
        let mut p = pool(&["10.32.0.0/12"]);
        let a = ip("10.40.0.5");
        assert_eq!(p.reserve(a, "Pod dev/web eth0"), Ok(()));
        assert_eq!(p.reserve(a, "Pod dev/web eth0"), Ok(()));
        assert_eq!(p.in_use(), 1);
        let b = alloc(&mut p, "Pod dev/db eth0");
        assert_eq!(p.reserve(b, "Pod dev/db eth0"), Ok(()));
        assert_eq!(p.in_use(), 2);
    }

    #[test]
    fn release_returns_owner_and_is_a_no_op_when_free() {
        let mut p = pool(&["10.32.0.0/12"]);
        let a = alloc(&mut p, "Pod dev/web eth0");
        assert_eq!(p.release(a), Some("Pod dev/web eth0".to_owned()));
        assert_eq!(p.release(a), None);
        assert_eq!(p.release(ip("192.168.0.1")), None);
        assert_eq!(p.release(ip("10.47.255.254")), None);
        assert_eq!(p.in_use(), 0);
        // The released address can be reserved again by someone else.
        assert_eq!(p.reserve(a, "Pod dev/new eth0"), Ok(()));
    }

    #[test]
    fn allocations_lists_every_assignment_in_address_order() {
        let mut p = pool(&["10.32.0.0/12", "fd00::/64"]);
        alloc(&mut p, "a");
        alloc(&mut p, "b");
        p.reserve(ip("fd00::5"), "c").unwrap_or_else(|e| panic!("{e}"));
        let all: Vec<(IpAddr, &str)> = p.allocations().collect();
        assert_eq!(
            all,
            vec![
                (ip("10.47.255.251"), "b"),
                (ip("10.47.255.252"), "a"),
                (ip("fd00::5"), "c")
            ]
        );
    }

    #[test]
    fn new_rejects_bad_subnet_lists_naming_them() {
        let make = |subnets: &[&str]| Pool::new("p", subnets.iter().map(|s| net(s)).collect()).err();
        assert_eq!(make(&[]), Some(IpamError::NoSubnets { pool: "p".into() }));
        assert_eq!(
            make(&["10.32.0.0/12", "10.40.0.0/16"]),
            Some(IpamError::OverlappingSubnets {
                pool: "p".into(),
                first: net("10.32.0.0/12"),
                second: net("10.40.0.0/16")
            })
        );
        assert!(matches!(
            make(&["10.0.0.0/24", "10.0.0.0/24"]),
            Some(IpamError::OverlappingSubnets { .. })
        ));
        assert_eq!(
            make(&["10.0.0.0/30"]),
            Some(IpamError::SubnetTooSmall {
                pool: "p".into(),
                subnet: net("10.0.0.0/30")
            })
        );
        assert!(matches!(
            make(&["10.0.0.0/32"]),
            Some(IpamError::SubnetTooSmall { .. })
        ));
        assert!(matches!(
            make(&["fd00::/127"]),
            Some(IpamError::SubnetTooSmall { .. })
        ));
        assert!(make(&["fd00::/126"]).is_none());
        assert!(make(&["10.0.0.0/29"]).is_none());
        assert_eq!(
            make(&["10.32.1.0/12"]),
            Some(IpamError::HostBitsSet {
                pool: "p".into(),
                subnet: net("10.32.1.0/12"),
                network: net("10.32.0.0/12")
            })
        );
        let message = make(&["10.0.0.0/30"]).map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("10.0.0.0/30") && message.contains("/29"),
            "{message}"
        );
    }

    #[test]
    fn smallest_ipv6_subnet_has_one_address() {
        let mut p = pool(&["fd00::/126"]);
        assert_eq!(alloc(&mut p, "a"), ip("fd00::1"));
        assert!(p.allocate("b").is_err());
    }

    #[test]
    fn resize_is_refused_naming_the_subnet_and_owners() {
        let mut p = pool(&["10.32.0.0/12", "10.0.0.0/24"]);
        for i in 0..7 {
            alloc(&mut p, &format!("Pod dev/p{i} eth0"));
        }
        let before: Vec<(IpAddr, String)> = p.allocations().map(|(a, o)| (a, o.to_owned())).collect();
        let err = p.resize(vec![net("10.0.0.0/24")]);
        let Err(IpamError::SubnetInUse {
            pool,
            removed_subnet,
            addresses,
            count,
        }) = err.clone()
        else {
            panic!("expected SubnetInUse, got {err:?}");
        };
        assert_eq!(pool, "k8s-pod-ipam");
        assert_eq!(removed_subnet, net("10.32.0.0/12"));
        assert_eq!(count, 7);
        assert_eq!(addresses.len(), SHOWN_OWNERS);
        assert_eq!(addresses[0], (ip("10.47.255.246"), "Pod dev/p6 eth0".to_owned()));
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("10.32.0.0/12"), "{message}");
        assert!(message.contains("10.47.255.246 (Pod dev/p6 eth0)"), "{message}");
        assert!(message.contains("7 addresses are still assigned"), "{message}");
        assert!(message.contains("and 2 more"), "{message}");
        // Unchanged.
        assert_eq!(p.subnets(), &[net("10.32.0.0/12"), net("10.0.0.0/24")]);
        let after: Vec<(IpAddr, String)> = p.allocations().map(|(a, o)| (a, o.to_owned())).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn resize_refuses_shrinking_or_growing_a_used_subnet() {
        let mut p = pool(&["10.32.0.0/12"]);
        alloc(&mut p, "Pod dev/web eth0");
        for changed in ["10.32.0.0/13", "10.32.0.0/11"] {
            let err = p.resize(vec![net(changed)]);
            assert!(
                matches!(err, Err(IpamError::SubnetInUse { count: 1, .. })),
                "{changed}: {err:?}"
            );
            let message = err.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                message.contains("1 address is still assigned (10.47.255.252 (Pod dev/web eth0))"),
                "{message}"
            );
        }
    }

    #[test]
    fn resize_is_allowed_for_empty_subnets_and_additions() {
        let mut p = pool(&["10.0.0.0/29", "10.0.1.0/29"]);
        let a = alloc(&mut p, "a");
        assert_eq!(a, ip("10.0.0.4"));
        // Drop the empty second subnet, add two others.
        assert_eq!(
            p.resize(vec![net("10.0.2.0/29"), net("10.0.0.0/29"), net("fd00::/64")]),
            Ok(())
        );
        assert_eq!(p.owner(a), Some("a"));
        assert_eq!(p.capacity(), 4 + 4 + (1u128 << 64) - 3);
        // The cursor stays where it was in the kept subnet.
        assert_eq!(alloc(&mut p, "b"), ip("10.0.0.3"));
        assert_eq!(
            p.reserve(a, "other")
                .err()
                .map(|e| matches!(e, IpamError::InUse { .. })),
            Some(true)
        );
        // Removing a subnet after releasing its addresses works.
        p.release(a);
        p.release(ip("10.0.0.3"));
        assert_eq!(p.resize(vec![net("10.0.2.0/29")]), Ok(()));
        assert_eq!(p.in_use(), 0);
        assert_eq!(alloc(&mut p, "c"), ip("10.0.2.4"));
        // Invalid new lists are refused and leave the pool alone.
        assert!(matches!(p.resize(vec![]), Err(IpamError::NoSubnets { .. })));
        assert_eq!(p.subnets(), &[net("10.0.2.0/29")]);
    }

    #[test]
    fn ipv6_64_allocation_works() {
        let mut p = pool(&["fd00:10:32::/64"]);
        assert_eq!(alloc(&mut p, "a"), ip("fd00:10:32:0:ffff:ffff:ffff:fffd"));
        assert_eq!(alloc(&mut p, "b"), ip("fd00:10:32:0:ffff:ffff:ffff:fffc"));
        assert_eq!(p.reserve(ip("fd00:10:32::1"), "c"), Ok(()));
        assert_eq!(
            p.release(ip("fd00:10:32:0:ffff:ffff:ffff:fffd")),
            Some("a".to_owned())
        );
        assert_eq!(alloc(&mut p, "d"), ip("fd00:10:32:0:ffff:ffff:ffff:fffb"));
        assert_eq!(p.in_use(), 3);
    }

    #[test]
    fn many_allocations_from_a_12_stay_unique_and_descending() {
        let mut p = pool(&["10.32.0.0/12"]);
        let mut previous = ip("10.47.255.253");
        for i in 0..100_000 {
            let next = alloc(&mut p, &format!("Pod dev/p{i} eth0"));
            assert!(next < previous, "{next} after {previous}");
            previous = next;
        }
        assert_eq!(p.in_use(), 100_000);
        assert_eq!(previous, ip("10.46.121.93"));
    }

    #[test]
    fn fragmented_pool_keeps_few_ranges_per_hole() {
        let mut p = pool(&["10.0.0.0/24"]);
        let all: Vec<IpAddr> = (0..252).map(|i| alloc(&mut p, &format!("p{i}"))).collect();
        for a in all.iter().step_by(2) {
            p.release(*a);
        }
        let holes = p.subnets.first().map(|s| s.free.holes());
        assert_eq!(holes, Some(126));
        // Wrap-around hands the freed addresses out again from the top.
        assert_eq!(alloc(&mut p, "x"), ip("10.0.0.252"));
        assert_eq!(alloc(&mut p, "y"), ip("10.0.0.250"));
    }
}
