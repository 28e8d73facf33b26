//! Which revision serves each version's subset, learned from the `revision_header` that
//! observers stamp on responses, and how a pin cookie is judged against it.
//!
//! Argo Rollouts keeps the subset names (`stable`, `canary`) and repoints them at each new
//! ReplicaSet; an abort leaves `canary` on a ReplicaSet scaled to zero. A pin therefore names
//! the revision it was made under (`canary.5f7d9c8b4`), and is honoured only while that
//! revision still serves a subset: a promoted revision's users stay on it (now stable), and a
//! pin never carries a user into a newer canary or onto a revision that is gone.

use crate::model::{Revision, Version};

/// Format tag of the shared encoding; bumped on any layout change.
const FORMAT: u8 = 1;

/// A pin cookie's value: `version` or `version.revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The version the user was pinned to.
    pub version: Version,
    /// The revision that served it then (absent without observers).
    pub revision: Option<Revision>,
}

/// What a pin is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// Route the user to this version.
    Honour(Version),
    /// The pinned revision serves no subset (an older stable, an aborted or replaced canary):
    /// the mesh decides and the response re-pins.
    Stale,
    /// A canary pin whose revision cannot be checked yet (nothing learned about the canary
    /// subset, e.g. just after a restart): the mesh decides, and the pin is kept unless the
    /// canary serves again.
    Unchecked,
}

/// One learned fact and the second it was learned (the later one wins when VMs merge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Slot {
    revision: Option<Revision>,
    since_s: u64,
}

/// The revisions serving the two subsets, and a canary revision known to be gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revisions {
    /// Per version index.
    serving: [Slot; 2],
    /// The canary revision whose subset answered "no healthy upstream" (scaled to zero).
    unavailable: Slot,
}

impl Revisions {
    /// The revision last seen serving `version`.
    pub fn serving(&self, version: Version) -> Option<Revision> {
        self.serving.get(version.index()).and_then(|s| s.revision)
    }

    /// Whether nothing was learned: no observer stamps this service's responses.
    pub fn is_empty(&self) -> bool {
        self.serving.iter().all(|s| s.revision.is_none())
    }

    /// The canary revision marked gone, if any.
    pub fn unavailable(&self) -> Option<Revision> {
        self.unavailable.revision
    }

    /// Whether [`Revisions::learn`] would leave the table as it is (most responses): no need
    /// to read the clock.
    pub fn knows(&self, version: Version, revision: Revision, started_s: u64) -> bool {
        self.serving(version) == Some(revision)
            && !(self.unavailable.revision == Some(revision) && started_s > self.unavailable.since_s)
    }

    /// Notes that `revision` served `version` at `now_s` for a request that started at
    /// `started_s`; true if the table changed. A response from a revision marked gone, to a
    /// request that started after the mark, clears the mark (the rollout was retried).
    pub fn learn(&mut self, version: Version, revision: Revision, started_s: u64, now_s: u64) -> bool {
        let mut changed = false;
        if let Some(slot) = self.serving.get_mut(version.index()) {
            if slot.revision != Some(revision) {
                *slot = Slot { revision: Some(revision), since_s: now_s };
                changed = true;
            }
        }
        if self.unavailable.revision == Some(revision) && started_s > self.unavailable.since_s {
            self.unavailable = Slot { revision: None, since_s: now_s };
            changed = true;
        }
        changed
    }

    /// Marks the canary's current revision gone (its subset has no healthy upstream); the
    /// marked revision if this changed the table.
    pub fn mark_canary_unavailable(&mut self, now_s: u64) -> Option<Revision> {
        let revision = self.serving(Version::Canary)?;
        if self.unavailable.revision == Some(revision) {
            return None;
        }
        self.unavailable = Slot { revision: Some(revision), since_s: now_s };
        Some(revision)
    }

    /// Takes every fact of `other` (another VM's table) learned later than ours; true if this
    /// table changed.
    pub fn merge(&mut self, other: &Revisions) -> bool {
        let mut changed = false;
        let pairs = self.serving.iter_mut().zip(other.serving.iter());
        for (mine, theirs) in pairs.chain(std::iter::once((&mut self.unavailable, &other.unavailable))) {
            if theirs.since_s > mine.since_s && mine != theirs {
                *mine = *theirs;
                changed = true;
            }
        }
        changed
    }

    /// Whether `other` holds a fact learned later than ours (it needs our merge).
    pub fn is_newer_than(&self, other: &Revisions) -> bool {
        let pairs = self.serving.iter().zip(other.serving.iter());
        pairs.chain(std::iter::once((&self.unavailable, &other.unavailable))).any(|(a, b)| a.since_s > b.since_s)
    }

    /// What `pin` is worth now. Stable wins when a revision serves both subsets (the moment of
    /// a promotion); without observers a pin names a version only and keeps today's meaning.
    pub fn check(&self, pin: Pin) -> PinCheck {
        let Some(revision) = pin.revision else {
            return if self.is_empty() || pin.version == Version::Stable {
                PinCheck::Honour(pin.version)
            } else {
                PinCheck::Stale
            };
        };
        if self.serving(Version::Stable) == Some(revision) {
            return PinCheck::Honour(Version::Stable);
        }
        if self.serving(Version::Canary) == Some(revision) {
            return if self.unavailable() == Some(revision) {
                PinCheck::Stale
            } else {
                PinCheck::Honour(Version::Canary)
            };
        }
        match (pin.version, self.serving(pin.version)) {
            // Stable is safe to keep even unchecked.
            (Version::Stable, None) => PinCheck::Honour(Version::Stable),
            (Version::Canary, None) => PinCheck::Unchecked,
            _ => PinCheck::Stale,
        }
    }

    /// The shared-data encoding: the format tag, then stable, canary and the gone canary, each
    /// as the second it was learned (8 bytes little-endian), a length and the revision.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 3 * (9 + 16));
        out.push(FORMAT);
        for slot in self.serving.iter().chain(std::iter::once(&self.unavailable)) {
            out.extend_from_slice(&slot.since_s.to_le_bytes());
            let text = slot.revision.as_ref().map_or("", |r| r.as_str());
            out.push(text.len() as u8);
            out.extend_from_slice(text.as_bytes());
        }
        out
    }

    /// The table in `bytes`, if well formed and of this format.
    pub fn decode(bytes: &[u8]) -> Option<Revisions> {
        let [FORMAT, tail @ ..] = bytes else { return None };
        let mut rest: &[u8] = tail;
        let mut slots = [Slot::default(); 3];
        for slot in slots.iter_mut() {
            let (since, tail) = rest.split_first_chunk::<8>()?;
            let (&len, tail) = tail.split_first()?;
            let (text, tail) = tail.split_at_checked(usize::from(len))?;
            let revision = if len == 0 { None } else { Some(Revision::parse(text)?) };
            *slot = Slot { revision, since_s: u64::from_le_bytes(*since) };
            rest = tail;
        }
        let [stable, canary, unavailable] = slots;
        rest.is_empty().then_some(Revisions { serving: [stable, canary], unavailable })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn rev(text: &str) -> Revision {
        Revision::parse(text.as_bytes()).unwrap()
    }

    fn pin(version: Version, revision: Option<&str>) -> Pin {
        Pin { version, revision: revision.map(rev) }
    }

    fn table(stable: &str, canary: &str) -> Revisions {
        let mut t = Revisions::default();
        t.learn(Version::Stable, rev(stable), 1, 1);
        t.learn(Version::Canary, rev(canary), 1, 1);
        t
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn pins_follow_revisions_through_a_promotion() {
        use Version::{Canary, Stable};
        // Revision r2 is the canary; its users are pinned to it.
        let mut t = table("r1", "r2");
        assert_eq!(t.check(pin(Canary, Some("r2"))), PinCheck::Honour(Canary));
        assert_eq!(t.check(pin(Stable, Some("r1"))), PinCheck::Honour(Stable));
        // Promotion: stable is repointed at r2 while canary still serves it too.
        t.learn(Stable, rev("r2"), 2, 2);
        assert_eq!(t.check(pin(Canary, Some("r2"))), PinCheck::Honour(Stable), "stable wins");
        assert_eq!(t.check(pin(Stable, Some("r1"))), PinCheck::Stale, "the old stable is gone");
        // The next rollout: canary is repointed at r3. r2's users stay on stable.
        t.learn(Canary, rev("r3"), 3, 3);
        assert_eq!(t.check(pin(Canary, Some("r2"))), PinCheck::Honour(Stable));
        assert_eq!(t.check(pin(Canary, None)), PinCheck::Stale, "a pin without revision never reaches r3");
        assert_eq!(t.check(pin(Stable, None)), PinCheck::Honour(Stable));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_aborted_canary_scaled_to_zero_releases_its_users() {
        let mut t = table("r1", "r3");
        assert_eq!(t.mark_canary_unavailable(10), Some(rev("r3")));
        assert_eq!(t.mark_canary_unavailable(11), None, "marked once");
        assert_eq!(t.check(pin(Version::Canary, Some("r3"))), PinCheck::Stale);
        // A response to a request that started before the mark does not clear it.
        assert!(!t.learn(Version::Canary, rev("r3"), 10, 11));
        assert_eq!(t.check(pin(Version::Canary, Some("r3"))), PinCheck::Stale);
        // The rollout is retried: r3 serves a request started after the mark.
        assert!(t.learn(Version::Canary, rev("r3"), 12, 12));
        assert_eq!(t.check(pin(Version::Canary, Some("r3"))), PinCheck::Honour(Version::Canary));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_response_the_table_knows_would_change_nothing() {
        let mut marked = table("r1", "r3");
        marked.mark_canary_unavailable(10);
        for t in [Revisions::default(), table("r1", "r3"), marked] {
            for (version, text) in [(Version::Stable, "r1"), (Version::Canary, "r3"), (Version::Canary, "r4")] {
                for started_s in [9, 10, 11] {
                    let mut learned = t;
                    let knows = t.knows(version, rev(text), started_s);
                    assert_eq!(
                        knows,
                        !learned.learn(version, rev(text), started_s, 20),
                        "{version:?} {text} {started_s}"
                    );
                }
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn without_observers_pins_name_versions() {
        let t = Revisions::default();
        assert!(t.is_empty());
        assert_eq!(t.check(pin(Version::Canary, None)), PinCheck::Honour(Version::Canary));
        assert_eq!(t.check(pin(Version::Canary, Some("r2"))), PinCheck::Unchecked);
        assert_eq!(t.check(pin(Version::Stable, Some("r1"))), PinCheck::Honour(Version::Stable));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn merging_takes_the_later_fact_of_each_slot() {
        let mut a = table("r1", "r2");
        let mut b = a;
        b.learn(Version::Canary, rev("r3"), 5, 5);
        b.mark_canary_unavailable(6);
        a.learn(Version::Stable, rev("r0"), 7, 7);
        assert!(b.is_newer_than(&a) && a.is_newer_than(&b));
        assert!(a.merge(&b));
        assert_eq!((a.serving(Version::Stable), a.serving(Version::Canary)), (Some(rev("r0")), Some(rev("r3"))));
        assert_eq!(a.unavailable(), Some(rev("r3")));
        assert!(!a.merge(&b), "merging twice changes nothing");
        assert!(!a.is_newer_than(&a));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_shared_encoding_round_trips_and_refuses_garbage() {
        let mut t = table("5f7d9c8b4", "6c4b8d7f9");
        t.mark_canary_unavailable(1_700_000_000);
        assert_eq!(Revisions::decode(&t.encode()), Some(t));
        assert_eq!(Revisions::decode(&Revisions::default().encode()), Some(Revisions::default()));
        let bytes = t.encode();
        for cut in 0..bytes.len() {
            assert_eq!(Revisions::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Revisions::decode(&longer), None);
        let mut other_format = bytes;
        other_format[0] = 2;
        assert_eq!(Revisions::decode(&other_format), None);
        let mut bad_text = t.encode();
        bad_text[10] = b'.';
        assert_eq!(Revisions::decode(&bad_text), None);
    }
}
