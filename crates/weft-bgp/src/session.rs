//! One peer's session task: the I/O around a [`Fsm`].
//!
//! The task owns the TCP connection, the read buffer, the codec and the timers; it turns
//! socket events and timer expiries into FSM inputs and carries out the FSM's outputs.
//! It talks to the speaker's owner task only through [`SessionCmd`] (in) and
//! [`SessionEvent`] (out).
//!
//! Connection collisions (RFC 4271 §6.8): a connection from the peer that arrives while
//! our session is in OpenSent or OpenConfirm is held aside while a small task reads its
//! OPEN; then the connection initiated by the speaker with the higher BGP identifier is
//! kept and the other one closed with Cease / Connection Collision Resolution. A second
//! connection while Established is closed the same way.
//!
//! Containment: every received frame is decoded inside `catch_unwind`, so a panic while
//! decoding one peer's message becomes a NOTIFICATION (UPDATE/OPEN/Header error,
//! Unspecific) and a session reset for that peer only. The whole task body is also run
//! under `catch_unwind`: any other panic is reported as the session going down and the
//! session restarts from Idle after its idle-hold delay.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use crate::codec::{DecodeError, Negotiated, SessionCodec};
use crate::fsm::{DownReason, Fsm, FsmConfig, Input, Output, State, Timer};
use crate::message::{Message, NotificationMsg, OpenMsg, UpdateMsg, notif};
use crate::rib::PeerId;
use crate::types::Family;

/// Bound on connecting out, so a black-holed address does not hold the session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one write; a peer that stops reading for this long is treated as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on writing the NOTIFICATION before closing.
const NOTIFICATION_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on reading the OPEN of a colliding second connection.
const COLLISION_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A colliding connection with the OPEN read from it (and any bytes after the OPEN).
type PendingOpen = (TcpStream, Result<(OpenMsg, Vec<u8>), String>);

/// A test and fault-injection hook called with every received frame, inside the decode
/// panic guard, before decoding. `None` in production.
pub type FrameHook = fn(&[u8]);

/// Commands from the owner task.
#[derive(Debug)]
pub(crate) enum SessionCmd {
    /// Start the FSM (ManualStart).
    Start,
    /// Stop it (ManualStop) and exit the task.
    Shutdown,
    /// Close the connection without a NOTIFICATION (as a crash would, for graceful
    /// restart), acknowledge, and exit the task.
    Abort(tokio::sync::oneshot::Sender<()>),
    /// An accepted connection from this peer's address.
    Inbound(TcpStream),
    /// UPDATEs to send, valid only for the session incarnation `generation`.
    Send {
        generation: u64,
        updates: Vec<UpdateMsg>,
    },
    /// Send raw bytes as they are (tests: malformed messages from our side).
    SendRaw(Vec<u8>),
}

/// Events to the owner task.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    State {
        peer: PeerId,
        state: State,
        since: std::time::Instant,
    },
    Established {
        peer: PeerId,
        generation: u64,
        negotiated: Negotiated,
        local: SocketAddr,
        remote: SocketAddr,
    },
    Down {
        peer: PeerId,
        was_established: bool,
        reason: DownReason,
        graceful: bool,
    },
    Update {
        peer: PeerId,
        generation: u64,
        update: UpdateMsg,
    },
    RouteRefresh {
        peer: PeerId,
        generation: u64,
        family: Family,
    },
}

/// Where and how to reach the peer.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub remote: SocketAddr,
    pub local: Option<IpAddr>,
    /// TCP MD5 password (RFC 2385), installed on the socket before connecting.
    pub password: Option<String>,
}

struct Conn {
    /// We initiated this connection (for collision resolution).
    outbound: bool,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    local: SocketAddr,
    remote: SocketAddr,
}

struct Session {
    peer: PeerId,
    endpoint: Endpoint,
    fsm: Fsm,
    codec: SessionCodec,
    conn: Option<Conn>,
    buf: Vec<u8>,
    connecting: Option<JoinHandle<io::Result<TcpStream>>>,
    /// A second connection from the peer whose OPEN is being read (collision).
    pending: Option<JoinHandle<PendingOpen>>,
    deadlines: [Option<Instant>; 4],
    generation: u64,
    established: bool,
    /// The established session negotiated graceful restart (RFC 4724).
    gr_negotiated: bool,
    events_tx: mpsc::UnboundedSender<SessionEvent>,
    frame_hook: Option<FrameHook>,
}

const TIMERS: [Timer; 4] = [
    Timer::ConnectRetry,
    Timer::Hold,
    Timer::Keepalive,
    Timer::IdleHold,
];

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
        Timer::IdleHold => 3,
    }
}

fn expiry_input(t: Timer) -> Input {
    match t {
        Timer::ConnectRetry => Input::ConnectRetryTimerExpired,
        Timer::Hold => Input::HoldTimerExpired,
        Timer::Keepalive => Input::KeepaliveTimerExpired,
        Timer::IdleHold => Input::IdleHoldTimerExpired,
    }
}

/// Runs a peer's session until [`SessionCmd::Shutdown`] or until the owner goes away.
pub(crate) async fn run(
    peer: PeerId,
    config: FsmConfig,
    endpoint: Endpoint,
    mut cmd_rx: mpsc::UnboundedReceiver<SessionCmd>,
    events_tx: mpsc::UnboundedSender<SessionEvent>,
    frame_hook: Option<FrameHook>,
) {
    let mut started = false;
    loop {
        let mut session = Session {
            peer,
            endpoint: endpoint.clone(),
            fsm: Fsm::new(config.clone()),
            codec: SessionCodec::default(),
            conn: None,
            buf: Vec::new(),
            connecting: None,
            pending: None,
            deadlines: [None; 4],
            generation: 0,
            established: false,
            gr_negotiated: false,
            events_tx: events_tx.clone(),
            frame_hook,
        };
        if started {
            session.feed(Input::Start).await;
        }
        let result = AssertUnwindSafe(session.run(&mut cmd_rx, &mut started))
            .catch_unwind()
            .await;
        match result {
            Ok(()) => return,
            Err(_) => {
                warn!(%peer, "session task panicked; resetting the session");
                session.abort_tasks();
                let _ = session.events_tx.send(SessionEvent::Down {
                    peer,
                    was_established: session.established,
                    reason: DownReason::ProtocolError("internal error (panic) in the session task".into()),
                    graceful: false,
                });
                // Give the peer a pause before the fresh incarnation restarts.
                tokio::time::sleep(Duration::from_secs(u64::from(config.idle_hold_secs.max(1)))).await;
            }
        }
    }
}

/// Waits for the colliding connection's OPEN, or never completes when there is none.
async fn pending_open(h: &mut Option<JoinHandle<PendingOpen>>) -> Option<PendingOpen> {
    match h {
        Some(h) => h.await.ok(),
        None => std::future::pending().await,
    }
}

/// Reads the first message of a colliding connection, which must be an OPEN.
async fn read_open(mut stream: TcpStream) -> PendingOpen {
    let codec = SessionCodec::default();
    let mut buf = Vec::new();
    let mut scratch = [0u8; 4096];
    let res = timeout(COLLISION_OPEN_TIMEOUT, async {
        loop {
            match SessionCodec::frame_len(&buf) {
                Ok(Some(len)) => {
                    let rest = buf.split_off(len);
                    return match codec.decode(&buf) {
                        Ok(Message::Open(open)) => Ok((open, rest)),
                        Ok(m) => Err(format!("expected OPEN, got {}", m.kind())),
                        Err(e) => Err(e.detail),
                    };
                }
                Ok(None) => {}
                Err(e) => return Err(e.detail),
            }
            match stream.read(&mut scratch).await {
                Ok(0) => return Err("connection closed before its OPEN".to_string()),
                Ok(n) => buf.extend_from_slice(&scratch[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no OPEN in time".to_string()));
    (stream, res)
}

/// Writes a Cease NOTIFICATION with `subcode` on a connection we close.
async fn reject(mut stream: TcpStream, subcode: u8) {
    let bytes = SessionCodec::default()
        .encode(&Message::Notification(NotificationMsg::cease(subcode)))
        .unwrap_or_default();
    let _ = timeout(NOTIFICATION_TIMEOUT, stream.write_all(&bytes)).await;
    let _ = timeout(NOTIFICATION_TIMEOUT, stream.shutdown()).await;
}

/// Reads from the connection, or never completes when there is none.
async fn read_some(conn: &mut Option<Conn>, scratch: &mut [u8]) -> io::Result<usize> {
    match conn {
        Some(c) => c.reader.read(scratch).await,
        None => std::future::pending().await,
    }
}

/// Waits for the connect attempt, or never completes when there is none.
async fn connected(h: &mut Option<JoinHandle<io::Result<TcpStream>>>) -> io::Result<TcpStream> {
    match h {
        Some(h) => match h.await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(e)),
        },
        None => std::future::pending().await,
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn run(&mut self, cmd_rx: &mut mpsc::UnboundedReceiver<SessionCmd>, started: &mut bool) {
        let mut scratch = vec![0u8; 64 * 1024];
        loop {
            let next = self.deadlines.iter().flatten().min().copied();
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    None | Some(SessionCmd::Shutdown) => {
                        self.feed(Input::Stop).await;
                        self.abort_tasks();
                        return;
                    }
                    Some(SessionCmd::Abort(done)) => {
                        self.abort_tasks();
                        // Dropping both halves closes the socket; no NOTIFICATION.
                        self.conn = None;
                        let _ = done.send(());
                        return;
                    }
                    Some(SessionCmd::Start) => {
                        *started = true;
                        self.feed(Input::Start).await;
                    }
                    Some(SessionCmd::Inbound(stream)) => self.inbound(stream).await,
                    Some(SessionCmd::Send { generation, updates }) => {
                        if generation == self.generation && self.fsm.state() == State::Established {
                            for u in updates {
                                self.send_update(&u).await;
                            }
                        }
                    }
                    Some(SessionCmd::SendRaw(bytes)) => {
                        if self.write(&bytes).await.is_err() {
                            self.feed(Input::TcpFailed).await;
                        }
                    }
                },
                res = connected(&mut self.connecting) => {
                    self.connecting = None;
                    match res {
                        Ok(stream) => {
                            self.attach(stream, true);
                            self.feed(Input::TcpConnected).await;
                        }
                        Err(e) => {
                            debug!(peer = %self.peer, error = %e, "connect failed");
                            self.feed(Input::TcpFailed).await;
                        }
                    }
                },
                res = pending_open(&mut self.pending) => {
                    self.pending = None;
                    if let Some((stream, open)) = res {
                        self.resolve_collision(stream, open).await;
                    }
                },
                res = read_some(&mut self.conn, &mut scratch) => match res {
                    Ok(0) | Err(_) => {
                        self.conn = None;
                        self.feed(Input::TcpFailed).await;
                    }
                    Ok(n) => {
                        self.buf.extend_from_slice(&scratch[..n]);
                        self.drain_frames().await;
                    }
                },
                () = sleep_opt(next) => {
                    let now = Instant::now();
                    for t in TIMERS {
                        if self.deadlines[timer_index(t)].is_some_and(|d| d <= now) {
                            self.deadlines[timer_index(t)] = None;
                            self.feed(expiry_input(t)).await;
                        }
                    }
                }
            }
        }
    }

    /// Stops the connect attempt and the colliding connection's OPEN reader, if any.
    fn abort_tasks(&mut self) {
        if let Some(h) = self.connecting.take() {
            h.abort();
        }
        if let Some(h) = self.pending.take() {
            h.abort();
        }
    }

    /// Makes `stream` the session's connection; `outbound`: we initiated it.
    fn attach(&mut self, stream: TcpStream, outbound: bool) {
        let _ = stream.set_nodelay(true);
        let (Ok(local), Ok(remote)) = (stream.local_addr(), stream.peer_addr()) else {
            return;
        };
        let (reader, writer) = stream.into_split();
        self.buf.clear();
        self.conn = Some(Conn {
            reader,
            writer,
            local,
            remote,
            outbound,
        });
    }

    async fn inbound(&mut self, stream: TcpStream) {
        let state = self.fsm.state();
        if matches!(state, State::Connect | State::Active) && self.conn.is_none() {
            self.take_inbound(stream).await;
            return;
        }
        if matches!(state, State::OpenSent | State::OpenConfirm) && self.pending.is_none() {
            // A collision (RFC 4271 §6.8): learn the peer's BGP identifier from its OPEN.
            debug!(peer = %self.peer, ?state, "second connection from the peer: reading its OPEN");
            self.pending = Some(tokio::spawn(read_open(stream)));
            return;
        }
        let subcode = if state == State::Established {
            notif::CEASE_COLLISION
        } else {
            notif::CEASE_CONNECTION_REJECTED
        };
        debug!(peer = %self.peer, ?state, "refusing a second connection");
        reject(stream, subcode).await;
    }

    /// Decides between our connection and a colliding one whose OPEN has arrived.
    async fn resolve_collision(&mut self, stream: TcpStream, open: Result<(OpenMsg, Vec<u8>), String>) {
        let (open, rest) = match open {
            Ok(o) => o,
            Err(e) => {
                debug!(peer = %self.peer, error = %e, "colliding connection dropped");
                return;
            }
        };
        let state = self.fsm.state();
        let local_id = u32::from(self.fsm.config().router_id);
        let remote_id = u32::from(open.router_id);
        // Our own connection is gone meanwhile (e.g. the peer closed it after resolving
        // the collision its way first): the new one is all there is.
        let ours_gone = self.conn.is_none()
            && (matches!(state, State::Connect | State::Active)
                || (state == State::Idle && self.fsm.is_armed(Timer::IdleHold)));
        let keep_new = if ours_gone {
            true
        } else if matches!(state, State::OpenSent | State::OpenConfirm) {
            // Keep the connection initiated by the speaker with the higher identifier.
            self.conn.as_ref().is_some_and(|c| c.outbound) && remote_id > local_id
        } else {
            false
        };
        info!(peer = %self.peer, ?state, local_id = %self.fsm.config().router_id, remote_id = %open.router_id,
            kept = if keep_new { "the peer's connection" } else { "ours" }, "connection collision resolved");
        if !keep_new {
            reject(stream, notif::CEASE_COLLISION).await;
            return;
        }
        if matches!(state, State::OpenSent | State::OpenConfirm) {
            self.feed(Input::ConnectionCollision).await;
        } else if state == State::Idle {
            self.feed(Input::Start).await;
        }
        if !matches!(self.fsm.state(), State::Connect | State::Active) {
            reject(stream, notif::CEASE_CONNECTION_REJECTED).await;
            return;
        }
        if self.take_inbound(stream).await {
            self.feed(Input::MessageReceived(Message::Open(open))).await;
            self.buf = rest;
            self.drain_frames().await;
        }
    }

    /// Makes `stream`, a connection the peer initiated, the session's connection (the FSM
    /// is in Connect or Active): our own connect attempt stops. False if it is unusable.
    async fn take_inbound(&mut self, stream: TcpStream) -> bool {
        if let Some(h) = self.connecting.take() {
            h.abort();
        }
        self.attach(stream, false);
        if self.conn.is_none() {
            return false;
        }
        self.feed(Input::TcpConnected).await;
        true
    }

    async fn drain_frames(&mut self) {
        while self.conn.is_some() {
            match SessionCodec::frame_len(&self.buf) {
                Ok(None) => return,
                Ok(Some(len)) => {
                    let frame: Vec<u8> = self.buf.drain(..len).collect();
                    let input = self.decode_guarded(&frame);
                    self.feed(input).await;
                }
                Err(e) => {
                    self.buf.clear();
                    self.feed(Input::DecodeError(e)).await;
                    return;
                }
            }
        }
    }

    /// Decodes one frame; a panic inside becomes a decode error with an Unspecific
    /// NOTIFICATION of the message's kind.
    fn decode_guarded(&self, frame: &[u8]) -> Input {
        let hook = self.frame_hook;
        let codec = &self.codec;
        match std::panic::catch_unwind(AssertUnwindSafe(|| {
            if let Some(h) = hook {
                h(frame);
            }
            codec.decode(frame)
        })) {
            Ok(Ok(m)) => Input::MessageReceived(m),
            Ok(Err(e)) => Input::DecodeError(e),
            Err(_) => {
                let code = match frame.get(18) {
                    Some(1) => notif::OPEN,
                    Some(2) => notif::UPDATE,
                    _ => notif::MESSAGE_HEADER,
                };
                warn!(peer = %self.peer, "panic while decoding a message; resetting the session");
                Input::DecodeError(DecodeError {
                    notification: NotificationMsg::new(code, notif::UNSPECIFIC, Vec::new()),
                    detail: "internal error (panic) while decoding the message".into(),
                })
            }
        }
    }

    /// Feeds an input and carries out the outputs, including inputs they cause.
    async fn feed(&mut self, input: Input) {
        let mut queue = std::collections::VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let outputs = self.fsm.process(input, std::time::Instant::now());
            for o in outputs {
                if let Some(next) = self.apply(o).await {
                    queue.push_back(next);
                }
            }
        }
    }

    async fn apply(&mut self, o: Output) -> Option<Input> {
        match o {
            Output::Connect => {
                if let Some(h) = self.connecting.take() {
                    h.abort();
                }
                let ep = self.endpoint.clone();
                self.connecting = Some(tokio::spawn(async move {
                    match timeout(CONNECT_TIMEOUT, connect(&ep)).await {
                        Ok(r) => r,
                        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                    }
                }));
            }
            Output::Send(m) => {
                let bytes = match self.codec.encode(&m) {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(peer = %self.peer, error = %e, kind = m.kind(), "cannot encode our own message");
                        return None;
                    }
                };
                if self.write(&bytes).await.is_err() {
                    return Some(Input::TcpFailed);
                }
            }
            Output::ArmTimer { timer, secs } => {
                self.deadlines[timer_index(timer)] =
                    Some(Instant::now() + Duration::from_secs(u64::from(secs)));
            }
            Output::StopTimer(timer) => self.deadlines[timer_index(timer)] = None,
            Output::Established(negotiated) => {
                self.codec = negotiated.codec();
                self.generation += 1;
                self.established = true;
                self.gr_negotiated = negotiated.peer_graceful_restart.is_some();
                let Some(conn) = &self.conn else {
                    return Some(Input::TcpFailed);
                };
                info!(peer = %self.peer, remote = %conn.remote, families = ?negotiated.families, hold = negotiated.hold_secs, "session established");
                let _ = self.events_tx.send(SessionEvent::Established {
                    peer: self.peer,
                    generation: self.generation,
                    negotiated,
                    local: conn.local,
                    remote: conn.remote,
                });
            }
            Output::Down { reason, notification } => {
                if let Some(h) = self.connecting.take() {
                    h.abort();
                }
                if let Some(mut conn) = self.conn.take() {
                    if let Some(n) = &notification
                        && let Ok(bytes) = self.codec.encode(&Message::Notification(n.clone()))
                    {
                        let _ = timeout(NOTIFICATION_TIMEOUT, conn.writer.write_all(&bytes)).await;
                    }
                    let _ = timeout(NOTIFICATION_TIMEOUT, conn.writer.shutdown()).await;
                }
                self.buf.clear();
                let was_established = std::mem::take(&mut self.established);
                // RFC 4724 §4.2: only a transport failure (not a NOTIFICATION) keeps routes.
                let graceful = was_established
                    && std::mem::take(&mut self.gr_negotiated)
                    && matches!(reason, DownReason::TcpFailed | DownReason::HoldTimerExpired);
                if was_established || !matches!(reason, DownReason::TcpFailed | DownReason::Stopped) {
                    info!(peer = %self.peer, %reason, sent = ?notification.as_ref().map(ToString::to_string), "session down");
                }
                self.codec = SessionCodec::default();
                let _ = self.events_tx.send(SessionEvent::Down {
                    peer: self.peer,
                    was_established,
                    reason,
                    graceful,
                });
            }
            Output::RoutesReceived(update) => {
                for e in &update.errors {
                    debug!(peer = %self.peer, type_code = e.type_code, action = ?e.action, detail = %e.detail, "UPDATE attribute error");
                }
                let _ = self.events_tx.send(SessionEvent::Update {
                    peer: self.peer,
                    generation: self.generation,
                    update,
                });
            }
            Output::RouteRefreshRequested(family) => {
                let _ = self.events_tx.send(SessionEvent::RouteRefresh {
                    peer: self.peer,
                    generation: self.generation,
                    family,
                });
            }
            Output::StateChanged { to, .. } => {
                let since = self.fsm.state_since().unwrap_or_else(std::time::Instant::now);
                let _ = self.events_tx.send(SessionEvent::State {
                    peer: self.peer,
                    state: to,
                    since,
                });
            }
        }
        None
    }

    async fn send_update(&mut self, u: &UpdateMsg) {
        let frames = match self.codec.encode_update(u) {
            Ok(f) => f,
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "cannot encode an UPDATE; skipped");
                return;
            }
        };
        for f in frames {
            if self.write(&f).await.is_err() {
                self.feed(Input::TcpFailed).await;
                return;
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(conn) = &mut self.conn else {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        };
        match timeout(WRITE_TIMEOUT, conn.writer.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"))
            }
        }
    }
}

async fn connect(ep: &Endpoint) -> io::Result<TcpStream> {
    let socket = match ep.remote {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(pw) = &ep.password {
        crate::md5::set_key(&socket, ep.remote.is_ipv6(), ep.remote.ip(), Some(pw))?;
    }
    if let Some(local) = ep.local {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    socket.connect(ep.remote).await
}
