//! The proxy-wide beacon rate limit (`vitals.max_per_second`), kept per VM and merged on the
//! tick: each VM admits beacons while the proxy's count for the second, as last synchronised,
//! plus its own since then stays under the limit; on its tick it adds its own to the shared
//! count. Beacons pay no shared-data call; a burst can pass the limit by what the other VMs
//! admit before their next tick, and one VM alone never passes it.

use crate::host::Host;

/// Format tag of the shared count; bumped on any layout change.
const FORMAT: u8 = 1;

/// One VM's view of the second's beacons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BeaconBudget {
    /// The Unix second counted.
    second: u64,
    /// The proxy's beacons this second at the last synchronisation, this VM's included.
    proxy: u64,
    /// This VM's beacons since.
    unsynced: u64,
}

impl BeaconBudget {
    /// Whether one more beacon fits the limit at `now_s`; counts it if so. A beacon stamped
    /// with an earlier second (its headers came then, its body now) counts in the current one:
    /// going back would start a fresh budget at every change of second.
    pub fn admit(&mut self, now_s: u64, limit: u64) -> bool {
        if now_s > self.second {
            *self = BeaconBudget { second: now_s, ..BeaconBudget::default() };
        }
        if self.proxy.saturating_add(self.unsynced) >= limit {
            return false;
        }
        self.unsynced += 1;
        true
    }

    /// Adds this VM's beacons to the proxy's count in shared data `key`, and learns the
    /// proxy's. Nothing to do without beacons this second.
    pub fn sync(&mut self, host: &impl Host, key: &str, now_s: u64) {
        if self.second != now_s {
            return;
        }
        for _ in 0..4 {
            let (value, cas) = host.shared_data(key);
            let shared = value.as_deref().and_then(decode).filter(|&(second, _)| second == self.second);
            let total = shared.map_or(0, |(_, count)| count).saturating_add(self.unsynced);
            if self.unsynced == 0 || host.set_shared_data(key, &encode(self.second, total), cas) {
                (self.proxy, self.unsynced) = (total, 0);
                return;
            }
        }
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
    fn one_vm_never_passes_the_limit_and_a_new_second_starts_afresh() {
        let mut budget = BeaconBudget::default();
        let admitted = (0..50).filter(|_| budget.admit(100, 20)).count();
        assert_eq!(admitted, 20);
        assert_eq!((0..50).filter(|_| budget.admit(101, 20)).count(), 20);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_beacon_of_an_earlier_second_counts_in_the_current_one() {
        let mut budget = BeaconBudget::default();
        assert_eq!((0..10).filter(|_| budget.admit(101, 10)).count(), 10);
        // Beacons whose headers came in second 100 and bodies in 101, mixed with new ones:
        // each change of second used to start the budget afresh.
        let late_and_new = (0..120).filter(|i| budget.admit(if i % 2 == 0 { 100 } else { 101 }, 10)).count();
        assert_eq!(late_and_new, 0);
        assert_eq!((0..20).filter(|_| budget.admit(102, 10)).count(), 10);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn vms_share_the_limit_once_synchronised() {
        let proxy = FakeProxy::at(100);
        let (a, b) = (proxy.vm(), proxy.vm());
        let (mut first, mut second) = (BeaconBudget::default(), BeaconBudget::default());
        assert_eq!((0..15).filter(|_| first.admit(100, 20)).count(), 15);
        first.sync(&a, KEY, 100);
        // The second VM learns the first's 15 when it has its own to add.
        assert!(second.admit(100, 20));
        second.sync(&b, KEY, 100);
        assert_eq!((0..50).filter(|_| second.admit(100, 20)).count(), 4);
        second.sync(&b, KEY, 100);
        first.sync(&a, KEY, 100);
        assert_eq!(decode(&a.shared_data(KEY).0.unwrap()), Some((100, 20)));
        // A later second starts from its own count: the stored one is of another second.
        assert_eq!((0..50).filter(|_| first.admit(101, 20)).count(), 20);
        first.sync(&a, KEY, 101);
        assert_eq!(decode(&a.shared_data(KEY).0.unwrap()), Some((101, 20)));
        // Until its tick, the other VM does not know: the burst passes the limit by what it
        // admits before then, and no further.
        assert!(second.admit(101, 20));
        second.sync(&b, KEY, 101);
        assert_eq!(decode(&b.shared_data(KEY).0.unwrap()), Some((101, 21)));
        assert!(!second.admit(101, 20) && !first.admit(101, 20));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn foreign_data_counts_as_nothing() {
        assert_eq!(decode(b"garbage"), None);
        assert_eq!(decode(&[2; 17]), None);
        assert_eq!(decode(&encode(7, 9)), Some((7, 9)));
    }
}
