//! Seeded randomness, written once: SplitMix64 (identical on every platform, wasm included) as a
//! stateful generator ([`Rng`]: the seeded sampler's, and every test's and benchmark's) and as a
//! counter-based one ([`uniform`]: training's dropout masks). A leaf module; the random matrices
//! and models built from it are in `synthetic`.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function of `z + golden`.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform [0, 1) from the i-th draw of stream `key` (no state: any draw can be recomputed).
pub fn uniform(key: u64, i: u64) -> f32 {
    unit(splitmix(key ^ splitmix(i)))
}

fn unit(z: u64) -> f32 {
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// SplitMix64 as a stream.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        let z = splitmix(self.0);
        self.0 = self.0.wrapping_add(GOLDEN);
        z
    }
    /// Uniform [0, 1) with 24 bits.
    pub fn next_f32(&mut self) -> f32 {
        unit(self.next_u64())
    }
    /// `n` values uniform in (-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| (self.next_f32() * 2.0 - 1.0) * scale).collect()
    }
    /// `n` values uniform in (1 - jitter, 1 + jitter): norm weights.
    pub fn norm(&mut self, n: usize, jitter: f32) -> Vec<f32> {
        self.vec(n, jitter).into_iter().map(|v| 1.0 + v).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_generator_two_views() {
        // the stream is the counter-based function on consecutive counters
        let mut r = Rng::new(5);
        let a = r.next_u64();
        assert_eq!(a, splitmix(5));
        assert_eq!(r.next_u64(), splitmix(5u64.wrapping_add(GOLDEN)));
        let v = Rng::new(1).vec(1000, 0.5);
        assert!(v.iter().all(|x| x.abs() < 0.5));
        assert!(v.iter().sum::<f32>().abs() < 25.0, "centred");
        let u: Vec<f32> = (0..1000).map(|i| uniform(3, i)).collect();
        assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
        assert!((u.iter().sum::<f32>() / 1000.0 - 0.5).abs() < 0.05);
    }
}
