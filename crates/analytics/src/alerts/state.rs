//! The alert state machine: one instance's next state from its last one and
//! what an evaluation at time T observed. Pure, so the semantics are tested
//! on their own.
//!
//! The semantics are Prometheus alerting rules' (`rules/alerting.go`), plus
//! Grafana's `no_data`:
//! - the condition holds: inactive, resolved or no_data → pending (→ firing
//!   at once when `for` is 0); pending → firing once it has held for `for`
//!   (T − active_since ≥ for); firing stays firing;
//! - it does not hold: pending → inactive; firing stays firing while
//!   T − keep_firing_since < keep_firing_for (keep_firing_since is the first
//!   T it did not hold), then → resolved; the others stay;
//! - the window holds no events: firing stays firing for keep_firing_for as
//!   when the condition stops holding, then → no_data; any other state →
//!   no_data at once; data again → inactive, or on as above when the
//!   condition holds.
//!
//! Every transition out of firing (to resolved, or to no_data) is one a
//! webhook is told of, as is every transition into it.
//!
//! `resolved` behaves as `inactive` in every other way: it only tells a
//! reader that the instance fired and stopped.

use serde::{Deserialize, Serialize};

use crate::model::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Inactive,
    Pending,
    Firing,
    Resolved,
    NoData,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
            State::NoData => "no_data",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "inactive" => State::Inactive,
            "pending" => State::Pending,
            "firing" => State::Firing,
            "resolved" => State::Resolved,
            "no_data" => State::NoData,
            _ => return None,
        })
    }
}

/// An instance as the last evaluation left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub state: State,
    pub active_since: Option<Micros>,
    pub keep_firing_since: Option<Micros>,
}

impl Instance {
    pub const NEW: Instance = Instance {
        state: State::Inactive,
        active_since: None,
        keep_firing_since: None,
    };
}

/// What one evaluation saw: `None` when the window held no events, else
/// whether the condition held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    NoData,
    Holds(bool),
}

/// The durations of a rule that the state machine needs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub for_: Micros,
    pub keep_firing_for: Micros,
}

/// The instance after an evaluation at `t`.
pub fn step(prev: &Instance, observed: Observed, t: Micros, timing: Timing) -> Instance {
    let next = |state, active_since, keep_firing_since| Instance {
        state,
        active_since,
        keep_firing_since,
    };
    // A firing instance whose condition stopped holding, or whose data
    // stopped, keeps firing for keep_firing_for (from the first such T).
    let keep_firing = || {
        let since = prev.keep_firing_since.unwrap_or(t);
        (timing.keep_firing_for > 0 && t - since < timing.keep_firing_for)
            .then(|| next(State::Firing, prev.active_since, Some(since)))
    };
    match (prev.state, observed) {
        (State::Firing, Observed::NoData) => keep_firing().unwrap_or_else(|| next(State::NoData, None, None)),
        (_, Observed::NoData) => next(State::NoData, None, None),
        (State::Inactive | State::Resolved | State::NoData, Observed::Holds(true)) => {
            let state = if timing.for_ == 0 {
                State::Firing
            } else {
                State::Pending
            };
            next(state, Some(t), None)
        }
        (State::Pending, Observed::Holds(true)) => {
            let since = prev.active_since.unwrap_or(t);
            let state = if t - since >= timing.for_ {
                State::Firing
            } else {
                State::Pending
            };
            next(state, Some(since), None)
        }
        (State::Firing, Observed::Holds(true)) => next(State::Firing, prev.active_since.or(Some(t)), None),
        (State::Pending, Observed::Holds(false)) | (State::NoData, Observed::Holds(false)) => {
            next(State::Inactive, None, None)
        }
        (State::Firing, Observed::Holds(false)) => keep_firing().unwrap_or_else(|| next(State::Resolved, None, None)),
        (State::Inactive | State::Resolved, Observed::Holds(false)) => next(prev.state, None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    /// The states an instance goes through over observations at T = 0, 10, 20 … s.
    fn run(timing: Timing, observations: &[Observed]) -> Vec<State> {
        let mut instance = Instance::NEW;
        observations
            .iter()
            .enumerate()
            .map(|(i, o)| {
                instance = step(&instance, *o, i as Micros * 10 * S, timing);
                instance.state
            })
            .collect()
    }

    use Observed::{Holds, NoData as Empty};
    use State::*;

    #[test]
    fn for_zero_fires_at_once_and_resolves_when_the_condition_stops() {
        let timing = Timing {
            for_: 0,
            keep_firing_for: 0,
        };
        assert_eq!(
            run(
                timing,
                &[Holds(false), Holds(true), Holds(true), Holds(false), Holds(false)]
            ),
            [Inactive, Firing, Firing, Resolved, Resolved]
        );
    }

    #[test]
    fn pending_becomes_firing_once_the_condition_held_for_for() {
        let timing = Timing {
            for_: 20 * S,
            keep_firing_for: 0,
        };
        // Holds from T=0: pending at 0 and 10, firing at 20 (held 20 s).
        assert_eq!(
            run(timing, &[Holds(true), Holds(true), Holds(true), Holds(true)]),
            [Pending, Pending, Firing, Firing]
        );
        // A break while pending starts the count again.
        assert_eq!(
            run(
                timing,
                &[Holds(true), Holds(false), Holds(true), Holds(true), Holds(true)]
            ),
            [Pending, Inactive, Pending, Pending, Firing]
        );
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert_after_the_condition_stops() {
        let timing = Timing {
            for_: 0,
            keep_firing_for: 20 * S,
        };
        // Stops holding at T=10: still firing at 10 and 20 (< 20 s), resolved at 30.
        assert_eq!(
            run(timing, &[Holds(true), Holds(false), Holds(false), Holds(false)]),
            [Firing, Firing, Firing, Resolved]
        );
        // Holding again while kept firing restarts the keep-firing clock.
        assert_eq!(
            run(
                timing,
                &[
                    Holds(true),
                    Holds(false),
                    Holds(true),
                    Holds(false),
                    Holds(false),
                    Holds(false)
                ]
            ),
            [Firing, Firing, Firing, Firing, Firing, Resolved]
        );
    }

    #[test]
    fn an_empty_window_is_no_data_and_data_again_takes_it_back() {
        let timing = Timing {
            for_: 0,
            keep_firing_for: 0,
        };
        assert_eq!(
            run(timing, &[Empty, Holds(false), Empty, Holds(true), Empty]),
            [NoData, Inactive, NoData, Firing, NoData]
        );
    }

    #[test]
    fn a_firing_alert_whose_data_stops_keeps_firing_for_keep_firing_for_then_is_no_data() {
        let timing = Timing {
            for_: 0,
            keep_firing_for: 20 * S,
        };
        // Data stops at T=10: still firing at 10 and 20 (< 20 s), no_data at 30.
        assert_eq!(
            run(timing, &[Holds(true), Empty, Empty, Empty]),
            [Firing, Firing, Firing, NoData]
        );
        // The clock runs from the first T without data or condition, whichever.
        assert_eq!(
            run(timing, &[Holds(true), Holds(false), Empty, Empty]),
            [Firing, Firing, Firing, NoData]
        );
        // Data that comes back holding keeps it firing, and restarts the clock.
        assert_eq!(
            run(timing, &[Holds(true), Empty, Holds(true), Empty, Empty, Empty]),
            [Firing, Firing, Firing, Firing, Firing, NoData]
        );
        // Without keep_firing_for, at once; pending never waits.
        let at_once = Timing {
            for_: 20 * S,
            keep_firing_for: 0,
        };
        assert_eq!(run(at_once, &[Holds(true), Empty]), [Pending, NoData]);
    }

    #[test]
    fn firing_keeps_the_time_it_became_active() {
        let timing = Timing {
            for_: 10 * S,
            keep_firing_for: 0,
        };
        let mut instance = Instance::NEW;
        for t in [0, 10, 20] {
            instance = step(&instance, Holds(true), t * S, timing);
        }
        assert_eq!((instance.state, instance.active_since), (Firing, Some(0)));
    }
}
