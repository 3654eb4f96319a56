//! S3-FIFO (Yang et al., SOSP 2023), byte-weighted: a small FIFO (10% of the budget) filters
//! one-hit wonders, a main FIFO (90%) with 2-bit frequencies reinserts accessed objects, and a
//! ghost FIFO of recently filtered keys (no data, up to the main budget in bytes) sends a key
//! that returns soon straight to main.

use super::list::{Arena, Queue};
use super::{percent_of, EvictionPolicy, InsertOutcome, PolicyKind};

const SMALL: u8 = 0;
const MAIN: u8 = 1;
const GHOST: u8 = 2;
/// 2-bit frequency.
const FREQ_MAX: u8 = 3;
/// Percent of the budget for the small FIFO.
pub const SMALL_PERCENT: u64 = 10;

/// Byte-weighted S3-FIFO.
#[derive(Debug, Clone)]
pub struct S3Fifo {
    arena: Arena,
    small: Queue,
    main: Queue,
    ghost: Queue,
    capacity: u64,
    small_capacity: u64,
    ghost_capacity: u64,
}

impl S3Fifo {
    /// An empty S3-FIFO with a byte budget of `capacity`.
    pub fn new(capacity: u64) -> Self {
        let small_capacity = percent_of(capacity, SMALL_PERCENT).max(1);
        let ghost_capacity = capacity.saturating_sub(small_capacity).max(1);
        Self {
            arena: Arena::default(),
            small: Queue::new(SMALL),
            main: Queue::new(MAIN),
            ghost: Queue::new(GHOST),
            capacity,
            small_capacity,
            ghost_capacity,
        }
    }

    fn resident_bytes(&self) -> u64 {
        self.small.bytes() + self.main.bytes()
    }

    fn resident_index(&self, hash: u64) -> Option<u32> {
        self.arena
            .find(hash)
            .filter(|&idx| self.arena.node(idx).queue != GHOST)
    }

    fn unlink_any(&mut self, idx: u32) {
        match self.arena.node(idx).queue {
            SMALL => self.arena.unlink(&mut self.small, idx),
            MAIN => self.arena.unlink(&mut self.main, idx),
            GHOST => self.arena.unlink(&mut self.ghost, idx),
            _ => {}
        }
    }

    fn remember_ghost(&mut self, idx: u32) {
        self.arena.push_head(&mut self.ghost, idx);
        while self.ghost.bytes() > self.ghost_capacity {
            let Some(old) = self.ghost.tail() else { break };
            self.arena.unlink(&mut self.ghost, old);
            self.arena.release(old);
        }
    }

    /// Processes the small FIFO's tail: accessed → main, else → ghost. False if nothing to do.
    fn evict_small(&mut self, protect: Option<u64>, evicted: &mut Vec<u64>) -> bool {
        let Some(idx) = self.arena.tail_except(&self.small, protect) else {
            return false;
        };
        self.arena.unlink(&mut self.small, idx);
        if self.arena.node(idx).freq >= 1 {
            self.arena.node_mut(idx).freq = 0;
            self.arena.push_head(&mut self.main, idx);
        } else {
            evicted.push(self.arena.node(idx).hash);
            self.remember_ghost(idx);
        }
        true
    }

    /// Evicts one object from main, reinserting accessed ones with their frequency decremented
    /// (2-bit CLOCK). False if main holds nothing evictable.
    fn evict_main(&mut self, protect: Option<u64>, evicted: &mut Vec<u64>) -> bool {
        let mut rotations = self.main.len() * (FREQ_MAX as usize + 1) + 1;
        while let Some(idx) = self.main.tail() {
            if rotations == 0 {
                return false;
            }
            rotations -= 1;
            let node = self.arena.node(idx);
            if Some(node.hash) == protect {
                if self.main.len() == 1 {
                    return false;
                }
                self.arena.move_to_head(&mut self.main, idx);
                continue;
            }
            if node.freq > 0 {
                self.arena.node_mut(idx).freq -= 1;
                self.arena.move_to_head(&mut self.main, idx);
                continue;
            }
            evicted.push(node.hash);
            self.arena.unlink(&mut self.main, idx);
            self.arena.release(idx);
            return true;
        }
        false
    }

    fn evict_over_budget(&mut self, protect: Option<u64>, evicted: &mut Vec<u64>) {
        while self.resident_bytes() > self.capacity {
            let prefer_small = self.small.bytes() > self.small_capacity
                || self.arena.tail_except(&self.main, protect).is_none();
            let order = if prefer_small {
                [SMALL, MAIN]
            } else {
                [MAIN, SMALL]
            };
            let progressed = order.into_iter().any(|queue| match queue {
                SMALL => self.evict_small(protect, evicted),
                _ => self.evict_main(protect, evicted),
            });
            if !progressed {
                break;
            }
        }
    }

    /// Resident hashes of the small and main queues, head first (tests).
    #[cfg(test)]
    pub(crate) fn queues(&self) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
        (
            self.arena.hashes(&self.small),
            self.arena.hashes(&self.main),
            self.arena.hashes(&self.ghost),
        )
    }

    #[cfg(test)]
    pub(crate) fn check(&self) {
        self.arena.check_queue(&self.small);
        self.arena.check_queue(&self.main);
        self.arena.check_queue(&self.ghost);
        assert_eq!(
            self.arena.allocated(),
            self.small.len() + self.main.len() + self.ghost.len()
        );
        assert!(self.resident_bytes() <= self.capacity);
        assert!(self.ghost.bytes() <= self.ghost_capacity);
    }
}

impl EvictionPolicy for S3Fifo {
    fn kind(&self) -> PolicyKind {
        PolicyKind::S3Fifo
    }

    fn on_hit(&mut self, hash: u64) {
        if let Some(idx) = self.resident_index(hash) {
            let node = self.arena.node_mut(idx);
            node.freq = (node.freq + 1).min(FREQ_MAX);
        }
    }

    fn on_insert(&mut self, hash: u64, weight: u64) -> InsertOutcome {
        let mut evicted = Vec::new();
        if let Some(idx) = self.resident_index(hash) {
            if weight > self.capacity {
                self.unlink_any(idx);
                self.arena.release(idx);
                return InsertOutcome {
                    admitted: false,
                    evicted,
                };
            }
            match self.arena.node(idx).queue {
                SMALL => self.arena.reweigh(&mut self.small, idx, weight),
                _ => self.arena.reweigh(&mut self.main, idx, weight),
            }
            self.on_hit(hash);
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
        if let Some(ghost) = self.arena.find(hash) {
            // Seen recently and filtered out: it has proved itself, straight to main.
            self.arena.unlink(&mut self.ghost, ghost);
            self.arena.release(ghost);
            let idx = self.arena.alloc(hash, weight);
            self.arena.push_head(&mut self.main, idx);
        } else if weight > self.small_capacity {
            // Too big for the filter queue: remember it, admit it when it comes back.
            let idx = self.arena.alloc(hash, weight);
            self.remember_ghost(idx);
            return InsertOutcome {
                admitted: false,
                evicted,
            };
        } else {
            let idx = self.arena.alloc(hash, weight);
            self.arena.push_head(&mut self.small, idx);
        }
        self.evict_over_budget(None, &mut evicted);
        let admitted = self.resident_index(hash).is_some();
        evicted.retain(|&h| h != hash);
        InsertOutcome { admitted, evicted }
    }

    fn on_remove(&mut self, hash: u64) -> bool {
        match self.resident_index(hash) {
            Some(idx) => {
                self.unlink_any(idx);
                self.arena.release(idx);
                true
            }
            None => false,
        }
    }

    fn contains(&self, hash: u64) -> bool {
        self.resident_index(hash).is_some()
    }

    fn len(&self) -> usize {
        self.small.len() + self.main.len()
    }

    fn bytes(&self) -> u64 {
        self.resident_bytes()
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }
}
