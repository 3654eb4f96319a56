//! An arena of policy nodes with intrusive doubly linked queues: the shared bookkeeping under
//! every eviction policy. A node is `(hash, weight, queue, freq)`; a queue is a list of nodes with
//! a byte and entry count. Head is the most recent end, tail the next victim.

use crate::hashing::U64Map;

/// "No node".
pub(crate) const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) hash: u64,
    pub(crate) weight: u64,
    prev: u32,
    next: u32,
    /// Which queue the node is linked into (policy-defined ids), or `DETACHED`.
    pub(crate) queue: u8,
    /// Policy-defined small counter (S3-FIFO's 2-bit frequency; in `s3-tinylfu`'s ghost, how
    /// often a held-back large object has come back).
    pub(crate) freq: u8,
}

/// The queue id of a node linked into no queue.
pub(crate) const DETACHED: u8 = u8::MAX;

/// A linked queue over the arena.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    id: u8,
    head: u32,
    tail: u32,
    len: usize,
    bytes: u64,
}

impl Queue {
    pub(crate) fn new(id: u8) -> Self {
        Self {
            id,
            head: NIL,
            tail: NIL,
            len: 0,
            bytes: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The least recent node, if any.
    pub(crate) fn tail(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }
}

/// Node storage plus the hash → node index.
#[derive(Debug, Clone, Default)]
pub(crate) struct Arena {
    nodes: Vec<Node>,
    free: Vec<u32>,
    index: U64Map<u32>,
}

impl Arena {
    pub(crate) fn find(&self, hash: u64) -> Option<u32> {
        self.index.get(&hash).copied()
    }

    pub(crate) fn node(&self, idx: u32) -> &Node {
        &self.nodes[idx as usize]
    }

    pub(crate) fn node_mut(&mut self, idx: u32) -> &mut Node {
        &mut self.nodes[idx as usize]
    }

    /// Number of nodes allocated (resident plus ghost).
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.index.len()
    }

    /// Allocates a detached node for `hash`. The caller must have checked it is absent.
    pub(crate) fn alloc(&mut self, hash: u64, weight: u64) -> u32 {
        let node = Node {
            hash,
            weight,
            prev: NIL,
            next: NIL,
            queue: DETACHED,
            freq: 0,
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.nodes[idx as usize] = node;
                idx
            }
            None => {
                let idx = u32::try_from(self.nodes.len()).unwrap_or(NIL);
                self.nodes.push(node);
                idx
            }
        };
        self.index.insert(hash, idx);
        idx
    }

    /// Frees a detached node.
    pub(crate) fn release(&mut self, idx: u32) {
        let hash = self.nodes[idx as usize].hash;
        self.index.remove(&hash);
        self.free.push(idx);
    }

    /// Links a detached node at the head (most recent end) of `q`.
    pub(crate) fn push_head(&mut self, q: &mut Queue, idx: u32) {
        let old_head = q.head;
        {
            let node = &mut self.nodes[idx as usize];
            debug_assert_eq!(node.queue, DETACHED);
            node.prev = NIL;
            node.next = old_head;
            node.queue = q.id;
            q.bytes += node.weight;
        }
        if old_head != NIL {
            self.nodes[old_head as usize].prev = idx;
        } else {
            q.tail = idx;
        }
        q.head = idx;
        q.len += 1;
    }

    /// Unlinks `idx` from `q` (it must be linked into `q`), leaving it detached.
    pub(crate) fn unlink(&mut self, q: &mut Queue, idx: u32) {
        let (prev, next, weight) = {
            let node = &self.nodes[idx as usize];
            debug_assert_eq!(node.queue, q.id);
            (node.prev, node.next, node.weight)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            q.head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            q.tail = prev;
        }
        let node = &mut self.nodes[idx as usize];
        node.prev = NIL;
        node.next = NIL;
        node.queue = DETACHED;
        q.len -= 1;
        q.bytes -= weight;
    }

    /// Moves a node already in `q` to its head.
    pub(crate) fn move_to_head(&mut self, q: &mut Queue, idx: u32) {
        if q.head != idx {
            self.unlink(q, idx);
            self.push_head(q, idx);
        }
    }

    /// Changes the weight of a node linked into `q`.
    pub(crate) fn reweigh(&mut self, q: &mut Queue, idx: u32, weight: u64) {
        let node = &mut self.nodes[idx as usize];
        debug_assert_eq!(node.queue, q.id);
        q.bytes = q.bytes - node.weight + weight;
        node.weight = weight;
    }

    /// The tail-most node of `q` that is not `skip`: the tail, or the one before it.
    pub(crate) fn tail_except(&self, q: &Queue, skip: Option<u64>) -> Option<u32> {
        let tail = q.tail()?;
        if Some(self.nodes[tail as usize].hash) != skip {
            return Some(tail);
        }
        let prev = self.nodes[tail as usize].prev;
        (prev != NIL).then_some(prev)
    }

    /// Hashes in `q` from head to tail (tests and invariant checks).
    #[cfg(test)]
    pub(crate) fn hashes(&self, q: &Queue) -> Vec<u64> {
        let mut out = Vec::with_capacity(q.len);
        let mut cur = q.head;
        while cur != NIL {
            out.push(self.nodes[cur as usize].hash);
            cur = self.nodes[cur as usize].next;
        }
        out
    }

    /// Checks the links and counters of `q` (tests only).
    #[cfg(test)]
    pub(crate) fn check_queue(&self, q: &Queue) {
        let mut cur = q.head;
        let mut prev = NIL;
        let mut len = 0;
        let mut bytes = 0;
        while cur != NIL {
            let node = &self.nodes[cur as usize];
            assert_eq!(node.prev, prev, "prev link");
            assert_eq!(node.queue, q.id, "queue id");
            assert_eq!(self.index.get(&node.hash), Some(&cur), "index");
            len += 1;
            bytes += node.weight;
            prev = cur;
            cur = node.next;
        }
        assert_eq!(q.tail, prev, "tail");
        assert_eq!(q.len, len, "len");
        assert_eq!(q.bytes, bytes, "bytes");
    }
}
