//! The history writer: a thread of its own that puts every sample into the store, so the hub
//! never waits on sled (its inserts, the compression of what it writes out, a stalled disk)
//! between two readings. The hub hands samples over a bounded queue and never blocks on it; the
//! thread drains the queue four times a second into one sled batch.
//!
//! The queue holds [`QUEUE`] samples, over three minutes of 10,000 miners polled every 30 s;
//! it fills only when the disk stalls for longer. Then a sample that does not fit is counted and
//! said in the log (once, and again when writing catches up), never waited for: the miners are
//! polled and published on time whatever the disk does. Shutdown drops the sender and waits for
//! the thread to write what is queued.

use super::{Sample, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::mpsc::{channel, error::TrySendError, Receiver, Sender};

/// Samples the queue holds.
pub const QUEUE: usize = 65_536;

/// What the writer has done, for the health check.
#[derive(Debug, Default)]
pub struct Counts {
    pub written: AtomicU64,
    /// Samples that could not be written (the store failed), or did not fit the queue.
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// The hub's end.
pub struct Writer {
    tx: Option<Sender<(u32, Sample)>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
    /// The queue was full last time: said once until it drains.
    full: bool,
}

impl Writer {
    /// Starts the writer thread over `store`.
    pub fn spawn(store: Store) -> std::io::Result<Writer> {
        Self::with_queue(store, QUEUE)
    }

    fn with_queue(store: Store, queue: usize) -> std::io::Result<Writer> {
        // tokio's queue allocates in small blocks as it fills: an idle one costs next to
        // nothing (std's bounded channel lays out every slot up front: 8 MiB here).
        let (tx, rx) = channel(queue);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let thread = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || write_all(&store, rx, &c))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            counts,
            full: false,
        })
    }

    /// Queues one sample of store miner `miner`; never waits.
    pub fn record(&mut self, miner: u32, sample: Sample) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send((miner, sample)) {
            Ok(()) => {
                if self.full {
                    self.full = false;
                    let dropped = self.counts.dropped.load(Ordering::Relaxed);
                    tracing::info!(dropped, "history writes caught up");
                }
            }
            Err(TrySendError::Full(_)) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.full {
                    self.full = true;
                    tracing::error!(
                        queued = QUEUE,
                        "the history cannot keep up with the disk: samples that do not fit the queue are not kept until it drains (is the disk full or very slow?)"
                    );
                }
            }
            Err(TrySendError::Closed(_)) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Writes what is queued and stops the thread.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the history writer panicked; samples queued at shutdown are lost");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// How long the writer sleeps between drains of the queue: waking once per sample (333 a second
/// at 10,000 miners) cost more CPU on the hub's side than the write it moved.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

fn write_all(store: &Store, mut rx: Receiver<(u32, Sample)>, counts: &Counts) {
    use tokio::sync::mpsc::error::TryRecvError;
    let mut failing = false;
    let mut batch = Vec::new();
    loop {
        let closed = loop {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if !batch.is_empty() {
            let n = batch.len() as u64;
            match (store.record_all(&batch), failing) {
                (Ok(()), was) => {
                    counts.written.fetch_add(n, Ordering::Relaxed);
                    if was {
                        tracing::info!("history writes work again");
                        failing = false;
                    }
                }
                (Err(e), was) => {
                    counts.failed.fetch_add(n, Ordering::Relaxed);
                    if !was {
                        tracing::error!(error = %e, "cannot write history; samples are not being kept");
                        failing = true;
                    }
                }
            }
            batch.clear();
        }
        if closed {
            return;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queued_sample_is_written_by_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h"), 4 << 20).unwrap();
        let mut w = Writer::spawn(store.clone()).unwrap();
        for i in 0..5_000u64 {
            w.record(7, Sample::basic(1_000 + i * 1000, None, 500.0, 15.0, 50.0));
        }
        w.finish();
        assert_eq!(w.counts().written.load(Ordering::Relaxed), 5_000);
        assert_eq!(store.window(7, 0, u64::MAX).unwrap().len(), 5_000);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h"), 4 << 20).unwrap();
        // A queue of one, offered 100,000 samples in a tight loop: far faster than sled takes
        // them, so some do not fit. Every sample is either written or counted as dropped.
        let mut w = Writer::with_queue(store.clone(), 1).unwrap();
        for i in 0..100_000u64 {
            w.record(1, Sample::basic(i, None, 1.0, 1.0, 1.0));
        }
        w.finish();
        let c = w.counts();
        let (written, dropped) = (
            c.written.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
        );
        assert_eq!(written + dropped, 100_000);
        assert!(dropped > 0, "{written} written");
        assert_eq!(store.window(1, 0, u64::MAX).unwrap().len() as u64, written);
    }
}
