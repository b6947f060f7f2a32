//! When to restart a sidecar that ended on its own, and after how long.

use std::time::Duration;

/// Exit codes that a restart cannot cure (see the protocol's Lifecycle): 2 bad command line,
/// 3 database held by another sidecar, 4 database unreadable or not a Taskmill database.
pub const FINAL_EXIT_CODES: &[i32] = &[2, 3, 4];

/// Whether a sidecar that ended with `code` (`None`: killed by a signal) is started again.
pub fn should_restart(code: Option<i32>) -> bool {
    !matches!(code, Some(c) if FINAL_EXIT_CODES.contains(&c))
}

/// Exponential restart delays: `initial`, twice that, ... up to `max`. A sidecar that ran for
/// at least `reset_after` before it ended starts the schedule again from `initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (0 is the first restart of a run of crashes).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The attempt number for the next restart, given the previous one and how long the
    /// sidecar that just ended had run.
    pub fn next_attempt(&self, previous: Option<u32>, ran_for: Duration) -> u32 {
        match previous {
            Some(attempt) if ran_for < self.reset_after => attempt.saturating_add(1),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_2_3_4_are_final_and_everything_else_restarts() {
        assert!(!should_restart(Some(2)));
        assert!(!should_restart(Some(3)));
        assert!(!should_restart(Some(4)));
        assert!(should_restart(Some(1)));
        assert!(should_restart(Some(0)));
        assert!(should_restart(Some(-1)));
        assert!(should_restart(None)); // killed by a signal
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(60),
        };
        let delays: Vec<u64> = (0..7).map(|a| b.delay(a).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(5)); // no overflow
    }

    #[test]
    fn a_long_run_resets_the_schedule_and_quick_crashes_climb_it() {
        let b = Backoff::default();
        let quick = Duration::from_secs(1);
        let long = Duration::from_secs(120);
        assert_eq!(b.next_attempt(None, quick), 0);
        assert_eq!(b.next_attempt(Some(0), quick), 1);
        assert_eq!(b.next_attempt(Some(3), quick), 4);
        assert_eq!(b.next_attempt(Some(3), long), 0);
        assert_eq!(b.next_attempt(Some(u32::MAX), quick), u32::MAX);
    }
}
