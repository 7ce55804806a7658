//! weft's BGP speaker core (product.md "Control plane: BGP").
//!
//! Layers, bottom up, each usable on its own:
//!
//! - [`types`]: the vocabulary (prefixes, RDs, route targets, path attributes, routes);
//! - [`message`]: BGP messages in weft's types;
//! - [`codec`]: the per-session wire codec over netgauze-bgp-pkt, with RFC 4271 §6
//!   NOTIFICATIONs for decode errors and RFC 7606 outcomes for UPDATE attribute errors;
//! - [`fsm`]: the session state machine (RFC 4271 §8), inputs in, outputs out;
//! - [`rib`]: Adj-RIBs-In, Loc-RIB with the decision process, Adj-RIBs-Out and export rules;
//! - [`speaker`] (and its private `session` module): the tokio edge — listener, one task per peer, the owner
//!   task holding the RIB, and the public [`Speaker`] API.
//!
//! Everything below the transport edge is pure: no I/O, no async, no clock reads.
//!
//! Tested against real peers (tests/interop_*.rs): GoBGP 3.10 (IPv4 and VPNv4 both ways,
//! graceful restart as the restarting speaker with GoBGP as helper, TCP MD5), BIRD 2.0
//! (IPv4 both ways), FRR 8.4 (IPv4 both ways, VPNv4 towards FRR).
//!
//! Session hardening:
//! - TCP MD5 signatures (RFC 2385) for peers with a password ([`md5`]: keys on the
//!   listening and the connecting sockets);
//! - connection collision detection (RFC 4271 §6.8), so both sides may be active;
//! - graceful restart (RFC 4724) on both sides: as the receiving speaker (stale routes,
//!   End-of-RIB, restart timer) and as the restarting one ([`SpeakerConfig::restarted`]
//!   sets the R bit, [`SpeakerConfig::forwarding_preserved`] the F bits,
//!   [`Speaker::shutdown_for_restart`] closes without a NOTIFICATION; End-of-RIB follows
//!   the initial update burst on every session);
//! - the decoder is fuzzed (fuzz/, `scripts/fuzz`; corpus replayed by tests/fuzz_corpus.rs).
//!
//! Not implemented (each documented where it matters):
//! - ADD-PATH, Extended Messages, route-target constraint (SAFI 132), IPv6 families;
//! - propagation of unknown optional transitive attributes (they are dropped);
//! - the restarting speaker's deferral of best-path selection until its peers'
//!   End-of-RIB (RFC 4724 §4.1): weft sends its own routes at once, as a speaker without
//!   preserved RIB state must anyway; the N bit (RFC 8538) is never set;
//! - RFC 7606 "AFI/SAFI disable" (a malformed MP_REACH/MP_UNREACH resets the session);
//! - AS4_AGGREGATOR is not sent towards 2-octet-AS peers.

pub mod codec;
pub mod fsm;
pub mod md5;
pub mod message;
pub mod rib;
mod session;
pub mod speaker;
pub mod types;

pub use codec::{DecodeError, EncodeError, Negotiated, SessionCodec};
pub use fsm::{DownReason, Fsm, FsmConfig, Input, Output, State, Timer};
pub use message::{
    AttrAction, AttributeError, Capability, GracefulRestart, Message, NotificationMsg, OpenMsg,
    RouteRefreshMsg, UpdateMsg,
};
pub use rib::{AdjInChange, Path, PathSource, PeerId, PeerInfo, Rib, RibChanges, RibConfig};
pub use speaker::{PeerConfig, PeerStatus, Speaker, SpeakerConfig, SpeakerError, SpeakerEvent};
pub use types::{
    AsPath, AsSegment, ExtCommunity, Family, Nlri, Origin, PathAttributes, Prefix4, Route,
    RouteDistinguisher, RouteKey, RouteTarget, Vpnv4Route,
};
