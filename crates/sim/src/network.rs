//! The simulated network: messages in flight with delivery times, random
//! drops, duplicates and delays (reordering follows from unequal delays),
//! and symmetric or one-way partitions. Deterministic for one seed.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use raftwerk_raft::{Message, NodeId, SeededRng};

/// Fault rates of one run, fixed per seed.
#[derive(Clone, Copy, Debug)]
pub struct NetworkFaults {
    /// Chance a message is lost, per mille.
    pub drop_per_mille: u64,
    /// Chance a message is delivered twice, per mille.
    pub duplicate_per_mille: u64,
    /// Delivery delay in ticks, drawn from `[1, delay_ticks_max]`.
    pub delay_ticks_max: u64,
}

impl NetworkFaults {
    pub fn none() -> Self {
        NetworkFaults {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            delay_ticks_max: 1,
        }
    }
}

/// A message with its delivery time; ordered by time, then send order.
struct InFlight {
    deliver_at: u64,
    sequence: u64,
    message: Message,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.sequence) == (other.deliver_at, other.sequence)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deliver_at, self.sequence).cmp(&(other.deliver_at, other.sequence))
    }
}

/// Messages in flight between simulated nodes.
pub struct Network {
    queue: BinaryHeap<Reverse<InFlight>>,
    sequence: u64,
    /// Directed links that lose everything: `(from, to)`.
    blocked: BTreeSet<(NodeId, NodeId)>,
    pub faults: NetworkFaults,
    pub sent: u64,
    pub dropped: u64,
}

impl Network {
    pub fn new(faults: NetworkFaults) -> Self {
        Network {
            queue: BinaryHeap::new(),
            sequence: 0,
            blocked: BTreeSet::new(),
            faults,
            sent: 0,
            dropped: 0,
        }
    }

    /// Sends at time `now`; the network decides loss, duplication and delay.
    pub fn send(&mut self, now: u64, message: Message, rng: &mut SeededRng) {
        self.sent += 1;
        if self.is_blocked(message.from, message.to) || rng.chance(self.faults.drop_per_mille, 1000) {
            self.dropped += 1;
            return;
        }
        if rng.chance(self.faults.duplicate_per_mille, 1000) {
            self.enqueue(now, message.clone(), rng);
        }
        self.enqueue(now, message, rng);
    }

    fn enqueue(&mut self, now: u64, message: Message, rng: &mut SeededRng) {
        let delay = rng.range(1, self.faults.delay_ticks_max + 1);
        self.sequence += 1;
        self.queue.push(Reverse(InFlight {
            deliver_at: now + delay,
            sequence: self.sequence,
            message,
        }));
    }

    /// Removes and returns the next message due at or before `now`, dropping
    /// those whose link was cut while they were in flight.
    pub fn next_due(&mut self, now: u64) -> Option<Message> {
        while let Some(Reverse(head)) = self.queue.peek() {
            if head.deliver_at > now {
                return None;
            }
            let Reverse(in_flight) = self.queue.pop().expect("peeked");
            if self.is_blocked(in_flight.message.from, in_flight.message.to) {
                self.dropped += 1;
                continue;
            }
            return Some(in_flight.message);
        }
        None
    }

    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    pub fn has_partition(&self) -> bool {
        !self.blocked.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}
