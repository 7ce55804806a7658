//! Property tests: random sequences of allocate/release/reserve checked against a
//! simple model written independently of the allocator's range bookkeeping.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use weft_ipam::{IpamError, Pool, VniAllocator, dns_server, gateway};

/// One step of a random workload. Indices pick from a candidate list, modulo its length.
#[derive(Debug, Clone)]
enum Op {
    Allocate(u8),
    Release(u16),
    Reserve(u16, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(Op::Allocate),
        2 => any::<u16>().prop_map(Op::Release),
        2 => (any::<u16>(), any::<u8>()).prop_map(|(i, o)| Op::Reserve(i, o)),
    ]
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("bad test CIDR {s}: {e}"))
}

fn owner(o: u8) -> String {
    format!("Pod ns/p{} eth0", o % 8)
}

/// True if `ip` is one of the addresses the TF layout reserves in `subnet`.
fn is_reserved(subnet: IpNet, ip: IpAddr) -> bool {
    ip == subnet.network()
        || (subnet.addr().is_ipv4() && ip == subnet.broadcast())
        || Some(ip) == gateway(subnet)
        || Some(ip) == dns_server(subnet)
}

/// Every address of `subnet`, first to last (small subnets only).
fn every_address(subnet: IpNet) -> Vec<IpAddr> {
    match subnet {
        IpNet::V4(n) => (u32::from(n.network())..=u32::from(n.broadcast()))
            .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
            .collect(),
        IpNet::V6(n) => (u128::from(n.network())..=u128::from(n.broadcast()))
            .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
            .collect(),
    }
}

/// The exact order TF's "allocate from the end" visits addresses in: each subnet from
/// its highest assignable address down, subnets in the order given.
fn ring(subnets: &[IpNet]) -> Vec<IpAddr> {
    subnets
        .iter()
        .flat_map(|&s| {
            every_address(s)
                .into_iter()
                .rev()
                .filter(move |&ip| !is_reserved(s, ip))
        })
        .collect()
}

/// Reference model: a map of assignments plus a cursor over the explicit ring.
struct Model {
    ring: Vec<IpAddr>,
    cursor: usize,
    owners: BTreeMap<IpAddr, String>,
}

impl Model {
    /// The next free address at or after the cursor, wrapping once.
    fn allocate(&mut self, owner: &str) -> Option<IpAddr> {
        let n = self.ring.len();
        let step = (0..n).find(|k| !self.owners.contains_key(&self.ring[(self.cursor + k) % n]))?;
        let index = (self.cursor + step) % n;
        let ip = self.ring[index];
        self.cursor = (index + 1) % n;
        self.owners.insert(ip, owner.to_owned());
        Some(ip)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Small pools (so exhaustion and wrap-around happen often): the pool behaves
    /// exactly like the model, address for address.
    #[test]
    fn small_pool_matches_the_model(ops in prop::collection::vec(op(), 1..300), layout in 0usize..3) {
        let subnets = match layout {
            0 => vec![net("10.0.0.0/29")],
            1 => vec![net("10.0.0.0/28"), net("10.0.1.0/29")],
            _ => vec![net("10.0.1.0/29"), net("fd00::/125"), net("10.0.0.0/28")],
        };
        let mut pool = Pool::new("test-ipam", subnets.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let ring = ring(&subnets);
        prop_assert_eq!(pool.capacity(), ring.len() as u128);
        let mut model = Model { ring, cursor: 0, owners: BTreeMap::new() };
        // Candidates for reserve/release: every address of every subnet plus some outside.
        let mut candidates: Vec<IpAddr> = subnets.iter().flat_map(|&s| every_address(s)).collect();
        candidates.extend(["10.0.2.1", "192.168.0.1", "fd01::1"].map(|s| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"))));

        for op in ops {
            match op {
                Op::Allocate(o) => {
                    let got = pool.allocate(&owner(o));
                    match model.allocate(&owner(o)) {
                        Some(expected) => prop_assert_eq!(got, Ok(expected)),
                        None => {
                            let is_exhausted = matches!(got, Err(IpamError::Exhausted { .. }));
                            prop_assert!(is_exhausted, "{:?}", got);
                        }
                    }
                }
                Op::Release(i) => {
                    let ip = candidates[usize::from(i) % candidates.len()];
                    prop_assert_eq!(pool.release(ip), model.owners.remove(&ip));
                }
                Op::Reserve(i, o) => {
                    let ip = candidates[usize::from(i) % candidates.len()];
                    let got = pool.reserve(ip, &owner(o));
                    match subnets.iter().find(|s| s.contains(&ip)) {
                        None => {
                            let out_of_range = matches!(got, Err(IpamError::OutOfRange { .. }));
                            prop_assert!(out_of_range, "{:?}", got);
                        }
                        Some(&s) if is_reserved(s, ip) => {
                            let reserved = matches!(got, Err(IpamError::Reserved { .. }));
                            prop_assert!(reserved, "{:?}", got);
                        }
                        Some(_) => match model.owners.get(&ip) {
                            Some(current) if *current == owner(o) => prop_assert_eq!(got, Ok(())),
                            Some(current) => prop_assert_eq!(
                                got,
                                Err(IpamError::InUse { pool: "test-ipam".into(), ip, owner: current.clone() })
                            ),
                            None => {
                                prop_assert_eq!(got, Ok(()));
                                model.owners.insert(ip, owner(o));
                            }
                        },
                    }
                }
            }
            prop_assert_eq!(pool.in_use(), model.owners.len());
        }
        let listed: Vec<(IpAddr, String)> = pool.allocations().map(|(ip, o)| (ip, o.to_owned())).collect();
        let expected: Vec<(IpAddr, String)> = model.owners.into_iter().collect();
        prop_assert_eq!(listed, expected);
    }

    /// Large pools (a /12 and an IPv6 /64): never a duplicate, never a reserved or
    /// foreign address, and `in_use` always equals the model's count.
    #[test]
    fn large_pool_never_duplicates(ops in prop::collection::vec(op(), 1..400)) {
        let subnets = vec![net("10.32.0.0/12"), net("fd00::/64")];
        let mut pool = Pool::new("k8s-pod-ipam", subnets.clone()).unwrap_or_else(|e| panic!("{e}"));
        let mut owners: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut handed_out: Vec<IpAddr> = Vec::new();
        let near_top = |i: u16| -> IpAddr {
            // Addresses near the top and bottom of both subnets, where allocation happens
            // and where the reserved addresses are.
            let k = u32::from(i % 64);
            match i % 4 {
                0 => IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 47, 255, 255)) - k)),
                1 => IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 32, 0, 0)) + k)),
                2 => IpAddr::V6(Ipv6Addr::from(u128::from("fd00::ffff:ffff:ffff:ffff".parse::<Ipv6Addr>().unwrap_or_else(|e| panic!("{e}"))) - u128::from(k))),
                _ => IpAddr::V4(Ipv4Addr::new(10, 48, 0, k as u8)),
            }
        };
        for op in ops {
            match op {
                Op::Allocate(o) => {
                    let ip = pool.allocate(&owner(o)).unwrap_or_else(|e| panic!("{e}"));
                    prop_assert!(!owners.contains_key(&ip), "duplicate {}", ip);
                    let subnet = pool.subnet_of(ip);
                    prop_assert!(subnet.is_some_and(|s| !is_reserved(s, ip)), "bad address {}", ip);
                    owners.insert(ip, owner(o));
                    handed_out.push(ip);
                }
                Op::Release(i) => {
                    let ip = if i % 2 == 0 && !handed_out.is_empty() {
                        handed_out[usize::from(i) % handed_out.len()]
                    } else {
                        near_top(i)
                    };
                    prop_assert_eq!(pool.release(ip), owners.remove(&ip));
                }
                Op::Reserve(i, o) => {
                    let ip = near_top(i);
                    let ok = pool.reserve(ip, &owner(o)).is_ok();
                    let expected = pool.subnet_of(ip).is_some_and(|s| !is_reserved(s, ip))
                        && owners.get(&ip).is_none_or(|current| *current == owner(o));
                    prop_assert_eq!(ok, expected, "reserve {}", ip);
                    if ok {
                        owners.insert(ip, owner(o));
                    }
                }
            }
            prop_assert_eq!(pool.in_use(), owners.len());
        }
    }

    /// VNIs: lowest free first, never a duplicate, counts agree with the model.
    #[test]
    fn vni_allocator_matches_the_model(ops in prop::collection::vec(op(), 1..200)) {
        let mut vnis = VniAllocator::new(1, 40).unwrap_or_else(|e| panic!("{e}"));
        let mut owners: BTreeMap<u32, String> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Allocate(o) => {
                    let expected = (1..=40).find(|v| !owners.contains_key(v));
                    let got = vnis.allocate(&owner(o));
                    prop_assert_eq!(got.as_ref().ok().copied(), expected);
                    if let Some(v) = expected {
                        owners.insert(v, owner(o));
                    }
                }
                Op::Release(i) => {
                    let v = u32::from(i % 45);
                    prop_assert_eq!(vnis.release(v), owners.remove(&v));
                }
                Op::Reserve(i, o) => {
                    let v = u32::from(i % 45);
                    let ok = vnis.reserve(v, &owner(o)).is_ok();
                    let expected = (1..=40).contains(&v) && owners.get(&v).is_none_or(|c| *c == owner(o));
                    prop_assert_eq!(ok, expected);
                    if ok {
                        owners.insert(v, owner(o));
                    }
                }
            }
            prop_assert_eq!(vnis.in_use() as usize, owners.len());
        }
    }
}
