//! Live query results: what changed between two answers to the same query, as a list screen
//! needs it to animate (Realm's and Core Data's collection change sets).
//!
//! A query is answered again from the index whenever the store commits a change; the app gets
//! the new rows and a [`ListChange`] saying how they differ from the rows it had. Rows are
//! matched by a key (the record's id, or record and item for a task). When the rows common to
//! both answers kept their relative order, the change is the removals (positions in the old
//! rows), insertions and updates (positions in the new rows); when they moved relative to each
//! other (a list sorted by a date that changed), it is a [`ListChange::Reset`]: the app redraws.
//! The first answer is always a reset.

use std::collections::HashMap;
use std::hash::Hash;

/// How a query's new rows differ from the previous ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListChange {
    /// Redraw from the new rows (the first answer, or rows that moved).
    Reset,
    /// Item-wise change; each list ascending.
    Diff {
        /// Positions in the previous rows of the rows that are gone.
        removed: Vec<usize>,
        /// Positions in the new rows of the rows that are new.
        inserted: Vec<usize>,
        /// Positions in the new rows of the rows that were there and changed.
        updated: Vec<usize>,
    },
}

impl ListChange {
    /// Nothing changed: no need to tell the app.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Reset => false,
            Self::Diff { removed, inserted, updated } => {
                removed.is_empty() && inserted.is_empty() && updated.is_empty()
            }
        }
    }
}

/// The change from `old` to `new`, rows matched by `key`. Keys must be unique within each list
/// (a list with a key twice is answered with a reset).
pub fn diff<T: PartialEq, K: Eq + Hash>(old: &[T], new: &[T], key: impl Fn(&T) -> K) -> ListChange {
    let old_at: HashMap<K, usize> = old.iter().enumerate().map(|(i, r)| (key(r), i)).collect();
    let new_at: HashMap<K, usize> = new.iter().enumerate().map(|(i, r)| (key(r), i)).collect();
    if old_at.len() != old.len() || new_at.len() != new.len() {
        return ListChange::Reset;
    }
    let removed: Vec<usize> =
        old.iter().enumerate().filter(|(_, r)| !new_at.contains_key(&key(r))).map(|(i, _)| i).collect();
    let mut inserted = Vec::new();
    let mut updated = Vec::new();
    let mut last_old = None;
    for (i, r) in new.iter().enumerate() {
        match old_at.get(&key(r)) {
            None => inserted.push(i),
            Some(&j) => {
                if last_old.is_some_and(|l| j < l) {
                    return ListChange::Reset;
                }
                last_old = Some(j);
                if old[j] != *r {
                    updated.push(i);
                }
            }
        }
    }
    ListChange::Diff { removed, inserted, updated }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(s: &[(&'static str, u32)]) -> Vec<(&'static str, u32)> {
        s.to_vec()
    }

    fn by_key(r: &(&'static str, u32)) -> &'static str {
        r.0
    }

    #[test]
    fn the_same_rows_are_no_change() {
        let a = rows(&[("a", 1), ("b", 2)]);
        let change = diff(&a, &a, by_key);
        assert!(change.is_empty(), "{change:?}");
    }

    #[test]
    fn removals_insertions_and_updates_are_positions_in_the_old_and_new_rows() {
        let old = rows(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)]);
        let new = rows(&[("x", 0), ("a", 1), ("c", 30), ("d", 4), ("e", 5)]);
        assert_eq!(
            diff(&old, &new, by_key),
            ListChange::Diff { removed: vec![1], inserted: vec![0, 4], updated: vec![2] }
        );
    }

    #[test]
    fn rows_that_moved_relative_to_each_other_are_a_reset() {
        let old = rows(&[("a", 1), ("b", 2), ("c", 3)]);
        let new = rows(&[("c", 3), ("a", 1), ("b", 2)]);
        assert_eq!(diff(&old, &new, by_key), ListChange::Reset);
    }

    #[test]
    fn a_key_twice_is_a_reset_not_a_wrong_diff() {
        let old = rows(&[("a", 1)]);
        let new = rows(&[("a", 1), ("a", 2)]);
        assert_eq!(diff(&old, &new, by_key), ListChange::Reset);
    }

    #[test]
    fn from_nothing_every_row_is_inserted_and_to_nothing_every_row_removed() {
        let some = rows(&[("a", 1), ("b", 2)]);
        assert_eq!(
            diff(&[], &some, by_key),
            ListChange::Diff { removed: vec![], inserted: vec![0, 1], updated: vec![] }
        );
        assert_eq!(
            diff(&some, &[], by_key),
            ListChange::Diff { removed: vec![0, 1], inserted: vec![], updated: vec![] }
        );
    }
}
