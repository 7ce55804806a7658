//! The BGP session state machine (RFC 4271 §8), sans-IO.
//!
//! Contract: no async, no tokio, no sockets, no clock reads. The driver feeds [`Input`]s
//! (with the current time as a value) and carries out the returned [`Output`]s in order:
//! open a TCP connection, write a message, arm or stop a timer, report the session up or
//! down, hand received routes to the RIB. Timers are outputs ([`Output::ArmTimer`]) and
//! inputs ([`Input::HoldTimerExpired`] …); the driver owns the real sleeps.
//!
//! ```text
//!            Start                      TcpConnected / send OPEN
//!   Idle ───────────► Connect ─────────────────────────────► OpenSent
//!    ▲   (passive)      │ ▲ TcpFailed          ▲ TcpConnected   │ OPEN ok / send KEEPALIVE
//!    │       └────► Active ◄──┘                │                ▼
//!    │                  └──────────────────────┘           OpenConfirm
//!    │   error, NOTIFICATION, hold expiry, Stop               │ KEEPALIVE
//!    └────────────────────────────────────────────────── Established
//! ```
//!
//! Deviations from the RFC, deliberately:
//! - Connection collision detection (RFC 4271 §6.8) is split: the driver reads the OPEN
//!   on a second connection and compares BGP identifiers; when the FSM's own connection
//!   loses, it feeds [`Input::ConnectionCollision`] (OpenCollisionDump, Event 23): the
//!   FSM sends Cease / Connection Collision Resolution, closes, and waits in Active for
//!   the driver to hand it the winning connection (no failure counted, no idle hold).
//! - After an error, the FSM returns to Idle and arms an idle-hold timer whose expiry is
//!   the automatic restart (RFC 4271 Events 3 and 13); the delay doubles with each
//!   consecutive failure up to [`MAX_IDLE_HOLD_SECS`] (DampPeerOscillations, §8.1.1).
//!   A manual [`Input::Stop`] disables the automatic restart until the next `Start`.
//! - A TCP failure in Active stays in Active (the RFC goes to Idle) so a listening peer
//!   keeps listening.
//! - Expiry of a timer the FSM did not arm is ignored, so a driver race can never tear a
//!   session down.

use std::net::Ipv4Addr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, Negotiated, keepalive_for};
use crate::message::{
    BGP_VERSION, Capability, GracefulRestart, Message, NotificationMsg, OpenMsg, UpdateMsg, notif,
};
use crate::types::{AS_TRANS, Family};

/// Hold time proposed while waiting for the peer's OPEN: "a large value", 4 minutes
/// (RFC 4271 §8.2.2, OpenSent).
pub const OPEN_SENT_HOLD_SECS: u16 = 240;
/// Default ConnectRetryTimer (RFC 4271 §10 suggests 120 s).
pub const DEFAULT_CONNECT_RETRY_SECS: u16 = 120;
/// Default hold time to propose (RFC 4271 §10 suggests 90 s).
pub const DEFAULT_HOLD_SECS: u16 = 90;
/// Default initial delay before restarting a session that went down on an error.
pub const DEFAULT_IDLE_HOLD_SECS: u16 = 5;
/// Upper bound for the idle-hold delay after repeated failures.
pub const MAX_IDLE_HOLD_SECS: u16 = 120;

/// Session states (RFC 4271 §8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Not trying; waits for Start (or the automatic restart).
    Idle,
    /// Connecting out over TCP.
    Connect,
    /// Waiting for the peer to connect (and, unless passive, to retry connecting out).
    Active,
    /// OPEN sent, waiting for the peer's OPEN.
    OpenSent,
    /// OPENs exchanged, waiting for the first KEEPALIVE.
    OpenConfirm,
    /// Exchanging routes.
    Established,
}

/// The timers the FSM arms through the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Timer {
    /// ConnectRetryTimer (RFC 4271 §8.1.3).
    ConnectRetry,
    /// HoldTimer.
    Hold,
    /// KeepaliveTimer.
    Keepalive,
    /// IdleHoldTimer (RFC 4271 §8.1.1, optional): delay before the automatic restart.
    IdleHold,
}

impl Timer {
    const ALL: [Timer; 4] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::IdleHold,
    ];

    fn index(self) -> usize {
        match self {
            Self::ConnectRetry => 0,
            Self::Hold => 1,
            Self::Keepalive => 2,
            Self::IdleHold => 3,
        }
    }
}

/// What the driver feeds the FSM. Each variant names the RFC 4271 §8.1 events it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// ManualStart (Event 1), or ManualStart_with_PassiveTcpEstablishment (Event 4) when
    /// the peer is configured passive.
    Start,
    /// ManualStop (Event 2).
    Stop,
    /// Tcp_CR_Acked (Event 16) or TcpConnectionConfirmed (Event 17): a TCP connection to
    /// the peer exists, outgoing or accepted.
    TcpConnected,
    /// TcpConnectionFails (Event 18): the connect attempt failed or the connection closed.
    TcpFailed,
    /// BGPOpen (19), NotifMsg (25), KeepAliveMsg (26), UpdateMsg (27), and ROUTE-REFRESH.
    MessageReceived(Message),
    /// BGPHeaderErr (21), BGPOpenMsgErr (22), UpdateMsgErr (28): a message that failed to
    /// decode, with the NOTIFICATION to answer.
    DecodeError(DecodeError),
    /// ConnectRetryTimer_Expires (Event 9).
    ConnectRetryTimerExpired,
    /// HoldTimer_Expires (Event 10).
    HoldTimerExpired,
    /// KeepaliveTimer_Expires (Event 11).
    KeepaliveTimerExpired,
    /// IdleHoldTimer_Expires (Event 13), which triggers AutomaticStart (Event 3).
    IdleHoldTimerExpired,
    /// OpenCollisionDump (Event 23): this FSM's connection lost connection collision
    /// resolution (RFC 4271 §6.8) to another connection from the same peer.
    ConnectionCollision,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// Open a TCP connection to the peer, abandoning any attempt in progress.
    Connect,
    /// Write this message on the connection.
    Send(Message),
    /// (Re)arm a timer to expire `secs` from now.
    ArmTimer {
        /// Which timer.
        timer: Timer,
        /// Delay in seconds.
        secs: u16,
    },
    /// Disarm a timer.
    StopTimer(Timer),
    /// The session is up: configure the codec and send the routes.
    Established(Negotiated),
    /// Close the connection: write `notification` first if there is one. If the session was
    /// Established, the peer's routes must be withdrawn (or kept stale for graceful restart).
    Down {
        /// Why.
        reason: DownReason,
        /// The NOTIFICATION to send before closing, if any.
        notification: Option<NotificationMsg>,
    },
    /// An UPDATE arrived in Established: hand it to the RIB.
    RoutesReceived(UpdateMsg),
    /// The peer asked for our routes of `family` again (RFC 2918).
    RouteRefreshRequested(Family),
    /// The state changed (for status and logs).
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
    },
}

/// Why a connection or session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownReason {
    /// Stopped by configuration (`Input::Stop`).
    Stopped,
    /// Nothing arrived within the hold time.
    HoldTimerExpired,
    /// The TCP connection failed or closed.
    TcpFailed,
    /// The peer sent this NOTIFICATION.
    NotificationReceived(NotificationMsg),
    /// We found a protocol error and sent a NOTIFICATION.
    ProtocolError(String),
    /// The connection lost collision resolution (RFC 4271 §6.8) to another one.
    ConnectionCollision,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stopped => f.write_str("stopped"),
            Self::HoldTimerExpired => f.write_str("hold timer expired"),
            Self::TcpFailed => f.write_str("TCP connection failed or closed"),
            Self::NotificationReceived(n) => write!(f, "peer sent NOTIFICATION {n}"),
            Self::ProtocolError(e) => write!(f, "protocol error: {e}"),
            Self::ConnectionCollision => {
                f.write_str("connection collision: closed in favour of the peer's other connection")
            }
        }
    }
}

/// Session configuration, fixed for the FSM's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsmConfig {
    /// Our AS.
    pub local_asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The AS the peer must announce (RFC 4271 §6.2 Bad Peer AS otherwise).
    pub peer_asn: u32,
    /// Hold time we propose: 0 (no keepalives) or at least 3.
    pub hold_secs: u16,
    /// ConnectRetryTimer value.
    pub connect_retry_secs: u16,
    /// Initial delay before an automatic restart after an error.
    pub idle_hold_secs: u16,
    /// Never connect out; wait for the peer.
    pub passive: bool,
    /// Families to offer (Multiprotocol capabilities).
    pub families: Vec<Family>,
    /// Advertise graceful restart (RFC 4724) with this Restart Time.
    pub graceful_restart_secs: Option<u16>,
    /// We are a restarting speaker (RFC 4724 §4.1): the first OPEN with graceful restart
    /// carries the Restart State (R) bit; later sessions of this FSM clear it.
    #[serde(default)]
    pub restart_state: bool,
    /// Set the Forwarding State (F) bit for every family in our graceful-restart
    /// capability: our forwarding survives a restart of this speaker.
    #[serde(default)]
    pub forwarding_preserved: bool,
}

impl FsmConfig {
    /// A configuration with RFC-suggested timers, both families, active, no GR.
    pub fn new(local_asn: u32, router_id: Ipv4Addr, peer_asn: u32) -> Self {
        Self {
            local_asn,
            router_id,
            peer_asn,
            hold_secs: DEFAULT_HOLD_SECS,
            connect_retry_secs: DEFAULT_CONNECT_RETRY_SECS,
            idle_hold_secs: DEFAULT_IDLE_HOLD_SECS,
            passive: false,
            families: Family::ALL.to_vec(),
            graceful_restart_secs: None,
            restart_state: false,
            forwarding_preserved: false,
        }
    }

    /// True if the peer is in our AS (internal BGP).
    pub fn is_ibgp(&self) -> bool {
        self.local_asn == self.peer_asn
    }

    /// The OPEN this configuration sends.
    pub fn open(&self) -> OpenMsg {
        let mut caps: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::multiprotocol(*f))
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::FourOctetAs(self.local_asn));
        if let Some(secs) = self.graceful_restart_secs {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restarted: self.restart_state,
                notification: false,
                restart_secs: secs.min(0x0fff),
                families: self
                    .families
                    .iter()
                    .map(|f| (*f, self.forwarding_preserved))
                    .collect(),
            }));
        }
        OpenMsg::new(self.local_asn, self.hold_secs, self.router_id, caps)
    }
}

/// One BGP session's state machine.
#[derive(Debug, Clone)]
pub struct Fsm {
    config: FsmConfig,
    state: State,
    state_since: Option<Instant>,
    armed: [bool; 4],
    /// Consecutive failed sessions (RFC 4271 ConnectRetryCounter), for the restart backoff.
    failures: u32,
    /// Set by Stop: no automatic restart until the next Start.
    stopped: bool,
    local_open: Option<OpenMsg>,
    negotiated: Option<Negotiated>,
    last_down: Option<DownReason>,
}

impl Fsm {
    /// A session in Idle, waiting for [`Input::Start`].
    pub fn new(config: FsmConfig) -> Self {
        Self {
            config,
            state: State::Idle,
            state_since: None,
            armed: [false; 4],
            failures: 0,
            stopped: true,
            local_open: None,
            negotiated: None,
            last_down: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FsmConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When the current state was entered (time of the input that caused it).
    pub fn state_since(&self) -> Option<Instant> {
        self.state_since
    }

    /// What was negotiated, while OpenConfirm or Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Why the last connection or session ended.
    pub fn last_down(&self) -> Option<&DownReason> {
        self.last_down.as_ref()
    }

    /// True if `timer` is armed.
    pub fn is_armed(&self, timer: Timer) -> bool {
        self.armed[timer.index()]
    }

    /// Feeds one input; returns what the driver must do, in order.
    pub fn process(&mut self, input: Input, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        // Stale timer expirations (a timer we no longer consider armed) are ignored.
        let timer = match input {
            Input::ConnectRetryTimerExpired => Some(Timer::ConnectRetry),
            Input::HoldTimerExpired => Some(Timer::Hold),
            Input::KeepaliveTimerExpired => Some(Timer::Keepalive),
            Input::IdleHoldTimerExpired => Some(Timer::IdleHold),
            _ => None,
        };
        if let Some(t) = timer {
            if !self.armed[t.index()] {
                return out;
            }
            self.armed[t.index()] = false;
        }

        use State::*;
        match (self.state, input) {
            // ----- Idle -----
            (Idle, Input::Start) => {
                self.stopped = false;
                self.failures = 0;
                self.start(now, &mut out);
            }
            (Idle, Input::IdleHoldTimerExpired) if !self.stopped => self.start(now, &mut out),
            (Idle, Input::TcpConnected) => {
                // Not started: refuse the connection (RFC 4271 §8.2.2, Idle ignores it).
                self.down(
                    DownReason::Stopped,
                    Some(NotificationMsg::cease(notif::CEASE_CONNECTION_REJECTED)),
                    &mut out,
                );
            }
            (Idle, _) => {}

            // ----- Stop, from any non-Idle state (Event 2) -----
            (_, Input::Stop) => {
                self.stopped = true;
                let notification = matches!(self.state, OpenSent | OpenConfirm | Established)
                    .then(|| NotificationMsg::cease(notif::CEASE_ADMIN_SHUTDOWN));
                self.stop_all_timers(&mut out);
                self.down(DownReason::Stopped, notification, &mut out);
                self.transition(Idle, now, &mut out);
            }

            // ----- Connect / Active -----
            (Connect | Active, Input::ConnectRetryTimerExpired) => {
                self.arm(Timer::ConnectRetry, self.config.connect_retry_secs, &mut out);
                out.push(Output::Connect);
                self.transition(Connect, now, &mut out);
            }
            (Connect | Active, Input::TcpConnected) => {
                self.stop(Timer::ConnectRetry, &mut out);
                let open = self.config.open();
                out.push(Output::Send(Message::Open(open.clone())));
                self.local_open = Some(open);
                self.arm(Timer::Hold, OPEN_SENT_HOLD_SECS, &mut out);
                self.transition(OpenSent, now, &mut out);
            }
            (Connect | Active, Input::TcpFailed) => {
                if !self.config.passive {
                    self.arm(Timer::ConnectRetry, self.config.connect_retry_secs, &mut out);
                }
                self.transition(Active, now, &mut out);
            }
            (Connect | Active, _) => {}

            // ----- OpenSent / OpenConfirm: collision lost (Event 23) -----
            (OpenSent | OpenConfirm, Input::ConnectionCollision) => {
                self.stop_all_timers(&mut out);
                self.down(
                    DownReason::ConnectionCollision,
                    Some(NotificationMsg::cease(notif::CEASE_COLLISION)),
                    &mut out,
                );
                self.transition(Active, now, &mut out);
            }
            (_, Input::ConnectionCollision) => {}

            // ----- common to OpenSent, OpenConfirm, Established -----
            (_, Input::HoldTimerExpired) => {
                self.fail(
                    DownReason::HoldTimerExpired,
                    Some(NotificationMsg::new(notif::HOLD_TIMER_EXPIRED, 0, Vec::new())),
                    now,
                    &mut out,
                );
            }
            (OpenSent, Input::TcpFailed) => {
                // RFC 4271 §8.2.2 OpenSent, Event 18: close, restart ConnectRetry, Active.
                self.stop(Timer::Hold, &mut out);
                self.down(DownReason::TcpFailed, None, &mut out);
                if !self.config.passive {
                    self.arm(Timer::ConnectRetry, self.config.connect_retry_secs, &mut out);
                }
                self.transition(Active, now, &mut out);
            }
            (_, Input::TcpFailed) => self.fail(DownReason::TcpFailed, None, now, &mut out),
            (_, Input::DecodeError(e)) => self.fail(
                DownReason::ProtocolError(e.detail),
                Some(e.notification),
                now,
                &mut out,
            ),
            (_, Input::MessageReceived(Message::Notification(n))) => {
                self.fail(DownReason::NotificationReceived(n), None, now, &mut out)
            }
            (OpenConfirm | Established, Input::KeepaliveTimerExpired) => {
                out.push(Output::Send(Message::Keepalive));
                self.arm_keepalive(&mut out);
            }

            // ----- OpenSent -----
            (OpenSent, Input::MessageReceived(Message::Open(open))) => match self.open_validate(&open) {
                Ok(negotiated) => {
                    out.push(Output::Send(Message::Keepalive));
                    self.negotiated = Some(negotiated);
                    self.arm_keepalive(&mut out);
                    self.restart_hold(&mut out);
                    self.transition(OpenConfirm, now, &mut out);
                }
                Err((notification, detail)) => self.fail(
                    DownReason::ProtocolError(detail),
                    Some(notification),
                    now,
                    &mut out,
                ),
            },
            (OpenSent, Input::MessageReceived(m)) => {
                self.unexpected(&m, notif::FSM_IN_OPENSENT, now, &mut out)
            }

            // ----- OpenConfirm -----
            (OpenConfirm, Input::MessageReceived(Message::Keepalive)) => {
                self.restart_hold(&mut out);
                self.failures = 0;
                // RFC 4724 §4.1: the R bit belongs to the first session after the restart.
                self.config.restart_state = false;
                self.transition(Established, now, &mut out);
                if let Some(n) = &self.negotiated {
                    out.push(Output::Established(n.clone()));
                }
            }
            (OpenConfirm, Input::MessageReceived(m)) => {
                self.unexpected(&m, notif::FSM_IN_OPENCONFIRM, now, &mut out)
            }

            // ----- Established -----
            (Established, Input::MessageReceived(Message::Keepalive)) => self.restart_hold(&mut out),
            (Established, Input::MessageReceived(Message::Update(update))) => {
                self.restart_hold(&mut out);
                out.push(Output::RoutesReceived(update));
            }
            (Established, Input::MessageReceived(Message::RouteRefresh(rr))) => {
                self.restart_hold(&mut out);
                // RFC 2918 §4: a refresh for a family not negotiated is ignored.
                if let (Some(family), Some(n)) = (rr.family(), &self.negotiated)
                    && n.families.contains(&family)
                    && rr.subtype == 0
                {
                    out.push(Output::RouteRefreshRequested(family));
                }
            }
            (Established, Input::MessageReceived(m)) => {
                self.unexpected(&m, notif::FSM_IN_ESTABLISHED, now, &mut out)
            }

            // Remaining timer events in states where they mean nothing (already filtered
            // for staleness above), Start while running, TcpConnected on a live session.
            (_, Input::TcpConnected) => {}
            (_, Input::Start | Input::ConnectRetryTimerExpired | Input::KeepaliveTimerExpired) => {}
            (_, Input::IdleHoldTimerExpired) => {}
        }
        out
    }

    // ===== actions =====

    fn start(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.stop(Timer::IdleHold, out);
        if self.config.passive {
            self.transition(State::Active, now, out);
        } else {
            self.arm(Timer::ConnectRetry, self.config.connect_retry_secs, out);
            out.push(Output::Connect);
            self.transition(State::Connect, now, out);
        }
    }

    /// Validates the peer's OPEN (RFC 4271 §6.2, RFC 6793, RFC 6286, RFC 5492).
    fn open_validate(&self, open: &OpenMsg) -> Result<Negotiated, (NotificationMsg, String)> {
        let reject = |subcode: u8, data: Vec<u8>, detail: String| {
            Err((NotificationMsg::new(notif::OPEN, subcode, data), detail))
        };
        if open.version != BGP_VERSION {
            return reject(
                notif::OPEN_UNSUPPORTED_VERSION,
                u16::from(BGP_VERSION).to_be_bytes().to_vec(),
                format!("peer speaks BGP version {}", open.version),
            );
        }
        let peer_asn = open.asn();
        if peer_asn != self.config.peer_asn {
            let detail = if open.my_as == AS_TRANS && open.four_octet_as().is_none() {
                format!(
                    "peer sent AS_TRANS without a 4-octet AS capability, expected AS {}",
                    self.config.peer_asn
                )
            } else {
                format!("peer is AS {peer_asn}, expected AS {}", self.config.peer_asn)
            };
            return reject(notif::OPEN_BAD_PEER_AS, Vec::new(), detail);
        }
        if open.hold_secs == 1 || open.hold_secs == 2 {
            return reject(
                notif::OPEN_UNACCEPTABLE_HOLD_TIME,
                open.hold_secs.to_be_bytes().to_vec(),
                format!("hold time {} s is neither 0 nor at least 3", open.hold_secs),
            );
        }
        if open.router_id.is_unspecified() {
            return reject(
                notif::OPEN_BAD_BGP_ID,
                open.router_id.octets().to_vec(),
                "BGP identifier 0.0.0.0".into(),
            );
        }
        if self.config.is_ibgp() && open.router_id == self.config.router_id {
            return reject(
                notif::OPEN_BAD_BGP_ID,
                open.router_id.octets().to_vec(),
                format!("internal peer uses our own BGP identifier {}", open.router_id),
            );
        }
        let local = self.local_open.clone().unwrap_or_else(|| self.config.open());
        let negotiated = Negotiated::from_opens(&local, open);
        if negotiated.families.is_empty() {
            // RFC 5492 §5: we cannot work without a common family.
            let mut data = Vec::new();
            for f in &self.config.families {
                let (afi, safi) = f.afi_safi();
                let [a, b] = afi.to_be_bytes();
                data.extend_from_slice(&[1, 4, a, b, 0, safi]);
            }
            return reject(
                notif::OPEN_UNSUPPORTED_CAPABILITY,
                data,
                format!("no address family in common (peer offers {:?})", open.families()),
            );
        }
        Ok(negotiated)
    }

    fn unexpected(&mut self, m: &Message, subcode: u8, now: Instant, out: &mut Vec<Output>) {
        let detail = format!("unexpected {} in {:?}", m.kind(), self.state);
        self.fail(
            DownReason::ProtocolError(detail),
            Some(NotificationMsg::new(notif::FSM, subcode, Vec::new())),
            now,
            out,
        );
    }

    /// Ends the session on an error: close, go Idle, arm the automatic restart.
    fn fail(
        &mut self,
        reason: DownReason,
        notification: Option<NotificationMsg>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        self.stop_all_timers(out);
        self.down(reason, notification, out);
        self.failures = self.failures.saturating_add(1);
        self.transition(State::Idle, now, out);
        if !self.stopped {
            let shift = self.failures.saturating_sub(1).min(6);
            let secs = u32::from(self.config.idle_hold_secs.max(1)) << shift;
            let secs = secs.min(u32::from(MAX_IDLE_HOLD_SECS.max(self.config.idle_hold_secs))) as u16;
            self.arm(Timer::IdleHold, secs, out);
        }
    }

    fn down(&mut self, reason: DownReason, notification: Option<NotificationMsg>, out: &mut Vec<Output>) {
        self.last_down = Some(reason.clone());
        out.push(Output::Down { reason, notification });
    }

    fn transition(&mut self, to: State, now: Instant, out: &mut Vec<Output>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.state_since = Some(now);
        if !matches!(to, State::OpenConfirm | State::Established) {
            self.negotiated = None;
        }
        if to == State::Idle || to == State::Connect || to == State::Active {
            self.local_open = None;
        }
        out.push(Output::StateChanged { from, to });
    }

    fn arm(&mut self, timer: Timer, secs: u16, out: &mut Vec<Output>) {
        self.armed[timer.index()] = true;
        out.push(Output::ArmTimer { timer, secs });
    }

    fn stop(&mut self, timer: Timer, out: &mut Vec<Output>) {
        if self.armed[timer.index()] {
            self.armed[timer.index()] = false;
            out.push(Output::StopTimer(timer));
        }
    }

    fn stop_all_timers(&mut self, out: &mut Vec<Output>) {
        for t in Timer::ALL {
            self.stop(t, out);
        }
    }

    /// Hold timer at the negotiated value; a negotiated 0 means no hold timer (§4.4).
    fn restart_hold(&mut self, out: &mut Vec<Output>) {
        match self.negotiated.as_ref().map(|n| n.hold_secs) {
            Some(0) => self.stop(Timer::Hold, out),
            Some(secs) => self.arm(Timer::Hold, secs, out),
            None => self.arm(Timer::Hold, OPEN_SENT_HOLD_SECS, out),
        }
    }

    fn arm_keepalive(&mut self, out: &mut Vec<Output>) {
        let secs = keepalive_for(self.negotiated.as_ref().map(|n| n.hold_secs).unwrap_or(0));
        if secs == 0 {
            self.stop(Timer::Keepalive, out);
        } else {
            self.arm(Timer::Keepalive, secs, out);
        }
    }
}
