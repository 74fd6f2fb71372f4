//! The retry schedule: how long to wait after a failed delivery attempt, and when to give up.
//!
//! RFC 5321 §4.5.4.1 asks for a retry interval of at least 30 minutes and a give-up time of at
//! least 4–5 days; the operator's `[delivery.upstream] retry` list encodes both, one delay per
//! retry. This is a pure function of the schedule and the attempt count, so it is tested
//! without sleeping.

use std::time::Duration;

/// The schedule used when no smarthost is configured (local deliveries still retry): RFC 5321
/// §4.5.4.1's 30 minutes between tries, after a few quicker early retries, for about 4 days.
pub const DEFAULT_SCHEDULE: [Duration; 8] = [
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(4 * 3600),
    Duration::from_secs(8 * 3600),
    Duration::from_secs(24 * 3600),
    Duration::from_secs(60 * 3600),
];

/// The delay before the next attempt, given that `attempts` attempts have been made and the
/// last of them failed transiently; `None` means the schedule is exhausted and the message
/// should fail. Attempt `n` (1-based) is followed by `schedule[n - 1]`; `attempts == 0` is
/// treated as 1.
pub fn next_attempt(schedule: &[Duration], attempts: u32) -> Option<Duration> {
    let index = usize::try_from(attempts.max(1) - 1).ok()?;
    schedule.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_schedule_then_gives_up() {
        let s = [
            Duration::from_millis(100),
            Duration::from_secs(5),
            Duration::from_secs(60),
        ];
        let cases = [
            (0, Some(s[0])),
            (1, Some(s[0])),
            (2, Some(s[1])),
            (3, Some(s[2])),
            (4, None),
            (u32::MAX, None),
        ];
        for (attempts, want) in cases {
            assert_eq!(next_attempt(&s, attempts), want, "attempts={attempts}");
        }
    }

    #[test]
    fn empty_schedule_gives_up_at_once() {
        assert_eq!(next_attempt(&[], 1), None);
        assert_eq!(next_attempt(&[], 0), None);
    }

    #[test]
    fn default_schedule_meets_rfc_5321_give_up_time() {
        let total: Duration = DEFAULT_SCHEDULE.iter().sum();
        assert!(total >= Duration::from_secs(4 * 24 * 3600), "{total:?}");
        let n = DEFAULT_SCHEDULE.len() as u32;
        assert!(next_attempt(&DEFAULT_SCHEDULE, n).is_some());
        assert!(next_attempt(&DEFAULT_SCHEDULE, n + 1).is_none());
    }
}
