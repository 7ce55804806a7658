//! Watch machinery shared by the backends: replay from the change log, then live events from
//! the commit fan-out, with gap repair when a watcher lags.
//!
//! Invariants this relies on (both backends keep them):
//! * every revision is one committed transaction with at least one event, so revisions are
//!   contiguous and a jump in the live feed means something was missed;
//! * the fan-out [`Batch`] of a revision is sent after the revision is durable and visible to
//!   readers, in revision order (sent under the writer lock).
//!
//! The handover: subscribe to the feed first, then read the log up to its snapshot revision
//! `S` and set the cursor to `S`; live batches `<= cursor` are then duplicates and skipped,
//! and any batch the log snapshot missed was committed after the subscription, so it is in
//! the feed. A lag (the feed dropped batches for this watcher) or a revision jump re-reads the
//! log after the cursor, ending the stream with [`StoreError::Compacted`] if that part of the
//! log is gone.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::{Revision, StoreError, WatchEvent, WatchStream};

/// All events of one committed transaction, as fanned out to live watchers.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The transaction's revision.
    pub revision: Revision,
    /// Its events in op order (never empty), all keys.
    pub events: Vec<WatchEvent>,
}

/// The live fan-out of committed transactions.
pub(crate) type Feed = broadcast::Sender<Arc<Batch>>;

/// A fan-out with room for `buffer` transactions per watcher.
pub(crate) fn feed(buffer: usize) -> Feed {
    // broadcast::channel panics on 0 and on absurd sizes.
    broadcast::channel(buffer.clamp(1, 1 << 20)).0
}

/// How a watcher reads the change log of its backend.
pub(crate) trait LogReader: Send + Sync + 'static {
    /// Events for keys starting with `prefix` with revision > `after`, in order, plus the store
    /// revision of the snapshot they were read at (the last revision they cover).
    /// `Err(Compacted)` if `after` is older than the compaction point, `Err(Closed)` if the
    /// store is gone.
    fn read_since(
        &self,
        prefix: &str,
        after: Revision,
    ) -> impl Future<Output = Result<(Vec<WatchEvent>, Revision), StoreError>> + Send;
}

/// Starts a watch: subscribes, replays the log after `after`, and returns the stream.
/// Fails right away (not as a stream item) if `after` is compacted.
pub(crate) async fn start<L: LogReader>(
    log: L,
    feed: &Feed,
    prefix: &str,
    after: Revision,
) -> Result<WatchStream, StoreError> {
    // Subscribe BEFORE reading the log: see the module docs.
    let rx = feed.subscribe();
    let (replay, snapshot) = log.read_since(prefix, after).await?;
    let watcher = Watcher {
        log,
        rx,
        prefix: prefix.to_owned(),
        cursor: after.max(snapshot),
        pending: replay.into(),
        done: false,
    };
    let stream = futures::stream::unfold(watcher, |mut w| async move {
        let item = w.next_item().await?;
        Some((item, w))
    });
    Ok(stream.boxed())
}

/// State of one watch stream.
struct Watcher<L> {
    log: L,
    rx: broadcast::Receiver<Arc<Batch>>,
    prefix: String,
    /// Every revision <= cursor has been queued (or was before `after`).
    cursor: Revision,
    /// Events queued for the consumer.
    pending: VecDeque<WatchEvent>,
    /// The stream has ended (after its last error).
    done: bool,
}

impl<L: LogReader> Watcher<L> {
    async fn next_item(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            match self.rx.recv().await {
                Ok(batch) => {
                    if batch.revision <= self.cursor {
                        continue; // already replayed
                    }
                    if batch.revision > self.cursor.saturating_add(1) {
                        // Revisions are contiguous: something between was missed. The log
                        // holds it (and this batch, which is already committed).
                        tracing::debug!(
                            cursor = self.cursor,
                            revision = batch.revision,
                            "watch feed jumped; re-reading the change log"
                        );
                        if let Err(err) = self.fill().await {
                            return self.fail(err);
                        }
                        if batch.revision <= self.cursor {
                            continue;
                        }
                    }
                    let prefix = &self.prefix;
                    self.pending.extend(
                        batch
                            .events
                            .iter()
                            .filter(|e| e.key.starts_with(prefix.as_str()))
                            .cloned(),
                    );
                    self.cursor = batch.revision;
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        prefix = %self.prefix,
                        cursor = self.cursor,
                        missed,
                        "watcher lagged behind the live feed; re-reading the change log"
                    );
                    if let Err(err) = self.fill().await {
                        return self.fail(err);
                    }
                }
                Err(RecvError::Closed) => return self.fail(StoreError::Closed),
            }
        }
    }

    /// Queues everything after the cursor from the change log and advances the cursor.
    async fn fill(&mut self) -> Result<(), StoreError> {
        let (events, snapshot) = self.log.read_since(&self.prefix, self.cursor).await?;
        self.pending.extend(events);
        self.cursor = self.cursor.max(snapshot);
        Ok(())
    }

    /// Ends the stream with `err` as its last item.
    fn fail(&mut self, err: StoreError) -> Option<Result<WatchEvent, StoreError>> {
        self.done = true;
        Some(Err(err))
    }
}

#[cfg(test)]
mod tests {
    //! The handover logic against a scripted change log, to hit the races deterministically.

    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::EventKind;

    fn event(revision: Revision) -> WatchEvent {
        WatchEvent {
            revision,
            kind: EventKind::Put,
            key: format!("k/{revision}"),
            value: Some(vec![revision as u8]),
        }
    }

    /// A change log whose first read "commits" `commit_during_first_read` (appends it and
    /// sends its batch) before taking its snapshot: the commit lands between the watcher's
    /// subscription and its replay read.
    #[derive(Clone)]
    struct ScriptedLog {
        log: Arc<Mutex<Vec<WatchEvent>>>,
        feed: Feed,
        commit_during_first_read: Arc<Mutex<Option<Revision>>>,
    }

    impl ScriptedLog {
        fn append(&self, revision: Revision, send: bool) {
            self.log.lock().unwrap().push(event(revision));
            if send {
                let batch = Batch {
                    revision,
                    events: vec![event(revision)],
                };
                self.feed.send(Arc::new(batch)).unwrap();
            }
        }
    }

    impl LogReader for ScriptedLog {
        async fn read_since(
            &self,
            prefix: &str,
            after: Revision,
        ) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
            if let Some(revision) = self.commit_during_first_read.lock().unwrap().take() {
                self.append(revision, true);
            }
            let log = self.log.lock().unwrap();
            let head = log.last().map_or(0, |e| e.revision);
            let events = log
                .iter()
                .filter(|e| e.revision > after && e.key.starts_with(prefix))
                .cloned()
                .collect();
            Ok((events, head))
        }
    }

    fn scripted(head: Revision, commit_during_first_read: Option<Revision>) -> ScriptedLog {
        ScriptedLog {
            log: Arc::new(Mutex::new((1..=head).map(event).collect())),
            feed: feed(16),
            commit_during_first_read: Arc::new(Mutex::new(commit_during_first_read)),
        }
    }

    async fn revisions(stream: &mut WatchStream, n: usize) -> Vec<Revision> {
        let mut out = Vec::new();
        for _ in 0..n {
            let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap();
            out.push(item.unwrap().unwrap().revision);
        }
        out
    }

    async fn assert_quiet(stream: &mut WatchStream) {
        let item = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        assert!(item.is_err(), "unexpected item {item:?}");
    }

    #[tokio::test]
    async fn commit_between_subscribe_and_replay_is_delivered_once() {
        let log = scripted(2, Some(3));
        let mut stream = start(log.clone(), &log.feed.clone(), "k/", 0).await.unwrap();
        // Revision 3 is both in the replay and in the live feed: delivered once.
        assert_eq!(revisions(&mut stream, 3).await, [1, 2, 3]);
        log.append(4, true);
        assert_eq!(revisions(&mut stream, 1).await, [4]);
        assert_quiet(&mut stream).await;
    }

    #[tokio::test]
    async fn jump_in_live_feed_is_repaired_from_the_log() {
        let log = scripted(3, None);
        let mut stream = start(log.clone(), &log.feed.clone(), "k/", 1).await.unwrap();
        assert_eq!(revisions(&mut stream, 2).await, [2, 3]);
        // Revision 4 reaches the log but not the feed; 5 reaches both.
        log.append(4, false);
        log.append(5, true);
        assert_eq!(revisions(&mut stream, 2).await, [4, 5]);
        assert_quiet(&mut stream).await;
    }
}
