//! Seeded, platform-independent random weights: each value is a hash of (seed, index), so the
//! same seed gives the same network on every machine and in every language that implements the
//! hash (the PyTorch export script of the tests does, in numpy).

/// The finalizer of SplitMix64 (Steele, Lea & Flood, 2014): a bijective 64-bit mix, the one
/// deepsim-data's generator is built on.
pub use deepsim_data::splitmix64;

/// `n` values uniform on [−1, 1) with 24-bit resolution (exact in f32): value `i` is
/// `2 · (top 24 bits of splitmix64(seed · φ + i)) / 2²⁴ − 1`, φ = 0x9E3779B97F4A7C15.
pub fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let base = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..n as u64)
        .map(|i| {
            let z = splitmix64(base.wrapping_add(i));
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// [`uniform`] scaled by `bound`, computed in f64 and rounded once: PyTorch's default
/// initialization of a layer with `bound = 1 / sqrt(fan_in)`.
pub fn scaled(seed: u64, n: usize, bound: f64) -> Vec<f32> {
    uniform(seed, n).into_iter().map(|u| (f64::from(u) * bound) as f32).collect()
}

/// Seeded weights and biases for layers given as `(key, weight shape)`: layer `i` draws
/// `{key}.weight` with seed `seed + 2i` and `{key}.bias` (`[shape[0]]`) with `seed + 2i + 1`,
/// both scaled by PyTorch's default bound `1/√fan_in`, `fan_in = Π shape[1..]`.
///
/// # Errors
/// Only candle's, when allocating on `device`.
pub fn layers(
    seed: u64,
    layers: &[(String, Vec<usize>)],
    device: &candle::Device,
) -> candle::Result<std::collections::HashMap<String, candle::Tensor>> {
    let mut out = std::collections::HashMap::new();
    for (l, (key, shape)) in layers.iter().enumerate() {
        let fan_in: usize = shape[1..].iter().product();
        let bound = 1.0 / (fan_in as f64).sqrt();
        let s = seed + 2 * l as u64;
        let n = shape.iter().product();
        let w = candle::Tensor::from_vec(scaled(s, n, bound), shape.as_slice(), device)?;
        let b = candle::Tensor::from_vec(scaled(s + 1, shape[0], bound), shape[0], device)?;
        out.insert(format!("{key}.weight"), w);
        out.insert(format!("{key}.bias"), b);
    }
    Ok(out)
}

/// `(name, shape)` of each layer's `.weight` and `.bias` (`[shape[0]]`), in order.
pub(crate) fn with_biases(layers: Vec<(String, Vec<usize>)>) -> Vec<(String, Vec<usize>)> {
    layers
        .into_iter()
        .flat_map(|(key, shape)| {
            let bias = (format!("{key}.bias"), vec![shape[0]]);
            [(format!("{key}.weight"), shape), bias]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_its_reference_values() {
        // The SplitMix64 generator seeded with 1234567 (state += φ before each mix) yields
        // 6457827717110365317, 3203168211198807973 (reference sequence from the Java
        // SplittableRandom / Vigna's splitmix64.c test).
        let phi = 0x9E37_79B9_7F4A_7C15u64;
        let s = 1_234_567u64;
        assert_eq!(splitmix64(s.wrapping_add(phi)), 6_457_827_717_110_365_317);
        assert_eq!(splitmix64(s.wrapping_add(phi.wrapping_mul(2))), 3_203_168_211_198_807_973);
    }

    #[test]
    fn uniform_is_in_range_and_centred() {
        let v = uniform(7, 100_000);
        assert!(v.iter().all(|&x| (-1.0..1.0).contains(&x)));
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert_ne!(uniform(7, 4), uniform(8, 4));
    }
}
