//! Routing information bases and the decision process, sans-IO.
//!
//! - **Adj-RIB-In** per peer: what each peer announced, after the ingest checks of RFC 4271
//!   §9.1.2 (AS loop), RFC 7606 §7.2 (first AS of an external path), RFC 4456 §8
//!   (ORIGINATOR_ID / CLUSTER_LIST loops).
//! - **Loc-RIB**: the best path per destination, RFC 4271 §9.1.2.2 with the RFC 4456 §9
//!   additions (see [`Rib::best`]).
//! - **Adj-RIB-Out** per peer: what was last advertised, so only differences are sent.
//!
//! Export rules (RFC 4271 §9.2, RFC 4456 §6): nothing goes back to the peer it came from;
//! routes learned over iBGP go to iBGP peers only when reflecting (a peer marked route
//! reflector client is involved); towards eBGP the own AS is prepended, the next hop is
//! this speaker's address on that session (next-hop-self), LOCAL_PREF, ORIGINATOR_ID and
//! CLUSTER_LIST are stripped and a MED learned from another AS is not passed on.
//! Locally originated routes keep an explicit next hop on every session (RFC 4271 §5.1.3
//! third-party next hop): weft advertises "next hop = the node hosting the endpoint".
//!
//! Every mutation returns the UPDATEs to send per peer and the Adj-RIB-In changes (for
//! the event stream). Pure: no I/O, no clock, no async.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::message::UpdateMsg;
use crate::types::{ExtCommunity, Family, Nlri, PathAttributes, Route, RouteKey};

/// LOCAL_PREF assumed when a route has none (and sent to iBGP peers then): the usual
/// default of every implementation (RFC 4271 leaves it to policy).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// Identifies a peer inside one speaker (addresses are not unique: several peers may
/// share 127.0.0.1 on different ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub u32);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PathSource {
    /// Originated by this speaker ([`Rib::originate`]).
    Local,
    /// Learned from a peer.
    Peer(PeerId),
}

/// One path to a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Path {
    /// Who announced it.
    pub source: PathSource,
    /// Its attributes (shared between the destinations of one UPDATE).
    pub attrs: Arc<PathAttributes>,
    /// The label of a VPNv4 path.
    pub label: Option<u32>,
    /// Kept from a peer that went down gracefully (RFC 4724 §4.2), pending its return.
    pub stale: bool,
}

/// What the RIB needs to know about an established peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer.
    pub id: PeerId,
    /// Its address (last tie-breaker of the decision process).
    pub address: IpAddr,
    /// Its AS.
    pub asn: u32,
    /// Its BGP identifier.
    pub router_id: Ipv4Addr,
    /// Our address on the session: the next hop when advertising "next-hop-self".
    pub local_address: Ipv4Addr,
    /// It is a route-reflector client of ours (RFC 4456).
    pub rr_client: bool,
    /// Families negotiated with it.
    pub families: Vec<Family>,
}

/// Speaker-wide RIB settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RibConfig {
    /// Our AS.
    pub asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Route-reflection cluster id (RFC 4456 §7); the router id when `None`.
    pub cluster_id: Option<Ipv4Addr>,
    /// Leave the next hop of routes learned from one peer unchanged when re-advertising
    /// them to an external peer (a "third-party" next hop, RFC 4271 §5.1.3 and what route
    /// servers do), instead of setting it to our own address. For a speaker that is not
    /// on the forwarding path, such as weft's controller, whose routes must lead to the
    /// node that hosts the endpoint (as Tungsten Fabric control nodes do).
    #[serde(default)]
    pub next_hop_unchanged: bool,
}

/// A change of one peer's Adj-RIB-In, for the speaker's event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdjInChange {
    /// The peer announced (or re-announced) a route.
    Announced {
        /// The peer.
        peer: PeerId,
        /// The route (label and route targets included).
        route: Route,
        /// Its attributes.
        attrs: Arc<PathAttributes>,
    },
    /// The peer withdrew a route, or the route was dropped when the peer went down.
    Withdrawn {
        /// The peer.
        peer: PeerId,
        /// The destination.
        key: RouteKey,
    },
}

/// What a RIB mutation produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RibChanges {
    /// UPDATEs to send, per peer, in order.
    pub updates: Vec<(PeerId, UpdateMsg)>,
    /// Adj-RIB-In changes.
    pub adj_in: Vec<AdjInChange>,
    /// Destinations whose best path changed (appeared, changed or disappeared).
    pub best_changed: Vec<RouteKey>,
}

impl RibChanges {
    fn extend(&mut self, other: RibChanges) {
        self.updates.extend(other.updates);
        self.adj_in.extend(other.adj_in);
        self.best_changed.extend(other.best_changed);
    }
}

/// What was advertised to one peer for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exported {
    attrs: PathAttributes,
    label: Option<u32>,
}

/// The paths of one destination, ordered by source: a sorted `Vec`, because almost every
/// destination has one or two paths, while a `BTreeMap` allocates a whole leaf node (room
/// for 11 entries) per destination. The capacity grows one path at a time and is not
/// shrunk on removal (a withdrawal must not reallocate; the set goes when it empties).
#[derive(Debug, Clone, Default)]
struct PathSet(Vec<Path>);

impl PathSet {
    fn position(&self, src: &PathSource) -> Result<usize, usize> {
        self.0.binary_search_by(|p| p.source.cmp(src))
    }

    fn get(&self, src: &PathSource) -> Option<&Path> {
        self.position(src).ok().map(|i| &self.0[i])
    }

    fn get_mut(&mut self, src: &PathSource) -> Option<&mut Path> {
        self.position(src).ok().map(|i| &mut self.0[i])
    }

    /// Inserts or replaces the path from `path.source`.
    fn insert(&mut self, path: Path) {
        match self.position(&path.source) {
            Ok(i) => self.0[i] = path,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, path);
            }
        }
    }

    fn remove(&mut self, src: &PathSource) -> Option<Path> {
        let i = self.position(src).ok()?;
        Some(self.0.remove(i))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn values(&self) -> std::slice::Iter<'_, Path> {
        self.0.iter()
    }
}

/// Adj-RIBs-In, Loc-RIB and Adj-RIBs-Out of one speaker.
#[derive(Debug, Clone)]
pub struct Rib {
    config: RibConfig,
    /// Peers that are or were established (stale paths may outlive a session).
    peers: BTreeMap<PeerId, PeerInfo>,
    /// Peers currently established: exports go to these only.
    up: BTreeSet<PeerId>,
    /// Every path per destination (all Adj-RIBs-In plus local routes).
    paths: BTreeMap<RouteKey, PathSet>,
    /// Loc-RIB: the source of the best path per destination.
    best: BTreeMap<RouteKey, PathSource>,
    /// Adj-RIB-Out per established peer.
    adj_out: BTreeMap<PeerId, BTreeMap<RouteKey, Exported>>,
    /// Destinations each peer has paths for (fast peer-down).
    by_peer: BTreeMap<PeerId, BTreeSet<RouteKey>>,
}

impl Rib {
    /// An empty RIB.
    pub fn new(config: RibConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            up: BTreeSet::new(),
            paths: BTreeMap::new(),
            best: BTreeMap::new(),
            adj_out: BTreeMap::new(),
            by_peer: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RibConfig {
        &self.config
    }

    fn cluster_id(&self) -> Ipv4Addr {
        self.config.cluster_id.unwrap_or(self.config.router_id)
    }

    fn is_ibgp(&self, peer: &PeerInfo) -> bool {
        peer.asn == self.config.asn
    }

    // ===== queries =====

    /// The Loc-RIB: every destination with its best path, in key order.
    pub fn best_paths(&self) -> Vec<(RouteKey, Path)> {
        self.best
            .iter()
            .filter_map(|(key, src)| {
                self.paths
                    .get(key)
                    .and_then(|m| m.get(src))
                    .map(|p| (*key, p.clone()))
            })
            .collect()
    }

    /// The Loc-RIB as routes (label and route targets filled in) with their best path.
    pub fn routes(&self) -> Vec<(Route, Path)> {
        self.best_paths()
            .into_iter()
            .map(|(key, path)| (Nlri::from_key(key, path.label).to_route(&path.attrs), path))
            .collect()
    }

    /// The best path for one destination.
    pub fn best(&self, key: &RouteKey) -> Option<&Path> {
        let src = self.best.get(key)?;
        self.paths.get(key)?.get(src)
    }

    /// Every path known for one destination (all peers and local), best first.
    pub fn paths(&self, key: &RouteKey) -> Vec<Path> {
        let Some(m) = self.paths.get(key) else {
            return Vec::new();
        };
        let best = self.best.get(key);
        let mut out: Vec<Path> = m.values().cloned().collect();
        out.sort_by_key(|p| Some(&p.source) != best);
        out
    }

    /// A peer's Adj-RIB-In.
    pub fn adj_rib_in(&self, peer: PeerId) -> Vec<(RouteKey, Path)> {
        let src = PathSource::Peer(peer);
        self.by_peer
            .get(&peer)
            .into_iter()
            .flatten()
            .filter_map(|k| {
                self.paths
                    .get(k)
                    .and_then(|m| m.get(&src))
                    .map(|p| (*k, p.clone()))
            })
            .collect()
    }

    /// What was last advertised to a peer: destination, attributes and label.
    pub fn adj_rib_out(&self, peer: PeerId) -> Vec<(RouteKey, PathAttributes, Option<u32>)> {
        self.adj_out
            .get(&peer)
            .into_iter()
            .flatten()
            .map(|(k, e)| (*k, e.attrs.clone(), e.label))
            .collect()
    }

    // ===== peers =====

    /// A session came up: register the peer and return the full table for it, followed by
    /// an End-of-RIB per family (RFC 4724 §2 recommends it even without graceful restart).
    pub fn peer_up(&mut self, info: PeerInfo) -> RibChanges {
        let id = info.id;
        self.peers.insert(id, info.clone());
        self.up.insert(id);
        self.adj_out.insert(id, BTreeMap::new());
        let keys: Vec<RouteKey> = self.best.keys().copied().collect();
        let mut changes = RibChanges {
            updates: self.export_diff(id, &keys),
            ..RibChanges::default()
        };
        for family in Family::ALL {
            if info.families.contains(&family) {
                changes.updates.push((id, UpdateMsg::end_of_rib(family)));
            }
        }
        changes
    }

    /// A session went down. Without `keep_stale` the peer's routes are withdrawn now;
    /// with it (graceful restart, RFC 4724 §4.2) they stay in use, marked stale, until
    /// [`Rib::purge_stale`].
    pub fn peer_down(&mut self, peer: PeerId, keep_stale: bool) -> RibChanges {
        self.up.remove(&peer);
        self.adj_out.remove(&peer);
        if keep_stale {
            let src = PathSource::Peer(peer);
            for key in self.by_peer.get(&peer).into_iter().flatten() {
                if let Some(p) = self.paths.get_mut(key).and_then(|m| m.get_mut(&src)) {
                    p.stale = true;
                }
            }
            return RibChanges::default();
        }
        self.purge_stale(peer, None, true)
    }

    /// Drops a peer's stale paths (all paths if `everything`), for one family or all:
    /// on End-of-RIB from the returning peer, when its restart time runs out, or when it
    /// comes back without preserving a family (RFC 4724 §4.2).
    pub fn purge_stale(&mut self, peer: PeerId, family: Option<Family>, everything: bool) -> RibChanges {
        let src = PathSource::Peer(peer);
        let keys: Vec<RouteKey> = self
            .by_peer
            .get(&peer)
            .into_iter()
            .flatten()
            .filter(|k| family.is_none_or(|f| k.family() == f))
            .filter(|k| {
                everything
                    || self
                        .paths
                        .get(k)
                        .and_then(|m| m.get(&src))
                        .is_some_and(|p| p.stale)
            })
            .copied()
            .collect();
        let mut changes = RibChanges::default();
        for key in &keys {
            if self.remove_path(key, src) {
                changes.adj_in.push(AdjInChange::Withdrawn { peer, key: *key });
            }
        }
        changes.extend(self.decide(&keys));
        changes
    }

    /// Forgets a peer entirely (deconfigured).
    pub fn remove_peer(&mut self, peer: PeerId) -> RibChanges {
        let changes = self.peer_down(peer, false);
        self.peers.remove(&peer);
        self.by_peer.remove(&peer);
        changes
    }

    // ===== routes in =====

    /// Applies an UPDATE received from an established peer.
    pub fn update_from_peer(&mut self, peer: PeerId, update: &UpdateMsg) -> RibChanges {
        let Some(info) = self.peers.get(&peer).cloned() else {
            return RibChanges::default();
        };
        if !self.up.contains(&peer) {
            return RibChanges::default();
        }
        if let Some(family) = update.end_of_rib {
            return self.purge_stale(peer, Some(family), false);
        }
        let src = PathSource::Peer(peer);
        let mut touched = Vec::new();
        let mut changes = RibChanges::default();
        for key in &update.withdrawn {
            if self.remove_path(key, src) {
                changes.adj_in.push(AdjInChange::Withdrawn { peer, key: *key });
                touched.push(*key);
            }
        }
        if let Some(attrs) = &update.attributes
            && !update.announced.is_empty()
        {
            match self.ingest_attrs(&info, attrs) {
                Ok(attrs) => {
                    let attrs = Arc::new(attrs);
                    for nlri in &update.announced {
                        let key = nlri.key();
                        let path = Path {
                            source: src,
                            attrs: attrs.clone(),
                            label: nlri.label(),
                            stale: false,
                        };
                        self.paths.entry(key).or_default().insert(path);
                        self.by_peer.entry(peer).or_default().insert(key);
                        changes.adj_in.push(AdjInChange::Announced {
                            peer,
                            route: nlri.to_route(&attrs),
                            attrs: attrs.clone(),
                        });
                        touched.push(key);
                    }
                }
                Err(_reason) => {
                    // Loops and bad first AS: the routes are unusable, which implicitly
                    // withdraws what the peer announced before for them.
                    for nlri in &update.announced {
                        let key = nlri.key();
                        if self.remove_path(&key, src) {
                            changes.adj_in.push(AdjInChange::Withdrawn { peer, key });
                            touched.push(key);
                        }
                    }
                }
            }
        }
        changes.extend(self.decide(&touched));
        changes
    }

    /// Ingest checks and attribute clean-up for a peer's announcement.
    fn ingest_attrs(&self, peer: &PeerInfo, attrs: &PathAttributes) -> Result<PathAttributes, &'static str> {
        let mut a = attrs.clone();
        if a.as_path.contains(self.config.asn) {
            return Err("own AS in AS_PATH (RFC 4271 §9.1.2)");
        }
        if self.is_ibgp(peer) {
            if a.originator_id == Some(self.config.router_id) {
                return Err("ORIGINATOR_ID is ours (RFC 4456 §8)");
            }
            if a.cluster_list.contains(&self.cluster_id()) {
                return Err("CLUSTER_LIST contains our cluster (RFC 4456 §8)");
            }
        } else {
            if a.as_path.neighbor_as() != Some(peer.asn) {
                return Err("first AS is not the peer's (RFC 4271 §6.3, RFC 7606 §7.2)");
            }
            // RFC 4271 §5.1.5: LOCAL_PREF from an external peer is ignored; the RFC 4456
            // attributes have no meaning outside the AS.
            a.local_pref = None;
            a.originator_id = None;
            a.cluster_list.clear();
        }
        Ok(a)
    }

    fn remove_path(&mut self, key: &RouteKey, src: PathSource) -> bool {
        let Some(m) = self.paths.get_mut(key) else {
            return false;
        };
        let removed = m.remove(&src).is_some();
        if m.is_empty() {
            self.paths.remove(key);
        }
        if let PathSource::Peer(p) = src
            && removed
            && let Some(set) = self.by_peer.get_mut(&p)
        {
            set.remove(key);
        }
        removed
    }

    // ===== local routes =====

    /// Originates `route` from this speaker (how weft injects a virtual network's routes).
    /// `next_hop`: the node hosting the endpoint, or `None` for this speaker's address on
    /// each session. Replaces an earlier origination of the same destination.
    pub fn originate(&mut self, route: &Route, next_hop: Option<Ipv4Addr>) -> RibChanges {
        let mut attrs = PathAttributes {
            next_hop,
            ..PathAttributes::default()
        };
        let label = match route {
            Route::Ipv4(_) => None,
            Route::Vpnv4(v) => {
                attrs.ext_communities = v
                    .route_targets
                    .iter()
                    .map(|rt| ExtCommunity::RouteTarget(*rt))
                    .collect();
                Some(v.label)
            }
        };
        self.originate_with(route.key(), attrs, label)
    }

    /// Originates a destination with explicit attributes (AS_PATH should be empty; the
    /// own AS is prepended towards external peers).
    pub fn originate_with(&mut self, key: RouteKey, attrs: PathAttributes, label: Option<u32>) -> RibChanges {
        let path = Path {
            source: PathSource::Local,
            attrs: Arc::new(attrs),
            label,
            stale: false,
        };
        self.paths.entry(key).or_default().insert(path);
        self.decide(&[key])
    }

    /// Withdraws a locally originated destination.
    pub fn withdraw(&mut self, key: &RouteKey) -> RibChanges {
        if self.remove_path(key, PathSource::Local) {
            self.decide(&[*key])
        } else {
            RibChanges::default()
        }
    }

    /// The peer asked for our routes of `family` again (RFC 2918): everything in its
    /// Adj-RIB-Out for that family, re-sent.
    pub fn route_refresh(&self, peer: PeerId, family: Family) -> Vec<UpdateMsg> {
        let Some(out) = self.adj_out.get(&peer) else {
            return Vec::new();
        };
        let mut groups = Grouper::default();
        for (key, e) in out.iter().filter(|(k, _)| k.family() == family) {
            groups.add(e.attrs.clone(), Nlri::from_key(*key, e.label));
        }
        groups.into_updates(Vec::new())
    }

    // ===== decision process =====

    /// Recomputes the best path of `keys` and exports the differences.
    fn decide(&mut self, keys: &[RouteKey]) -> RibChanges {
        let mut changes = RibChanges::default();
        let mut changed = Vec::new();
        let unique: BTreeSet<RouteKey> = keys.iter().copied().collect();
        for key in unique {
            let new = self.select(&key);
            let old = self.best.get(&key).copied();
            // The best can keep its source yet change attributes (re-announcement), so
            // exports are recomputed for every touched key; `best_changed` reports both.
            match new {
                Some(src) => {
                    self.best.insert(key, src);
                }
                None => {
                    self.best.remove(&key);
                }
            }
            if old.is_some() || new.is_some() {
                changed.push(key);
            }
        }
        let peers: Vec<PeerId> = self.up.iter().copied().collect();
        for peer in peers {
            changes.updates.extend(self.export_diff(peer, &changed));
        }
        changes.best_changed = changed;
        changes
    }

    /// RFC 4271 §9.1.2.2 as a sequence of eliminations, with RFC 4456 §9 folded in.
    fn select(&self, key: &RouteKey) -> Option<PathSource> {
        let m = self.paths.get(key)?;
        let mut c: Vec<&Path> = m.values().collect();
        if c.len() <= 1 {
            return c.first().map(|p| p.source);
        }
        // a) highest degree of preference (LOCAL_PREF)
        let lp = |p: &Path| p.attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF);
        let max = c.iter().map(|p| lp(p)).max()?;
        c.retain(|p| lp(p) == max);
        // b) shortest AS_PATH (an AS_SET counts as one)
        let min = c.iter().map(|p| p.attrs.as_path.path_len()).min()?;
        c.retain(|p| p.attrs.as_path.path_len() == min);
        // c) lowest ORIGIN
        let min = c.iter().map(|p| p.attrs.origin).min()?;
        c.retain(|p| p.attrs.origin == min);
        // d) lowest MED among routes from the same neighbour AS; a missing MED is 0
        let neighbor = |p: &Path| p.attrs.as_path.neighbor_as().unwrap_or(self.config.asn);
        let med = |p: &Path| p.attrs.med.unwrap_or(0);
        let snapshot = c.clone();
        c.retain(|p| {
            !snapshot
                .iter()
                .any(|q| neighbor(q) == neighbor(p) && med(q) < med(p))
        });
        // e) prefer routes learned over eBGP to routes learned over iBGP (and local ones)
        if c.iter().any(|p| self.learned_over_ebgp(p)) {
            c.retain(|p| self.learned_over_ebgp(p));
        }
        // f) (IGP cost to the next hop: weft has no IGP view; skipped)
        // g) lowest BGP identifier, ORIGINATOR_ID standing in for reflected routes
        let min = c.iter().map(|p| self.identifier(p)).min()?;
        c.retain(|p| self.identifier(p) == min);
        // RFC 4456 §9: shorter CLUSTER_LIST
        let min = c.iter().map(|p| p.attrs.cluster_list.len()).min()?;
        c.retain(|p| p.attrs.cluster_list.len() == min);
        // h) lowest peer address (local routes: 0.0.0.0)
        c.into_iter()
            .min_by_key(|p| self.peer_address(p))
            .map(|p| p.source)
    }

    fn learned_over_ebgp(&self, p: &Path) -> bool {
        match p.source {
            PathSource::Local => false,
            PathSource::Peer(id) => self.peers.get(&id).is_some_and(|i| !self.is_ibgp(i)),
        }
    }

    fn identifier(&self, p: &Path) -> u32 {
        let id = match p.source {
            PathSource::Local => self.config.router_id,
            PathSource::Peer(id) => p
                .attrs
                .originator_id
                .or_else(|| self.peers.get(&id).map(|i| i.router_id))
                .unwrap_or(Ipv4Addr::BROADCAST),
        };
        u32::from(id)
    }

    fn peer_address(&self, p: &Path) -> (u8, u128, u32) {
        match p.source {
            PathSource::Local => (0, 0, 0),
            PathSource::Peer(id) => match self.peers.get(&id).map(|i| i.address) {
                Some(IpAddr::V4(a)) => (1, u128::from(u32::from(a)), id.0),
                Some(IpAddr::V6(a)) => (2, u128::from(a), id.0),
                None => (3, 0, id.0),
            },
        }
    }

    // ===== export =====

    /// What `target` should have for `key` now: attributes and label, or `None`.
    fn export(&self, target: &PeerInfo, key: &RouteKey) -> Option<Exported> {
        if !target.families.contains(&key.family()) {
            return None;
        }
        let src = *self.best.get(key)?;
        let path = self.paths.get(key)?.get(&src)?;
        let target_ibgp = self.is_ibgp(target);
        let source_info = match src {
            PathSource::Local => None,
            PathSource::Peer(id) => {
                if id == target.id {
                    return None;
                }
                Some(self.peers.get(&id)?)
            }
        };
        let source_ibgp = source_info.is_some_and(|i| self.is_ibgp(i));
        let reflecting = source_ibgp && target_ibgp;
        if reflecting {
            // RFC 4456 §6: from a client to everyone, from a non-client to clients only.
            let from_client = source_info.is_some_and(|i| i.rr_client);
            if !from_client && !target.rr_client {
                return None;
            }
        }
        let mut a = (*path.attrs).clone();
        if target_ibgp {
            a.local_pref = Some(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
            if src == PathSource::Local && a.next_hop.is_none() {
                a.next_hop = Some(target.local_address);
            }
            if reflecting && let Some(info) = source_info {
                if a.originator_id.is_none() {
                    a.originator_id = Some(info.router_id);
                }
                a.cluster_list.insert(0, self.cluster_id());
                // Never reflect back to the originator (RFC 4456 §8 loop check would drop it).
                if a.originator_id == Some(target.router_id) {
                    return None;
                }
            }
        } else {
            // RFC 4271 §5.1.2 / §5.1.3 / §5.1.4 / §5.1.5
            a.as_path.prepend(self.config.asn);
            let keep = a.next_hop.is_some() && (src == PathSource::Local || self.config.next_hop_unchanged);
            if !keep {
                a.next_hop = Some(target.local_address);
            }
            if src != PathSource::Local && !source_ibgp {
                a.med = None;
            }
            a.local_pref = None;
            a.originator_id = None;
            a.cluster_list.clear();
        }
        Some(Exported {
            attrs: a,
            label: path.label,
        })
    }

    /// UPDATEs that bring `peer`'s Adj-RIB-Out in line with the Loc-RIB for `keys`.
    fn export_diff(&mut self, peer: PeerId, keys: &[RouteKey]) -> Vec<(PeerId, UpdateMsg)> {
        let Some(target) = self.peers.get(&peer).cloned() else {
            return Vec::new();
        };
        let mut withdrawn = Vec::new();
        let mut groups = Grouper::default();
        let mut adj_out = self.adj_out.remove(&peer).unwrap_or_default();
        for key in keys {
            let want = self.export(&target, key);
            let have = adj_out.get(key);
            if want.as_ref() == have {
                continue;
            }
            match want {
                Some(e) => {
                    groups.add(e.attrs.clone(), Nlri::from_key(*key, e.label));
                    adj_out.insert(*key, e);
                }
                None => {
                    adj_out.remove(key);
                    withdrawn.push(*key);
                }
            }
        }
        self.adj_out.insert(peer, adj_out);
        groups
            .into_updates(withdrawn)
            .into_iter()
            .map(|u| (peer, u))
            .collect()
    }
}

/// Packs announcements with identical attributes into one UPDATE each (the codec splits
/// them further if they exceed 4096 octets).
#[derive(Default)]
struct Grouper {
    index: HashMap<PathAttributes, usize>,
    groups: Vec<(PathAttributes, Vec<Nlri>)>,
}

impl Grouper {
    fn add(&mut self, attrs: PathAttributes, nlri: Nlri) {
        match self.index.get(&attrs) {
            Some(i) => self.groups[*i].1.push(nlri),
            None => {
                self.index.insert(attrs.clone(), self.groups.len());
                self.groups.push((attrs, vec![nlri]));
            }
        }
    }

    fn into_updates(self, withdrawn: Vec<RouteKey>) -> Vec<UpdateMsg> {
        let mut out = Vec::new();
        if !withdrawn.is_empty() {
            out.push(UpdateMsg {
                withdrawn,
                ..UpdateMsg::default()
            });
        }
        for (attrs, announced) in self.groups {
            out.push(UpdateMsg {
                attributes: Some(attrs),
                announced,
                ..UpdateMsg::default()
            });
        }
        out
    }
}
