//! The random draws of numpy's legacy `RandomState` that MinAtar makes: MT19937 seeded as numpy seeds it, `rand()`
//! and `randint(low, high)` for the default (int64) dtype, bit for bit.

/// Words of MT19937 state.
const N: usize = 624;
/// The middle word offset of the twist.
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// A Mersenne Twister (MT19937) with the draws of numpy's `RandomState`.
#[derive(Clone)]
pub struct Mt19937 {
    key: [u32; N],
    pos: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937").field("pos", &self.pos).finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// `numpy.random.RandomState(seed)` for `seed <= 2**32 - 1` (the reference `init_genrand`). A larger seed, which
    /// numpy refuses, seeds as `RandomState([seed & 0xffffffff, seed >> 32])` (the reference `init_by_array`).
    pub fn new(seed: u64) -> Self {
        match u32::try_from(seed) {
            Ok(seed) => Self::init_genrand(seed),
            Err(_) => Self::init_by_array(&[seed as u32, (seed >> 32) as u32]),
        }
    }

    fn init_genrand(seed: u32) -> Self {
        let mut key = [0u32; N];
        key[0] = seed;
        for i in 1..N {
            let prev = key[i - 1];
            key[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Self { key, pos: N }
    }

    fn init_by_array(init_key: &[u32]) -> Self {
        let mut s = Self::init_genrand(19_650_218);
        let mt = &mut s.key;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(init_key.len()) {
            let prev = mt[i - 1];
            mt[i] = (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(init_key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= init_key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1];
            mt[i] = (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        s
    }

    /// Regenerates all `N` words.
    #[cold]
    fn twist(&mut self) {
        let mt = &mut self.key;
        let mix = |hi: u32, lo: u32, far: u32| {
            let y = (hi & UPPER_MASK) | (lo & LOWER_MASK);
            far ^ (y >> 1) ^ if y & 1 == 1 { MATRIX_A } else { 0 }
        };
        for i in 0..N - M {
            mt[i] = mix(mt[i], mt[i + 1], mt[i + M]);
        }
        for i in N - M..N - 1 {
            mt[i] = mix(mt[i], mt[i + 1], mt[i + M - N]);
        }
        mt[N - 1] = mix(mt[N - 1], mt[0], mt[M - 1]);
        self.pos = 0;
    }

    /// The next 32-bit output (tempered).
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= N {
            self.twist();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's 64-bit draw: two 32-bit outputs, the first in the high half.
    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// `RandomState.rand()`: a double in `[0, 1)` from 53 bits of two 32-bit outputs.
    #[inline]
    pub fn rand(&mut self) -> f64 {
        let a = self.next_u32() >> 5;
        let b = self.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) / 9_007_199_254_740_992.0
    }

    /// `RandomState.randint(low, high)` with the default int64 dtype: an integer in `low..high`, drawn by masked
    /// rejection (the smallest all-ones mask covering `high - 1 - low`) on 32-bit outputs when that range fits in
    /// 32 bits, on 64-bit draws otherwise. A range of one value (`high == low + 1`) draws nothing, as in numpy.
    /// numpy raises for `low >= high`; this returns `low` without drawing.
    #[inline]
    pub fn randint(&mut self, low: i64, high: i64) -> i64 {
        if high <= low {
            return low;
        }
        let range = high.wrapping_sub(low).wrapping_sub(1) as u64;
        let offset = if range == 0 {
            0
        } else if range == u64::from(u32::MAX) {
            u64::from(self.next_u32())
        } else if range < u64::from(u32::MAX) {
            let mask = mask_of(range) as u32;
            loop {
                let v = self.next_u32() & mask;
                if u64::from(v) <= range {
                    break u64::from(v);
                }
            }
        } else if range == u64::MAX {
            self.next_u64()
        } else {
            let mask = mask_of(range);
            loop {
                let v = self.next_u64() & mask;
                if v <= range {
                    break v;
                }
            }
        };
        low.wrapping_add(offset as i64)
    }
}

/// The smallest `2**k - 1` that is at least `max`.
fn mask_of(max: u64) -> u64 {
    if max == 0 { 0 } else { u64::MAX >> max.leading_zeros() }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn reference_outputs_of_seed_5489() {
        // The first outputs of the reference mt19937ar.c with init_genrand(5489), the C++ std::mt19937 default.
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        assert_eq!(mt.next_u32(), 581_869_302);
        let mut mt = Mt19937::new(5489);
        let last = (0..10_000).map(|_| mt.next_u32()).last();
        assert_eq!(last, Some(4_123_659_995));
    }

    #[test]
    fn masks() {
        assert_eq!([mask_of(0), mask_of(1), mask_of(2), mask_of(4), mask_of(7), mask_of(8)], [0, 1, 3, 7, 7, 15]);
        assert_eq!(mask_of(u64::MAX), u64::MAX);
    }

    /// `numpy_random_state.json`, written by `tests/python/minatar_rng_fixture.py`: per seed, an interleaving of
    /// `rand()`, `randint(low, high)`, `randint(low, high, 8)` and raw 32-bit draws with numpy's results.
    #[test]
    fn matches_numpy_random_state() {
        let fixture: Value = serde_json::from_str(include_str!("numpy_random_state.json")).unwrap();
        let int = |v: &Value| v.as_i64().unwrap();
        let mut compared = 0;
        for case in fixture["cases"].as_array().unwrap() {
            let seed = case["seed"].as_u64().unwrap();
            let mut mt = Mt19937::new(seed);
            for (i, op) in case["ops"].as_array().unwrap().iter().enumerate() {
                let op = op.as_array().unwrap();
                let what = format!("seed {seed}, call {i}: {op:?}");
                match op[0].as_str().unwrap() {
                    "rand" => {
                        let want: f64 = op[1].as_str().unwrap().parse().unwrap();
                        assert_eq!(mt.rand().to_bits(), want.to_bits(), "{what}");
                    }
                    "randint" => assert_eq!(mt.randint(int(&op[1]), int(&op[2])), int(&op[3]), "{what}"),
                    "randint_n" => {
                        let got: Vec<i64> = (0..8).map(|_| mt.randint(int(&op[1]), int(&op[2]))).collect();
                        let want: Vec<i64> = op[3].as_array().unwrap().iter().map(int).collect();
                        assert_eq!(got, want, "{what}");
                    }
                    "u32" => assert_eq!(i64::from(mt.next_u32()), int(&op[1]), "{what}"),
                    other => panic!("unknown op {other}"),
                }
                compared += 1;
            }
        }
        assert!(compared >= 1000, "{compared} calls compared");
    }
}
