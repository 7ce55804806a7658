//! The controller's runtime and its HTTP API.
//!
//! ```text
//!  weft apply (CLI) ──HTTP──> server ──┐
//!  Kubernetes watch (weft-kube) ───────┴─> Controller ──> Translator (pure)
//!                                              │  inputs + derived changes, one txn
//!                                              v
//!                                         ConfigStore (redb / etcd)
//! ```
//!
//! [`Controller`] owns the translator behind one lock: every batch of input changes is
//! validated, translated and written to the store in a single transaction, so the store
//! never holds an input without its derived objects (or an address without its owner),
//! whatever moment the process dies at. [`server`] exposes it over HTTP/JSON;
//! [`client`] is the typed client the CLI uses; [`manifest`] parses YAML the way
//! kubectl does.
//!
//! Towards the data plane: [`Controller::node_state`] compiles one node's forwarding
//! state (with `weft-routing`), [`server`] streams it as NDJSON on
//! `/v1/nodes/{node}/watch` (TCP, and a Unix socket for agents in other network
//! namespaces), and [`node_client`] is the agents' client of that stream.

pub mod auth;
pub mod bgp;
pub mod client;
pub mod controller;
pub mod explain;
pub mod manifest;
pub mod node_client;
pub mod server;
pub mod types;

pub use controller::Controller;
