//! A client history of puts and linearizable gets on a few keys, and a
//! checker that uses etcd's revisions to find linearizability violations
//! without searching orders: the server assigns every write a revision in
//! log order and serves every read at a revision, so
//! - an operation that began after another ended must not carry a smaller
//!   revision (real-time order);
//! - a get must return the value of a put that was invoked before it ended,
//!   at that put's revision if the put was acknowledged (no phantom or
//!   misplaced values);
//! - a get served at revision `h` that saw the key at `m` must not have
//!   missed an acknowledged put with a revision in `(m, h]`, nor one that
//!   ended before the get began (no stale reads, no lost writes) — nor a
//!   failed put that another get saw at such a revision;
//! - no two writes share a revision.
//!
//! A put that failed or timed out may or may not have been applied (it is
//! never counted as "not applied", RELIABILITY #12): its value may be read,
//! at any revision.

use std::collections::HashMap;
use std::time::Instant;

#[derive(Clone, Debug)]
pub enum Kind {
    Put { value: String },
    Get,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    /// A put's revision.
    Put { revision: i64 },
    /// A get: the revision it was served at, and the value with its mod
    /// revision (`None` for a missing key).
    Get {
        revision: i64,
        found: Option<(String, i64)>,
    },
    /// Failed or timed out: unknown effect.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub kind: Kind,
    pub invoked: Instant,
    pub completed: Instant,
    pub outcome: Outcome,
}

impl Op {
    fn revision(&self) -> Option<i64> {
        match self.outcome {
            Outcome::Put { revision } | Outcome::Get { revision, .. } => Some(revision),
            Outcome::Unknown => None,
        }
    }
}

/// Checks a history; returns every violation found (empty: none).
pub fn check(ops: &[Op]) -> Vec<String> {
    let mut violations = Vec::new();
    // Real-time order: sweep operations by invocation, knowing the largest
    // revision of those that completed before.
    let mut by_completion: Vec<&Op> = ops.iter().filter(|op| op.revision().is_some()).collect();
    by_completion.sort_by_key(|op| op.completed);
    let mut by_invocation: Vec<&Op> = by_completion.clone();
    by_invocation.sort_by_key(|op| op.invoked);
    let (mut done, mut floor, mut floor_op): (usize, i64, Option<&Op>) = (0, 0, None);
    for op in &by_invocation {
        while done < by_completion.len() && by_completion[done].completed < op.invoked {
            let revision = by_completion[done].revision().expect("filtered");
            if revision > floor {
                floor = revision;
                floor_op = Some(by_completion[done]);
            }
            done += 1;
        }
        let revision = op.revision().expect("filtered");
        if revision < floor {
            violations.push(format!(
                "real-time order: {op:?} has revision {revision} but began after {:?} ended at revision {floor}",
                floor_op.expect("set with the floor")
            ));
        }
    }
    // Values: each put's value is unique.
    let puts: HashMap<&str, &Op> = ops
        .iter()
        .filter_map(|op| match &op.kind {
            Kind::Put { value } => Some((value.as_str(), op)),
            Kind::Get => None,
        })
        .collect();
    // Every put whose revision is known: acknowledged ones, and failed
    // ones a get saw (at the mod revision it reported).
    let mut known: HashMap<&str, i64> = HashMap::new();
    for (value, put) in &puts {
        if let Outcome::Put { revision } = put.outcome {
            known.insert(value, revision);
        }
    }
    for op in ops {
        let Outcome::Get {
            found: Some((value, mod_revision)),
            ..
        } = &op.outcome
        else {
            continue;
        };
        match puts.get(value.as_str()) {
            None => violations.push(format!("phantom value: {op:?} read a value no put wrote")),
            Some(put) if put.key != op.key => {
                violations.push(format!("wrong key: {op:?} read the value {put:?} wrote"))
            }
            Some(put) if put.invoked > op.completed => {
                violations.push(format!("read from the future: {op:?} read the value of {put:?}"))
            }
            Some(_) => match known.get(value.as_str()) {
                Some(revision) if revision != mod_revision => violations.push(format!(
                    "misplaced value: {op:?} read it at mod revision {mod_revision}, but it was written at {revision}"
                )),
                Some(_) => {}
                None => {
                    known.insert(value.as_str(), *mod_revision);
                }
            },
        }
    }
    // One write per revision (each put is its own transaction).
    let mut by_revision: HashMap<i64, &str> = HashMap::new();
    for (value, revision) in &known {
        if let Some(other) = by_revision.insert(*revision, value) {
            violations.push(format!(
                "two writes at revision {revision}: {other:?} and {value:?} (one of them was lost)"
            ));
        }
    }
    // Known writes by key.
    let mut writes: HashMap<&str, Vec<(i64, &Op)>> = HashMap::new();
    for (value, revision) in &known {
        let put = puts[value];
        writes.entry(put.key.as_str()).or_default().push((*revision, put));
    }
    for op in ops {
        let Outcome::Get { revision, found } = &op.outcome else {
            continue;
        };
        let seen_at = found.as_ref().map_or(0, |(_, mod_revision)| *mod_revision);
        if seen_at > *revision {
            violations.push(format!("{op:?} saw a version newer than the revision it was served at"));
        }
        for (put_revision, put) in writes.get(op.key.as_str()).into_iter().flatten() {
            let acknowledged_before = matches!(put.outcome, Outcome::Put { .. }) && put.completed < op.invoked;
            if *put_revision > seen_at && (*put_revision <= *revision || acknowledged_before) {
                violations.push(format!(
                    "stale read: {op:?} saw the key at revision {seen_at} but {put:?} (revision {put_revision}) precedes it"
                ));
            }
        }
    }
    violations
}

/// A hand-written operation for the checker's own tests: times are
/// milliseconds after `base`.
pub fn op(key: &str, kind: Kind, invoked_ms: u64, completed_ms: u64, outcome: Outcome, base: Instant) -> Op {
    Op {
        client: 0,
        key: key.to_string(),
        kind,
        invoked: base + std::time::Duration::from_millis(invoked_ms),
        completed: base + std::time::Duration::from_millis(completed_ms),
        outcome,
    }
}

pub fn put(value: &str) -> Kind {
    Kind::Put {
        value: value.to_string(),
    }
}

/// A get's outcome: served at `revision`, seeing `found` (value, mod
/// revision).
pub fn got(revision: i64, found: Option<(&str, i64)>) -> Outcome {
    Outcome::Get {
        revision,
        found: found.map(|(value, at)| (value.to_string(), at)),
    }
}
