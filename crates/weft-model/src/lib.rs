//! weft's object model: the vocabulary shared by every other crate.
//!
//! Data flow: Kubernetes objects and weft's own kinds ([`input`]) are the *inputs*;
//! the translator turns them into *derived* objects ([`derived`]: projects, virtual
//! networks, interface attachments, service load balancers, firewall policies) that
//! the store keeps and the compiler and agents work from. [`naming`] holds Tungsten
//! Fabric's naming rules so every crate spells names the same way, and [`config`] the
//! one validated cluster configuration.
//!
//! Pure data: no I/O, no async.

pub mod admin_policy;
pub mod bgp;
pub mod chain;
pub mod config;
pub mod derived;
pub mod error;
pub mod ids;
pub mod input;
pub mod naming;
pub mod node;
pub mod resources;

pub use admin_policy::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};
pub use bgp::{BgpFamily, BgpPeer, BgpPeerRole, BgpPeerSpec, EffectiveBgpPeer, ImportedRoute};
pub use chain::{ChainFailure, ChainGuard, ChainHop, ServiceChain, ServiceChainRecord, ServiceChainSpec};
pub use config::{ClusterConfig, ClusterConfigSpec};
pub use derived::{
    DerivedKind, DerivedObject, FirewallPolicyRecord, FloatingIpRecord, InterfaceAttachment, NetworkKind,
    ObjectStatus, Project, ServicePortRecord, ServiceRecord, VirtualNetworkRecord,
};
pub use error::FieldError;
pub use ids::{MacAddr, Vni};
pub use input::{InputChange, InputKey, InputKind, InputObject};
pub use resources::{
    FipPoolRef, FloatingIp, FloatingIpPool, FloatingIpPoolSpec, FloatingIpSpec, NetworkAttachmentDefinition,
    NetworkAttachmentSpec, VirtualNetwork, VirtualNetworkSpec, WEFT_API_VERSION,
};
