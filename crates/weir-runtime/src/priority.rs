//! Background priority for work that should use only the CPU time processing leaves idle: the
//! asynchronous part of a checkpoint (serializing frozen state, writing files). At normal
//! priority a checkpoint of tens of megabytes takes a core for 100-300 ms, and on a machine
//! whose cores the tasks share, the tasks wait behind it: records queue up and end-to-end
//! latency jumps by tens of milliseconds at every checkpoint.
//!
//! [`Background::enter`] moves the calling thread to `SCHED_IDLE` (Linux: it runs only when no
//! normal thread wants the CPU) for at most `max`; then a watchdog moves it back, so a
//! checkpoint of a saturated job is late by at most `max`, never starved. Moving a thread back
//! from `SCHED_IDLE` needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20 (`ulimit -e 20`); without
//! either, the work runs at normal priority (checked once per process). Elsewhere than on
//! Linux it always runs at normal priority.
use std::time::Duration;

/// While alive, the calling thread runs at background priority (for at most the `max` given
/// to [`Background::enter`]). Dropping it restores normal priority.
pub struct Background {
    #[cfg(target_os = "linux")]
    tid: libc::pid_t,
    #[cfg(target_os = "linux")]
    _wake: crossbeam_channel::Sender<()>,
}

impl Background {
    /// Background priority for the calling thread, for at most `max`; `None` (and nothing
    /// changed) where it is unavailable.
    pub fn enter(max: Duration) -> Option<Background> {
        imp::enter(max)
    }

    /// Whether this process can lower a thread's priority and restore it.
    pub fn available() -> bool {
        imp::available()
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::Background;
    use crossbeam_channel as cb;
    use std::sync::OnceLock;
    use std::time::Duration;

    fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> bool {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call's duration; `tid` is a thread
        // of this process (0: the calling thread).
        unsafe { libc::sched_setscheduler(tid, policy, &param) == 0 }
    }

    fn own_tid() -> libc::pid_t {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    }

    pub fn available() -> bool {
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            // Probe on a thread of its own: if going back fails, only the probe stays idle.
            std::thread::Builder::new()
                .name("weir:priority-probe".into())
                .spawn(|| set_policy(0, libc::SCHED_IDLE) && set_policy(0, libc::SCHED_OTHER))
                .ok()
                .and_then(|h| h.join().ok())
                .unwrap_or(false)
        })
    }

    pub fn enter(max: Duration) -> Option<Background> {
        if !available() {
            return None;
        }
        let tid = own_tid();
        let (wake, rx) = cb::bounded::<()>(1);
        // The watchdog: normal priority again after `max`, unless the guard went first.
        std::thread::Builder::new()
            .name("weir:priority-watchdog".into())
            .spawn(move || {
                if let Err(cb::RecvTimeoutError::Timeout) = rx.recv_timeout(max) {
                    set_policy(tid, libc::SCHED_OTHER);
                }
            })
            .ok()?;
        if !set_policy(0, libc::SCHED_IDLE) {
            return None;
        }
        Some(Background { tid, _wake: wake })
    }

    impl Drop for Background {
        fn drop(&mut self) {
            set_policy(self.tid, libc::SCHED_OTHER);
            // `_wake` is dropped after this: the watchdog's receive ends and it exits.
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Background;
    use std::time::Duration;

    pub fn available() -> bool {
        false
    }

    pub fn enter(_max: Duration) -> Option<Background> {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy() -> libc::c_int {
        // SAFETY: no preconditions; 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn background_priority_ends_with_the_guard_or_at_the_deadline() {
        if !Background::available() {
            eprintln!("skipped: this process may not restore a thread's priority");
            return;
        }
        std::thread::spawn(|| {
            let g = Background::enter(Duration::from_secs(60)).expect("available");
            assert_eq!(policy(), libc::SCHED_IDLE);
            drop(g);
            assert_eq!(policy(), libc::SCHED_OTHER);
            // The watchdog restores normal priority after `max` even while the guard lives.
            let g = Background::enter(Duration::from_millis(50)).expect("available");
            assert_eq!(policy(), libc::SCHED_IDLE);
            let t = std::time::Instant::now();
            while policy() == libc::SCHED_IDLE {
                assert!(t.elapsed() < Duration::from_secs(10), "still idle");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(policy(), libc::SCHED_OTHER);
            drop(g);
        })
        .join()
        .unwrap();
    }
}
