//! Fair shares of a bounded pool: slots (lookups in flight, connections) that several
//! holders (cgroups, policies, broker callers) take one at a time and give back.
//!
//! The rule: a holder may take another slot only while it holds fewer than are free,
//! and never more than the pool's fixed per-holder cap. Said otherwise, after a take it
//! holds at most half of what is free to it (the free slots and its own), give or take
//! the one slot it just took.
//!
//! Why not a fixed cap alone: with a cap of a quarter of the pool, four greedy holders
//! fill it and a fifth is refused everything. Under this rule, N greedy holders that
//! release and retake (lookups end, connections close) settle where each holds F and
//! F stays free: each stops at `held >= free`. So the pool is `(N + 1) * F` and a
//! newcomer finds `total / (N + 1)` free. A newcomer (holding nothing) is refused only
//! when nothing at all is free, and the pool empties only through holders' first
//! slots. Holders that arrive one after another and never give anything back leave
//! about half of what the previous left (`total / 2^k` after k of them, more where the
//! per-holder cap stops them first); churn brings the early ones down to the
//! equilibrium, since a holder that has more than is free cannot retake what it gives
//! back.
//!
//! One short lock per take and per release; the holders' table is sized for `total`
//! holders up front (no holder holds zero), so a take with a `Copy` key never
//! allocates.
//!
//! Must never: hand out more than `total` slots, let a holder pass its cap, or count a
//! slot that was given back.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, PoisonError},
};

/// Why a take was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The holder is at the pool's per-holder cap, or holds as many as are free: it
    /// has its share.
    Share,
    /// Nothing is free at all.
    Full,
}

/// A pool of `total` slots shared by holders keyed by `K`.
pub(crate) struct Share<K> {
    /// Fixed upper bound on what one holder holds, whatever is free.
    cap: u32,
    state: Mutex<State<K>>,
}

struct State<K> {
    free: u32,
    /// Slots per holder; a holder that holds none has no entry.
    held: HashMap<K, u32>,
}

/// Holders the table is sized for at most, so that a huge pool does not reserve a
/// huge table up front (past it the table grows once, as any map does).
const RESERVE_MAX: u32 = 4096;

impl<K: Hash + Eq + Clone> Share<K> {
    /// A pool of `total` slots, at most `cap` per holder.
    pub(crate) fn new(total: u32, cap: u32) -> Arc<Self> {
        Arc::new(Self {
            cap,
            state: Mutex::new(State {
                free: total,
                held: HashMap::with_capacity(total.min(RESERVE_MAX) as usize),
            }),
        })
    }

    /// A slot for `holder`, given back when the [`Slot`] drops; or why not.
    pub(crate) fn take(self: &Arc<Self>, holder: &K) -> Result<Slot<K>, Refused> {
        // Counts stay consistent across a panic elsewhere: nothing panics mid-update.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.free == 0 {
            return Err(Refused::Full);
        }
        let held = state.held.get(holder).copied().unwrap_or(0);
        if held >= self.cap || held >= state.free {
            return Err(Refused::Share);
        }
        state.free -= 1;
        match state.held.get_mut(holder) {
            Some(n) => *n += 1,
            None => {
                state.held.insert(holder.clone(), 1);
            }
        }
        Ok(Slot {
            pool: self.clone(),
            holder: Some(holder.clone()),
        })
    }

    /// Slots free now (for tests and status).
    #[cfg(test)]
    pub(crate) fn free(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .free
    }

    fn give_back(&self, holder: &K) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = state.held.get_mut(holder) {
            *n -= 1;
            if *n == 0 {
                state.held.remove(holder);
            }
            state.free += 1;
        }
    }
}

/// One slot of a [`Share`], given back when dropped.
pub(crate) struct Slot<K: Hash + Eq + Clone> {
    pool: Arc<Share<K>>,
    holder: Option<K>,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.take() {
            self.pool.give_back(&holder);
        }
    }
}

/// Bytes a holder has in hand (a body being read, an answer held), counted against a
/// [`Share`] in slots of `unit` bytes as they grow: a slot is taken for each unit begun,
/// and every slot is given back when the count is cleared or dropped.
pub(crate) struct Counted<K: Hash + Eq + Clone> {
    pool: Arc<Share<K>>,
    holder: K,
    unit: u64,
    slots: Vec<Slot<K>>,
    bytes: u64,
}

impl<K: Hash + Eq + Clone> Counted<K> {
    pub(crate) fn new(pool: Arc<Share<K>>, holder: K, unit: u64) -> Self {
        Self {
            pool,
            holder,
            unit: unit.max(1),
            slots: Vec::new(),
            bytes: 0,
        }
    }

    /// Counts `more` bytes: the slots they need taken, or why not (the count is then
    /// cleared: a holder refused gives back what it held).
    pub(crate) fn grow(&mut self, more: u64) -> Result<(), Refused> {
        self.bytes = self.bytes.saturating_add(more);
        while (self.slots.len() as u64).saturating_mul(self.unit) < self.bytes {
            match self.pool.take(&self.holder) {
                Ok(slot) => self.slots.push(slot),
                Err(refused) => {
                    self.clear();
                    return Err(refused);
                }
            }
        }
        Ok(())
    }

    /// Counts `bytes` in all from now on (a body replaced by another): fewer give back
    /// the slots past them and take none, so a holder keeps what it still needs (a
    /// `clear` then `grow` lets go of it all for a moment, and another holder may take
    /// it meanwhile); more are taken as [`Self::grow`] takes them.
    pub(crate) fn recount(&mut self, bytes: u64) -> Result<(), Refused> {
        if bytes > self.bytes {
            return self.grow(bytes - self.bytes);
        }
        self.bytes = bytes;
        let keep = usize::try_from(bytes.div_ceil(self.unit)).unwrap_or(usize::MAX);
        self.slots.truncate(keep);
        Ok(())
    }

    /// Gives every slot back (the bytes are gone, or replaced by others to count).
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.bytes = 0;
    }
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for Counted<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Counted({} bytes in {} slots)",
            self.bytes,
            self.slots.len()
        )
    }
}

/// Bytes counted at two levels at once: a holder's share of one pool (a tenant's) and,
/// where it has one, a sub-holder's share of another (one caller within the tenant), so
/// that one caller cannot take the whole of its tenant's share from the tenant's other
/// callers. A refusal at either level clears both.
pub(crate) struct Counted2<K: Hash + Eq + Clone, L: Hash + Eq + Clone> {
    outer: Counted<K>,
    inner: Option<Counted<L>>,
}

impl<K: Hash + Eq + Clone, L: Hash + Eq + Clone> Counted2<K, L> {
    pub(crate) fn new(outer: Counted<K>, inner: Option<Counted<L>>) -> Self {
        Self { outer, inner }
    }

    /// [`Counted::grow`] at both levels.
    pub(crate) fn grow(&mut self, more: u64) -> Result<(), Refused> {
        self.both(|c| c.grow(more), |c| c.grow(more))
    }

    /// [`Counted::recount`] at both levels.
    pub(crate) fn recount(&mut self, bytes: u64) -> Result<(), Refused> {
        self.both(|c| c.recount(bytes), |c| c.recount(bytes))
    }

    /// Gives every slot back at both levels.
    pub(crate) fn clear(&mut self) {
        self.outer.clear();
        if let Some(inner) = self.inner.as_mut() {
            inner.clear();
        }
    }

    /// `outer` then `inner` applied; on a refusal by either, both cleared.
    fn both(
        &mut self,
        outer: impl FnOnce(&mut Counted<K>) -> Result<(), Refused>,
        inner: impl FnOnce(&mut Counted<L>) -> Result<(), Refused>,
    ) -> Result<(), Refused> {
        let counted =
            outer(&mut self.outer).and_then(|()| self.inner.as_mut().map_or(Ok(()), inner));
        if counted.is_err() {
            self.clear();
        }
        counted
    }
}

impl<K: Hash + Eq + Clone, L: Hash + Eq + Clone> std::fmt::Debug for Counted2<K, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.outer.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_bytes_take_a_slot_per_unit_begun_and_give_all_back() {
        let pool: Arc<Share<u64>> = Share::new(10, 10);
        let mut a = Counted::new(pool.clone(), 1, 100);
        a.grow(0).expect("nothing to count");
        assert_eq!(pool.free(), 10);
        a.grow(1).expect("one unit begun");
        a.grow(99).expect("still one");
        assert_eq!(pool.free(), 9);
        a.grow(101).expect("two more begun");
        assert_eq!(pool.free(), 7);
        // Past its share (it holds 3 of 7 free, then 4 of 6: stops at held >= free).
        assert_eq!(a.grow(1000), Err(Refused::Share));
        assert_eq!(pool.free(), 10, "a refused count gives back what it held");
        let mut b = Counted::new(pool.clone(), 2, 100);
        b.grow(250).expect("three");
        b.clear();
        assert_eq!(pool.free(), 10);
        b.grow(50).expect("one");
        drop(b);
        assert_eq!(pool.free(), 10, "dropped, every slot is back");
    }

    #[test]
    fn a_recount_down_gives_back_what_is_past_it_and_takes_nothing() {
        let pool: Arc<Share<u64>> = Share::new(10, 10);
        let mut a = Counted::new(pool.clone(), 1, 100);
        a.grow(450).expect("five begun");
        // Others take every slot left: any take of `a`'s would be refused now.
        let _others = greedy(&pool, &[2, 3, 4, 5, 6]);
        assert_eq!(pool.free(), 0);
        a.recount(150).expect("fewer bytes need no slot taken");
        assert_eq!(pool.free(), 3, "two units begun kept, three given back");
        a.recount(150).expect("the same count");
        assert_eq!(pool.free(), 3);
        a.recount(250).expect("a third unit begun, taken");
        assert_eq!(pool.free(), 2);
        a.recount(0).expect("nothing left");
        assert_eq!(pool.free(), 5);
    }

    /// Each of `holders` takes one slot in turn until none of them can take another.
    fn greedy(pool: &Arc<Share<u64>>, holders: &[u64]) -> Vec<Vec<Slot<u64>>> {
        let mut slots: Vec<Vec<Slot<u64>>> = holders.iter().map(|_| Vec::new()).collect();
        loop {
            let mut took = false;
            for (i, h) in holders.iter().enumerate() {
                if let Ok(s) = pool.take(h) {
                    slots[i].push(s);
                    took = true;
                }
            }
            if !took {
                return slots;
            }
        }
    }

    #[test]
    fn n_greedy_holders_leave_a_newcomer_its_part_of_the_pool() {
        for n in 1..=8u64 {
            let total = 256;
            let pool = Share::new(total, total);
            let holders: Vec<u64> = (1..=n).collect();
            let slots = greedy(&pool, &holders);
            let free = pool.free();
            for s in &slots {
                assert!(
                    s.len() as u32 <= free + 1,
                    "{n} holders: one holds {} with {free} free",
                    s.len()
                );
            }
            assert!(
                free >= total / (n as u32 + 1),
                "{n} greedy holders left {free} of {total}"
            );
            let newcomer: Vec<_> = (0..free / 2)
                .map(|_| pool.take(&99).expect("a newcomer is served"))
                .collect();
            assert_eq!(newcomer.len() as u32, free / 2);
        }
    }

    #[test]
    fn greedy_holders_arriving_one_after_another_leave_a_newcomer_served() {
        // The order least kind to the newcomer: each takes all it may before the next.
        let pool = Share::new(256, 256 / 8);
        let mut held = Vec::new();
        for h in 1..=8u64 {
            while let Ok(s) = pool.take(&h) {
                held.push(s);
            }
        }
        assert!(pool.free() >= 1, "eight holders emptied the pool");
        let _mine = pool.take(&99).expect("a newcomer is served");
    }

    #[test]
    fn a_newcomer_is_served_while_anything_is_free() {
        let pool = Share::new(4, 4);
        let a: Vec<_> = (0..2).map(|_| pool.take(&1).expect("a")).collect();
        assert_eq!(pool.take(&1).err(), Some(Refused::Share), "2 held, 2 free");
        let _b = pool.take(&2).expect("b's first");
        assert_eq!(pool.take(&2).err(), Some(Refused::Share), "1 held, 1 free");
        let _c = pool.take(&3).expect("c's first, the last free slot");
        assert_eq!(pool.take(&4).err(), Some(Refused::Full));
        drop(a);
        assert_eq!(pool.free(), 2, "a's slots came back");
        assert!(pool.take(&4).is_ok(), "a slot given back is free again");
    }

    #[test]
    fn the_fixed_cap_bounds_a_holder_alone_in_the_pool() {
        let pool = Share::new(100, 10);
        let mine: Vec<_> = (0..10).map(|_| pool.take(&1).expect("under cap")).collect();
        assert_eq!(pool.take(&1).err(), Some(Refused::Share), "at its cap");
        assert_eq!(pool.free(), 90);
        drop(mine);
        assert_eq!(pool.free(), 100, "release returns every slot");
        assert!(pool.take(&1).is_ok());
    }

    #[test]
    fn churn_brings_an_early_holder_down_to_the_equilibrium() {
        let pool = Share::new(64, 64);
        let mut a: Vec<_> = std::iter::from_fn(|| pool.take(&1).ok()).collect();
        assert_eq!(a.len(), 32, "alone, a holder takes half");
        let mut b: Vec<_> = std::iter::from_fn(|| pool.take(&2).ok()).collect();
        assert_eq!(b.len(), 16);
        // Each gives back its oldest slot and retakes, as lookups end and start.
        for _ in 0..200 {
            a.remove(0);
            a.extend(pool.take(&1).ok());
            b.remove(0);
            b.extend(pool.take(&2).ok());
        }
        let free = pool.free() as usize;
        assert!(
            a.len() <= free + 1 && b.len() <= free + 1 && free >= 64 / 3 - 1,
            "after churn: a {} b {} free {free}",
            a.len(),
            b.len()
        );
    }
}
