//! Randomness for event ids, idempotency keys, sampling and jitter.
//!
//! Bytes come from the OS (WASI `random_get` inside Envoy) in blocks of
//! [`POOL_BYTES`], so a request costs a hostcall only once every few hundred
//! ids. Should the host ever refuse, a SHA-256 counter stream over the last
//! good seed and the clock keeps ids unique instead of panicking.

use sha2::{Digest, Sha256};

/// Random bytes fetched per `random_get`.
pub const POOL_BYTES: usize = 4096;

pub struct RandomPool {
    buf: Vec<u8>,
    pos: usize,
    fallback_seed: [u8; 32],
    counter: u64,
}

impl Default for RandomPool {
    fn default() -> Self {
        Self::new()
    }
}

impl RandomPool {
    pub fn new() -> Self {
        RandomPool {
            buf: vec![0; POOL_BYTES],
            pos: POOL_BYTES,
            fallback_seed: [0; 32],
            counter: 0,
        }
    }

    fn refill(&mut self, salt: u64) {
        if getrandom::fill(&mut self.buf).is_ok() {
            if let Some(seed) = self.buf.get(..32) {
                self.fallback_seed.copy_from_slice(seed);
                // the seed bytes are not handed out
                self.pos = 32;
                return;
            }
        }
        self.refill_fallback(salt);
    }

    fn refill_fallback(&mut self, salt: u64) {
        for block in self.buf.chunks_mut(32) {
            self.counter = self.counter.wrapping_add(1);
            let mut h = Sha256::new();
            h.update(self.fallback_seed);
            h.update(self.counter.to_le_bytes());
            h.update(salt.to_le_bytes());
            let digest = h.finalize();
            block.copy_from_slice(&digest[..block.len()]);
        }
        self.pos = 0;
    }

    /// Fills `out`; `salt` (e.g. the clock) only matters on the fallback path.
    pub fn fill(&mut self, out: &mut [u8], salt: u64) {
        let mut done = 0;
        while done < out.len() {
            if self.pos >= self.buf.len() {
                self.refill(salt);
            }
            let n = (out.len() - done).min(self.buf.len() - self.pos);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
    }

    pub fn bytes16(&mut self, salt: u64) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.fill(&mut b, salt);
        b
    }

    pub fn next_u64(&mut self, salt: u64) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b, salt);
        u64::from_le_bytes(b)
    }

    /// `true` with probability `rate` (1.0 always, 0.0 never).
    pub fn sample(&mut self, rate: f64, salt: u64) -> bool {
        if rate >= 1.0 {
            return true;
        }
        if rate <= 0.0 {
            return false;
        }
        let x = (self.next_u64(salt) >> 11) as f64 / (1u64 << 53) as f64;
        x < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_do_not_repeat_across_refills() {
        let mut pool = RandomPool::new();
        let mut seen = HashSet::new();
        for i in 0..2_000u64 {
            assert!(seen.insert(pool.bytes16(i)));
        }
    }

    #[test]
    fn fallback_stream_is_unique_too() {
        let mut pool = RandomPool::new();
        let mut seen = HashSet::new();
        for i in 0..3 {
            pool.refill_fallback(i);
            let mut block = vec![0u8; POOL_BYTES];
            pool.fill(&mut block, i);
            for chunk in block.chunks(16) {
                assert!(seen.insert(chunk.to_vec()));
            }
        }
    }

    #[test]
    fn sampling_edges_and_rate() {
        let mut pool = RandomPool::new();
        assert!((0..100).all(|i| pool.sample(1.0, i)));
        assert!((0..100).all(|i| !pool.sample(0.0, i)));
        let hits = (0..10_000).filter(|&i| pool.sample(0.25, i)).count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
    }
}
