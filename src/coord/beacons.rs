//! The proxy-wide beacon rate limit (`vitals.max_per_second`): the VMs count the beacons they
//! admit in one shared count per second, by compare-and-swap, so the proxy never admits more
//! than the limit in a second, whatever its workers and the timing of headers and bodies. A
//! beacon pays two shared-data calls (at most the limit of them a second); once a second is
//! full, a VM refuses without a host call until the next.

use crate::host::Host;

/// Format tag of the shared count; bumped on any layout change.
const FORMAT: u8 = 1;
/// Tries of the compare-and-swap before a beacon is refused: the other workers' beacons won.
const CAS_ATTEMPTS: usize = 4;

/// One VM's view of the second's beacons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BeaconBudget {
    /// The Unix second counted.
    second: u64,
    /// The proxy's count for the second reached the limit.
    full: bool,
}

impl BeaconBudget {
    /// Whether one more beacon fits the limit at `now_s` in the proxy's count in shared data
    /// `key`; counts it if so. A count some VM stored for a later second is the current one.
    pub fn admit(&mut self, host: &impl Host, key: &str, now_s: u64, limit: u64) -> bool {
        if now_s > self.second {
            *self = BeaconBudget { second: now_s, full: false };
        }
        if self.full {
            return false;
        }
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = host.shared_data(key);
            let (second, count) = match value.as_deref().and_then(decode) {
                Some((second, count)) if second >= self.second => (second, count),
                _ => (self.second, 0),
            };
            if second > self.second {
                self.second = second;
            }
            if count >= limit {
                self.full = true;
                return false;
            }
            if host.set_shared_data(key, &encode(second, count + 1), cas) {
                return true;
            }
        }
        false
    }
}

fn encode(second: u64, count: u64) -> [u8; 17] {
    let mut out = [FORMAT; 17];
    let (_, rest) = out.split_at_mut(1);
    let (a, b) = rest.split_at_mut(8);
    a.copy_from_slice(&second.to_le_bytes());
    b.copy_from_slice(&count.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let (&FORMAT, rest) = bytes.split_first()? else { return None };
    let rest: &[u8; 16] = rest.try_into().ok()?;
    let (a, b) = rest.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*a), u64::from_le_bytes(b.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeProxy;
    use wasm_bindgen_test::wasm_bindgen_test;

    const KEY: &str = "canary-gate/web/router/beacons";

    #[wasm_bindgen_test(unsupported = test)]
    fn the_vms_together_never_pass_the_limit_and_a_new_second_starts_afresh() {
        let proxy = FakeProxy::at(100);
        let (a, b) = (proxy.vm(), proxy.vm());
        let (mut first, mut second) = (BeaconBudget::default(), BeaconBudget::default());
        // Interleaved, as two workers taking beacons at once.
        let admitted = (0..100)
            .filter(|i| if i % 2 == 0 { first.admit(&a, KEY, 100, 20) } else { second.admit(&b, KEY, 100, 20) })
            .count();
        assert_eq!(admitted, 20);
        assert_eq!(decode(&a.shared_data(KEY).0.unwrap()), Some((100, 20)));
        assert_eq!((0..50).filter(|_| second.admit(&b, KEY, 101, 20)).count(), 20);
        assert_eq!((0..50).filter(|_| first.admit(&a, KEY, 101, 20)).count(), 0, "the other VM took them");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_beacon_of_an_earlier_second_counts_in_the_current_one() {
        let proxy = FakeProxy::at(100);
        let (a, b) = (proxy.vm(), proxy.vm());
        let (mut first, mut second) = (BeaconBudget::default(), BeaconBudget::default());
        assert_eq!((0..10).filter(|_| first.admit(&a, KEY, 101, 10)).count(), 10);
        // Beacons stamped with second 100 (headers then, bodies now), mixed with new ones: each
        // change of second must not start the budget afresh.
        let late_and_new = (0..120).filter(|i| second.admit(&b, KEY, if i % 2 == 0 { 100 } else { 101 }, 10)).count();
        assert_eq!(late_and_new, 0);
        assert_eq!((0..20).filter(|_| second.admit(&b, KEY, 102, 10)).count(), 10);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_full_second_is_refused_without_a_host_call() {
        let proxy = FakeProxy::at(100);
        let vm = proxy.vm();
        let mut budget = BeaconBudget::default();
        assert_eq!((0..5).filter(|_| budget.admit(&vm, KEY, 100, 3)).count(), 3);
        // Another VM's count is no longer read once this one saw the second full.
        vm.set_shared_data(KEY, &encode(100, 0), None);
        assert!(!budget.admit(&vm, KEY, 100, 3));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn foreign_data_counts_as_nothing() {
        assert_eq!(decode(b"garbage"), None);
        assert_eq!(decode(&[2; 17]), None);
        assert_eq!(decode(&encode(7, 9)), Some((7, 9)));
    }
}
