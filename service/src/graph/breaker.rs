//! Circuit breakers, one per node type, shared by every execution on the server.
//!
//! After `threshold` consecutive failed attempts of a node type (failures caused by the request,
//! such as invalid input, do not count), the breaker opens: nodes of that type are skipped and
//! marked failed without being called. After the cool-down (30 s by default, configurable with
//! `breaker_cooldown_ms`) it half-opens and lets exactly one attempt through: success closes it,
//! failure opens it for another cool-down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Default time a breaker stays open before it lets a trial attempt through.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

/// Whether an attempt may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed.
    Allowed,
    /// The breaker is half-open and this attempt is its single trial.
    Trial,
    /// The breaker is open.
    Rejected { retry_after: Duration, failures: u32 },
}

/// Breaker states by node type.
#[derive(Debug)]
pub struct CircuitBreakers {
    cooldown: Duration,
    states: Mutex<HashMap<String, State>>,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        Self::new(DEFAULT_COOLDOWN)
    }
}

impl CircuitBreakers {
    pub fn new(cooldown: Duration) -> Self {
        Self { cooldown, states: Mutex::new(HashMap::new()) }
    }

    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        // A panic while holding this lock cannot leave a State half-updated (each update is a
        // few field stores), so a poisoned lock is still consistent.
        self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks whether a `node_type` attempt may run under a breaker opening at `threshold`
    /// failures (0 disables the breaker).
    pub fn admit(&self, node_type: &str, threshold: u32) -> Admission {
        if threshold == 0 {
            return Admission::Allowed;
        }
        let mut states = self.states();
        let Some(st) = states.get_mut(node_type) else { return Admission::Allowed };
        if st.consecutive_failures < threshold {
            return Admission::Allowed;
        }
        let opened_at = *st.opened_at.get_or_insert_with(Instant::now);
        let open_for = opened_at.elapsed();
        if open_for < self.cooldown {
            return Admission::Rejected { retry_after: self.cooldown - open_for, failures: st.consecutive_failures };
        }
        if st.trial_in_flight {
            // Another request holds the trial; try again once it has had time to finish.
            return Admission::Rejected { retry_after: Duration::from_secs(1), failures: st.consecutive_failures };
        }
        st.trial_in_flight = true;
        Admission::Trial
    }

    /// Records the outcome of an admitted attempt. Failures that say nothing about the node
    /// type's health (`counts = false`) only release a trial.
    pub fn record(&self, node_type: &str, threshold: u32, outcome: Outcome) {
        if threshold == 0 {
            return;
        }
        let mut states = self.states();
        if outcome == Outcome::Success {
            // A success resets the type's state; a type with no state is already reset, and
            // skipping the entry saves allocating its name on every successful call.
            if let Some(st) = states.get_mut(node_type) {
                *st = State::default();
            }
            return;
        }
        let st = states.entry(node_type.to_owned()).or_default();
        st.trial_in_flight = false;
        match outcome {
            Outcome::Success => *st = State::default(),
            Outcome::Failure => {
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                if st.consecutive_failures >= threshold {
                    st.opened_at = Some(Instant::now());
                }
            }
            Outcome::NotCounted => {}
        }
    }

    /// [`Self::admit`] as a guard: an admitted attempt whose outcome is never recorded (its
    /// future dropped by a time limit, a deadline or a cancel) gives its trial back when the
    /// guard drops, so a half-open breaker lets the next attempt through instead of staying
    /// open for good.
    pub fn attempt<'a>(&'a self, node_type: &'a str, threshold: u32) -> Result<Attempt<'a>, (Duration, u32)> {
        match self.admit(node_type, threshold) {
            Admission::Rejected { retry_after, failures } => Err((retry_after, failures)),
            admission => Ok(Attempt { breakers: self, node_type, threshold, trial: admission == Admission::Trial }),
        }
    }

    /// Gives back a trial whose outcome will never be known.
    fn abandon_trial(&self, node_type: &str) {
        if let Some(st) = self.states().get_mut(node_type) {
            st.trial_in_flight = false;
        }
    }

    /// Consecutive failures currently recorded for `node_type`.
    pub fn failures(&self, node_type: &str) -> u32 {
        self.states().get(node_type).map_or(0, |s| s.consecutive_failures)
    }
}

/// An admitted attempt ([`CircuitBreakers::attempt`]): [`Attempt::record`] its outcome.
#[derive(Debug)]
pub struct Attempt<'a> {
    breakers: &'a CircuitBreakers,
    node_type: &'a str,
    threshold: u32,
    /// Whether this attempt holds the half-open breaker's single trial, until it is recorded.
    trial: bool,
}

impl Attempt<'_> {
    pub fn record(mut self, outcome: Outcome) {
        self.trial = false;
        self.breakers.record(self.node_type, self.threshold, outcome);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.trial {
            self.breakers.abandon_trial(self.node_type);
        }
    }
}

/// What an attempt tells the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    NotCounted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_half_opens_after_cooldown() {
        let b = CircuitBreakers::new(Duration::from_secs(30));
        for _ in 0..4 {
            assert_eq!(b.admit("X", 5), Admission::Allowed);
            b.record("X", 5, Outcome::Failure);
        }
        assert_eq!(b.admit("X", 5), Admission::Allowed);
        b.record("X", 5, Outcome::Failure);
        assert!(matches!(
            b.admit("X", 5),
            Admission::Rejected { retry_after, failures: 5 } if retry_after == Duration::from_secs(30)
        ));

        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(
            matches!(b.admit("X", 5), Admission::Rejected { retry_after, .. } if retry_after == Duration::from_secs(1))
        );

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit("X", 5), Admission::Trial);
        assert!(matches!(b.admit("X", 5), Admission::Rejected { .. }), "one trial at a time");
        b.record("X", 5, Outcome::Success);
        assert_eq!(b.admit("X", 5), Admission::Allowed);
        assert_eq!(b.failures("X"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_for_a_full_cooldown() {
        let b = CircuitBreakers::new(Duration::from_secs(10));
        for _ in 0..2 {
            b.record("X", 2, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit("X", 2), Admission::Trial);
        b.record("X", 2, Outcome::Failure);
        assert!(matches!(
            b.admit("X", 2),
            Admission::Rejected { retry_after, .. } if retry_after == Duration::from_secs(10)
        ));
    }

    #[test]
    fn success_resets_and_other_types_are_independent() {
        let b = CircuitBreakers::default();
        for _ in 0..4 {
            b.record("X", 5, Outcome::Failure);
        }
        b.record("X", 5, Outcome::Success);
        b.record("X", 5, Outcome::Failure);
        assert_eq!(b.failures("X"), 1);
        assert_eq!(b.admit("Y", 5), Admission::Allowed);
    }

    #[test]
    fn uncounted_failures_do_not_open_it_and_zero_disables_it() {
        let b = CircuitBreakers::default();
        for _ in 0..10 {
            b.record("X", 5, Outcome::NotCounted);
            b.record("Z", 0, Outcome::Failure);
        }
        assert_eq!(b.admit("X", 5), Admission::Allowed);
        assert_eq!(b.admit("Z", 0), Admission::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_trial_lets_the_next_attempt_through() {
        let b = CircuitBreakers::new(Duration::from_secs(30));
        for _ in 0..5 {
            b.attempt("X", 5).expect("closed").record(Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        let trial = b.attempt("X", 5).expect("half-open: one trial");
        assert!(b.attempt("X", 5).is_err(), "only one trial at a time");
        // The trial's future is dropped (a time limit, a deadline, a cancel) before it records.
        drop(trial);
        b.attempt("X", 5).expect("the next attempt is the trial").record(Outcome::Success);
        assert_eq!(b.admit("X", 5), Admission::Allowed, "a successful trial closes the breaker");
        assert_eq!(b.failures("X"), 0);
    }
}
