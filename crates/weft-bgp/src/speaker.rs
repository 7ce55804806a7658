//! The speaker: tokio tasks around the pure [`Rib`] and [`Fsm`](crate::fsm::Fsm)s.
//!
//! ```text
//!   Speaker (handle) ──ApiCmd──► owner task ──SessionCmd──► session task (peer 1) ◄──► TCP
//!        ▲                       │  Rib       ◄─SessionEvent─ session task (peer 2) ◄──► TCP
//!        │ broadcast             │  peers        ...
//!        └── SpeakerEvent ◄──────┤
//!                                └─ TCP listener (accepts, hands the stream to the peer
//!                                   whose address matches)
//! ```
//!
//! The owner task is the only one touching the RIB; session tasks own their socket, FSM,
//! codec and timers (the private `session` module). Everything crosses task boundaries as messages,
//! so a session that panics or hangs cannot corrupt the RIB or another session.
//!
//! Peers with a password get TCP MD5 keys (RFC 2385) on the listener and on their
//! outgoing sockets ([`crate::md5`]). Inbound connections are matched to peers by source
//! address only, so two *passive* peers behind one address need distinct speakers; a
//! second connection from a peer's address is a collision the session task resolves
//! (RFC 4271 §6.8).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::codec::Negotiated;
use crate::fsm::{DEFAULT_CONNECT_RETRY_SECS, DEFAULT_HOLD_SECS, DEFAULT_IDLE_HOLD_SECS, FsmConfig, State};
use crate::rib::{AdjInChange, Path, PeerId, PeerInfo, Rib, RibChanges, RibConfig};
pub use crate::session::FrameHook;
use crate::session::{self, Endpoint, SessionCmd, SessionEvent};
use crate::types::{Family, PathAttributes, Route, RouteKey};

/// The IANA port for BGP.
pub const BGP_PORT: u16 = 179;

/// What [`PeerStatus::config`] shows instead of a peer's password.
pub const REDACTED: &str = "<redacted>";

/// Speaker-wide configuration.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// Our AS (4-octet capable).
    pub asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Where to accept connections: `0.0.0.0:179` ([`BGP_PORT`]) in production, a high or
    /// ephemeral port on 127.0.0.1 in tests; `None` to only connect out.
    pub listen: Option<SocketAddr>,
    /// Route-reflection cluster id; the router id when `None`.
    pub cluster_id: Option<Ipv4Addr>,
    /// Test/fault-injection hook run on every received frame inside the decode panic guard.
    #[doc(hidden)]
    pub frame_hook: Option<FrameHook>,
    /// Graceful restart as the restarting speaker (RFC 4724 §4.1): this speaker is a
    /// restart of one whose sessions went down without a NOTIFICATION (a crash, or
    /// [`Speaker::shutdown_for_restart`]). The first session with each peer that has
    /// graceful restart configured advertises the Restart State (R) bit, so the peer, which
    /// kept our routes as stale, sends its routes at once and waits for our End-of-RIB.
    pub restarted: bool,
    /// Forwarding State (F) bit per family in our graceful-restart capability: the
    /// forwarding state (weft's agents' tables) survives a restart of this speaker, so a
    /// peer should keep using our routes while we come back. Without it a peer drops our
    /// stale routes as soon as we reconnect.
    pub forwarding_preserved: bool,
    /// Re-advertise learned routes to external peers with their next hop unchanged (see
    /// [`RibConfig::next_hop_unchanged`]); off by default, as in a router.
    pub next_hop_unchanged: bool,
}

impl SpeakerConfig {
    /// A speaker for `asn` with id `router_id`, listening on `listen` if given.
    pub fn new(asn: u32, router_id: Ipv4Addr, listen: Option<SocketAddr>) -> Self {
        Self {
            asn,
            router_id,
            listen,
            cluster_id: None,
            frame_hook: None,
            restarted: false,
            forwarding_preserved: false,
            next_hop_unchanged: false,
        }
    }
}

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// The peer's address.
    pub address: IpAddr,
    /// Its TCP port (179 unless testing).
    pub port: u16,
    /// Its AS; equal to ours for iBGP.
    pub asn: u32,
    /// Families to negotiate.
    pub families: Vec<Family>,
    /// Never connect out; wait for the peer to connect.
    pub passive: bool,
    /// Hold time to propose: 0 or at least 3 seconds.
    pub hold_secs: u16,
    /// Delay between connection attempts.
    pub connect_retry_secs: u16,
    /// Initial delay before restarting after an error (doubles on repeated failures).
    pub idle_hold_secs: u16,
    /// The peer is a route-reflector client (RFC 4456).
    pub rr_client: bool,
    /// Advertise graceful restart (RFC 4724) with this restart time, and keep the peer's
    /// routes as stale when its session fails if it advertised the capability too.
    pub graceful_restart_secs: Option<u16>,
    /// Local address to connect from.
    pub local_address: Option<IpAddr>,
    /// TCP MD5 signature password (RFC 2385), 1 to 80 bytes; the same on both sides.
    /// Without the right one the kernel drops the peer's segments and no session forms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl PeerConfig {
    /// A peer at `address`:179 in `asn`, both families, RFC-default timers.
    pub fn new(address: IpAddr, asn: u32) -> Self {
        Self {
            address,
            port: BGP_PORT,
            asn,
            families: Family::ALL.to_vec(),
            passive: false,
            hold_secs: DEFAULT_HOLD_SECS,
            connect_retry_secs: DEFAULT_CONNECT_RETRY_SECS,
            idle_hold_secs: DEFAULT_IDLE_HOLD_SECS,
            rr_client: false,
            graceful_restart_secs: None,
            local_address: None,
            password: None,
        }
    }

    fn validate(&self) -> Result<(), SpeakerError> {
        let bad = |what: &str| {
            Err(SpeakerError::InvalidConfig(format!(
                "peer {}: {what}",
                self.address
            )))
        };
        if self.hold_secs == 1 || self.hold_secs == 2 {
            return bad("hold_secs must be 0 or at least 3 (RFC 4271 §4.2)");
        }
        if self.families.is_empty() {
            return bad("at least one address family is needed");
        }
        if self.port == 0 {
            return bad("port 0");
        }
        if self.connect_retry_secs == 0 {
            return bad("connect_retry_secs must be at least 1");
        }
        if let Some(p) = &self.password
            && let Err(e) = crate::md5::validate(p)
        {
            return bad(&e);
        }
        Ok(())
    }
}

/// A peer's state, for `weft bgp peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's id in this speaker.
    pub id: PeerId,
    /// Its configuration.
    pub config: PeerConfig,
    /// Session state.
    pub state: State,
    /// How long it has been in that state.
    pub state_for: Option<Duration>,
    /// What was negotiated, while Established.
    pub negotiated: Option<Negotiated>,
    /// Why the session last went down, in words.
    pub last_down: Option<String>,
    /// Destinations in its Adj-RIB-In.
    pub received_routes: usize,
    /// Destinations in its Adj-RIB-Out.
    pub advertised_routes: usize,
    /// Times the session left Established.
    pub flaps: u32,
}

/// What the speaker reports as it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpeakerEvent {
    /// A session reached Established.
    PeerUp {
        /// The peer.
        peer: PeerId,
        /// What was negotiated.
        negotiated: Negotiated,
    },
    /// A session left Established.
    PeerDown {
        /// The peer.
        peer: PeerId,
        /// Why, in words.
        reason: String,
    },
    /// A peer announced a route.
    RouteReceived {
        /// The peer.
        peer: PeerId,
        /// The route.
        route: Route,
        /// Its attributes as received (after ingest clean-up).
        attrs: Arc<PathAttributes>,
    },
    /// A peer withdrew a route (or it went away with the peer).
    RouteWithdrawn {
        /// The peer.
        peer: PeerId,
        /// The destination.
        key: RouteKey,
    },
}

/// Why a speaker call failed.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// The owner task is gone (the speaker was shut down).
    #[error("the BGP speaker has stopped")]
    Stopped,
    /// A configuration value is not acceptable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// No such peer.
    #[error("no peer {0}")]
    NoSuchPeer(PeerId),
    /// Binding the listener failed.
    #[error("cannot listen: {0}")]
    Io(#[from] io::Error),
}

enum ApiCmd {
    AddPeer(PeerConfig, oneshot::Sender<Result<PeerId, SpeakerError>>),
    RemovePeer(PeerId, oneshot::Sender<Result<(), SpeakerError>>),
    Originate(Route, Option<Ipv4Addr>, oneshot::Sender<()>),
    OriginateWith(RouteKey, PathAttributes, Option<u32>, oneshot::Sender<()>),
    Withdraw(RouteKey, oneshot::Sender<()>),
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    Routes(oneshot::Sender<Vec<(Route, Path)>>),
    AdjRibIn(PeerId, oneshot::Sender<Vec<(RouteKey, Path)>>),
    SendRaw(PeerId, Vec<u8>, oneshot::Sender<Result<(), SpeakerError>>),
    Shutdown(oneshot::Sender<()>),
    ShutdownForRestart(oneshot::Sender<()>),
}

/// A running BGP speaker. Cheap to clone; every clone talks to the same owner task.
/// Dropping the last clone does not stop it: call [`Speaker::shutdown`].
#[derive(Debug, Clone)]
pub struct Speaker {
    api_tx: mpsc::UnboundedSender<ApiCmd>,
    events_tx: broadcast::Sender<SpeakerEvent>,
    local_addr: Option<SocketAddr>,
}

impl Speaker {
    /// Binds the listener (if configured) and starts the owner task.
    pub async fn new(config: SpeakerConfig) -> Result<Self, SpeakerError> {
        let listener = match config.listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let (api_tx, api_rx) = mpsc::unbounded_channel();
        let (events_tx, _) = broadcast::channel(4096);
        let (session_tx, session_rx) = mpsc::unbounded_channel();
        let owner = Owner {
            rib: Rib::new(RibConfig {
                asn: config.asn,
                router_id: config.router_id,
                cluster_id: config.cluster_id,
                next_hop_unchanged: config.next_hop_unchanged,
            }),
            config,
            listener,
            peers: BTreeMap::new(),
            next_id: 1,
            events_tx: events_tx.clone(),
            session_tx,
        };
        tokio::spawn(owner.run(api_rx, session_rx));
        Ok(Self {
            api_tx,
            events_tx,
            local_addr,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> ApiCmd) -> Result<T, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.api_tx.send(make(tx)).map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Adds a peer and starts its session.
    pub async fn add_peer(&self, config: PeerConfig) -> Result<PeerId, SpeakerError> {
        config.validate()?;
        self.call(|tx| ApiCmd::AddPeer(config, tx)).await?
    }

    /// Stops a peer's session (Cease / Administrative Shutdown) and forgets it and its routes.
    pub async fn remove_peer(&self, peer: PeerId) -> Result<(), SpeakerError> {
        self.call(|tx| ApiCmd::RemovePeer(peer, tx)).await?
    }

    /// Originates a route; `next_hop` `None` means this speaker's address on each session.
    pub async fn originate(&self, route: Route, next_hop: Option<Ipv4Addr>) -> Result<(), SpeakerError> {
        self.call(|tx| ApiCmd::Originate(route, next_hop, tx)).await
    }

    /// Originates a destination with explicit attributes (e.g. extra extended
    /// communities such as weft's router-MAC), `label` for VPNv4. The AS_PATH should be
    /// empty: the own AS is prepended towards external peers.
    pub async fn originate_with(
        &self,
        key: RouteKey,
        attrs: PathAttributes,
        label: Option<u32>,
    ) -> Result<(), SpeakerError> {
        self.call(|tx| ApiCmd::OriginateWith(key, attrs, label, tx)).await
    }

    /// Withdraws a locally originated route.
    pub async fn withdraw(&self, key: RouteKey) -> Result<(), SpeakerError> {
        self.call(|tx| ApiCmd::Withdraw(key, tx)).await
    }

    /// Every peer's status.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        self.call(ApiCmd::Peers).await
    }

    /// The Loc-RIB: each route with its best path.
    pub async fn routes(&self) -> Result<Vec<(Route, Path)>, SpeakerError> {
        self.call(ApiCmd::Routes).await
    }

    /// One peer's Adj-RIB-In.
    pub async fn adj_rib_in(&self, peer: PeerId) -> Result<Vec<(RouteKey, Path)>, SpeakerError> {
        self.call(|tx| ApiCmd::AdjRibIn(peer, tx)).await
    }

    /// Writes raw bytes on a peer's connection, bypassing the codec. For tests of how
    /// peers react to malformed messages; never used by weft itself.
    #[doc(hidden)]
    pub async fn send_raw(&self, peer: PeerId, bytes: Vec<u8>) -> Result<(), SpeakerError> {
        self.call(|tx| ApiCmd::SendRaw(peer, bytes, tx)).await?
    }

    /// A stream of events from now on. A receiver that falls more than 4096 events behind
    /// gets `Lagged` and should resynchronise with [`Speaker::routes`].
    pub fn subscribe(&self) -> broadcast::Receiver<SpeakerEvent> {
        self.events_tx.subscribe()
    }

    /// Stops every session (Cease / Administrative Shutdown) and the owner task.
    pub async fn shutdown(&self) {
        let _ = self.call(ApiCmd::Shutdown).await;
    }

    /// Stops like a crash would, for a planned restart (an upgrade): every connection is
    /// closed *without* a NOTIFICATION, so peers that negotiated graceful restart (RFC 4724)
    /// keep our routes as stale for our restart time instead of withdrawing them. Start the
    /// new speaker with [`SpeakerConfig::restarted`] set.
    pub async fn shutdown_for_restart(&self) {
        let _ = self.call(ApiCmd::ShutdownForRestart).await;
    }
}

struct PeerEntry {
    config: PeerConfig,
    cmd_tx: mpsc::UnboundedSender<SessionCmd>,
    state: State,
    since: Option<std::time::Instant>,
    generation: u64,
    negotiated: Option<Negotiated>,
    last_down: Option<String>,
    flaps: u32,
    /// Stale routes from a graceful restart are purged at this time (RFC 4724 §4.2).
    stale_deadline: Option<Instant>,
}

struct Owner {
    config: SpeakerConfig,
    /// The listening socket (MD5 keys are installed on it).
    listener: Option<TcpListener>,
    rib: Rib,
    peers: BTreeMap<PeerId, PeerEntry>,
    next_id: u32,
    events_tx: broadcast::Sender<SpeakerEvent>,
    session_tx: mpsc::UnboundedSender<SessionEvent>,
}

async fn accept(listener: &Option<TcpListener>) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Owner {
    async fn run(
        mut self,
        mut api_rx: mpsc::UnboundedReceiver<ApiCmd>,
        mut session_rx: mpsc::UnboundedReceiver<SessionEvent>,
    ) {
        loop {
            let stale = self.peers.values().filter_map(|p| p.stale_deadline).min();
            tokio::select! {
                cmd = api_rx.recv() => match cmd {
                    None => {
                        self.shutdown();
                        return;
                    }
                    Some(ApiCmd::Shutdown(reply)) => {
                        self.shutdown();
                        let _ = reply.send(());
                        return;
                    }
                    Some(ApiCmd::ShutdownForRestart(reply)) => {
                        self.abort_sessions().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.api(cmd),
                },
                Some(ev) = session_rx.recv() => self.session_event(ev),
                res = accept(&self.listener) => match res {
                    Ok((stream, remote)) => self.inbound(stream, remote),
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = sleep_opt(stale) => self.purge_expired_stale(),
            }
        }
    }

    fn shutdown(&mut self) {
        for p in self.peers.values() {
            let _ = p.cmd_tx.send(SessionCmd::Shutdown);
        }
    }

    /// Closes every session without a NOTIFICATION; returns once each session task has
    /// acknowledged (its socket is closed then), waiting at most 5 s for each.
    async fn abort_sessions(&mut self) {
        let mut done = Vec::new();
        for p in self.peers.values() {
            let (tx, rx) = oneshot::channel();
            if p.cmd_tx.send(SessionCmd::Abort(tx)).is_ok() {
                done.push(rx);
            }
        }
        for rx in done {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }

    fn api(&mut self, cmd: ApiCmd) {
        match cmd {
            ApiCmd::AddPeer(config, reply) => {
                let _ = reply.send(self.add_peer(config));
            }
            ApiCmd::RemovePeer(id, reply) => {
                let res = match self.peers.remove(&id) {
                    Some(p) => {
                        let _ = p.cmd_tx.send(SessionCmd::Shutdown);
                        self.remove_listener_key(&p.config);
                        let changes = self.rib.remove_peer(id);
                        self.dispatch(changes);
                        Ok(())
                    }
                    None => Err(SpeakerError::NoSuchPeer(id)),
                };
                let _ = reply.send(res);
            }
            ApiCmd::Originate(route, next_hop, reply) => {
                let changes = self.rib.originate(&route, next_hop);
                self.dispatch(changes);
                let _ = reply.send(());
            }
            ApiCmd::OriginateWith(key, attrs, label, reply) => {
                let changes = self.rib.originate_with(key, attrs, label);
                self.dispatch(changes);
                let _ = reply.send(());
            }
            ApiCmd::Withdraw(key, reply) => {
                let changes = self.rib.withdraw(&key);
                self.dispatch(changes);
                let _ = reply.send(());
            }
            ApiCmd::Peers(reply) => {
                let _ = reply.send(self.statuses());
            }
            ApiCmd::Routes(reply) => {
                let _ = reply.send(self.rib.routes());
            }
            ApiCmd::AdjRibIn(peer, reply) => {
                let _ = reply.send(self.rib.adj_rib_in(peer));
            }
            ApiCmd::SendRaw(peer, bytes, reply) => {
                let res = match self.peers.get(&peer) {
                    Some(p) => p
                        .cmd_tx
                        .send(SessionCmd::SendRaw(bytes))
                        .map_err(|_| SpeakerError::Stopped),
                    None => Err(SpeakerError::NoSuchPeer(peer)),
                };
                let _ = reply.send(res);
            }
            ApiCmd::Shutdown(_) | ApiCmd::ShutdownForRestart(_) => {}
        }
    }

    /// Installs the peer's MD5 key on the listener, so its inbound connections are
    /// signed and checked (RFC 2385); a no-op without a password or a listener.
    fn set_listener_key(&self, config: &PeerConfig) -> Result<(), SpeakerError> {
        let Some(pw) = &config.password else {
            return Ok(());
        };
        self.listener_key(config.address, Some(pw)).map_err(|e| {
            SpeakerError::InvalidConfig(format!(
                "peer {}: cannot set the TCP MD5 key on the listener: {e}",
                config.address
            ))
        })
    }

    /// Installs (`Some`) or removes (`None`) the MD5 key for `address` on the listener.
    fn listener_key(&self, address: IpAddr, password: Option<&str>) -> io::Result<()> {
        let Some(l) = &self.listener else {
            return Ok(());
        };
        let v6 = l.local_addr().is_ok_and(|a| a.is_ipv6());
        crate::md5::set_key(l, v6, address, password)
    }

    /// Removes a removed peer's MD5 key from the listener unless another peer at the same
    /// address still uses one.
    fn remove_listener_key(&self, config: &PeerConfig) {
        if config.password.is_none() {
            return;
        }
        if let Some(other) = self
            .peers
            .values()
            .find(|p| p.config.address == config.address && p.config.password.is_some())
        {
            // Another peer at this address: its key (re)installed wins.
            let _ = self.set_listener_key(&other.config);
            return;
        }
        if let Err(e) = self.listener_key(config.address, None) {
            warn!(address = %config.address, error = %e, "cannot remove the TCP MD5 key from the listener");
        }
    }

    fn add_peer(&mut self, config: PeerConfig) -> Result<PeerId, SpeakerError> {
        self.set_listener_key(&config)?;
        let id = PeerId(self.next_id);
        self.next_id += 1;
        let fsm = FsmConfig {
            local_asn: self.config.asn,
            router_id: self.config.router_id,
            peer_asn: config.asn,
            hold_secs: config.hold_secs,
            connect_retry_secs: config.connect_retry_secs,
            idle_hold_secs: config.idle_hold_secs,
            passive: config.passive,
            families: config.families.clone(),
            graceful_restart_secs: config.graceful_restart_secs,
            restart_state: self.config.restarted,
            forwarding_preserved: self.config.forwarding_preserved,
        };
        let endpoint = Endpoint {
            remote: SocketAddr::new(config.address, config.port),
            local: config.local_address,
            password: config.password.clone(),
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        tokio::spawn(session::run(
            id,
            fsm,
            endpoint,
            cmd_rx,
            self.session_tx.clone(),
            self.config.frame_hook,
        ));
        let _ = cmd_tx.send(SessionCmd::Start);
        info!(peer = %id, address = %config.address, port = config.port, asn = config.asn, "peer added");
        self.peers.insert(
            id,
            PeerEntry {
                config,
                cmd_tx,
                state: State::Idle,
                since: None,
                generation: 0,
                negotiated: None,
                last_down: None,
                flaps: 0,
                stale_deadline: None,
            },
        );
        Ok(id)
    }

    fn statuses(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(id, p)| PeerStatus {
                id: *id,
                config: PeerConfig {
                    // Status goes to CLIs and logs: never the secret itself.
                    password: p.config.password.as_ref().map(|_| REDACTED.to_string()),
                    ..p.config.clone()
                },
                state: p.state,
                state_for: p.since.map(|s| s.elapsed()),
                negotiated: p.negotiated.clone(),
                last_down: p.last_down.clone(),
                received_routes: self.rib.adj_rib_in(*id).len(),
                advertised_routes: self.rib.adj_rib_out(*id).len(),
                flaps: p.flaps,
            })
            .collect()
    }

    fn inbound(&mut self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        // Prefer a peer that is waiting for a connection; addresses alone may be shared.
        let candidates: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.config.address == remote.ip())
            .map(|(id, _)| *id)
            .collect();
        let chosen = candidates
            .iter()
            .find(|id| {
                self.peers
                    .get(id)
                    .is_some_and(|p| matches!(p.state, State::Active | State::Connect))
            })
            .or(candidates.first())
            .copied();
        match chosen.and_then(|id| self.peers.get(&id)) {
            Some(p) => {
                debug!(%remote, "inbound connection");
                let _ = p.cmd_tx.send(SessionCmd::Inbound(stream));
            }
            None => debug!(%remote, "connection from an unknown address refused"),
        }
    }

    fn session_event(&mut self, ev: SessionEvent) {
        match ev {
            SessionEvent::State { peer, state, since } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.state = state;
                    p.since = Some(since);
                }
            }
            SessionEvent::Established {
                peer,
                generation,
                negotiated,
                local,
                remote,
            } => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                p.generation = generation;
                p.negotiated = Some(negotiated.clone());
                p.stale_deadline = None;
                let local_address = match local.ip() {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(self.config.router_id),
                };
                let info = PeerInfo {
                    id: peer,
                    address: remote.ip(),
                    asn: negotiated.peer_asn,
                    router_id: negotiated.peer_router_id,
                    local_address,
                    rr_client: p.config.rr_client,
                    families: negotiated.families.clone(),
                };
                let mut changes = self.rib.peer_up(info);
                // RFC 4724 §4.2: stale routes of families the peer did not preserve go now.
                for family in Family::ALL {
                    let preserved = negotiated
                        .peer_graceful_restart
                        .as_ref()
                        .is_some_and(|gr| gr.families.iter().any(|(f, fwd)| *f == family && *fwd));
                    if !preserved {
                        let purged = self.rib.purge_stale(peer, Some(family), false);
                        changes.updates.extend(purged.updates);
                        changes.adj_in.extend(purged.adj_in);
                    }
                }
                self.dispatch(changes);
                let _ = self.events_tx.send(SpeakerEvent::PeerUp { peer, negotiated });
            }
            SessionEvent::Down {
                peer,
                was_established,
                reason,
                graceful,
            } => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                p.last_down = Some(reason.to_string());
                if !was_established {
                    return;
                }
                p.flaps += 1;
                let restart_secs = p
                    .negotiated
                    .take()
                    .and_then(|n| n.peer_graceful_restart)
                    .map(|g| g.restart_secs);
                let keep = graceful && p.config.graceful_restart_secs.is_some() && restart_secs.is_some();
                if keep {
                    let secs = u64::from(restart_secs.unwrap_or(0));
                    p.stale_deadline = Some(Instant::now() + Duration::from_secs(secs));
                }
                let changes = self.rib.peer_down(peer, keep);
                self.dispatch(changes);
                let _ = self.events_tx.send(SpeakerEvent::PeerDown {
                    peer,
                    reason: reason.to_string(),
                });
            }
            SessionEvent::Update {
                peer,
                generation,
                update,
            } => {
                if self.peers.get(&peer).is_some_and(|p| p.generation == generation) {
                    let changes = self.rib.update_from_peer(peer, &update);
                    self.dispatch(changes);
                }
            }
            SessionEvent::RouteRefresh {
                peer,
                generation,
                family,
            } => {
                if let Some(p) = self.peers.get(&peer)
                    && p.generation == generation
                {
                    let updates = self.rib.route_refresh(peer, family);
                    let _ = p.cmd_tx.send(SessionCmd::Send { generation, updates });
                }
            }
        }
    }

    fn purge_expired_stale(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| p.stale_deadline.is_some_and(|d| d <= now))
            .map(|(id, p)| {
                p.stale_deadline = None;
                *id
            })
            .collect();
        for peer in expired {
            info!(%peer, "graceful restart time ran out; dropping stale routes");
            let changes = self.rib.purge_stale(peer, None, false);
            self.dispatch(changes);
        }
    }

    /// Sends each peer its UPDATEs and publishes Adj-RIB-In changes.
    fn dispatch(&mut self, changes: RibChanges) {
        let mut per_peer: HashMap<PeerId, Vec<_>> = HashMap::new();
        for (peer, update) in changes.updates {
            per_peer.entry(peer).or_default().push(update);
        }
        for (peer, updates) in per_peer {
            if let Some(p) = self.peers.get(&peer) {
                let _ = p.cmd_tx.send(SessionCmd::Send {
                    generation: p.generation,
                    updates,
                });
            }
        }
        for change in changes.adj_in {
            let ev = match change {
                AdjInChange::Announced { peer, route, attrs } => {
                    SpeakerEvent::RouteReceived { peer, route, attrs }
                }
                AdjInChange::Withdrawn { peer, key } => SpeakerEvent::RouteWithdrawn { peer, key },
            };
            let _ = self.events_tx.send(ev);
        }
    }
}
