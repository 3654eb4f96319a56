//! Plain byte-weighted LRU: every insert is admitted, the least recently used keys leave first.
//! The baseline the other policies are measured against.

use super::list::{Arena, Queue};
use super::{EvictionPolicy, InsertOutcome, PolicyKind};

const QUEUE: u8 = 0;

/// Byte-weighted least-recently-used.
#[derive(Debug, Clone)]
pub struct Lru {
    arena: Arena,
    queue: Queue,
    capacity: u64,
}

impl Lru {
    /// An empty LRU with a byte budget of `capacity`.
    pub fn new(capacity: u64) -> Self {
        Self {
            arena: Arena::default(),
            queue: Queue::new(QUEUE),
            capacity,
        }
    }

    fn evict_over_budget(&mut self, protect: Option<u64>, evicted: &mut Vec<u64>) {
        while self.queue.bytes() > self.capacity {
            let Some(victim) = self.arena.tail_except(&self.queue, protect) else {
                break;
            };
            evicted.push(self.arena.node(victim).hash);
            self.arena.unlink(&mut self.queue, victim);
            self.arena.release(victim);
        }
    }

    /// Resident hashes from most to least recent (tests).
    #[cfg(test)]
    pub(crate) fn order(&self) -> Vec<u64> {
        self.arena.hashes(&self.queue)
    }

    #[cfg(test)]
    pub(crate) fn check(&self) {
        self.arena.check_queue(&self.queue);
        assert_eq!(self.arena.allocated(), self.queue.len());
        assert!(self.queue.bytes() <= self.capacity);
    }
}

impl EvictionPolicy for Lru {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Lru
    }

    fn on_hit(&mut self, hash: u64) {
        if let Some(idx) = self.arena.find(hash) {
            self.arena.move_to_head(&mut self.queue, idx);
        }
    }

    fn on_insert(&mut self, hash: u64, weight: u64) -> InsertOutcome {
        let mut evicted = Vec::new();
        if let Some(idx) = self.arena.find(hash) {
            if weight > self.capacity {
                self.arena.unlink(&mut self.queue, idx);
                self.arena.release(idx);
                return InsertOutcome {
                    admitted: false,
                    evicted,
                };
            }
            self.arena.reweigh(&mut self.queue, idx, weight);
            self.arena.move_to_head(&mut self.queue, idx);
            self.evict_over_budget(Some(hash), &mut evicted);
            return InsertOutcome {
                admitted: true,
                evicted,
            };
        }
        if weight > self.capacity {
            return InsertOutcome {
                admitted: false,
                evicted,
            };
        }
        let idx = self.arena.alloc(hash, weight);
        self.arena.push_head(&mut self.queue, idx);
        self.evict_over_budget(Some(hash), &mut evicted);
        InsertOutcome {
            admitted: true,
            evicted,
        }
    }

    fn on_remove(&mut self, hash: u64) -> bool {
        match self.arena.find(hash) {
            Some(idx) => {
                self.arena.unlink(&mut self.queue, idx);
                self.arena.release(idx);
                true
            }
            None => false,
        }
    }

    fn contains(&self, hash: u64) -> bool {
        self.arena.find(hash).is_some()
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn bytes(&self) -> u64 {
        self.queue.bytes()
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }
}
