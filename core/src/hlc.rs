//! Hybrid logical clocks (contract §5).
//!
//! A timestamp orders by `ms`, then `c`, then `node`. UUIDs compare by bytes,
//! which is the same order as their lowercase hyphenated strings, so deriving
//! `Ord` over `(ms, c, node)` matches the contract's "node as a string".

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One HLC timestamp, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    pub ms: u64,
    pub c: u32,
    pub node: Uuid,
}

impl Hlc {
    pub fn new(ms: u64, c: u32, node: Uuid) -> Hlc {
        Hlc { ms, c, node }
    }

    /// `(ms, c)` without the node: what a clock advances past.
    pub fn tick(&self) -> (u64, u32) {
        (self.ms, self.c)
    }
}

/// A clock that never goes back: the server's, or a device's.
///
/// It tracks only `(ms, c)`; the node is added by whoever stamps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HlcClock {
    ms: u64,
    c: u32,
}

impl HlcClock {
    pub fn from_parts(ms: u64, c: u32) -> HlcClock {
        HlcClock { ms, c }
    }

    pub fn parts(&self) -> (u64, u32) {
        (self.ms, self.c)
    }

    /// Next timestamp for a local event at wall time `now_ms`: strictly
    /// greater than everything this clock has issued or observed.
    pub fn next(&mut self, now_ms: u64, node: Uuid) -> Hlc {
        if now_ms > self.ms {
            self.ms = now_ms;
            self.c = 0;
        } else if self.c == u32::MAX {
            // The counter is exhausted: borrow a millisecond from the future
            // rather than repeat a timestamp.
            self.ms += 1;
            self.c = 0;
        } else {
            self.c += 1;
        }
        Hlc::new(self.ms, self.c, node)
    }

    /// Advance past a timestamp received from elsewhere.
    pub fn observe(&mut self, h: &Hlc) {
        if h.tick() > (self.ms, self.c) {
            self.ms = h.ms;
            self.c = h.c;
        }
    }

    /// Advance to at least `{ms, c: 0}` (e.g. a server's reported time).
    pub fn observe_ms(&mut self, ms: u64) {
        if ms > self.ms {
            self.ms = ms;
            self.c = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_ms_then_counter_then_node_string() {
        let a = Uuid::parse_str("00000000-0000-0000-0000-00000000000a").unwrap();
        let b = Uuid::parse_str("10000000-0000-0000-0000-000000000000").unwrap();
        assert!(Hlc::new(1, 9, b) < Hlc::new(2, 0, a));
        assert!(Hlc::new(2, 0, b) < Hlc::new(2, 1, a));
        assert!(Hlc::new(2, 1, a) < Hlc::new(2, 1, b));
        assert_eq!(a.to_string() < b.to_string(), a < b);
    }

    #[test]
    fn clock_never_goes_back() {
        let n = Uuid::nil();
        let mut c = HlcClock::default();
        let t1 = c.next(100, n);
        let t2 = c.next(50, n);
        assert!(t2 > t1);
        c.observe(&Hlc::new(500, 7, n));
        let t3 = c.next(100, n);
        assert_eq!((t3.ms, t3.c), (500, 8));
        let mut full = HlcClock::from_parts(10, u32::MAX);
        assert_eq!(full.next(0, n).tick(), (11, 0));
    }

    proptest::proptest! {
        #[test]
        fn string_order_equals_uuid_order(a: u128, b: u128) {
            let (a, b) = (Uuid::from_u128(a), Uuid::from_u128(b));
            proptest::prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        }
    }
}
