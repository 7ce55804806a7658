//! weft's IP address management: which pod, service or node interface gets which
//! address, and which virtual network gets which VXLAN VNI.
//!
//! Data flow: the translator, turning Kubernetes objects into derived network objects,
//! calls a [`Pool`] per IPAM (`k8s-pod-ipam`, `k8s-service-ipam`, `k8s-ip-fabric-ipam`,
//! or a network's own) to give each interface an address: [`Pool::allocate`] for pods,
//! [`Pool::reserve`] for addresses Kubernetes already chose (a Service's ClusterIP) and
//! [`Pool::release`] when the object goes away. The resulting addresses are written
//! onto the derived objects the store keeps. [`VniAllocator`] does the same for VNIs.
//!
//! The semantics are Tungsten Fabric's flat-subnet IPAM: every virtual network attached
//! to a pool draws from the same subnets (addresses are unique pool-wide), the last
//! usable address of a subnet is the [`gateway`] and the one below it the
//! [`dns_server`], and addresses are handed out downwards from there
//! (10.47.255.252, .251, … for 10.32.0.0/12) without immediately reusing released ones.
//!
//! The crate is pure and sans-IO: no storage, no async, no clock. That keeps every rule
//! unit-testable, and makes restart simple: the state is not persisted but rebuilt by
//! reserving the addresses and VNIs recorded on the stored objects.

mod error;
mod pool;
mod ranges;
mod vni;

pub use error::{IpamError, ReservedKind};
pub use pool::{Pool, dns_server, gateway};
pub use vni::{VNI_MAX, VniAllocator};
