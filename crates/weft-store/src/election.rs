//! Leader election among controller replicas sharing an etcd store: the work that must
//! happen once (the Kubernetes watch's ingestion; later BGP sessions) runs on the leader only.
//!
//! Where it sits: `weft controller --store etcd://…` calls [`EtcdStore::campaign`] and gates
//! its once-only tasks on the returned [`Leadership`] watch; any module can
//! [`Leadership::subscribe`] to it.
//!
//! How: the leader key `<prefix>leader` is created with a lease in a txn guarded by
//! `create_revision == 0` (absent); its value is the leader's advertised identity (its API
//! URL). The lease is kept alive every `ttl/3`; when a keep-alive fails or is not answered for
//! two of those periods (before the lease can have expired on etcd's side) the replica steps
//! down at once (it can no longer be sure it is the leader), and campaigns again. A replica
//! that dies loses the key when its lease expires (TTL), so a follower takes over within
//! about one TTL; a replica that stops cleanly revokes its lease ([`Leadership`]'s drop) and
//! the takeover is immediate.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, TxnOp, TxnOpResponse};
use tokio::sync::watch;

use crate::{EtcdStore, StoreError};

/// Default lease TTL of the leader key, in seconds (a dead leader is replaced within it).
pub const DEFAULT_LEADER_TTL: i64 = 3;

/// This replica's view of the election: a watch of "am I the leader?".
#[derive(Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    resign: watch::Sender<bool>,
    leader_key: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Leadership {
    /// A leadership that is always held (a single controller on an embedded store).
    pub fn always() -> Self {
        Self {
            rx: watch::channel(true).1,
            resign: watch::channel(false).0,
            leader_key: String::new(),
            task: None,
        }
    }

    /// Steps down now and waits (at most 2 s) until the lease is revoked, so another
    /// replica takes over at once instead of after the TTL. Call it on a clean shutdown.
    pub async fn resign(mut self) {
        let _ = self.resign.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }

    /// Whether this replica is the leader now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// A receiver that changes whenever this replica gains or loses leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// The etcd key holding the current leader's identity (empty for [`Leadership::always`]).
    pub fn leader_key(&self) -> &str {
        &self.leader_key
    }
}

impl EtcdStore {
    /// Starts campaigning for leadership under this store's prefix, advertising `identity`
    /// (e.g. the API URL) as the leader key's value. Needs a Tokio runtime. Dropping the
    /// returned [`Leadership`] resigns (revokes the lease).
    pub fn campaign(&self, identity: &str, ttl_seconds: i64) -> Leadership {
        let (tx, rx) = watch::channel(false);
        let (resign_tx, resign_rx) = watch::channel(false);
        let leader_key = format!("{}leader", self.config().prefix);
        let task = Campaign {
            store: self.clone_handle(),
            key: leader_key.clone(),
            identity: identity.to_string(),
            ttl: ttl_seconds.max(2),
            tx,
            resign: resign_rx,
        };
        let task = tokio::spawn(task.run());
        Leadership {
            rx,
            resign: resign_tx,
            leader_key,
            task: Some(task),
        }
    }

    /// The identity stored in the leader key, if there is a leader.
    pub async fn leader(&self) -> Result<Option<String>, StoreError> {
        let mut client = self.client().await?;
        let key = format!("{}leader", self.config().prefix);
        let resp = client
            .get(key.as_str(), None)
            .await
            .map_err(|e| StoreError::backend("etcd: read the leader key", e))?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }
}

/// The campaign task of one replica.
struct Campaign {
    store: EtcdStore,
    key: String,
    identity: String,
    ttl: i64,
    tx: watch::Sender<bool>,
    resign: watch::Receiver<bool>,
}

impl Campaign {
    fn resigned(&self) -> bool {
        self.resign.has_changed().is_err() || *self.resign.borrow()
    }

    async fn run(mut self) {
        while !self.resigned() {
            match self.round().await {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: etcd error; retrying"),
            }
            if self.tx.send_replace(false) {
                if self.resigned() {
                    tracing::info!(key = %self.key, "resigned leadership");
                } else {
                    tracing::warn!(key = %self.key, "lost leadership");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = self.resign.changed() => {}
            }
        }
    }

    /// One attempt: grant a lease, try to take the key, and hold it as long as the lease lives.
    async fn round(&mut self) -> Result<(), StoreError> {
        let mut client = self.store.client().await?;
        let lease = client
            .lease_grant(self.ttl, None)
            .await
            .map_err(|e| StoreError::backend("etcd: grant the leader lease", e))?
            .id();
        let txn = etcd_client::Txn::new()
            .when(vec![Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                self.key.as_str(),
                self.identity.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(self.key.as_str(), None)]);
        let resp = client
            .txn(txn)
            .await
            .map_err(|e| StoreError::backend("etcd: campaign", e))?;
        if !resp.succeeded() {
            let _ = client.lease_revoke(lease).await;
            if let Some(TxnOpResponse::Get(get)) = resp.op_responses().into_iter().next()
                && let Some(kv) = get.kvs().first()
            {
                tracing::debug!(leader = %String::from_utf8_lossy(kv.value()), "following");
            }
            return Ok(());
        }
        tracing::info!(key = %self.key, identity = %self.identity, "became the leader");
        self.tx.send_replace(true);
        let (mut keeper, mut answers) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| StoreError::backend("etcd: keep the leader lease alive", e))?;
        let period = Duration::from_millis(u64::try_from(self.ttl).unwrap_or(3) * 1000 / 3);
        let mut last_ok = tokio::time::Instant::now();
        loop {
            if self.resigned() {
                let _ = client.lease_revoke(lease).await;
                return Ok(());
            }
            keeper
                .keep_alive()
                .await
                .map_err(|e| StoreError::backend("etcd: keep-alive", e))?;
            let answer = tokio::time::timeout(period, answers.message()).await;
            match answer {
                Ok(Ok(Some(a))) if a.ttl() > 0 => last_ok = tokio::time::Instant::now(),
                Ok(Ok(Some(_))) => {
                    return Err(StoreError::Backend("etcd: the leader lease expired".into()));
                }
                Ok(Ok(None)) => return Err(StoreError::Backend("etcd: keep-alive stream ended".into())),
                Ok(Err(e)) => return Err(StoreError::backend("etcd: keep-alive", e)),
                Err(_) => {}
            }
            // Unsure for longer than the lease: someone else may hold the key now.
            // Step down well before the lease can have expired on the etcd side.
            if last_ok.elapsed() >= period * 2 {
                return Err(StoreError::Backend(
                    "etcd: no keep-alive answer within 2/3 of the lease TTL".into(),
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = self.resign.changed() => {}
            }
        }
    }
}
