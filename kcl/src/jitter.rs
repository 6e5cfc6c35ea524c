//! Where a worker's back-off jitter comes from: the thread's RNG by default, or, with
//! [`crate::WorkerConfig::jitter_seed`], RNGs derived in order from one seed, so a simulated
//! fleet under a paused clock replays exactly.

use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A worker's source of jitter RNGs.
#[derive(Debug)]
pub(crate) struct Jitter(Option<Mutex<StdRng>>);

impl Jitter {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        Jitter(seed.map(|s| Mutex::new(StdRng::seed_from_u64(s))))
    }

    /// A fresh RNG for one sequence of back-offs.
    pub(crate) fn rng(&self) -> StdRng {
        match &self.0 {
            Some(master) => {
                let seed = master.lock().unwrap_or_else(|e| e.into_inner()).random();
                StdRng::seed_from_u64(seed)
            }
            None => StdRng::from_rng(&mut rand::rng()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_rngs_in_the_same_order() {
        let draws = |j: &Jitter| (0..4).map(|_| j.rng().random::<u64>()).collect::<Vec<_>>();
        assert_eq!(draws(&Jitter::new(Some(5))), draws(&Jitter::new(Some(5))));
        assert_ne!(draws(&Jitter::new(Some(5))), draws(&Jitter::new(Some(6))));
    }
}
