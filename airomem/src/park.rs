//! Driving a future on the calling thread: [`block_on`] for the blocking API and the tools,
//! and [`pause`], the lone commit's pause that works both under `block_on` and in a task.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

thread_local! {
    /// Whether this thread is inside [`block_on`]: see [`pause`].
    static DRIVING: Cell<bool> = const { Cell::new(false) };
    /// Wakes this thread from [`block_on`]'s park; built once per thread, so a commit does
    /// not allocate one.
    static WAKER: Waker = Waker::from(Arc::new(Unpark(thread::current())));
}

/// Wakes the thread that waits in [`block_on`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread, parking it while the future waits.
///
/// The store's futures need no runtime: they wait on tokio's `sync` primitives (a
/// semaphore, oneshot channels), which work with any waker, and on the writer thread, which
/// wakes them. A wake-up that comes before the park leaves the thread's token set, so the
/// park returns at once and none is lost; a spurious return only costs another poll.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    // On a runtime's thread, tokio's primitives would charge each poll to the running task's
    // cooperative budget, and once it ran out would leave their wake-up to the scheduler,
    // which cannot run while this parks: a blocking call from async code would hang after
    // some dozens of commits. Unconstrained, they never defer.
    let mut future = pin!(tokio::task::unconstrained(future));
    let waker = WAKER.with(Waker::clone);
    let mut context = Context::from_waker(&waker);
    let _driving = Driving::enter();
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}

/// Marks this thread as driven by [`block_on`] until dropped (restoring the mark it found,
/// should one `block_on` ever run inside another).
struct Driving(bool);

impl Driving {
    fn enter() -> Driving {
        Driving(DRIVING.replace(true))
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        DRIVING.set(self.0);
    }
}

/// The pause between two polls of a lone commit's outcome (see
/// [`crate::StoreOptions::spin_limit`]).
///
/// In a tokio task, `tokio::task::yield_now` lets the runtime's other tasks run. Under
/// [`block_on`] the thread is the caller's own, with no tasks to run: the pause lets other
/// threads (the writer, on a machine with few cores) have the CPU, and returns. It must not
/// use `tokio::task::yield_now` there: called on a runtime's thread (a blocking call from
/// async code), that hands the wake-up to the runtime's scheduler, which cannot run while
/// [`block_on`] parks the thread, and the commit would never finish.
pub(crate) async fn pause() {
    if DRIVING.get() {
        thread::yield_now();
    } else {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_returns_what_the_future_returns() {
        assert_eq!(block_on(async { 7 }), 7);
    }

    /// A wake-up from another thread ends the park; one that came before it is not lost.
    #[test]
    fn block_on_waits_for_a_wake_from_another_thread() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = thread::spawn(move || tx.send(42).expect("receiver alive"));
        assert_eq!(block_on(rx).expect("sent"), 42);
        sender.join().expect("sender");

        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(43).expect("receiver alive");
        assert_eq!(block_on(rx).expect("sent"), 43);
    }

    /// On a runtime's thread, tokio's primitives charge each poll to the running task's
    /// budget (128 polls), then answer `Pending` and leave the wake-up to the scheduler, which
    /// cannot run while `block_on` parks. Without `unconstrained` this test hangs.
    #[test]
    fn block_on_is_not_charged_to_a_runtime_task_budget() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            for n in 0..1_000 {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tx.send(n).expect("receiver alive");
                assert_eq!(block_on(rx).expect("sent"), n);
            }
        });
    }

    #[test]
    fn pause_knows_who_drives_it() {
        assert!(!DRIVING.get());
        block_on(async {
            assert!(DRIVING.get(), "inside block_on");
            pause().await;
            assert!(DRIVING.get(), "still inside block_on after a pause");
        });
        assert!(!DRIVING.get(), "the mark is gone once block_on returns");
    }

    /// The reason `pause` exists: on a runtime's thread (a blocking call made from async
    /// code) the lone-commit spin's pause must not leave its wake-up to the runtime's
    /// scheduler, which cannot run while `block_on` parks the thread. `tokio::task::yield_now`
    /// in its place returns `Pending` without waking, and the commit would never finish.
    #[test]
    fn pause_does_not_wait_for_a_scheduler() {
        struct Woken(std::sync::atomic::AtomicBool);
        impl Wake for Woken {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            let woken = Arc::new(Woken(std::sync::atomic::AtomicBool::new(false)));
            let waker = Waker::from(Arc::clone(&woken));
            let _driving = Driving::enter();
            let mut paused = pin!(pause());
            let ready = paused.as_mut().poll(&mut Context::from_waker(&waker)).is_ready();
            assert!(
                ready || woken.0.load(std::sync::atomic::Ordering::SeqCst),
                "the pause neither finished nor woke its caller: block_on would park for good"
            );
        });
    }
}
