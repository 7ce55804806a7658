//! Typed HTTP client of the controller API, used by the CLI (and tests). Agents use
//! [`crate::node_client`] instead (it also speaks over Unix sockets); both share
//! [`ClientError`].

use serde::de::DeserializeOwned;
use weft_model::DerivedObject;
use weft_model::config::EffectiveConfig;

use crate::types::{ApplyReport, ApplyRequest, ConsistencyReport, ControllerStatus, ErrorBody};

/// `e` and, when it differs, its innermost source (e.g. "Connection refused"), which
/// the HTTP client's own message ("error sending request for url …") leaves out.
fn with_root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut root = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let (text, cause) = (e.to_string(), root.to_string());
    if std::ptr::addr_eq(root, e) || text.contains(&cause) {
        text
    } else {
        format!("{text}: {cause}")
    }
}

/// Errors talking to the controller.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The controller could not be reached.
    #[error(
        "cannot reach the weft controller at {url}: {reason} (is `weft controller` running? set --server or WEFT_SERVER)"
    )]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// The controller answered with an error.
    #[error("the controller refused {what}: {message}")]
    Refused {
        /// The request.
        what: String,
        /// Its message.
        message: String,
    },
    /// A URL the client cannot use.
    #[error("invalid controller URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A watch stream broke after it was established (closed, silent, reset); reconnect.
    #[error("the watch stream from the weft controller at {url} broke: {reason}")]
    StreamBroken {
        /// The controller URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The answer could not be decoded.
    #[error("unexpected answer from the controller for {what}: {reason}")]
    Decode {
        /// The request.
        what: String,
        /// Why.
        reason: String,
    },
}

/// A client bound to one controller URL.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `base` (e.g. `http://127.0.0.1:7470`).
    pub fn new(base: &str) -> Self {
        ApiClient::with_token(base, crate::auth::default_token().as_deref())
    }

    /// A client for `base` that sends `Authorization: Bearer token` (when `Some`) on every
    /// request; [`ApiClient::new`] uses [`crate::auth::default_token`].
    pub fn with_token(base: &str, token: Option<&str>) -> Self {
        let base = if base.contains("://") {
            base.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", base.trim_end_matches('/'))
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) =
            token.and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap_or_default();
        ApiClient { base, http }
    }

    /// The controller URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        what: &str,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, ClientError> {
        let resp = resp.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: with_root_cause(&e),
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused {
                what: what.to_string(),
                message: format!("{status}: {message}"),
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await;
        self.decode(path, resp).await
    }

    /// Applies documents.
    pub async fn apply(&self, req: &ApplyRequest) -> Result<ApplyReport, ClientError> {
        let resp = self
            .http
            .post(format!("{}/v1/apply", self.base))
            .json(req)
            .send()
            .await;
        self.decode("apply", resp).await
    }

    /// Deletes the objects the documents name.
    pub async fn delete(&self, req: &ApplyRequest) -> Result<ApplyReport, ClientError> {
        let resp = self
            .http
            .post(format!("{}/v1/delete", self.base))
            .json(req)
            .send()
            .await;
        self.decode("delete", resp).await
    }

    /// Explains one flow (`weft explain`).
    pub async fn explain(
        &self,
        req: &crate::explain::ExplainRequest,
    ) -> Result<crate::explain::Explanation, ClientError> {
        let resp = self
            .http
            .get(format!("{}/v1/explain", self.base))
            .query(&[
                ("from", req.from.as_str()),
                ("to", req.to.as_str()),
                ("protocol", req.protocol.as_str()),
            ])
            .query(&[("port", req.port)])
            .send()
            .await;
        self.decode("explain", resp).await
    }

    /// The BGP speaker and its peers (`weft bgp peers`).
    pub async fn bgp_peers(&self) -> Result<crate::bgp::BgpPeersReport, ClientError> {
        self.get("/v1/bgp/peers").await
    }

    /// One network's routes: this cluster's endpoints and what BGP imported (`weft routes NETWORK`).
    pub async fn network_routes(&self, network: &str) -> Result<crate::bgp::NetworkRoutes, ClientError> {
        let resp = self
            .http
            .get(format!("{}/v1/bgp/routes", self.base))
            .query(&[("network", network)])
            .send()
            .await;
        self.decode("network routes", resp).await
    }

    /// Controller status.
    pub async fn status(&self) -> Result<ControllerStatus, ClientError> {
        self.get("/v1/status").await
    }

    /// Consistency check of the stored state.
    pub async fn consistency(&self) -> Result<ConsistencyReport, ClientError> {
        self.get("/v1/consistency").await
    }

    /// Cluster settings in force.
    pub async fn config(&self) -> Result<EffectiveConfig, ClientError> {
        self.get("/v1/config").await
    }

    /// Derived objects of a kind.
    pub async fn derived(
        &self,
        plural: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<DerivedObject>, ClientError> {
        self.get(&with_namespace(&format!("/v1/derived/{plural}"), namespace))
            .await
    }

    /// Input objects of a kind, as manifests.
    pub async fn inputs(
        &self,
        plural: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, ClientError> {
        self.get(&with_namespace(&format!("/v1/inputs/{plural}"), namespace))
            .await
    }
}

fn with_namespace(path: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{path}?namespace={ns}"),
        None => path.to_string(),
    }
}
