//! The server's phases (loading → ready → draining) and the count of requests in flight that a
//! drain waits for.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The model is loading: `/health` and generation answer 503.
    Loading,
    Ready,
    /// SIGTERM or SIGINT arrived: `/health` and new generation requests answer 503 while the
    /// requests in flight finish.
    Draining,
}

/// Shared by the HTTP handlers and the shutdown sequence.
#[derive(Default)]
pub struct Lifecycle {
    phase: AtomicU8,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Lifecycle {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Loading,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    pub fn set_ready(&self) {
        // Only a loading server becomes ready (a drain that began during loading stays).
        let _ = self
            .phase
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn start_drain(&self) {
        self.phase.store(2, Ordering::SeqCst);
    }

    /// Registers a request; `None` (nothing registered) unless the server is ready. The count
    /// is raised before the phase is read, so a drain that starts in between still waits for
    /// the request it lets through.
    pub fn admit(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(Arc::clone(self));
        (self.phase() == Phase::Ready).then_some(guard)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no request is in flight or `limit` has passed; `true` when idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// A request in flight, from admission until its response (stream included) is dropped.
pub struct InFlight(Arc<Lifecycle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_admitted_requests_only() {
        let life = Lifecycle::new();
        assert!(life.admit().is_none(), "admitted while loading");
        assert_eq!(life.in_flight(), 0);
        life.set_ready();
        let request = life.admit().expect("ready");
        life.start_drain();
        life.set_ready();
        assert_eq!(life.phase(), Phase::Draining);
        assert!(life.admit().is_none(), "admitted while draining");
        assert!(!life.wait_idle(Duration::from_millis(20)).await);
        let waiter = {
            let life = Arc::clone(&life);
            tokio::spawn(async move { life.wait_idle(Duration::from_secs(10)).await })
        };
        drop(request);
        assert!(waiter.await.unwrap());
    }
}
