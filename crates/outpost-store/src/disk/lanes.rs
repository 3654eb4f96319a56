//! The SSD tier's I/O threads and what connects callers to them: bounded job queues ([`Lane`]:
//! `ssd-read-N` threads for lookups and chunk reads, one `ssd-append` thread for appends,
//! commits and purges, whose FIFO order is the order they were submitted in) and the handle a
//! caller gets back ([`Completion`]), a `Future` woken through the standard `Waker` (no runtime
//! needed) that can also be waited on by blocking ([`Completion::wait`]).
//!
//! Nothing here blocks a submitter: a full queue refuses the job (the caller sheds it: a lookup
//! becomes a miss, a fill is not stored), except for work that must not be lost (commits,
//! purges, the next chunk of a response already started), which is always queued; that work is
//! bounded by what callers have open. Once the store is dropped the threads finish the queued
//! jobs and end; later jobs run on the caller's thread.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// A job for an I/O thread.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// Why a job was not queued (it is handed back).
pub(super) enum Refused {
    /// The queue is at its bound (the job is dropped, answering its fallback).
    Full,
    /// The store is gone: the caller runs the job itself.
    Closed(Job),
}

#[derive(Default)]
struct LaneState {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// A bounded FIFO queue of jobs served by one or more threads.
pub(super) struct Lane {
    state: Mutex<LaneState>,
    cv: Condvar,
    cap: usize,
}

impl Lane {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(LaneState::default()),
            cv: Condvar::new(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` unless the queue is at its bound.
    pub(super) fn try_push(&self, job: Job) -> Result<(), Refused> {
        let mut st = self.lock();
        if st.closed {
            return Err(Refused::Closed(job));
        }
        if st.jobs.len() >= self.cap {
            return Err(Refused::Full);
        }
        st.jobs.push_back(job);
        drop(st);
        self.cv.notify_one();
        Ok(())
    }

    /// Queues `job` whatever the queue's length (work that must not be lost).
    pub(super) fn push_always(&self, job: Job) -> Result<(), Refused> {
        let mut st = self.lock();
        if st.closed {
            return Err(Refused::Closed(job));
        }
        st.jobs.push_back(job);
        drop(st);
        self.cv.notify_one();
        Ok(())
    }

    /// The next job, waiting for one; `None` once the lane is closed and empty.
    fn pop(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.jobs.pop_front() {
                return Some(job);
            }
            if st.closed {
                return None;
            }
            st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Refuses new jobs; the threads finish the queued ones and end.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Runs jobs until the lane is closed and empty (an I/O thread's body).
    pub(super) fn serve(&self) {
        while let Some(job) = self.pop() {
            // A job that panics (a bug) must not take the thread, and every later job, with it:
            // its completion resolves to its fallback when the job is dropped.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    }
}

/// The SSD tier's queues.
pub(super) struct Lanes {
    pub read: Lane,
    pub append: Lane,
    /// Reads tried on the caller's thread before they are queued (see `fastpath.rs`).
    pub fast: super::fastpath::FastPath,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("read_queued", &self.read.lock().jobs.len())
            .field("append_queued", &self.append.lock().jobs.len())
            .finish()
    }
}

enum State<T> {
    Waiting(Option<Waker>),
    Done(T),
    Taken,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
    /// The caller dropped its [`Completion`]: a read need not be done.
    cancelled: AtomicBool,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The result of store work that may run on an SSD I/O thread: a `Future` (woken through the
/// task's `Waker`) or, outside async code, [`Completion::wait`]. One answered at once (a RAM hit,
/// a tier without SSD, a shed job) is [`Completion::ready`] and costs no allocation. Dropping a
/// pending one cancels a read that has not started.
pub struct Completion<T> {
    inner: Inner<T>,
}

enum Inner<T> {
    Ready(Option<T>),
    Pending(Arc<Slot<T>>),
}

// No structural pinning: the value is only ever moved out whole.
impl<T> Unpin for Completion<T> {}

impl<T> std::fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Ready(_) => "Completion(ready)",
            Inner::Pending(_) => "Completion(pending)",
        })
    }
}

impl<T> Completion<T> {
    /// An answer known now.
    pub fn ready(value: T) -> Self {
        Self {
            inner: Inner::Ready(Some(value)),
        }
    }

    /// A completion answered later through the [`Completer`]; if that is dropped unanswered
    /// (its job was dropped, or panicked) the answer is `fallback`.
    pub(super) fn pending(fallback: T) -> (Self, Completer<T>) {
        let slot = Arc::new(Slot {
            state: Mutex::new(State::Waiting(None)),
            cv: Condvar::new(),
            cancelled: AtomicBool::new(false),
        });
        (
            Self {
                inner: Inner::Pending(slot.clone()),
            },
            Completer {
                slot,
                fallback: Some(fallback),
            },
        )
    }

    /// Whether the answer is there (polling would return `Ready`).
    pub fn is_ready(&self) -> bool {
        match &self.inner {
            Inner::Ready(_) => true,
            Inner::Pending(slot) => matches!(*slot.lock(), State::Done(_)),
        }
    }

    /// Blocks the calling thread until the answer is there (tests, tools, benchmarks; never
    /// on an async worker).
    ///
    /// # Panics
    ///
    /// If the completion was already polled to its answer.
    #[allow(clippy::expect_used)]
    pub fn wait(mut self) -> T {
        match &mut self.inner {
            Inner::Ready(value) => value.take().expect("completion already taken"),
            Inner::Pending(slot) => {
                let mut st = slot.lock();
                loop {
                    match std::mem::replace(&mut *st, State::Taken) {
                        State::Done(value) => return value,
                        State::Taken => panic!("completion already taken"),
                        waiting @ State::Waiting(_) => {
                            *st = waiting;
                            st = slot.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
                        }
                    }
                }
            }
        }
    }
}

impl<T> Future for Completion<T> {
    type Output = T;

    /// # Panics
    ///
    /// If polled again after it returned `Ready` (as any future may).
    #[allow(clippy::expect_used)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Ready(value) => {
                Poll::Ready(value.take().expect("completion polled after Ready"))
            }
            Inner::Pending(slot) => {
                let mut st = slot.lock();
                match std::mem::replace(&mut *st, State::Taken) {
                    State::Done(value) => Poll::Ready(value),
                    State::Taken => panic!("completion polled after Ready"),
                    State::Waiting(waker) => {
                        let waker = match waker {
                            Some(w) if w.will_wake(cx.waker()) => w,
                            _ => cx.waker().clone(),
                        };
                        *st = State::Waiting(Some(waker));
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        if let Inner::Pending(slot) = &self.inner {
            slot.cancelled.store(true, Ordering::Relaxed);
        }
    }
}

/// The answering side of a pending [`Completion`], moved into the job.
pub(super) struct Completer<T> {
    slot: Arc<Slot<T>>,
    fallback: Option<T>,
}

impl<T> Completer<T> {
    /// Whether the caller is gone (its [`Completion`] was dropped).
    pub(super) fn is_cancelled(&self) -> bool {
        self.slot.cancelled.load(Ordering::Relaxed)
    }

    /// Answers, waking the task (or thread) waiting for it.
    pub(super) fn complete(mut self, value: T) {
        self.fallback = None;
        self.answer(value);
    }

    fn answer(&self, value: T) {
        let waker = {
            let mut st = self.slot.lock();
            match std::mem::replace(&mut *st, State::Done(value)) {
                State::Waiting(waker) => waker,
                // Answered once only; keep the first.
                other => {
                    *st = other;
                    None
                }
            }
        };
        self.slot.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(value) = self.fallback.take() {
            self.answer(value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn completion_wakes_the_registered_waker() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let (mut c, done) = Completion::pending(0u32);
        assert!(Pin::new(&mut c).poll(&mut cx).is_pending());
        assert!(!c.is_ready());
        let t = std::thread::spawn(move || done.complete(7));
        t.join().unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "woken once");
        assert!(c.is_ready());
        assert_eq!(Pin::new(&mut c).poll(&mut cx), Poll::Ready(7));
        // Blocking wait, answered from another thread; a dropped completer gives the fallback.
        let (c, done) = Completion::pending(0u32);
        let t = std::thread::spawn(move || done.complete(9));
        assert_eq!(c.wait(), 9);
        t.join().unwrap();
        let (c, done) = Completion::pending(5u32);
        drop(done);
        assert_eq!(c.wait(), 5);
        assert_eq!(Completion::ready(3u32).wait(), 3);
    }

    #[test]
    fn lanes_are_bounded_fifo_and_serve_after_close() {
        let lane = Arc::new(Lane::new(2));
        let order = Arc::new(Mutex::new(Vec::new()));
        let push = |i: u32| -> Job {
            let order = order.clone();
            Box::new(move || order.lock().unwrap().push(i))
        };
        assert!(lane.try_push(push(1)).is_ok());
        assert!(lane.try_push(push(2)).is_ok());
        assert!(matches!(lane.try_push(push(3)), Err(Refused::Full)));
        assert!(lane.push_always(push(4)).is_ok());
        lane.close();
        assert!(matches!(lane.try_push(push(5)), Err(Refused::Closed(_))));
        let server = {
            let lane = lane.clone();
            std::thread::spawn(move || lane.serve())
        };
        server.join().unwrap();
        assert_eq!(*order.lock().unwrap(), vec![1, 2, 4]);
    }
}
