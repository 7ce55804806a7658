//! A set of free slots kept as disjoint, non-adjacent inclusive ranges.
//!
//! Both allocators index their address space by slot number (`0..len`) and keep only
//! the *free* ranges. Every operation is one or two `BTreeMap` look-ups, so the cost
//! depends on the number of holes (at most assigned + 1), never on the size of the
//! space: a /8 or an IPv6 /64 costs the same as a /29.

use std::collections::BTreeMap;

/// Free slots as `start -> end` (both inclusive); ranges never touch or overlap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FreeRanges {
    ranges: BTreeMap<u128, u128>,
}

impl FreeRanges {
    /// All of `0..len` free.
    pub(crate) fn all(len: u128) -> Self {
        let mut ranges = BTreeMap::new();
        if let Some(end) = len.checked_sub(1) {
            ranges.insert(0, end);
        }
        Self { ranges }
    }

    /// The range holding `slot`, if it is free.
    fn containing(&self, slot: u128) -> Option<(u128, u128)> {
        self.ranges
            .range(..=slot)
            .next_back()
            .filter(|&(_, &end)| end >= slot)
            .map(|(&s, &e)| (s, e))
    }

    /// True if `slot` is free.
    pub(crate) fn is_free(&self, slot: u128) -> bool {
        self.containing(slot).is_some()
    }

    /// The lowest free slot that is `>= from`.
    pub(crate) fn first_at_or_after(&self, from: u128) -> Option<u128> {
        if self.is_free(from) {
            return Some(from);
        }
        self.ranges.range(from..).next().map(|(&start, _)| start)
    }

    /// Marks `slot` used; false if it was not free.
    pub(crate) fn take(&mut self, slot: u128) -> bool {
        let Some((start, end)) = self.containing(slot) else {
            return false;
        };
        self.ranges.remove(&start);
        if start < slot {
            self.ranges.insert(start, slot - 1);
        }
        if slot < end {
            self.ranges.insert(slot + 1, end);
        }
        true
    }

    /// Marks `slot` free again, merging with its neighbours; false if it was free already.
    pub(crate) fn give(&mut self, slot: u128) -> bool {
        let mut start = slot;
        let mut end = slot;
        if let Some((&left_start, &left_end)) = self.ranges.range(..=slot).next_back() {
            if left_end >= slot {
                return false;
            }
            if left_end + 1 == slot {
                self.ranges.remove(&left_start);
                start = left_start;
            }
        }
        if let Some(next) = slot.checked_add(1)
            && let Some(right_end) = self.ranges.remove(&next)
        {
            end = right_end;
        }
        self.ranges.insert(start, end);
        true
    }

    /// Number of separate free ranges (for tests).
    #[cfg(test)]
    pub(crate) fn holes(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_splits_and_give_merges_back() {
        let mut free = FreeRanges::all(10);
        assert!(free.take(5));
        assert!(!free.take(5));
        assert!(!free.is_free(5));
        assert_eq!(free.holes(), 2);
        assert_eq!(free.first_at_or_after(5), Some(6));
        assert!(free.take(0));
        assert!(free.take(9));
        assert_eq!(free.first_at_or_after(0), Some(1));
        assert_eq!(free.first_at_or_after(9), None);
        assert!(free.give(5));
        assert!(!free.give(5));
        assert!(free.give(0));
        assert!(free.give(9));
        assert_eq!(free, FreeRanges::all(10));
    }

    #[test]
    fn empty_and_huge_spaces() {
        assert_eq!(FreeRanges::all(0).first_at_or_after(0), None);
        let mut free = FreeRanges::all(u128::MAX);
        assert!(free.take(u128::MAX - 1));
        assert_eq!(free.first_at_or_after(u128::MAX - 1), None);
        assert!(free.give(u128::MAX - 1));
        assert_eq!(free, FreeRanges::all(u128::MAX));
    }
}
