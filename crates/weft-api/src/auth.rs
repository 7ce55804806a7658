//! API authentication: a shared bearer token guards every write (apply/delete and any other
//! mutating request) and, when a token is configured, the agents' node-state endpoints.
//!
//! Where it sits: [`require_token`] is an axum middleware layered on the API router by
//! [`crate::server::serve_with_auth`]; the clients ([`crate::client::ApiClient`],
//! [`crate::node_client::NodeStateClient`]) send `Authorization: Bearer TOKEN` with the token
//! from [`set_default_token`] (the CLI's `--token-file`) or the `WEFT_TOKEN` environment
//! variable.
//!
//! Policy (see README "API authentication"): without a token the API is open, which is only
//! allowed when the controller listens on loopback or a Unix socket (the development
//! default); [`check_listen`] refuses anything else unless `--insecure` is given.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::types::ErrorBody;

/// Environment variable holding the token (clients, agents and the controller).
pub const TOKEN_ENV: &str = "WEFT_TOKEN";

/// Why a token could not be loaded or a listen address is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read.
    #[error("--token-file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An open API on a non-loopback address.
    #[error(
        "refusing to serve the API on {listen} without a token: anyone who can reach it could change the network. Give --token-file FILE (or WEFT_TOKEN), listen on 127.0.0.1, or pass --insecure"
    )]
    OpenApi {
        /// The listen address.
        listen: String,
    },
}

static DEFAULT_TOKEN: OnceLock<Option<String>> = OnceLock::new();

/// Reads a token: the file's contents (trimmed) if `file` is given, else `$WEFT_TOKEN`;
/// `None` if neither is set. An empty token is an error (it would guard nothing).
pub fn load_token(file: Option<&Path>) -> Result<Option<String>, AuthError> {
    let (token, origin) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| AuthError::TokenFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            (text.trim().to_string(), path.display().to_string())
        }
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => (t.trim().to_string(), format!("${TOKEN_ENV}")),
            Err(_) => return Ok(None),
        },
    };
    if token.is_empty() {
        return Err(AuthError::TokenFile {
            path: origin,
            reason: "the token is empty".into(),
        });
    }
    Ok(Some(token))
}

/// Sets the token every client created afterwards sends (first call wins; the CLI calls it
/// once with its `--token-file`).
pub fn set_default_token(token: Option<String>) {
    let _ = DEFAULT_TOKEN.set(token);
}

/// The token clients send: the one from [`set_default_token`], else `$WEFT_TOKEN`.
pub fn default_token() -> Option<String> {
    match DEFAULT_TOKEN.get() {
        Some(Some(t)) => Some(t.clone()),
        _ => std::env::var(TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
    }
}

/// Refuses to serve an open API (no token) on a non-loopback TCP address unless `insecure`.
/// `listen` is `host:port` as given to `--listen`.
pub fn check_listen(listen: &str, token: Option<&str>, insecure: bool) -> Result<(), AuthError> {
    if token.is_some() || insecure {
        return Ok(());
    }
    let loopback = match listen.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host == "localhost"),
    };
    if loopback {
        Ok(())
    } else {
        Err(AuthError::OpenApi {
            listen: listen.to_string(),
        })
    }
}

/// Compares in time that depends only on the lengths, so a caller cannot find the token byte
/// by byte from response times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a request needs the token: anything that is not a read, and reads of the node
/// state (what agents fetch) when a token is configured.
fn needs_token(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || path.starts_with("/v1/nodes/")
        || path.starts_with("/v1/routes/")
}

/// axum middleware: 401 unless the request carries `Authorization: Bearer TOKEN` where it
/// needs one (every non-GET request, and the node-state reads `/v1/nodes/…`, `/v1/routes/…`).
pub async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    if !needs_token(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => next.run(request).await,
        Some(_) => unauthorized("the bearer token is wrong"),
        None => unauthorized("this request needs `Authorization: Bearer TOKEN` (--token-file or WEFT_TOKEN)"),
    }
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(ErrorBody {
            error: message.to_string(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_api_only_on_loopback() {
        assert!(check_listen("127.0.0.1:7470", None, false).is_ok());
        assert!(check_listen("[::1]:7470", None, false).is_ok());
        assert!(check_listen("localhost:7470", None, false).is_ok());
        let err = check_listen("0.0.0.0:7470", None, false).unwrap_err().to_string();
        assert!(
            err.contains("0.0.0.0:7470") && err.contains("--token-file"),
            "{err}"
        );
        assert!(check_listen("10.0.0.1:7470", None, false).is_err());
        assert!(check_listen("10.0.0.1:7470", Some("t"), false).is_ok());
        assert!(check_listen("10.0.0.1:7470", None, true).is_ok());
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(needs_token(&Method::POST, "/v1/apply"));
        assert!(needs_token(&Method::GET, "/v1/nodes/n1/watch"));
        assert!(!needs_token(&Method::GET, "/v1/status"));
    }
}
