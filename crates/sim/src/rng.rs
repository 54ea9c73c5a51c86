//! The simulator's only randomness: a seeded xoshiro256** generator. Same
//! seed, same stream, on every machine (no platform RNG, no float
//! formatting differences in what feeds it).

pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Expand the seed with splitmix64, as xoshiro's authors recommend
        // (`Keyed` is that counter stream).
        let mut expand = Keyed { z: seed };
        Rng { s: [expand.next_u64(), expand.next_u64(), expand.next_u64(), expand.next_u64()] }
    }

    /// A generator for a sub-stream (e.g. one agent), independent of how
    /// many numbers the parent has drawn.
    pub fn fork(&self, stream: u64) -> Rng {
        Rng::new(self.s[0] ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        unit_of(self.next_u64())
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        range_of(lo, hi, self.next_u64())
    }

    /// Log-uniform in [lo, hi): capacities and costs span magnitudes.
    pub fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        libm::exp(libm::log(lo) + (libm::log(hi) - libm::log(lo)) * self.unit())
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// An index drawn with the given non-negative weights.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }
}

/// A short stream keyed by a few numbers (splitmix64 over a counter):
/// starting one costs one hash, so every node's measurements of a day draw
/// from a stream of their own, on whichever thread computes them, with the
/// same numbers on any thread count.
pub struct Keyed {
    z: u64,
}

impl Keyed {
    pub fn new(keys: &[u64]) -> Keyed {
        let z = keys.iter().fold(0x6d65_6173_7572_6573u64, |z, &k| splitmix(z ^ k));
        Keyed { z }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.z = self.z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix(self.z)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        range_of(lo, hi, self.next_u64())
    }
}

/// Uniform in [0, 1) from 64 random bits (their top 53).
fn unit_of(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in [lo, hi) from 64 random bits.
fn range_of(lo: f64, hi: f64, bits: u64) -> f64 {
    lo + (hi - lo) * unit_of(bits)
}

/// splitmix64's output function.
fn splitmix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<u64> = (0..5).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..5).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, (0..5).scan(Rng::new(8), |r, _| Some(r.next_u64())).collect::<Vec<_>>());
        // Keyed streams: the same keys give the same numbers; another key,
        // or the same keys in another order, other numbers.
        let keyed = |keys: &[u64]| -> Vec<u64> { (0..3).scan(Keyed::new(keys), |r, _| Some(r.next_u64())).collect() };
        assert_eq!(keyed(&[1, 2, 3]), keyed(&[1, 2, 3]));
        assert_ne!(keyed(&[1, 2, 3]), keyed(&[1, 2, 4]));
        assert_ne!(keyed(&[1, 2, 3]), keyed(&[2, 1, 3]));
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            let x = r.unit();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
