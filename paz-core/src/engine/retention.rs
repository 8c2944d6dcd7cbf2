//! Which releases and deployments a service keeps: the newest [`EngineConfig::keep_releases`]
//! releases, plus any older one a deployment or a rollback still needs (the current and the
//! previous release, and those of a deployment in progress), and the newest
//! [`KEEP_DEPLOYMENTS`] deployment records. Without it every spec change kept a full copy of
//! the spec forever.
//!
//! [`EngineConfig::keep_releases`]: super::EngineConfig::keep_releases

use std::collections::BTreeSet;

/// How many deployment records a service keeps (the newest).
pub const KEEP_DEPLOYMENTS: u64 = 100;

/// What to do with a service's old releases when release `newest` is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Retention {
    /// The releases to delete.
    pub delete: Vec<u64>,
    /// The releases older than the window kept because they are protected.
    pub pinned: BTreeSet<u64>,
    /// Every release below this is deleted, or pinned.
    pub pruned_below: u64,
}

/// Decides which releases go when `newest` is made: those older than the newest `keep`
/// (`keep` at least 1) that are not `protected`. Only releases from `pruned_below` on, and the
/// `pinned` ones, can still exist, so the work is proportional to what changed.
pub(super) fn retain_releases(
    newest: u64,
    keep: u64,
    pruned_below: u64,
    pinned: &BTreeSet<u64>,
    protected: &BTreeSet<u64>,
) -> Retention {
    let window_start = newest.saturating_sub(keep.max(1)) + 1;
    let from = pruned_below.max(1);
    let candidates: BTreeSet<u64> = pinned
        .iter()
        .copied()
        .chain(from..window_start)
        .filter(|&v| v < window_start)
        .collect();
    let (pinned, delete): (BTreeSet<u64>, BTreeSet<u64>) =
        candidates.into_iter().partition(|v| protected.contains(v));
    Retention {
        delete: delete.into_iter().collect(),
        pinned,
        pruned_below: from.max(window_start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(items: &[u64]) -> BTreeSet<u64> {
        items.iter().copied().collect()
    }

    #[test]
    fn keeps_the_window_and_the_protected() {
        let r = retain_releases(25, 20, 1, &set(&[]), &set(&[3, 24]));
        assert_eq!(r.delete, vec![1, 2, 4, 5]);
        assert_eq!(r.pinned, set(&[3]));
        assert_eq!(r.pruned_below, 6);
        // Later, 3 is no longer needed: it goes with the next release.
        let r = retain_releases(26, 20, r.pruned_below, &r.pinned, &set(&[26, 25]));
        assert_eq!(r.delete, vec![3, 6]);
        assert!(r.pinned.is_empty());
        assert_eq!(r.pruned_below, 7);
    }

    #[test]
    fn nothing_goes_inside_the_window() {
        let r = retain_releases(5, 20, 0, &set(&[]), &set(&[5]));
        assert!(r.delete.is_empty() && r.pinned.is_empty());
        assert_eq!(r.pruned_below, 1);
    }

    proptest! {
        /// Simulated over a run of releases: what is kept is exactly the window plus the
        /// protected, and nothing protected is ever deleted.
        #[test]
        fn the_kept_set_is_the_window_plus_the_protected(
            keep in 1u64..8,
            protect in proptest::collection::vec(0u64..4, 1..60),
        ) {
            let mut existing: BTreeSet<u64> = BTreeSet::new();
            let (mut pruned_below, mut pinned) = (0, BTreeSet::new());
            for (i, back) in protect.iter().enumerate() {
                let newest = i as u64 + 1;
                existing.insert(newest);
                // The new release and one older "current" are protected.
                let protected = set(&[newest, newest.saturating_sub(*back * 7)]);
                let before = existing.clone();
                let r = retain_releases(newest, keep, pruned_below, &pinned, &protected);
                for v in &r.delete {
                    prop_assert!(!protected.contains(v));
                    existing.remove(v);
                }
                (pruned_below, pinned) = (r.pruned_below, r.pinned);
                let window_start = newest.saturating_sub(keep) + 1;
                let expected: BTreeSet<u64> = (window_start..=newest)
                    .chain(protected.iter().copied().filter(|v| before.contains(v)))
                    .collect();
                prop_assert_eq!(&existing, &expected);
            }
        }
    }
}
