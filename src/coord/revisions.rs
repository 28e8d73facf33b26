//! The revision table of a mesh-mode router, shared by its VMs. A VM that learns a fact from a
//! response (a subset now served by another revision, the canary's subset gone) updates its own
//! table at once and publishes it; every VM adopts the others' facts on its tick, so all
//! workers act on a change within a second. Writes happen only on a change, never per request.

use crate::config::Config;
use crate::host::Host;
use crate::measure::metrics::MetricIds;
use crate::model::{Revision, Version};
use crate::route::revisions::Revisions;
use std::cell::RefCell;

/// Longest upstream cluster name kept as the probe's target.
const MAX_CLUSTER_LEN: usize = 512;

/// One VM's copy of the table, and what it shows in `canary_revision_info`.
pub struct SharedRevisions {
    key: String,
    cluster_key: String,
    local: RefCell<Revisions>,
    /// The revisions this VM last set to 1 in `canary_revision_info`.
    shown: RefCell<[Option<Revision>; 2]>,
    /// The canary subset's cluster as this VM last saw it serve.
    canary_cluster: RefCell<Vec<u8>>,
}

impl SharedRevisions {
    /// The table of the coordinator called `name` (`service/reporter`).
    pub fn new(name: &str) -> Self {
        SharedRevisions {
            key: format!("canary-gate/{name}/revisions"),
            cluster_key: format!("canary-gate/{name}/canary-cluster"),
            local: RefCell::default(),
            shown: RefCell::default(),
            canary_cluster: RefCell::default(),
        }
    }

    /// Runs `f` on this VM's table (request path: no host call).
    pub fn with<T>(&self, f: impl FnOnce(&Revisions) -> T) -> T {
        match self.local.try_borrow() {
            Ok(table) => f(&table),
            Err(_) => f(&Revisions::default()),
        }
    }

    /// A response of `version` carried `revision`, for a request started at `started_s`.
    pub fn learn(&self, host: &impl Host, service: &str, version: Version, revision: Revision, started_s: u64) {
        let changed = match self.local.try_borrow_mut() {
            Ok(table) if table.knows(version, revision, started_s) => false,
            Ok(mut table) => {
                let now_s = host.now_micros() / 1_000_000;
                let before = table.serving(version);
                let changed = table.learn(version, revision, started_s, now_s);
                if changed && before != Some(revision) {
                    log::info!(
                        "{service}: the {} subset is now served by revision {} (was {})",
                        if version == Version::Stable { "stable" } else { "canary" },
                        revision.as_str(),
                        before.as_ref().map_or("unknown", |r| r.as_str())
                    );
                }
                changed
            }
            Err(_) => false,
        };
        if changed {
            self.sync(host);
        }
    }

    /// The canary's subset answered "no healthy upstream": its revision is gone (an aborted
    /// canary scaled to zero), so pins to it are released.
    pub fn canary_unavailable(&self, host: &impl Host, service: &str) {
        let now_s = host.now_micros() / 1_000_000;
        let marked = self.local.try_borrow_mut().ok().and_then(|mut t| t.mark_canary_unavailable(now_s));
        if let Some(revision) = marked {
            log::warn!(
                "{service}: canary revision {} has no healthy upstream; its pinned users go where the mesh sends them",
                revision.as_str()
            );
            self.sync(host);
        }
    }

    /// Keeps the canary subset's cluster name (the probe's target) when it changes.
    pub fn note_canary_cluster(&self, host: &impl Host, cluster: &[u8]) {
        if cluster.len() > MAX_CLUSTER_LEN {
            return;
        }
        let Ok(mut known) = self.canary_cluster.try_borrow_mut() else { return };
        if known.as_slice() != cluster {
            known.clear();
            known.extend_from_slice(cluster);
            host.set_shared_data(&self.cluster_key, cluster, None);
        }
    }

    /// The canary subset's cluster, as any VM last saw it serve.
    pub fn canary_cluster(&self, host: &impl Host) -> Option<String> {
        let bytes = host.shared_data(&self.cluster_key).0?;
        String::from_utf8(bytes).ok().filter(|c| !c.is_empty() && c.len() <= MAX_CLUSTER_LEN)
    }

    /// Adopts the facts other VMs published later than ours, and publishes ours if they are
    /// later than the published ones (a lost compare-and-swap retries on the next tick).
    pub fn sync(&self, host: &impl Host) {
        let (value, cas) = host.shared_data(&self.key);
        let published = value.as_deref().and_then(Revisions::decode).unwrap_or_default();
        let Ok(mut table) = self.local.try_borrow_mut() else { return };
        table.merge(&published);
        if table.is_newer_than(&published) {
            host.set_shared_data(&self.key, &table.encode(), cas);
        }
    }

    /// Sets `canary_revision_info` to 1 for the revisions serving now and to 0 for the ones
    /// this VM showed before.
    pub fn show(&self, host: &impl Host, config: &Config, ids: &MetricIds) {
        let (Ok(table), Ok(mut shown)) = (self.local.try_borrow(), self.shown.try_borrow_mut()) else { return };
        for version in Version::BOTH {
            let now = table.serving(version);
            let Some(before) = shown.get_mut(version.index()) else { continue };
            if *before == now {
                continue;
            }
            if let Some(old) = before.as_ref() {
                ids.set_revision_info(host, config, version, old.as_str(), false);
            }
            if let Some(new) = now.as_ref() {
                ids.set_revision_info(host, config, version, new.as_str(), true);
            }
            *before = now;
        }
    }
}
