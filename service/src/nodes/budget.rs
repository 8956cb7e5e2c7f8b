//! A run's memory limit as the node calls running at the same time share it.
//!
//! The executor counts a node's output once the node returns. Calls that run at once (the
//! branches of a fan-out, Python nodes, heavy native calls) each make their output before any of
//! them is counted, so checking each against what the run held when it started let a thousand
//! parallel branches each make an output the limit had room for once: a 100 MB limit let one
//! request reach 3.2 GB. Here the bytes the run holds and the bytes running calls have reserved
//! for their outputs are one budget: a reservation that would take it over the limit is refused.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug)]
pub struct MemoryBudget {
    limit: AtomicU64,
    /// Bytes the run's values hold, as the executor last counted them.
    live: AtomicU64,
    /// Bytes reserved by running calls, in all and by node index (a node runs one call at a
    /// time).
    reserved: AtomicU64,
    by_node: Box<[AtomicU64]>,
}

impl MemoryBudget {
    /// A budget for a pipeline of `nodes` nodes, with no limit until [`MemoryBudget::reset`].
    pub fn new(nodes: usize) -> Self {
        Self {
            limit: AtomicU64::new(u64::MAX),
            live: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            by_node: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Starts a run under a limit of `limit` bytes, holding nothing.
    pub fn reset(&self, limit: u64) {
        self.limit.store(limit, Relaxed);
        self.live.store(0, Relaxed);
        self.reserved.store(0, Relaxed);
        self.by_node.iter().for_each(|r| r.store(0, Relaxed));
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Relaxed)
    }

    /// Records the bytes the run's values hold now.
    pub fn set_live(&self, bytes: u64) {
        self.live.store(bytes, Relaxed);
    }

    /// Reserves room for an output of `bytes` of node `node`'s running call; what the call
    /// reserved before counts towards it. `Err(needed)`, reserving nothing, when the run's values
    /// and every reservation would come to `needed` bytes, over the limit.
    pub fn reserve(&self, node: usize, bytes: u64) -> Result<(), u64> {
        let mine = &self.by_node[node];
        let extra = bytes.saturating_sub(mine.load(Relaxed));
        if extra == 0 {
            return Ok(());
        }
        let limit = self.limit();
        let mut reserved = self.reserved.load(Relaxed);
        loop {
            let needed = self.live.load(Relaxed).saturating_add(reserved).saturating_add(extra);
            if needed > limit {
                return Err(needed);
            }
            match self.reserved.compare_exchange_weak(reserved, reserved + extra, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(now) => reserved = now,
            }
        }
        mine.fetch_add(extra, Relaxed);
        Ok(())
    }

    /// Ends node `node`'s reservation: its call has returned, and its output, if any, is
    /// counted by the executor from now on.
    pub fn release(&self, node: usize) {
        let mine = self.by_node[node].swap(0, Relaxed);
        self.reserved.fetch_sub(mine, Relaxed);
    }

    /// Bytes reserved by the running calls of nodes other than `node`.
    pub fn reserved_by_others(&self, node: usize) -> u64 {
        self.reserved.load(Relaxed).saturating_sub(self.by_node[node].load(Relaxed))
    }

    /// The bytes node `node`'s call must count as taken: the run's values and the other
    /// calls' reservations.
    pub fn taken_for(&self, node: usize) -> u64 {
        self.live.load(Relaxed).saturating_add(self.reserved_by_others(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_of_running_calls_add_up_against_the_limit() {
        let b = MemoryBudget::new(3);
        b.reset(100);
        b.set_live(20);
        b.reserve(0, 50).unwrap();
        // Node 1 sees node 0's reservation: 20 + 50 + 40 > 100.
        assert_eq!(b.reserve(1, 40), Err(110));
        b.reserve(1, 30).unwrap();
        // A node's own earlier reservation counts towards a larger one.
        b.reserve(1, 30).unwrap();
        assert_eq!(b.reserve(1, 31), Err(101));
        assert_eq!(b.reserved_by_others(1), 50);
        assert_eq!(b.taken_for(1), 70);
        b.release(0);
        b.reserve(2, 50).unwrap();
        b.reset(10);
        assert_eq!(b.reserved_by_others(0), 0);
        assert_eq!(b.reserve(2, 11), Err(11));
    }
}
