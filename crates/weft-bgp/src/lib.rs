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
//! Tested against real peers (tests/interop_*.rs): GoBGP 3.10 (IPv4 and VPNv4 both ways),
//! BIRD 2.0 (IPv4 both ways), FRR 8.4 (IPv4 both ways, VPNv4 towards FRR).
//!
//! Not implemented (each documented where it matters):
//! - TCP MD5 signatures (RFC 2385);
//! - connection collision detection (RFC 4271 §6.8): configure one side passive;
//! - ADD-PATH, Extended Messages, route-target constraint (SAFI 132), IPv6 families;
//! - propagation of unknown optional transitive attributes (they are dropped);
//! - graceful restart as the *restarting* speaker (R and F bits are always 0); the
//!   receiving-speaker side (stale routes, End-of-RIB, restart timer) is implemented;
//! - RFC 7606 "AFI/SAFI disable" (a malformed MP_REACH/MP_UNREACH resets the session);
//! - AS4_AGGREGATOR is not sent towards 2-octet-AS peers.

pub mod codec;
pub mod fsm;
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
