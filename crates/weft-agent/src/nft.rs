//! The agent's nftables table, `inet weft`: distributed service load balancing (TF's
//! native ECMP load balancer, reference §7.1–7.3) and the guards the service routes
//! need. [`render`] is pure (a [`NodeState`] and the attachments in, the table as the
//! `nftables` crate's typed JSON schema out) and snapshot-tested; [`sync`] (with
//! [`live_table`], [`apply_document`], [`remove_table`]) is the I/O, through `nft -j` by
//! `nftables::helper`, in the calling thread's network namespace.
//!
//! # What the table does
//!
//! ```text
//! prerouting  raw (-300)   udp dport 4789 notrack            (tunnel packets: never tracked)
//!             nat (-100)   ip daddr . l4proto . th dport vmap { VIP:port → vip.<svc>, extIP:port → out.<svc> }
//!                          fib daddr type local  l4proto . th dport vmap { nodePort → out.<svc> }
//!             filter (0)   VIP/extIP/nodePort without ready backend → reject (TCP reset / ICMP port unreachable)
//!                          ct mark has SERVICE_CT_MARK: original → meta mark MARK_TO_BACKEND, reply → MARK_REPLY
//!                          ct mark has TUNNEL_CT_MARK: original → meta mark MARK_TO_POD
//! forward     filter (0)   ct state new, iifname → reply-only-<table>: daddr in the table's reply-only routes → reject
//! postrouting filter (0)   oifname weft-vxlan, meta mark is a service mark → meta mark set 0 (the tunnel would
//!                          copy it to the outer packet, whose route lookup must not see it)
//!             nat (100)    ct mark has SERVICE_CT_MARK, oifname weft-vxlan → snat to the node's service address
//! output      raw (-300)   udp dport 4789 notrack
//!
//! vip.<ns>.<svc>.<proto>.<port>:  iifname { client pods' veths } l4proto P dnat to <pick>
//!                                 iifname weft-vxlan l4proto P ct mark |= TUNNEL_CT_MARK
//!                                   dnat to <pick among local backends>
//!                                 (another cluster's traffic to a VIP exported over BGP)
//! out.<ns>.<svc>.<proto>.<port>:  iifname { client pods' veths } l4proto P dnat to <pick>
//!                                 (in-cluster clients of an external or floating IP)
//!                                 ct mark |= SERVICE_CT_MARK; l4proto P dnat to <pick>
//! <pick>: one backend → ip:port; several → numgen random mod N map { i : ip . port }
//!         (sessionAffinity ClientIP: jhash ip saddr mod N seed <per service port>)
//! ```
//!
//! # Packet paths (and why they keep the isolation matrix)
//!
//! * **ClusterIP**: the client pod's node DNATs (the chain only matches veths of pods in
//!   the service's client tables, so a pod of a network not connected to the service
//!   network is not translated: its VIP packet hits the table's `unreachable default`).
//!   The DNATed packet is routed by the client's table, which the compiler gave each
//!   backend's /32 (weft-routing `services`). The backend's reply is routed by the
//!   backend's table: its own network, or for a client of an unconnected network (an
//!   isolated pod using a default service) a route the compiler added *for replies
//!   only*. To keep that leak from opening the client's network, the forward chain
//!   rejects (ICMP admin-prohibited) every *new* connection from the table's pods to
//!   such a destination; replies are `established` and pass. The client's node
//!   un-DNATs the reply from its conntrack entry. The backend sees the client's address.
//! * **NodePort, external IPs** (traffic from outside the pod networks): DNAT plus a
//!   conntrack mark. Every packet of such a connection gets a packet mark from it, and
//!   two policy rules (preference [`MARK_RULE_PREF`], before the pods' rules) route the
//!   original direction by [`SERVICE_TABLE`](weft_model::node::SERVICE_TABLE) (the backends' /32s) and the reply
//!   direction by `main` (the underlay). A backend on another node gets the traffic
//!   SNATed to this node's service address ([`node_service_address`], 169.254.C.D),
//!   which the backend's table routes back here (a reply-only route), so the reply
//!   returns through the conntrack entry that holds the NAT. A local backend sees the
//!   real client address.
//! * Endpoint changes rewrite the table in one transaction; conntrack keeps the NAT of
//!   established connections, so connections to surviving backends are untouched (new
//!   ones use the new backend list). A connection to a removed backend is not flushed.
//!
//! Limits: IPv4 only; the node's own processes do not use VIPs (no output NAT hook);
//! a pod reaches a service's external IPs and floating IPs like its ClusterIP when the
//! service is one it may use (its client tables), but not its NodePorts (the replies
//! would be routed by `main`). A pod that reaches a VIP and is picked as its own backend
//! (hairpin) is SNATed to its gateway address in `nat-postrouting`, so it does not see
//! its own address as the source.
//!
//! # Ownership and applying
//!
//! weft owns exactly the table `inet weft` and never touches another table. The
//! renderer's anonymous sets are turned into named sets ([`incremental::name_sets`]),
//! so the rules name their sets and the elements live in the sets. A change is applied
//! in one `nft -j -f -` transaction either way:
//!
//! * only set elements differ from the table the agent applied last (a pod's labels
//!   or address changed, a peer appeared): `delete element` / `add element` for just
//!   those elements ([`incremental::element_diff`]); chains, rules and the other sets
//!   stay as they are;
//! * anything else: the whole table is rewritten (`add table; delete table; add table;
//!   …`), so the kernel switches from the old rules to the new ones atomically.
//!
//! The fingerprint of the rendered table is the comment of the one rule of the chain
//! [`FINGERPRINT_CHAIN`] (never jumped to; an element update flushes and refills it).
//! The agent applies only when the fingerprint of what it renders differs from the
//! last one it applied, and on start compares with the live table (`nft -j list table
//! inet weft`) so a restart rewrites nothing. With no service, policy (and no
//! reply-only route) the table is removed, so the node tracks no connections at all.
//!
//! # Policy changes and established connections
//!
//! A policy change decides *new* connections only: `ct state established,related
//! accept` comes before the policy dispatch, and neither an element update nor a table
//! rewrite touches conntrack, so a connection established while it was allowed keeps
//! working after it is no longer allowed (upstream Kubernetes leaves this undefined;
//! Calico and Cilium behave the same way). To cut such a flow, delete its conntrack
//! entry. A node without a table tracks nothing: a connection already running when
//! the node's first policy (or service) arrives is unknown to conntrack, so its next
//! packet toward an isolated pod counts as new and must be allowed by the policy.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use nftables::expr::{
    BinaryOperation, CT, Expression, Fib, FibFlag, FibResult, JHash, Map, Meta, MetaKey, NamedExpression,
    NgMode, Numgen, Payload, PayloadField, Range, SetItem, Verdict,
};
use nftables::helper::NftablesError;
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{
    JumpTarget, Mangle, Match, NAT, NATFamily, Operator, Reject, RejectType, Statement, VerdictMap,
};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook, RejectCode};
use weft_model::node::{
    AdminRule, AdminVerdict, L4Protocol, NodeBackend, NodeService, NodeServicePort, NodeState, PolicyRule,
    SNAT_TCP_PORTS, SNAT_UDP_PORTS, SessionAffinity, VN_TABLE_BASE, VXLAN_DEVICE, VXLAN_PORT,
    node_service_address,
};

use crate::attachment::Attachments;

/// Name of weft's table (family `inet`).
pub const TABLE: &str = "weft";

/// Conntrack mark bit of connections that came from outside the pod networks
/// (NodePort, external IPs).
pub const SERVICE_CT_MARK: u32 = 0x0100_0000;

/// Packet mark of the original direction of a [`SERVICE_CT_MARK`] connection: routed by
/// [`SERVICE_TABLE`](weft_model::node::SERVICE_TABLE).
pub const MARK_TO_BACKEND: u32 = 0x0100_0001;

/// Packet mark of the reply direction of a [`SERVICE_CT_MARK`] connection: routed by
/// the main table (the underlay).
pub const MARK_REPLY: u32 = 0x0100_0002;

/// Conntrack mark bit of another cluster's connections to a VIP, DNATed to a local
/// backend as they came out of the tunnel. Destination NAT drops the packet's tunnel
/// metadata (the kernel drops its route, which carried the VNI), so the `iif weft-vxlan
/// tun_id VNI` rule cannot match any more: every packet of such a connection gets
/// [`MARK_TO_POD`], whose rules route it by the backend's table.
pub const TUNNEL_CT_MARK: u32 = 0x0200_0000;

/// Packet mark of packets that NAT turned towards a local pod from outside its table:
/// replies to fabric-SNAT connections and to a pod's floating-IP connections (un-NATed
/// to the pod's address), new connections to a floating IP (DNATed to it), and another
/// cluster's connections to a VIP DNATed to a local backend ([`TUNNEL_CT_MARK`]). The main table
/// has no route to pods; `fwmark MARK_TO_POD to <pod>` rules route them by the pod's
/// table.
pub const MARK_TO_POD: u32 = 0x0100_0004;

/// Preference of the two `fwmark` policy rules (before the pods' rules at
/// [`crate::dataplane::RULE_PREF`]).
pub const MARK_RULE_PREF: u32 = 999;

/// Prefix of the fingerprint comment on the rule of [`FINGERPRINT_CHAIN`].
pub const FINGERPRINT_PREFIX: &str = "weft-nft ";

/// The chain (no hook, never jumped to) whose one rule carries the table's fingerprint
/// as a comment; kept apart so an element-only update changes no other chain.
pub const FINGERPRINT_CHAIN: &str = "fingerprint";

/// Priority of the raw chains (`priority raw`).
const PRIO_RAW: i32 = -300;
/// Priority of the DNAT chain (`priority dstnat`).
const PRIO_DSTNAT: i32 = -100;
/// Priority of the filter chains (`priority filter`).
const PRIO_FILTER: i32 = 0;
/// Priority of the SNAT chain (`priority srcnat`).
const PRIO_SRCNAT: i32 = 100;

/// The rendered table: its objects (chains, then rules) and their fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftTable {
    /// The table's chains and rules, in the order they are added.
    pub objects: Vec<NfListObject<'static>>,
    /// Fingerprint of `objects` (also in the first rule's comment).
    pub fingerprint: String,
}

impl NftTable {
    /// The transaction that replaces the live table with this one atomically:
    /// `add table` (so the delete cannot fail), `delete table`, `add table`, then the
    /// chains and rules.
    pub fn document(&self) -> Nftables<'static> {
        let mut objects = replace_prefix();
        objects.extend(
            self.objects
                .iter()
                .cloned()
                .map(|o| NfObject::CmdObject(NfCmd::Add(o))),
        );
        Nftables {
            objects: Cow::Owned(objects),
        }
    }

    /// The document as the JSON `nft -j -f -` reads (with [`fix_statements`] applied).
    pub fn to_json(&self) -> String {
        document_json(&self.document(), false)
    }

    /// [`NftTable::to_json`], indented; for snapshots and people.
    pub fn to_json_pretty(&self) -> String {
        document_json(&self.document(), true)
    }
}

/// Serialises a document for `nft -j`, with [`fix_statements`] applied.
pub fn document_json(doc: &Nftables<'_>, pretty: bool) -> String {
    let mut value = serde_json::to_value(doc).unwrap_or_default();
    fix_statements(&mut value);
    let text = if pretty {
        serde_json::to_string_pretty(&value)
    } else {
        serde_json::to_string(&value)
    };
    text.unwrap_or_default()
}

/// Works around the `nftables` crate (0.6.3) serialising the unit statement `notrack`
/// as the bare string `"notrack"`, which nft rejects ("Unexpected expr array element of
/// type string, expected object"): nft wants `{"notrack": null}`. Rewrites every such
/// element of a rule's `expr` array in place.
pub fn fix_statements(value: &mut serde_json::Value) {
    let Some(objects) = value.get_mut("nftables").and_then(|v| v.as_array_mut()) else {
        return;
    };
    for object in objects {
        let rule = match object.get_mut("add") {
            Some(add) => add.get_mut("rule"),
            None => object.get_mut("rule"),
        };
        let Some(expr) = rule
            .and_then(|r| r.get_mut("expr"))
            .and_then(|e| e.as_array_mut())
        else {
            continue;
        };
        for statement in expr {
            if statement.as_str() == Some("notrack") {
                *statement = serde_json::json!({ "notrack": null });
            }
        }
    }
}

fn table_object() -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    })
}

fn replace_prefix() -> Vec<NfObject<'static>> {
    vec![
        NfObject::CmdObject(NfCmd::Add(table_object())),
        NfObject::CmdObject(NfCmd::Delete(table_object())),
        NfObject::CmdObject(NfCmd::Add(table_object())),
    ]
}

/// The transaction that removes the table (and is a no-op when it is absent).
pub fn removal_document() -> Nftables<'static> {
    Nftables {
        objects: Cow::Owned(vec![
            NfObject::CmdObject(NfCmd::Add(table_object())),
            NfObject::CmdObject(NfCmd::Delete(table_object())),
        ]),
    }
}

// ===== expression helpers =====

fn string(s: impl Into<Cow<'static, str>>) -> Expression<'static> {
    Expression::String(s.into())
}

fn number(n: u32) -> Expression<'static> {
    Expression::Number(n)
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: protocol.into(),
        field: field.into(),
    })))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

fn concat(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(items))
}

fn set(items: Vec<SetItem<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(items))
}

fn fib_daddr_type() -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: [FibFlag::Daddr].into_iter().collect(),
    }))
}

fn matches(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    matches(left, Operator::EQ, right)
}

fn ct_mark_has(bit: u32) -> Statement<'static> {
    eq(
        Expression::BinaryOperation(Box::new(BinaryOperation::AND(ct("mark"), number(bit)))),
        number(bit),
    )
}

fn goto(chain: &str) -> Expression<'static> {
    Expression::Verdict(Verdict::Goto(JumpTarget {
        target: chain.to_string().into(),
    }))
}

fn jump(chain: &str) -> Expression<'static> {
    Expression::Verdict(Verdict::Jump(JumpTarget {
        target: chain.to_string().into(),
    }))
}

fn addr_expr(ip: Ipv4Addr) -> Expression<'static> {
    string(ip.to_string())
}

fn vip_key(ip: Ipv4Addr, proto: L4Protocol, port: u16) -> Expression<'static> {
    concat(vec![
        addr_expr(ip),
        string(proto.as_str()),
        number(u32::from(port)),
    ])
}

fn port_key(proto: L4Protocol, port: u16) -> Expression<'static> {
    concat(vec![string(proto.as_str()), number(u32::from(port))])
}

fn daddr_proto_port() -> Expression<'static> {
    concat(vec![
        payload("ip", "daddr"),
        meta(MetaKey::L4proto),
        payload("th", "dport"),
    ])
}

fn proto_port() -> Expression<'static> {
    concat(vec![meta(MetaKey::L4proto), payload("th", "dport")])
}

fn reject_tcp() -> Statement<'static> {
    Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None)))
}

fn reject_icmpx(code: RejectCode) -> Statement<'static> {
    Statement::Reject(Some(Reject::new(Some(RejectType::ICMPX), Some(code))))
}

/// 64-bit FNV-1a: a fingerprint that is the same for every build (std's hasher is not
/// promised to be).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

// ===== rendering =====

/// Chain of a service port, `<kind>.<namespace>.<name>.<proto>.<port>` (Kubernetes
/// names are DNS labels, so the dots are unambiguous).
fn service_chain(kind: &str, s: &NodeService, p: &NodeServicePort) -> String {
    format!(
        "{kind}.{}.{}.{}.{}",
        s.namespace,
        s.name,
        p.protocol.as_str(),
        p.port
    )
}

struct Builder {
    chains: Vec<NfListObject<'static>>,
    rules: Vec<NfListObject<'static>>,
    warnings: Vec<String>,
}

impl Builder {
    fn base_chain(&mut self, name: &str, kind: NfChainType, hook: NfHook, prio: i32) {
        self.chains.push(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: name.to_string().into(),
            _type: Some(kind),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Default::default()
        }));
    }

    fn chain(&mut self, name: &str) {
        self.chains.push(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: name.to_string().into(),
            ..Default::default()
        }));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>) {
        self.rules.push(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: TABLE.into(),
            chain: chain.to_string().into(),
            expr: Cow::Owned(expr),
            ..Default::default()
        }));
    }
}

/// The DNAT statement picking one of `backends` (all IPv4, at least one).
fn dnat(backends: &[(Ipv4Addr, u16)], affinity: SessionAffinity, seed: u32) -> Statement<'static> {
    if let [(ip, port)] = backends {
        return Statement::DNAT(Some(NAT {
            addr: Some(addr_expr(*ip)),
            family: Some(NATFamily::IP),
            port: Some(number(u32::from(*port))),
            flags: None,
        }));
    }
    let n = u32::try_from(backends.len()).unwrap_or(u32::MAX);
    let key = match affinity {
        SessionAffinity::None => Expression::Named(NamedExpression::Numgen(Numgen {
            mode: NgMode::Random,
            ng_mod: n,
            offset: None,
        })),
        SessionAffinity::ClientIp => Expression::Named(NamedExpression::JHash(JHash {
            hash_mod: n,
            offset: None,
            expr: Box::new(payload("ip", "saddr")),
            // An explicit seed: without one the kernel picks a random seed per rule, so
            // every rewrite of the table would move clients to other backends.
            seed: Some(seed),
        })),
    };
    let data = set(backends
        .iter()
        .zip(0u32..)
        .map(|((ip, port), i)| {
            SetItem::Mapping(number(i), concat(vec![addr_expr(*ip), number(u32::from(*port))]))
        })
        .collect());
    Statement::DNAT(Some(NAT {
        addr: Some(Expression::Named(NamedExpression::Map(Box::new(Map {
            key,
            data,
        })))),
        family: Some(NATFamily::IP),
        port: None,
        flags: None,
    }))
}

/// IPv4 backends of a port (others warned about).
fn ipv4_backends(key: &str, p: &NodeServicePort, warnings: &mut Vec<String>) -> Vec<(Ipv4Addr, u16)> {
    let mut out = Vec::new();
    for NodeBackend { ip, port, .. } in &p.backends {
        match ip {
            IpAddr::V4(v4) => out.push((*v4, *port)),
            IpAddr::V6(v6) => warnings.push(format!(
                "service {key} port {}: IPv6 backend {v6} skipped (IPv4 only)",
                p.port
            )),
        }
    }
    out
}

/// What `nat-prerouting` dispatches, before it is turned into rules: keys in a map, so
/// a duplicate (two services claiming one external IP and port) keeps the first.
#[derive(Default)]
struct Dispatch {
    by_address: BTreeMap<(Ipv4Addr, L4Protocol, u16), String>,
    by_node_port: BTreeMap<(L4Protocol, u16), String>,
    reject_address: BTreeSet<(Ipv4Addr, L4Protocol, u16)>,
    reject_node_port: BTreeSet<(L4Protocol, u16)>,
}

/// Renders the table for `state` with the pods' `attachments` (pure). `None` when the
/// node needs no table (no service, no reply-only route): then it should be absent.
/// The warnings name what could not be rendered.
pub fn render(state: &NodeState, attachments: &Attachments) -> (Option<NftTable>, Vec<String>) {
    let mut warnings = Vec::new();
    // Host veths of the attached pod interfaces, per table.
    let mut veths_by_table: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for iface in &state.interfaces {
        if let Some(att) = attachments.get(&iface.key())
            && iface.table >= VN_TABLE_BASE
            && iface.ip.is_ipv4()
        {
            veths_by_table
                .entry(iface.table)
                .or_default()
                .insert(att.host_if_name.clone());
        }
    }
    // Reply-only and service-only destinations per table.
    let mut reply_only: BTreeMap<u32, BTreeSet<ipnet::IpNet>> = BTreeMap::new();
    let mut service_only: BTreeMap<u32, BTreeSet<ipnet::IpNet>> = BTreeMap::new();
    for n in &state.networks {
        for r in n.routes.iter().filter(|r| r.prefix.addr().is_ipv4()) {
            if r.reply_only {
                reply_only.entry(n.table).or_default().insert(r.prefix.trunc());
            } else if r.service_only {
                service_only.entry(n.table).or_default().insert(r.prefix.trunc());
            }
        }
    }
    // Reaching the outside: attached pods of tables that let traffic out, with their
    // floating IPs (1:1 NAT) or, in fabric-SNAT networks, the node's address; pods of
    // ip-fabric-forwarding networks leave with their own address (no NAT, not confined).
    let outside_of = |table: u32| {
        state
            .networks
            .iter()
            .find(|n| n.table == table)
            .and_then(|n| n.outside.as_ref().map(|o| (o, n.ip_fabric_forwarding)))
    };
    let mut snat_sources: Vec<Ipv4Addr> = Vec::new();
    let mut floating: Vec<(Ipv4Addr, Vec<Ipv4Addr>)> = Vec::new();
    let mut confined: Vec<Ipv4Addr> = Vec::new();
    for i in &state.interfaces {
        let (Some((outside, fabric_forwarding)), Some(_), IpAddr::V4(ip)) =
            (outside_of(i.table), attachments.get(&i.key()), i.ip)
        else {
            continue;
        };
        let fips: Vec<Ipv4Addr> = i
            .floating_ips
            .iter()
            .filter_map(|f| match f {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        if !fips.is_empty() {
            floating.push((ip, fips));
        } else if outside.fabric_snat {
            snat_sources.push(ip);
        } else if !fabric_forwarding {
            confined.push(ip);
        }
    }
    let to_pods: Vec<Ipv4Addr> = snat_sources
        .iter()
        .copied()
        .chain(floating.iter().map(|(ip, _)| *ip))
        .collect();
    let chain_guarded = state
        .networks
        .iter()
        .any(|n| n.chain_guards.iter().any(|g| !g.ports.is_empty()));
    if state.services.is_empty()
        && reply_only.is_empty()
        && service_only.is_empty()
        && state.policies.is_empty()
        && to_pods.is_empty()
        && !chain_guarded
    {
        return (None, warnings);
    }

    let mut b = Builder {
        chains: Vec::new(),
        rules: Vec::new(),
        warnings: Vec::new(),
    };
    b.base_chain(
        "raw-prerouting",
        NfChainType::Filter,
        NfHook::Prerouting,
        PRIO_RAW,
    );
    b.base_chain("raw-output", NfChainType::Filter, NfHook::Output, PRIO_RAW);
    b.base_chain(
        "nat-prerouting",
        NfChainType::NAT,
        NfHook::Prerouting,
        PRIO_DSTNAT,
    );
    b.base_chain(
        "filter-prerouting",
        NfChainType::Filter,
        NfHook::Prerouting,
        PRIO_FILTER,
    );
    b.base_chain(
        "filter-forward",
        NfChainType::Filter,
        NfHook::Forward,
        PRIO_FILTER,
    );
    b.base_chain(
        "filter-postrouting",
        NfChainType::Filter,
        NfHook::Postrouting,
        PRIO_FILTER,
    );
    b.base_chain(
        "nat-postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        PRIO_SRCNAT,
    );

    // Tunnel packets are never tracked (product.md: once any ct/nat rule exists).
    let notrack = || {
        vec![
            eq(payload("udp", "dport"), number(u32::from(VXLAN_PORT))),
            Statement::Notrack,
        ]
    };
    b.rule("raw-prerouting", notrack());
    b.rule("raw-output", notrack());

    // Services.
    let mut dispatch = Dispatch::default();
    let mut from_outside = false;
    let mut from_tunnel = false;
    for s in &state.services {
        let key = s.key();
        let vip = match s.vip {
            Some(IpAddr::V4(v)) => Some(v),
            Some(IpAddr::V6(v)) => {
                b.warnings
                    .push(format!("service {key}: IPv6 VIP {v} skipped (IPv4 only)"));
                None
            }
            None => None,
        };
        let external: Vec<Ipv4Addr> = s
            .external_ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v) => Some(*v),
                IpAddr::V6(v) => {
                    b.warnings
                        .push(format!("service {key}: IPv6 external IP {v} skipped (IPv4 only)"));
                    None
                }
            })
            .collect();
        let clients: BTreeSet<String> = s
            .client_tables
            .iter()
            .filter_map(|t| veths_by_table.get(t))
            .flatten()
            .cloned()
            .collect();
        for p in &s.ports {
            let backends = ipv4_backends(&key, p, &mut b.warnings);
            let seed = (fnv1a64(format!("{key} {} {}", p.protocol.as_str(), p.port).as_bytes()) & 0xffff_ffff)
                as u32;
            let outside = !external.is_empty() || p.node_port.is_some();
            from_outside |= outside;
            if backends.is_empty() {
                if let Some(v) = vip {
                    dispatch.reject_address.insert((v, p.protocol, p.port));
                }
                for e in &external {
                    dispatch.reject_address.insert((*e, p.protocol, p.port));
                }
                if let Some(np) = p.node_port {
                    dispatch.reject_node_port.insert((p.protocol, np));
                }
                continue;
            }
            let pick = dnat(&backends, s.affinity, seed);
            // Another cluster reaches the VIP through the tunnel (it was exported over
            // BGP with this node as next hop): only local backends, so the reply leaves
            // through this node's conntrack entry and gets the VIP back as its source.
            let local: Vec<(Ipv4Addr, u16)> = p
                .backends
                .iter()
                .filter(|b| b.node.as_deref() == Some(state.node.as_str()))
                .filter_map(|b| match b.ip {
                    IpAddr::V4(v4) => Some((v4, b.port)),
                    IpAddr::V6(_) => None,
                })
                .collect();
            if let Some(v) = vip
                && (!clients.is_empty() || !local.is_empty())
            {
                let chain = service_chain("vip", s, p);
                b.chain(&chain);
                if !clients.is_empty() {
                    b.rule(&chain, from_clients(&clients, p.protocol, pick.clone()));
                }
                if !local.is_empty() {
                    from_tunnel = true;
                    b.rule(
                        &chain,
                        vec![
                            eq(meta(MetaKey::Iifname), string(VXLAN_DEVICE)),
                            eq(meta(MetaKey::L4proto), string(p.protocol.as_str())),
                            Statement::Mangle(Mangle {
                                key: ct("mark"),
                                value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
                                    ct("mark"),
                                    number(TUNNEL_CT_MARK),
                                ]))),
                            }),
                            dnat(&local, s.affinity, seed),
                        ],
                    );
                }
                claim(
                    &mut dispatch.by_address,
                    (v, p.protocol, p.port),
                    chain,
                    &key,
                    &mut b.warnings,
                );
            }
            if outside {
                let chain = service_chain("out", s, p);
                b.chain(&chain);
                if !clients.is_empty() {
                    // The service's own client pods reaching its external IP or
                    // floating IP: translated as for the VIP (routed by their table,
                    // replies back the same way), as kube-proxy does for in-cluster
                    // clients of an external or load-balancer address.
                    b.rule(&chain, from_clients(&clients, p.protocol, pick.clone()));
                }
                b.rule(
                    &chain,
                    vec![
                        Statement::Mangle(Mangle {
                            key: ct("mark"),
                            value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
                                ct("mark"),
                                number(SERVICE_CT_MARK),
                            ]))),
                        }),
                        eq(meta(MetaKey::L4proto), string(p.protocol.as_str())),
                        pick,
                    ],
                );
                for e in &external {
                    claim(
                        &mut dispatch.by_address,
                        (*e, p.protocol, p.port),
                        chain.clone(),
                        &key,
                        &mut b.warnings,
                    );
                }
                if let Some(np) = p.node_port {
                    claim(
                        &mut dispatch.by_node_port,
                        (p.protocol, np),
                        chain,
                        &key,
                        &mut b.warnings,
                    );
                }
            }
        }
    }

    if !dispatch.by_address.is_empty() {
        let items = dispatch
            .by_address
            .iter()
            .map(|((ip, proto, port), chain)| SetItem::Mapping(vip_key(*ip, *proto, *port), goto(chain)))
            .collect();
        b.rule(
            "nat-prerouting",
            vec![Statement::VerdictMap(VerdictMap {
                key: daddr_proto_port(),
                data: set(items),
            })],
        );
    }
    if !dispatch.by_node_port.is_empty() {
        let items = dispatch
            .by_node_port
            .iter()
            .map(|((proto, port), chain)| SetItem::Mapping(port_key(*proto, *port), goto(chain)))
            .collect();
        b.rule(
            "nat-prerouting",
            vec![
                eq(fib_daddr_type(), string("local")),
                Statement::VerdictMap(VerdictMap {
                    key: proto_port(),
                    data: set(items),
                }),
            ],
        );
    }

    // Fail fast: a service port without a ready backend refuses at once.
    if !dispatch.reject_address.is_empty() {
        let elements = |only_tcp: bool| -> Vec<SetItem<'static>> {
            dispatch
                .reject_address
                .iter()
                .filter(|(_, proto, _)| !only_tcp || *proto == L4Protocol::Tcp)
                .map(|(ip, proto, port)| SetItem::Element(vip_key(*ip, *proto, *port)))
                .collect()
        };
        let tcp = elements(true);
        if !tcp.is_empty() {
            b.rule(
                "filter-prerouting",
                vec![
                    eq(meta(MetaKey::L4proto), string("tcp")),
                    eq(daddr_proto_port(), set(tcp)),
                    reject_tcp(),
                ],
            );
        }
        b.rule(
            "filter-prerouting",
            vec![
                eq(daddr_proto_port(), set(elements(false))),
                reject_icmpx(RejectCode::PortUnreach),
            ],
        );
    }
    if !dispatch.reject_node_port.is_empty() {
        let elements = |only_tcp: bool| -> Vec<SetItem<'static>> {
            dispatch
                .reject_node_port
                .iter()
                .filter(|(proto, _)| !only_tcp || *proto == L4Protocol::Tcp)
                .map(|(proto, port)| SetItem::Element(port_key(*proto, *port)))
                .collect()
        };
        let tcp = elements(true);
        if !tcp.is_empty() {
            b.rule(
                "filter-prerouting",
                vec![
                    eq(fib_daddr_type(), string("local")),
                    eq(meta(MetaKey::L4proto), string("tcp")),
                    eq(proto_port(), set(tcp)),
                    reject_tcp(),
                ],
            );
        }
        b.rule(
            "filter-prerouting",
            vec![
                eq(fib_daddr_type(), string("local")),
                eq(proto_port(), set(elements(false))),
                reject_icmpx(RejectCode::PortUnreach),
            ],
        );
    }

    // Connections from outside: route both directions by their mark, and give a remote
    // backend a source that comes back here.
    if from_tunnel {
        // Every packet of the connection, not only the first (which alone passes the
        // nat chains): the mark that routes it by the backend's table.
        b.rule(
            "filter-prerouting",
            vec![
                ct_mark_has(TUNNEL_CT_MARK),
                eq(ct("direction"), string("original")),
                Statement::Mangle(Mangle {
                    key: meta(MetaKey::Mark),
                    value: number(MARK_TO_POD),
                }),
            ],
        );
    }
    if from_outside {
        for (dir, mark) in [("original", MARK_TO_BACKEND), ("reply", MARK_REPLY)] {
            b.rule(
                "filter-prerouting",
                vec![
                    ct_mark_has(SERVICE_CT_MARK),
                    eq(ct("direction"), string(dir)),
                    Statement::Mangle(Mangle {
                        key: meta(MetaKey::Mark),
                        value: number(mark),
                    }),
                ],
            );
        }
        // The tunnel copies the inner packet's mark to the outer one, whose route lookup
        // would then hit the mark rules: clear it on the way into the tunnel.
        b.rule(
            "filter-postrouting",
            vec![
                eq(meta(MetaKey::Oifname), string(VXLAN_DEVICE)),
                eq(
                    meta(MetaKey::Mark),
                    set(vec![
                        SetItem::Element(number(MARK_TO_BACKEND)),
                        SetItem::Element(number(MARK_REPLY)),
                    ]),
                ),
                Statement::Mangle(Mangle {
                    key: meta(MetaKey::Mark),
                    value: number(0),
                }),
            ],
        );
        match state.underlay_ip.and_then(node_service_address) {
            Some(addr) => b.rule(
                "nat-postrouting",
                vec![
                    ct_mark_has(SERVICE_CT_MARK),
                    eq(meta(MetaKey::Oifname), string(VXLAN_DEVICE)),
                    Statement::SNAT(Some(NAT {
                        addr: Some(addr_expr(addr)),
                        family: Some(NATFamily::IP),
                        port: None,
                        flags: None,
                    })),
                ],
            ),
            None => b.warnings.push(format!(
                "node {} has no IPv4 underlay address: NodePort / external-IP traffic to backends on other nodes is not translated",
                state.node
            )),
        }
    }

    // Hairpin: a pod that reaches a VIP and is picked as the backend would get its own
    // address as the source, which it drops; give such connections the pod's gateway
    // as the source (the reply comes back through the node and is translated back).
    let hairpin: Vec<SetItem<'static>> = state
        .interfaces
        .iter()
        .filter(|_| state.services.iter().any(|s| s.vip.is_some()))
        .filter_map(|i| {
            let att = attachments.get(&i.key())?;
            match (i.ip, i.gateway) {
                (IpAddr::V4(ip), Some(IpAddr::V4(gw))) => Some(SetItem::Mapping(
                    concat(vec![string(att.host_if_name.clone()), addr_expr(ip)]),
                    addr_expr(gw),
                )),
                _ => None,
            }
        })
        .collect();
    if !hairpin.is_empty() {
        b.rule(
            "nat-postrouting",
            vec![
                matches(ct("status"), Operator::IN, string("dnat")),
                Statement::SNAT(Some(NAT {
                    addr: Some(Expression::Named(NamedExpression::Map(Box::new(Map {
                        key: concat(vec![meta(MetaKey::Oifname), payload("ip", "saddr")]),
                        data: set(hairpin),
                    })))),
                    family: Some(NATFamily::IP),
                    port: None,
                    flags: None,
                })),
            ],
        );
    }

    // The outside. Floating IPs: 1:1 NAT, both directions (new connections to the FIP
    // are DNATed to the pod; the pod's own connections out leave as its first FIP).
    // Fabric SNAT (TF's distributed SNAT): the other pods of SNAT networks leave as the
    // node, with a port from TF's pools. Only connections that leave through the
    // underlay (anything but weft's own devices) are translated. Packets NAT turns
    // towards a pod get the mark whose rules route them by the pod's table; pods of a
    // table that lets only FIP pods out are refused the way out.
    let addr_set = |ips: &[Ipv4Addr]| set(ips.iter().map(|ip| SetItem::Element(addr_expr(*ip))).collect());
    let not_weft = |key: MetaKey| matches(meta(key), Operator::NEQ, string("weft*".to_string()));
    if !floating.is_empty() {
        let fips: Vec<Ipv4Addr> = floating.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        let inbound: Vec<SetItem<'static>> = floating
            .iter()
            .flat_map(|(ip, f)| {
                f.iter()
                    .map(move |fip| SetItem::Mapping(addr_expr(*fip), addr_expr(*ip)))
            })
            .collect();
        let outbound: Vec<SetItem<'static>> = floating
            .iter()
            .map(|(ip, f)| SetItem::Mapping(addr_expr(*ip), addr_expr(f[0])))
            .collect();
        let pods: Vec<Ipv4Addr> = floating.iter().map(|(ip, _)| *ip).collect();
        b.rule(
            "nat-prerouting",
            vec![
                eq(payload("ip", "daddr"), addr_set(&fips)),
                not_weft(MetaKey::Iifname),
                Statement::DNAT(Some(NAT {
                    addr: Some(Expression::Named(NamedExpression::Map(Box::new(Map {
                        key: payload("ip", "daddr"),
                        data: set(inbound),
                    })))),
                    family: Some(NATFamily::IP),
                    port: None,
                    flags: None,
                })),
            ],
        );
        b.rule(
            "nat-postrouting",
            vec![
                eq(payload("ip", "saddr"), addr_set(&pods)),
                not_weft(MetaKey::Oifname),
                Statement::SNAT(Some(NAT {
                    addr: Some(Expression::Named(NamedExpression::Map(Box::new(Map {
                        key: payload("ip", "saddr"),
                        data: set(outbound),
                    })))),
                    family: Some(NATFamily::IP),
                    port: None,
                    flags: None,
                })),
            ],
        );
        b.rule(
            "filter-prerouting",
            vec![
                eq(ct("direction"), string("original")),
                matches(ct("status"), Operator::IN, string("dnat")),
                not_weft(MetaKey::Iifname),
                eq(payload("ip", "daddr"), addr_set(&pods)),
                Statement::Mangle(Mangle {
                    key: meta(MetaKey::Mark),
                    value: number(MARK_TO_POD),
                }),
            ],
        );
    }
    if !snat_sources.is_empty() {
        match state.underlay_ip {
            Some(IpAddr::V4(node_ip)) => {
                let pools = [
                    (Some("tcp"), Some(SNAT_TCP_PORTS)),
                    (Some("udp"), Some(SNAT_UDP_PORTS)),
                    (None, None),
                ];
                for (proto, ports) in pools {
                    let mut rule = vec![
                        eq(payload("ip", "saddr"), addr_set(&snat_sources)),
                        not_weft(MetaKey::Oifname),
                    ];
                    if let Some(proto) = proto {
                        rule.push(eq(meta(MetaKey::L4proto), string(proto)));
                    }
                    rule.push(Statement::SNAT(Some(NAT {
                        addr: Some(addr_expr(node_ip)),
                        family: Some(NATFamily::IP),
                        port: ports.map(|(lo, hi)| {
                            Expression::Range(Box::new(Range {
                                range: [number(u32::from(lo)), number(u32::from(hi))],
                            }))
                        }),
                        flags: None,
                    })));
                    b.rule("nat-postrouting", rule);
                }
            }
            _ => b.warnings.push(format!(
                "node {} has no IPv4 underlay address: fabric SNAT is off for its pods",
                state.node
            )),
        }
    }
    if !to_pods.is_empty() {
        b.rule(
            "filter-prerouting",
            vec![
                eq(ct("direction"), string("reply")),
                matches(ct("status"), Operator::IN, string("snat")),
                not_weft(MetaKey::Iifname),
                eq(payload("ip", "daddr"), addr_set(&to_pods)),
                Statement::Mangle(Mangle {
                    key: meta(MetaKey::Mark),
                    value: number(MARK_TO_POD),
                }),
            ],
        );
    }
    if !confined.is_empty() {
        b.rule(
            "filter-forward",
            vec![
                eq(payload("ip", "saddr"), addr_set(&confined)),
                not_weft(MetaKey::Oifname),
                reject_icmpx(RejectCode::AdminProhibited),
            ],
        );
    }

    // Reply-only routes: no new connection from the table's pods towards them.
    // Service-only routes: only connections translated from a VIP (ct status dnat).
    let mut forward_items = Vec::new();
    let guarded: BTreeSet<u32> = reply_only.keys().chain(service_only.keys()).copied().collect();
    let empty = BTreeSet::new();
    for table in &guarded {
        let Some(veths) = veths_by_table.get(table) else {
            continue;
        };
        let chain = format!("reply-only-{table}");
        b.chain(&chain);
        let prefixes = reply_only.get(table).unwrap_or(&empty);
        let direct_only = service_only.get(table).unwrap_or(&empty);
        if !direct_only.is_empty() {
            b.rule(
                &chain,
                vec![
                    matches(ct("status"), Operator::IN, string("dnat")),
                    Statement::Return(None),
                ],
            );
            b.rule(
                &chain,
                vec![
                    eq(
                        payload("ip", "daddr"),
                        set(direct_only.iter().map(|p| prefix_item(p)).collect()),
                    ),
                    reject_icmpx(RejectCode::AdminProhibited),
                ],
            );
        }
        if prefixes.is_empty() {
            for v in veths {
                forward_items.push(SetItem::Mapping(string(v.clone()), jump(&chain)));
            }
            continue;
        }
        let addrs = prefixes
            .iter()
            .map(|p| {
                if p.prefix_len() == p.max_prefix_len() {
                    SetItem::Element(string(p.addr().to_string()))
                } else {
                    SetItem::Element(Expression::Named(NamedExpression::Prefix(
                        nftables::expr::Prefix {
                            addr: Box::new(string(p.addr().to_string())),
                            len: u32::from(p.prefix_len()),
                        },
                    )))
                }
            })
            .collect();
        b.rule(
            &chain,
            vec![
                eq(payload("ip", "daddr"), set(addrs)),
                reject_icmpx(RejectCode::AdminProhibited),
            ],
        );
        for v in veths {
            forward_items.push(SetItem::Mapping(string(v.clone()), jump(&chain)));
        }
    }
    if !forward_items.is_empty() {
        b.rule(
            "filter-forward",
            vec![
                matches(ct("state"), Operator::IN, string("new")),
                Statement::VerdictMap(VerdictMap {
                    key: meta(MetaKey::Iifname),
                    data: set(forward_items),
                }),
            ],
        );
    }

    // Service chains that carry only some ports: other new connections towards the
    // chain's far side are refused where they enter (before NetworkPolicy).
    render_chain_guards(&mut b, state, &veths_by_table);

    // NetworkPolicy (after the reply-only guard, which only looks at new connections).
    render_policies(&mut b, state, attachments);

    let Builder {
        chains,
        mut rules,
        warnings: more,
    } = b;
    warnings.extend(more);
    let mut objects = chains;
    objects.append(&mut rules);
    // Elements in named sets, so that a change of elements only is applied as such.
    let mut objects = incremental::name_sets(objects);
    let fingerprint = format!(
        "{:016x}",
        fnv1a64(serde_json::to_string(&objects).unwrap_or_default().as_bytes())
    );
    // The fingerprint, after hashing, in a chain of its own (never jumped to) that an
    // element-only update flushes and refills: the other chains stay identical.
    objects.push(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: FINGERPRINT_CHAIN.into(),
        ..Default::default()
    }));
    objects.push(NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: FINGERPRINT_CHAIN.into(),
        expr: Cow::Owned(vec![Statement::Return(None)]),
        comment: Some(format!("{FINGERPRINT_PREFIX}{fingerprint}").into()),
        ..Default::default()
    }));
    (Some(NftTable { objects, fingerprint }), warnings)
}

/// The compiled rules of one direction of an endpoint, ready for two set lookups: peer
/// prefixes allowed on any protocol and port, and (prefix, protocol, port range)
/// elements, pairwise disjoint (an nftables interval set refuses overlapping elements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySets {
    /// Everything is allowed (a rule with no peers and no ports).
    pub all: bool,
    /// Peers allowed on any protocol and port (aggregated, disjoint).
    pub any_port: Vec<ipnet::Ipv4Net>,
    /// Peer prefix, protocol and inclusive destination port range.
    pub ports: Vec<(ipnet::Ipv4Net, L4Protocol, u16, u16)>,
}

impl PolicySets {
    /// True when a packet with peer `ip`, `protocol` and destination `port` hits a set
    /// (what the kernel decides; used by tests).
    pub fn allows(&self, ip: Ipv4Addr, protocol: L4Protocol, port: u16) -> bool {
        self.all
            || self.any_port.iter().any(|p| p.contains(&ip))
            || self.ports.iter().any(|(p, proto, first, last)| {
                p.contains(&ip) && *proto == protocol && *first <= port && port <= *last
            })
    }
}

/// Turns compiled rules into [`PolicySets`] (IPv4 only: IPv6 prefixes are dropped, so
/// IPv6 traffic of an isolated endpoint is rejected).
pub fn policy_sets<'r>(rules: impl IntoIterator<Item = &'r PolicyRule>) -> PolicySets {
    let everything = ipnet::Ipv4Net::default();
    let v4 = |peers: &Option<Vec<ipnet::IpNet>>| -> Vec<ipnet::Ipv4Net> {
        match peers {
            None => vec![everything],
            Some(ps) => ps
                .iter()
                .filter_map(|p| match p {
                    ipnet::IpNet::V4(v) => Some(v.trunc()),
                    ipnet::IpNet::V6(_) => None,
                })
                .collect(),
        }
    };
    let mut out = PolicySets::default();
    let mut any = Vec::new();
    // (protocol, first, last, prefixes)
    let mut ranged: Vec<(L4Protocol, u16, u16, Vec<ipnet::Ipv4Net>)> = Vec::new();
    for r in rules {
        let peers = v4(&r.peers);
        match &r.ports {
            None if r.peers.is_none() => out.all = true,
            None => any.extend(peers),
            Some(ports) => {
                for p in ports {
                    ranged.push((p.protocol, p.first, p.last, peers.clone()));
                }
            }
        }
    }
    if out.all {
        return out;
    }
    out.any_port = ipnet::Ipv4Net::aggregate(&any);
    // Cut every protocol's port axis at all range boundaries, so the segments are
    // disjoint; per segment the union of the prefixes; adjacent segments with the same
    // prefixes merged back.
    let protocols: BTreeSet<L4Protocol> = ranged.iter().map(|r| r.0).collect();
    for proto in protocols {
        let mut cuts: BTreeSet<u32> = BTreeSet::new();
        for (p, first, last, _) in &ranged {
            if *p == proto {
                cuts.insert(u32::from(*first));
                cuts.insert(u32::from(*last) + 1);
            }
        }
        let cuts: Vec<u32> = cuts.into_iter().collect();
        let mut segments: Vec<(u32, u32, Vec<ipnet::Ipv4Net>)> = Vec::new();
        for w in cuts.windows(2) {
            let (lo, hi) = (w[0], w[1] - 1);
            let mut prefixes = Vec::new();
            for (p, first, last, peers) in &ranged {
                if *p == proto && u32::from(*first) <= lo && hi <= u32::from(*last) {
                    prefixes.extend(peers.iter().copied());
                }
            }
            if prefixes.is_empty() {
                continue;
            }
            let prefixes = ipnet::Ipv4Net::aggregate(&prefixes);
            match segments.last_mut() {
                Some(last) if last.1 + 1 == lo && last.2 == prefixes => last.1 = hi,
                _ => segments.push((lo, hi, prefixes)),
            }
        }
        for (lo, hi, prefixes) in segments {
            let (Ok(lo), Ok(hi)) = (u16::try_from(lo), u16::try_from(hi)) else {
                continue;
            };
            for prefix in prefixes {
                out.ports.push((prefix, proto, lo, hi));
            }
        }
    }
    out
}

fn prefix_expr(p: ipnet::Ipv4Net) -> Expression<'static> {
    if p.prefix_len() == 32 {
        addr_expr(p.addr())
    } else {
        Expression::Named(NamedExpression::Prefix(nftables::expr::Prefix {
            addr: Box::new(addr_expr(p.addr())),
            len: u32::from(p.prefix_len()),
        }))
    }
}

/// The set lookups of `sets` (`field`: `saddr` for ingress, `daddr` for egress): at
/// most two match statements, one per non-empty set (the any-port peers, then the
/// peer . protocol . port elements). Empty when `sets.all` (the caller matches
/// unconditionally) or when both sets are empty.
fn set_lookups(sets: &PolicySets, field: &'static str) -> Vec<Statement<'static>> {
    let mut out = Vec::new();
    if !sets.any_port.is_empty() {
        out.push(eq(
            payload("ip", field),
            set(sets
                .any_port
                .iter()
                .map(|p| SetItem::Element(prefix_expr(*p)))
                .collect()),
        ));
    }
    if !sets.ports.is_empty() {
        let items = sets
            .ports
            .iter()
            .map(|(p, proto, first, last)| {
                let port = if first == last {
                    number(u32::from(*first))
                } else {
                    Expression::Range(Box::new(nftables::expr::Range {
                        range: [number(u32::from(*first)), number(u32::from(*last))],
                    }))
                };
                SetItem::Element(concat(vec![prefix_expr(*p), string(proto.as_str()), port]))
            })
            .collect();
        out.push(eq(
            concat(vec![
                payload("ip", field),
                meta(MetaKey::L4proto),
                payload("th", "dport"),
            ]),
            set(items),
        ));
    }
    out
}

/// Fills one endpoint chain: the packet `returns` (to the other direction's check)
/// when its peer address (`field`: `saddr` for ingress, `daddr` for egress) and port
/// hit a set, else it is rejected: TCP with a reset, the rest with ICMP
/// admin-prohibited, so clients fail fast instead of timing out.
fn policy_chain(b: &mut Builder, chain: &str, rules: &[PolicyRule], field: &'static str) {
    let sets = policy_sets(rules);
    if sets.all {
        b.rule(chain, vec![Statement::Return(None)]);
        return;
    }
    for lookup in set_lookups(&sets, field) {
        b.rule(chain, vec![lookup, Statement::Return(None)]);
    }
    b.rule(
        chain,
        vec![eq(meta(MetaKey::L4proto), string("tcp")), reject_tcp()],
    );
    b.rule(chain, vec![reject_icmpx(RejectCode::AdminProhibited)]);
}

/// `iifname { client veths } l4proto P <pick>`: the service's client pods, translated
/// in their own node and routed by their own table.
fn from_clients(
    clients: &BTreeSet<String>,
    protocol: L4Protocol,
    pick: Statement<'static>,
) -> Vec<Statement<'static>> {
    vec![
        eq(
            meta(MetaKey::Iifname),
            set(clients
                .iter()
                .map(|c| SetItem::Element(string(c.clone())))
                .collect()),
        ),
        eq(meta(MetaKey::L4proto), string(protocol.as_str())),
        pick,
    ]
}

/// One chain per [`weft_model::ChainGuard`] with ports, `chain-guard-<table>-<i>`:
/// a new connection from a veth of the guarded table towards the chain's far side
/// returns when its protocol and destination port are among the chain's, and is
/// rejected otherwise (TCP reset, else ICMP admin-prohibited). The chain's routes
/// carry the traffic; this is what limits it to the ports the ServiceChain names.
fn render_chain_guards(b: &mut Builder, state: &NodeState, veths_by_table: &BTreeMap<u32, BTreeSet<String>>) {
    for n in &state.networks {
        let Some(veths) = veths_by_table.get(&n.table) else {
            continue; // no attached pod of this table here: nothing enters from it
        };
        for (i, guard) in n.chain_guards.iter().enumerate() {
            if guard.ports.is_empty() {
                continue; // the chain carries everything
            }
            let destinations: Vec<SetItem<'static>> = guard
                .destinations
                .iter()
                .filter_map(|p| match p.trunc() {
                    ipnet::IpNet::V4(v4) => Some(SetItem::Element(prefix_expr(v4))),
                    ipnet::IpNet::V6(_) => None,
                })
                .collect();
            if destinations.is_empty() {
                continue;
            }
            let chain = format!("chain-guard-{}-{i}", n.table);
            b.chain(&chain);
            for port in &guard.ports {
                let dport = if port.first == port.last {
                    number(u32::from(port.first))
                } else {
                    Expression::Range(Box::new(Range {
                        range: [number(u32::from(port.first)), number(u32::from(port.last))],
                    }))
                };
                b.rule(
                    &chain,
                    vec![
                        eq(meta(MetaKey::L4proto), string(port.protocol.as_str())),
                        eq(payload("th", "dport"), dport),
                        Statement::Return(None),
                    ],
                );
            }
            b.rule(
                &chain,
                vec![eq(meta(MetaKey::L4proto), string("tcp")), reject_tcp()],
            );
            b.rule(&chain, vec![reject_icmpx(RejectCode::AdminProhibited)]);
            b.rule(
                "filter-forward",
                vec![
                    matches(ct("state"), Operator::IN, string("new")),
                    eq(
                        meta(MetaKey::Iifname),
                        set(veths
                            .iter()
                            .map(|v| SetItem::Element(string(v.clone())))
                            .collect()),
                    ),
                    eq(payload("ip", "daddr"), set(destinations)),
                    Statement::Jump(JumpTarget {
                        target: chain.clone().into(),
                    }),
                ],
            );
        }
    }
}

/// The chain every admin `drop` goes to: TCP reset, else ICMP admin-prohibited.
const POLICY_REJECT_CHAIN: &str = "pol-reject";

/// Appends ordered verdict rules (AdminNetworkPolicy or baseline) to `chain`, as
/// tiers: consecutive rules with the same verdict are one tier (first match among
/// them is their union), and a tier is at most two set lookups with that verdict
/// (`accept` → `return` to the other direction's check, `drop` → `goto pol-reject`,
/// `pass` → `goto pass_to`). Per-packet cost grows with the number of tiers (verdict
/// changes in priority order), not with pods or rules. Returns false when a tier
/// matched everything (the rest of the chain is unreachable).
fn verdict_tiers(
    b: &mut Builder,
    chain: &str,
    rules: &[AdminRule],
    field: &'static str,
    pass_to: &str,
    reject_used: &mut bool,
) -> bool {
    let mut start = 0;
    while start < rules.len() {
        let action = rules[start].action;
        let end = rules[start..]
            .iter()
            .position(|r| r.action != action)
            .map_or(rules.len(), |k| start + k);
        let tier = &rules[start..end];
        start = end;
        let verdict = match action {
            AdminVerdict::Accept => Statement::Return(None),
            AdminVerdict::Drop => {
                *reject_used = true;
                Statement::Goto(JumpTarget {
                    target: POLICY_REJECT_CHAIN.to_string().into(),
                })
            }
            AdminVerdict::Pass => Statement::Goto(JumpTarget {
                target: pass_to.to_string().into(),
            }),
        };
        let sets = policy_sets(tier.iter().map(|r| &r.rule));
        if sets.all {
            b.rule(chain, vec![verdict]);
            return false;
        }
        for lookup in set_lookups(&sets, field) {
            b.rule(chain, vec![lookup, verdict.clone()]);
        }
    }
    true
}

/// Renders one direction of an endpoint into `chain` (and `<chain>-np` when it has
/// AdminNetworkPolicy rules): ANP tiers, then NetworkPolicy if it isolates the pod,
/// else the baseline tiers, else `return`. Returns false when nothing restricts the
/// direction (no chain made).
fn direction_chain(
    b: &mut Builder,
    chain: &str,
    admin: &[AdminRule],
    np: Option<&[PolicyRule]>,
    baseline: &[AdminRule],
    field: &'static str,
    reject_used: &mut bool,
) -> bool {
    if admin.is_empty() && np.is_none() && baseline.is_empty() {
        return false;
    }
    b.chain(chain);
    let mut stage = chain.to_string();
    if !admin.is_empty() {
        let np_chain = format!("{chain}-np");
        b.chain(&np_chain);
        if verdict_tiers(b, chain, admin, field, &np_chain, reject_used) {
            b.rule(
                chain,
                vec![Statement::Goto(JumpTarget {
                    target: np_chain.clone().into(),
                })],
            );
        }
        stage = np_chain;
    }
    match np {
        Some(rules) => policy_chain(b, &stage, rules, field),
        None => {
            if verdict_tiers(b, &stage, baseline, field, &stage, reject_used) {
                b.rule(&stage, vec![Statement::Return(None)]);
            }
        }
    }
    true
}

/// NetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy in
/// `filter-forward` (pod traffic is forwarded; services are DNATed in prerouting
/// before, so the checks see the backend pod, as Kubernetes wants):
///
/// ```text
/// ct state established,related accept                  (replies of allowed connections)
/// iifname vmap { <veth of an egress-restricted pod> : jump pol-out-<n> }
/// oifname vmap { <veth of an ingress-restricted pod> : jump pol-in-<n> }
/// pol-out-<n>: NetworkPolicy only (no ANP rule for the pod):
///              ip daddr { any-port peers } return
///              ip daddr . meta l4proto . th dport { prefix . proto . ports } return
///              meta l4proto tcp reject with tcp reset; reject with icmpx admin-prohibited
///            with ANP rules, one tier per run of equal verdicts, in priority order:
///              ip daddr { … } return | goto pol-reject | goto pol-out-<n>-np
///              ip daddr . meta l4proto . th dport { … } (same verdict)
///              …
///              goto pol-out-<n>-np
/// pol-out-<n>-np: the NetworkPolicy rules above if a NetworkPolicy isolates the pod,
///              else the baseline's tiers (return | goto pol-reject), then return
/// pol-reject:  meta l4proto tcp reject with tcp reset; reject with icmpx admin-prohibited
/// pol-in-<n>:  the same with ip saddr
/// ```
///
/// Each node checks the egress of its own pods and the ingress of its own pods, so a
/// connection between nodes is checked once per side, and one between two local pods
/// goes through both chains. At most two set lookups per tier, whatever the number of
/// pods and rules. The sets are written anonymous here and named by
/// [`incremental::name_sets`], so a label change only changes set elements.
fn render_policies(b: &mut Builder, state: &NodeState, attachments: &Attachments) {
    let mut reject_used = false;
    let mut egress_items = Vec::new();
    let mut ingress_items = Vec::new();
    for (n, ep) in state.policies.iter().enumerate() {
        let Some(att) = attachments.get(&ep.interface) else {
            continue;
        };
        if !ep.ip.is_ipv4() {
            b.warnings.push(format!(
                "policy of {}: IPv6 endpoint {} not enforced (IPv4 only)",
                ep.interface, ep.ip
            ));
            continue;
        }
        let chain = format!("pol-out-{n}");
        if direction_chain(
            b,
            &chain,
            &ep.admin_egress,
            ep.egress.as_deref(),
            &ep.baseline_egress,
            "daddr",
            &mut reject_used,
        ) {
            egress_items.push(SetItem::Mapping(string(att.host_if_name.clone()), jump(&chain)));
        }
        let chain = format!("pol-in-{n}");
        if direction_chain(
            b,
            &chain,
            &ep.admin_ingress,
            ep.ingress.as_deref(),
            &ep.baseline_ingress,
            "saddr",
            &mut reject_used,
        ) {
            ingress_items.push(SetItem::Mapping(string(att.host_if_name.clone()), jump(&chain)));
        }
    }
    if reject_used {
        b.chain(POLICY_REJECT_CHAIN);
        b.rule(
            POLICY_REJECT_CHAIN,
            vec![eq(meta(MetaKey::L4proto), string("tcp")), reject_tcp()],
        );
        b.rule(
            POLICY_REJECT_CHAIN,
            vec![reject_icmpx(RejectCode::AdminProhibited)],
        );
    }
    if egress_items.is_empty() && ingress_items.is_empty() {
        return;
    }
    b.rule(
        "filter-forward",
        vec![
            matches(
                ct("state"),
                Operator::IN,
                Expression::List(vec![string("established"), string("related")]),
            ),
            Statement::Accept(None),
        ],
    );
    for (key, items) in [
        (MetaKey::Iifname, egress_items),
        (MetaKey::Oifname, ingress_items),
    ] {
        if !items.is_empty() {
            b.rule(
                "filter-forward",
                vec![Statement::VerdictMap(VerdictMap {
                    key: meta(key),
                    data: set(items),
                })],
            );
        }
    }
}

/// Records `chain` for `key` unless another service holds it (warned).
fn claim<K: Ord + std::fmt::Debug>(
    map: &mut BTreeMap<K, String>,
    key: K,
    chain: String,
    service: &str,
    warnings: &mut Vec<String>,
) {
    match map.get(&key) {
        Some(existing) if *existing != chain => warnings.push(format!(
            "service {service}: {key:?} is already taken by {existing}; not balanced here"
        )),
        Some(_) => {}
        None => {
            map.insert(key, chain);
        }
    }
}

/// True when `state` has a service reached from outside the pod networks (NodePort or
/// external IP): then the agent installs the mark rules and [`SERVICE_TABLE`](weft_model::node::SERVICE_TABLE).
pub fn has_outside_services(state: &NodeState) -> bool {
    state
        .services
        .iter()
        .any(|s| !s.external_ips.is_empty() || s.ports.iter().any(|p| p.node_port.is_some()))
}

// ===== I/O: nft -j =====

/// The live `inet weft` table, as far as the agent cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveTable {
    /// No such table.
    Absent,
    /// The table, with the fingerprint of its [`FINGERPRINT_CHAIN`] rule if it has one.
    Present(Option<String>),
}

impl LiveTable {
    /// True when this is what `wanted` renders to (absent for `None`).
    pub fn matches(&self, wanted: Option<&NftTable>) -> bool {
        match (self, wanted) {
            (LiveTable::Absent, None) => true,
            (LiveTable::Present(Some(fp)), Some(t)) => *fp == t.fingerprint,
            _ => false,
        }
    }
}

/// Reads the live `inet weft` table (`nft -j list table inet weft`) in the calling
/// thread's network namespace.
pub fn live_table() -> Result<LiveTable, NftablesError> {
    match nftables::helper::get_current_ruleset_raw(
        nftables::helper::DEFAULT_NFT,
        ["list", "table", "inet", TABLE],
    ) {
        Ok(text) => Ok(LiveTable::Present(fingerprint_in(&text))),
        Err(NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(LiveTable::Absent)
        }
        Err(e) => Err(e),
    }
}

/// What the agent knows of the live table between passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Applied {
    /// Nothing yet (a fresh agent): compare with the live table first.
    #[default]
    Unknown,
    /// The last pass left the table absent.
    Absent,
    /// The last pass left the table with this fingerprint.
    Table(String),
}

impl Applied {
    fn of(wanted: Option<&NftTable>) -> Applied {
        match wanted {
            Some(t) => Applied::Table(t.fingerprint.clone()),
            None => Applied::Absent,
        }
    }
}

/// How [`sync_incremental`] brought the live table in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// It already was: nothing written.
    Unchanged,
    /// Only set elements differed: this many `delete`/`add element` commands (and the
    /// fingerprint rule) in one transaction.
    Elements(usize),
    /// The table was rewritten in one transaction.
    Rewritten,
    /// The table was removed.
    Removed,
}

/// Makes the live table what `wanted` says (absent for `None`), in the calling thread's
/// network namespace, writing only when `last` (what the previous pass left) differs
/// from it; on the first pass (`last` unknown) the live table is read and compared
/// instead. Returns whether it wrote. `last` is updated on success. Without an `nft`
/// binary, a node that needs no table is fine. Always rewrites the whole table; the
/// agent uses [`sync_incremental`].
pub fn sync(wanted: Option<&NftTable>, last: &mut Applied) -> Result<bool, NftablesError> {
    sync_incremental(wanted, last, &mut None).map(|s| s != Synced::Unchanged)
}

/// [`sync`], but when `previous` is the table that `last` says is live and `wanted`
/// differs from it only in set elements ([`incremental::element_diff`]), applies just
/// those elements in one transaction; if the kernel refuses that (the live table was
/// changed behind weft's back), rewrites the table. `previous` is updated with `last`.
pub fn sync_incremental(
    wanted: Option<&NftTable>,
    last: &mut Applied,
    previous: &mut Option<NftTable>,
) -> Result<Synced, NftablesError> {
    // Keeps `previous` equal to `wanted` (same fingerprint: same objects) without
    // copying a table that is already there, as on every pass that changes nothing.
    let remember = |previous: &mut Option<NftTable>| {
        if previous.as_ref().map(|p| &p.fingerprint) != wanted.map(|w| &w.fingerprint) {
            *previous = wanted.cloned();
        }
    };
    let target = Applied::of(wanted);
    if *last == target {
        remember(previous);
        return Ok(Synced::Unchanged);
    }
    if *last == Applied::Unknown {
        match live_table() {
            Ok(live) if live.matches(wanted) => {
                *last = target;
                remember(previous);
                return Ok(Synced::Unchanged);
            }
            Ok(_) => {}
            Err(NftablesError::NftExecution { .. }) if wanted.is_none() => {
                *last = target;
                *previous = None;
                return Ok(Synced::Unchanged);
            }
            Err(e) => return Err(e),
        }
    }
    if let (Some(new), Some(old), Applied::Table(live)) = (wanted, previous.as_ref(), &*last)
        && old.fingerprint == *live
        && let Some(commands) = incremental::element_diff(&old.objects, &new.objects)
    {
        let count = commands.len();
        let doc = incremental::element_document(commands);
        match nftables::helper::apply_ruleset_raw(
            &document_json(&doc, false),
            nftables::helper::DEFAULT_NFT,
            nftables::helper::DEFAULT_ARGS,
        ) {
            Ok(_) => {
                *last = target;
                *previous = Some(new.clone());
                return Ok(Synced::Elements(count));
            }
            Err(e) => {
                tracing::warn!(error = %e, "incremental nftables update refused; rewriting the table");
            }
        }
    }
    let synced = match wanted {
        Some(t) => {
            apply_document(t)?;
            Synced::Rewritten
        }
        None => {
            remove_table()?;
            Synced::Removed
        }
    };
    *last = target;
    *previous = wanted.cloned();
    Ok(synced)
}

/// The fingerprint in the JSON listing of a table (`nft -j list table inet weft`).
pub fn fingerprint_in(listing: &str) -> Option<String> {
    // Read as plain JSON: only the comment matters, and the typed reader rejects some
    // listings nft produces (ecosystem.md: single NAT flags).
    let value: serde_json::Value = serde_json::from_str(listing).ok()?;
    value["nftables"].as_array()?.iter().find_map(|o| {
        o["rule"]["comment"]
            .as_str()
            .and_then(|c| c.strip_prefix(FINGERPRINT_PREFIX))
            .map(str::to_string)
    })
}

/// Replaces the live table with `table` in one transaction (calling thread's namespace).
pub fn apply_document(table: &NftTable) -> Result<(), NftablesError> {
    nftables::helper::apply_ruleset_raw(
        &table.to_json(),
        nftables::helper::DEFAULT_NFT,
        nftables::helper::DEFAULT_ARGS,
    )
    .map(drop)
}

/// Removes the live table, if any (calling thread's namespace).
pub fn remove_table() -> Result<(), NftablesError> {
    nftables::helper::apply_ruleset(&removal_document())
}

pub mod incremental;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

/// One prefix as an nft set element (a plain address for host prefixes).
fn prefix_item(p: &ipnet::IpNet) -> SetItem<'static> {
    if p.prefix_len() == p.max_prefix_len() {
        SetItem::Element(string(p.addr().to_string()))
    } else {
        SetItem::Element(Expression::Named(NamedExpression::Prefix(
            nftables::expr::Prefix {
                addr: Box::new(string(p.addr().to_string())),
                len: u32::from(p.prefix_len()),
            },
        )))
    }
}
