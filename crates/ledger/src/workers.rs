//! How `end_epoch` may spread its per-node passes over the caller's
//! threads. The ledger starts no thread itself: a caller with cores to
//! spare (the simulator's one large run) lends them through [`Workers`],
//! and everyone else passes [`OneThread`].
//!
//! A pass split into parts gives the same state, to the byte, as the pass
//! in one: each part writes only its own nodes' and accounts' records, and
//! what the parts add up (counts, sums) is exact integer arithmetic, added
//! in part order.

/// Threads that `end_epoch` may run the parts of a pass on.
pub trait Workers: Sync {
    /// Into how many parts to split a pass over `items` records; 1 runs
    /// it on the calling thread in one piece.
    fn parts(&self, items: usize) -> usize;

    /// Calls `work` once with each part, on any of the lent threads and
    /// this one, and returns when every call has returned.
    fn run<T: Send>(&self, parts: Vec<T>, work: &(dyn Fn(T) + Sync));
}

/// Every pass in one piece, on the calling thread (the chain, tests).
pub struct OneThread;

impl Workers for OneThread {
    fn parts(&self, _items: usize) -> usize {
        1
    }

    fn run<T: Send>(&self, parts: Vec<T>, work: &(dyn Fn(T) + Sync)) {
        parts.into_iter().for_each(work);
    }
}

/// Every pass in up to `.0` parts, run last first on the calling thread:
/// for tests, since a pass whose parts depended on each other, or on the
/// order they run in, gives another result this way.
pub struct PartsBackwards(pub usize);

impl Workers for PartsBackwards {
    fn parts(&self, _items: usize) -> usize {
        self.0
    }

    fn run<T: Send>(&self, parts: Vec<T>, work: &(dyn Fn(T) + Sync)) {
        parts.into_iter().rev().for_each(work);
    }
}

/// `len` items in `parts` nearly equal contiguous ranges (the first ones
/// one longer), as `(start, end)`; no empty range.
pub fn ranges(len: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, len.max(1));
    let (base, extra) = (len / parts, len % parts);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for i in 0..parts {
        let end = start + base + usize::from(i < extra);
        if end > start {
            out.push((start, end));
        }
        start = end;
    }
    out
}

/// Splits `slice` into consecutive pieces of the given lengths (which sum
/// to at most its length; the rest is dropped).
pub fn split_lengths<T>(mut slice: &mut [T], lengths: impl IntoIterator<Item = usize>) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for n in lengths {
        let (head, tail) = slice.split_at_mut(n);
        out.push(head);
        slice = tail;
    }
    out
}

/// Splits `slice` into the pieces `bounds` name, each with the index of
/// its first item: `Some((lo, hi))` is items `lo..=hi`, `None` an empty
/// piece. The bounds must ascend and not overlap (each part of a pass
/// then owns the records it writes).
pub fn split_at_bounds<'a, T>(mut slice: &'a mut [T], bounds: &[Option<(usize, usize)>]) -> Vec<(&'a mut [T], usize)> {
    let mut base = 0;
    let mut out = Vec::with_capacity(bounds.len());
    for bound in bounds {
        match *bound {
            None => out.push((&mut [][..], 0)),
            Some((lo, hi)) => {
                let (_, from_lo) = std::mem::take(&mut slice).split_at_mut(lo - base);
                let (piece, rest) = from_lo.split_at_mut(hi + 1 - lo);
                (slice, base) = (rest, hi + 1);
                out.push((piece, lo));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_item_once_in_order() {
        for len in [0usize, 1, 2, 7, 100, 101] {
            for parts in [0usize, 1, 2, 3, 8, 200] {
                let r = ranges(len, parts);
                let mut next = 0;
                for &(s, e) in &r {
                    assert_eq!(s, next);
                    assert!(e > s);
                    next = e;
                }
                assert_eq!(next, len, "len {len} parts {parts}");
                assert!(r.len() <= parts.max(1));
            }
        }
        assert_eq!(split_lengths(&mut [1, 2, 3, 4, 5][..], [2, 0, 3]), vec![&mut [1, 2][..], &mut [][..], &mut [3, 4, 5][..]]);
    }

    #[test]
    fn bounds_name_each_piece_and_its_first_index() {
        let mut items = [0, 1, 2, 3, 4, 5, 6];
        let pieces = split_at_bounds(&mut items[..], &[Some((1, 2)), None, Some((4, 4)), Some((5, 6))]);
        let got: Vec<(Vec<i32>, usize)> = pieces.into_iter().map(|(p, base)| (p.to_vec(), base)).collect();
        assert_eq!(got, vec![(vec![1, 2], 1), (vec![], 0), (vec![4], 4), (vec![5, 6], 5)]);
    }
}
