//! The attempts waiting for a runner slot, oldest first.
//!
//! A run whose attempt waits here needs nothing else from the driver until its turn comes, so
//! the driver keeps only this entry (a task id and an attempt number) and lets the run's record
//! go from memory; it loads the record again from the journal when the attempt is started. That
//! bounds the memory of a long queue by these entries, not by the runs' records.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// One waiting attempt: its task id (which starts with its run id) and its number.
type Key = (Arc<str>, u32);

/// Attempts waiting for a slot, first come first started; withdrawing one is O(1).
#[derive(Debug, Default)]
pub(crate) struct StartQueue {
    /// In queuing order, each with the number it was queued under; an entry whose attempt was
    /// withdrawn (or withdrawn and queued again, under a newer number) is skipped.
    order: VecDeque<(Key, u64)>,
    waiting: HashMap<Key, u64>,
    queued: u64,
}

impl StartQueue {
    /// Queues an attempt (queuing one already waiting changes nothing).
    pub(crate) fn push(&mut self, task_id: &str, attempt: u32) {
        let key: Key = (Arc::from(task_id), attempt);
        if !self.waiting.contains_key(&key) {
            self.queued += 1;
            self.waiting.insert(key.clone(), self.queued);
            self.order.push_back((key, self.queued));
        }
    }

    /// Takes an attempt out of the queue; `false` when it was not waiting.
    pub(crate) fn withdraw(&mut self, task_id: &str, attempt: u32) -> bool {
        self.waiting
            .remove(&(Arc::from(task_id), attempt))
            .is_some()
    }

    /// The oldest waiting attempt.
    pub(crate) fn pop(&mut self) -> Option<(Arc<str>, u32)> {
        while let Some((key, n)) = self.order.pop_front() {
            if self.waiting.get(&key) == Some(&n) {
                self.waiting.remove(&key);
                return Some(key);
            }
        }
        None
    }

    /// How many attempts wait.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether an attempt of this run waits.
    #[cfg(test)]
    pub(crate) fn has_run(&self, run_id: &str) -> bool {
        self.waiting
            .keys()
            .any(|(task_id, _)| crate::intake::run_of(task_id) == run_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_start_in_the_order_they_were_queued_and_withdrawn_ones_are_skipped() {
        let mut q = StartQueue::default();
        q.push("R1.0.0", 1);
        q.push("R2.0.0", 1);
        q.push("R1.0.0", 1);
        q.push("R3.0.0", 2);
        assert_eq!(q.len(), 3);
        assert!(q.withdraw("R2.0.0", 1));
        assert!(!q.withdraw("R2.0.0", 1));
        assert!(q.has_run("R3") && !q.has_run("R2"));
        let popped: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|(t, a)| (t.to_string(), a))
            .collect();
        assert_eq!(popped, [("R1.0.0".to_owned(), 1), ("R3.0.0".to_owned(), 2)]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_withdrawn_attempt_queued_again_waits_at_the_back() {
        let mut q = StartQueue::default();
        q.push("R1.0.0", 1);
        q.push("R2.0.0", 1);
        q.withdraw("R1.0.0", 1);
        q.push("R1.0.0", 1);
        assert_eq!(
            q.pop().map(|(t, _)| t.to_string()),
            Some("R2.0.0".to_owned())
        );
        assert_eq!(
            q.pop().map(|(t, _)| t.to_string()),
            Some("R1.0.0".to_owned())
        );
        assert_eq!(q.pop(), None);
    }
}
