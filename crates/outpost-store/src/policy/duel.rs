//! [`Duel`]: the decision rule of two shadow caches that replay the same sampled requests
//! (miniature simulations, Waldspurger et al., USENIX ATC 2017). It counts the requests exactly
//! one shadow hit and, every few shadow lifetimes, says whether the other side won significantly
//! (McNemar's test on those discordant requests: a paired test, as both shadows see the same
//! requests; the caller sets how many standard deviations). Used by
//! `s3-tinylfu` for its mode and by the SSD tier's admission. Pure counting, no clock.

/// A side switches only once the shadows hold this many objects (a smaller cache keeps its side).
pub(crate) const MIN_OBJECTS: usize = 32;
/// The shadows are compared every this many shadow-resident objects' worth of sampled requests
/// (at least [`PERIOD_MIN`]), then the counts halve.
const PERIOD_FACTOR: u64 = 4;
const PERIOD_MIN: u64 = 256;

/// The running score of two shadows, side 0 and side 1.
#[derive(Debug, Clone)]
pub(crate) struct Duel {
    /// Standard deviations the other side must lead by.
    sigmas: u64,
    /// Sampled requests that only this side hit, since the last halving (the discordant pairs).
    wins: [u64; 2],
    /// Sampled requests since the last comparison.
    samples: u64,
    /// Switches so far.
    switches: u64,
}

impl Duel {
    /// A duel whose switch needs a lead of `sigmas` standard deviations.
    pub(crate) fn new(sigmas: u64) -> Self {
        Self {
            sigmas,
            wins: [0; 2],
            samples: 0,
            switches: 0,
        }
    }

    /// Scores one sampled request (`hit[side]`: whether that side's shadow hit). Every period
    /// (by `resident`, the larger shadow's object count) compares the sides and returns `true`
    /// when the side other than `current` won significantly: the caller switches to it.
    pub(crate) fn score(&mut self, hit: [bool; 2], resident: usize, current: usize) -> bool {
        if hit[0] != hit[1] {
            self.wins[usize::from(hit[1])] += 1;
        }
        self.samples += 1;
        let period = (resident as u64 * PERIOD_FACTOR).max(PERIOD_MIN);
        if self.samples < period {
            return false;
        }
        self.samples = 0;
        let (ahead, behind) = (self.wins[1 - current], self.wins[current]);
        // ahead - behind > sigmas × sqrt(ahead + behind), in integers.
        let switch = resident >= MIN_OBJECTS
            && ahead > behind
            && u128::from(ahead - behind).pow(2)
                > u128::from(self.sigmas * self.sigmas) * u128::from(ahead + behind);
        self.wins = self.wins.map(|w| w / 2);
        self.switches += u64::from(switch);
        switch
    }

    /// How often [`Duel::score`] said to switch.
    pub(crate) fn switches(&self) -> u64 {
        self.switches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_only_on_a_significant_lead_of_the_other_side() {
        let mut d = Duel::new(2);
        // 256 samples, side 1 alone hits 60 and side 0 alone 40: 20 < 2 × sqrt(100).
        let mut switched = false;
        for i in 0..256 {
            let hit = match i {
                0..=59 => [false, true],
                60..=99 => [true, false],
                _ => [true, true],
            };
            switched |= d.score(hit, 64, 0);
        }
        assert!(!switched);
        // Next period: side 1 alone hits 80 more (110 against 20 after halving): switch.
        for i in 0..256 {
            let hit = if i < 80 {
                [false, true]
            } else {
                [false, false]
            };
            switched |= d.score(hit, 64, 0);
        }
        assert!(switched);
        assert_eq!(d.switches(), 1);
    }

    #[test]
    fn small_shadows_never_switch() {
        let mut d = Duel::new(2);
        for _ in 0..10_000 {
            assert!(!d.score([false, true], MIN_OBJECTS - 1, 0));
        }
        // The current side winning is no reason to switch either.
        for _ in 0..10_000 {
            assert!(!d.score([true, false], 1_000, 0));
        }
    }
}
