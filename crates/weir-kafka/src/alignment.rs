//! Watermark alignment: readers of one alignment group (in this process: Weir runs a job in one
//! process) publish the minimum watermark of their active partitions; a partition whose
//! watermark runs more than `max_drift` ahead of the group's minimum is paused (rdkafka's
//! `pause`), and resumed once the others have caught up.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Settings of watermark alignment (Flink's `withWatermarkAlignment`).
#[derive(Debug, Clone)]
pub struct WatermarkAlignment {
    /// Sources (and their subtasks) with the same group name align with each other.
    pub group: String,
    /// How far a partition's watermark may run ahead of the group's minimum.
    pub max_drift: Duration,
    /// How often readers publish their watermark and re-check.
    pub update_interval: Duration,
}

impl WatermarkAlignment {
    /// Aligns with the other members of `group`, allowing `max_drift`, re-checked every 100 ms.
    pub fn new(group: impl Into<String>, max_drift: Duration) -> Self {
        WatermarkAlignment {
            group: group.into(),
            max_drift,
            update_interval: Duration::from_millis(100),
        }
    }
    /// How often readers publish their watermark and re-check (default 100 ms).
    pub fn with_update_interval(mut self, d: Duration) -> Self {
        self.update_interval = d;
        self
    }
}

#[derive(Default)]
struct Group {
    /// Reader id → the minimum watermark of its active partitions (`None`: nothing active).
    members: Mutex<HashMap<u64, Option<i64>>>,
}

fn groups() -> &'static Mutex<HashMap<String, Arc<Group>>> {
    static G: OnceLock<Mutex<HashMap<String, Arc<Group>>>> = OnceLock::new();
    G.get_or_init(Default::default)
}

/// A reader's membership of an alignment group; leaves the group when dropped.
pub(crate) struct Member {
    id: u64,
    group: Arc<Group>,
}

impl Member {
    pub(crate) fn join(name: &str) -> Member {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let group = groups()
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone();
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        group.members.lock().unwrap().insert(id, None);
        Member { id, group }
    }

    /// Publishes this reader's minimum; returns the group's minimum over members that have
    /// active partitions (`None` if none has).
    pub(crate) fn update(&self, local_min: Option<i64>) -> Option<i64> {
        let mut m = self.group.members.lock().unwrap();
        m.insert(self.id, local_min);
        m.values().flatten().copied().min()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Ok(mut m) = self.group.members.lock() {
            m.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_minimum_over_members_with_active_partitions() {
        let a = Member::join("t-align");
        let b = Member::join("t-align");
        assert_eq!(a.update(Some(100)), Some(100));
        assert_eq!(b.update(None), Some(100));
        assert_eq!(b.update(Some(40)), Some(40));
        drop(b);
        assert_eq!(a.update(Some(100)), Some(100));
    }
}
