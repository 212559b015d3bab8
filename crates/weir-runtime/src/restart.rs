//! What happens when a task fails: restart strategies (decisions only; the executor acts).
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Where a job starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The newest complete, intact checkpoint in the checkpoint storage (if none: a fresh
    /// start).
    Latest,
    /// This checkpoint or savepoint directory (relative to the checkpoint storage).
    Dir(String),
}

/// How a failed job is restarted (from its latest completed checkpoint), as Flink's.
#[derive(Clone, Debug, PartialEq)]
pub enum RestartStrategy {
    /// Fail the job.
    None,
    /// Restart up to `attempts` times, waiting `delay` each time.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each.
        delay: Duration,
    },
    /// Wait `initial`, doubling (× `multiplier`) up to `max` between consecutive failures; back
    /// to `initial` after `reset_after` without a failure. Never gives up.
    ExponentialBackoff {
        /// First wait.
        initial: Duration,
        /// Longest wait.
        max: Duration,
        /// Growth per failure.
        multiplier: f64,
        /// Quiet time that resets the wait.
        reset_after: Duration,
    },
    /// Restart unless more than `max_failures` happened within `interval`.
    FailureRate {
        /// Failures tolerated within the interval.
        max_failures: u32,
        /// The interval.
        interval: Duration,
        /// Wait before each restart.
        delay: Duration,
    },
}

/// Remembers failures and decides restarts.
#[derive(Debug)]
pub struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    current_backoff: Option<Duration>,
    last_failure: Option<Instant>,
    failures: VecDeque<Instant>,
}

impl RestartTracker {
    /// A tracker for `strategy`.
    pub fn new(strategy: RestartStrategy) -> Self {
        RestartTracker {
            strategy,
            restarts: 0,
            current_backoff: None,
            last_failure: None,
            failures: VecDeque::new(),
        }
    }

    /// A failure happened at `now`: how long to wait before restarting, or `None` to give up.
    pub fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        let since_last = self.last_failure.map(|t| now.duration_since(t));
        self.last_failure = Some(now);
        match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                if self.restarts >= *attempts {
                    return None;
                }
                self.restarts += 1;
                Some(*delay)
            }
            RestartStrategy::ExponentialBackoff {
                initial,
                max,
                multiplier,
                reset_after,
            } => {
                let next = match (self.current_backoff, since_last) {
                    (Some(cur), Some(quiet)) if quiet < *reset_after => {
                        cur.mul_f64(multiplier.max(1.0)).min(*max)
                    }
                    _ => *initial,
                };
                self.current_backoff = Some(next);
                self.restarts += 1;
                Some(next)
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > *interval)
                {
                    self.failures.pop_front();
                }
                if self.failures.len() as u32 > *max_failures {
                    return None;
                }
                self.restarts += 1;
                Some(*delay)
            }
        }
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_delay_gives_up_after_attempts() {
        let mut t = RestartTracker::new(RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(5),
        });
        let now = Instant::now();
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(5)));
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(5)));
        assert_eq!(t.on_failure(now), None);
        assert_eq!(
            RestartTracker::new(RestartStrategy::None).on_failure(now),
            None
        );
    }

    #[test]
    fn exponential_backoff_grows_caps_and_resets() {
        let s = RestartStrategy::ExponentialBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(35),
            multiplier: 2.0,
            reset_after: Duration::from_secs(10),
        };
        let mut t = RestartTracker::new(s);
        let t0 = Instant::now();
        let d: Vec<_> = (0..4)
            .map(|i| {
                t.on_failure(t0 + Duration::from_millis(i))
                    .unwrap()
                    .as_millis()
            })
            .collect();
        assert_eq!(d, vec![10, 20, 35, 35]);
        assert_eq!(
            t.on_failure(t0 + Duration::from_secs(60))
                .unwrap()
                .as_millis(),
            10,
            "reset after a quiet period"
        );
    }

    #[test]
    fn failure_rate_counts_within_the_interval() {
        let s = RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(1),
            delay: Duration::ZERO,
        };
        let mut t = RestartTracker::new(s);
        let t0 = Instant::now();
        assert!(t.on_failure(t0).is_some());
        assert!(t.on_failure(t0 + Duration::from_millis(100)).is_some());
        assert!(
            t.on_failure(t0 + Duration::from_millis(200)).is_none(),
            "third failure within 1 s"
        );
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(1),
            delay: Duration::ZERO,
        });
        assert!(t.on_failure(t0).is_some());
        assert!(t.on_failure(t0 + Duration::from_millis(100)).is_some());
        assert!(
            t.on_failure(t0 + Duration::from_secs(2)).is_some(),
            "old failures age out"
        );
    }
}
