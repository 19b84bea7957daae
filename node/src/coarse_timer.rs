//! A coarse timer for per-request client deadlines (the request-head timeout).
//!
//! hyper arms a timer for every request head it reads. With tokio's precise timer that is a
//! registration and a cancellation in the runtime's timer wheel per request, which measured
//! at about a fifth of the proxy's CPU per request on the benchmark. Client deadlines are
//! measured in seconds and need no millisecond precision, so this timer keeps pending
//! deadlines in a small table that one ticker task sweeps every `RESOLUTION`: a sleep costs
//! one allocation and, only if it is ever waited on, an uncontended lock to park its waker.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Deadlines fire up to this much late.
pub const RESOLUTION: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Table {
    /// Parked sleeps: deadline and waker, by slot.
    slots: Vec<Option<(Instant, Waker)>>,
    free: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct CoarseTimer {
    table: Arc<Mutex<Table>>,
}

impl CoarseTimer {
    /// Creates the timer and spawns its ticker on the current runtime; the ticker ends when
    /// the last clone of the timer is dropped.
    pub fn start() -> Self {
        let table = Arc::new(Mutex::new(Table::default()));
        let weak: Weak<Mutex<Table>> = Arc::downgrade(&table);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RESOLUTION);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(table) = weak.upgrade() else { return };
                let now = Instant::now();
                let mut due = Vec::new();
                {
                    let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
                    for slot in t.slots.iter_mut() {
                        if slot.as_ref().is_some_and(|(d, _)| *d <= now) {
                            if let Some((_, w)) = slot.take() {
                                due.push(w);
                            }
                        }
                    }
                }
                // Wake outside the lock; a woken sleep sees its deadline passed and finishes.
                due.into_iter().for_each(Waker::wake);
            }
        });
        Self { table }
    }
}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep { table: self.table.clone(), deadline, slot: None })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}

#[derive(Debug)]
struct CoarseSleep {
    table: Arc<Mutex<Table>>,
    deadline: Instant,
    slot: Option<usize>,
}

impl hyper::rt::Sleep for CoarseSleep {}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.release();
            return Poll::Ready(());
        }
        let entry = Some((self.deadline, cx.waker().clone()));
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match self.slot {
            Some(i) => t.slots[i] = entry,
            None => {
                let i = match t.free.pop() {
                    Some(i) => {
                        t.slots[i] = entry;
                        i
                    }
                    None => {
                        t.slots.push(entry);
                        t.slots.len() - 1
                    }
                };
                drop(t);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl CoarseSleep {
    fn release(&mut self) {
        if let Some(i) = self.slot.take() {
            let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
            t.slots[i] = None;
            t.free.push(i);
        }
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[tokio::test]
    async fn fires_after_the_deadline_within_the_resolution() {
        let timer = CoarseTimer::start();
        let start = Instant::now();
        timer.sleep(Duration::from_millis(250)).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_millis(250) + RESOLUTION * 3, "{waited:?}");
    }

    #[tokio::test]
    async fn dropped_sleeps_free_their_slot() {
        let timer = CoarseTimer::start();
        for _ in 0..100 {
            let mut s = timer.sleep(Duration::from_secs(60));
            let waker = futures_waker();
            let mut cx = Context::from_waker(&waker);
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        let t = timer.table.lock().unwrap();
        assert_eq!(t.slots.len(), 1, "one slot reused by every sleep");
        assert!(t.slots.iter().all(Option::is_none));
    }

    fn futures_waker() -> Waker {
        Waker::noop().clone()
    }
}
