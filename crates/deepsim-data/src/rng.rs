//! A small seedable random number generator (SplitMix64) and the shuffles built on it.
//!
//! Every random choice the loader makes (epoch order, crop offsets, flips) is drawn from a
//! generator derived from the loader's seed and the position of the choice, so results do not
//! depend on the number of threads or on the order in which they run. The algorithm is fixed
//! here, not borrowed from a crate whose stream might change between versions, so a seed gives
//! the same batches in every release.

/// SplitMix64 (Steele, Lea & Flood 2014): 64 bits of state, a full-period Weyl sequence mixed
/// by two multiply-xorshift rounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The finalizer of SplitMix64: a bijective 64-bit mix (also what seeds deepsim-comparators'
/// random weights, value `i` of seed `s` being `splitmix64(s·φ + i)`).
pub fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// A generator for one purpose, derived from a seed and the words that name the purpose
    /// (for example `[EPOCH_ORDER, epoch]`); different word lists give unrelated streams.
    pub fn derive(seed: u64, words: &[u64]) -> Self {
        let mut h = splitmix64(seed ^ GOLDEN);
        for &w in words {
            h = splitmix64(
                h.wrapping_add(GOLDEN) ^ splitmix64(w.wrapping_add(0x632B_E59B_D9B4_E019)),
            );
        }
        Rng { state: h }
    }

    /// The state, to save in a checkpoint; [`Rng::from_state`] restores it.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// The generator whose [`Rng::state`] was `state`.
    pub fn from_state(state: u64) -> Self {
        Rng { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        splitmix64(self.state)
    }

    /// A uniform integer in `0..n` without modulo bias (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        // Reject the top partial range so every residue is equally likely.
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// A uniform float in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// `0..n` in a uniformly random order (Fisher–Yates).
pub fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_stream() {
        // First outputs for seed 1234567 of Vigna's splitmix64.c, computed in Python with 64-bit masks:
        // x += 0x9e3779b97f4a7c15; z = x; z = (z ^ z>>30) * 0xbf58476d1ce4e5b9;
        // z = (z ^ z>>27) * 0x94d049bb133111eb; return z ^ z>>31;
        let mut r = Rng::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(got, [6457827717110365317, 3203168211198807973, 9817491932198370423]);
    }

    #[test]
    fn below_is_uniform_and_permutations_are_permutations() {
        let mut r = Rng::new(7);
        let mut counts = [0usize; 6];
        for _ in 0..60_000 {
            counts[r.below(6) as usize] += 1;
        }
        // Each count is Binomial(60000, 1/6): sd ≈ 91, so ±500 is over 5 sd.
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
        let mut p = permutation(1000, &mut r);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn derived_streams_differ_and_repeat() {
        let a = Rng::derive(1, &[0, 5]).next_u64();
        assert_eq!(a, Rng::derive(1, &[0, 5]).next_u64());
        assert_ne!(a, Rng::derive(1, &[5, 0]).next_u64());
        assert_ne!(a, Rng::derive(2, &[0, 5]).next_u64());
        let mut r = Rng::new(99);
        r.next_u64();
        let mut s = Rng::from_state(r.state());
        assert_eq!(r.next_u64(), s.next_u64());
    }
}
