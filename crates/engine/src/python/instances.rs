//! Class instances: each lives in a dedicated worker, keyed by `instance_id`, so its
//! state persists across requests; idle ones are reaped.

use crate::python::worker::Worker;
use runlog_protocol::function::InstanceInfo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

/// One live instance. Held behind an async mutex: calls on one instance run one at a
/// time, as they would in the single process that owns it.
#[derive(Debug)]
pub struct Instance {
    /// The worker holding the object.
    pub worker: Worker,
    /// Its class.
    pub class_name: String,
    /// When it was constructed.
    pub created_at: SystemTime,
    /// Methods called so far.
    pub method_calls: u64,
    /// When it was last used (wall clock, for the answer).
    pub last_used: SystemTime,
    /// When it was last used (monotonic, for reaping).
    pub last_used_at: Instant,
}

impl Instance {
    /// A fresh instance record around a worker that has constructed the object.
    pub fn new(worker: Worker, class_name: String) -> Self {
        let now = SystemTime::now();
        Instance {
            worker,
            class_name,
            created_at: now,
            method_calls: 0,
            last_used: now,
            last_used_at: Instant::now(),
        }
    }

    /// Records one method call.
    pub fn touch(&mut self) {
        self.method_calls += 1;
        self.last_used = SystemTime::now();
        self.last_used_at = Instant::now();
    }

    /// The wire view.
    pub fn info(&self) -> InstanceInfo {
        InstanceInfo {
            class_name: self.class_name.clone(),
            created_at: runlog_protocol::format_time(self.created_at),
            method_calls: self.method_calls,
            last_used: runlog_protocol::format_time(self.last_used),
        }
    }
}

/// A shared handle on one instance.
pub type InstanceHandle = Arc<tokio::sync::Mutex<Instance>>;

/// Every live instance of a runtime.
#[derive(Debug, Default)]
pub struct Instances {
    map: Mutex<HashMap<String, InstanceHandle>>,
}

impl Instances {
    /// The instance with this id, if alive.
    pub fn get(&self, id: &str) -> Option<InstanceHandle> {
        self.lock().get(id).cloned()
    }

    /// Stores an instance under `id`, replacing (and so stopping) any previous one.
    pub fn insert(&self, id: String, instance: InstanceHandle) {
        self.lock().insert(id, instance);
    }

    /// Forgets an instance (its worker stops when the last handle goes).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// How many instances are alive.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops instances unused for `idle`; busy ones (locked by a call) are kept.
    /// Returns the ids reaped.
    pub fn reap(&self, idle: Duration) -> Vec<String> {
        let mut map = self.lock();
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, inst)| {
                inst.try_lock()
                    .is_ok_and(|i| i.last_used_at.elapsed() >= idle)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            map.remove(id);
        }
        expired
    }

    /// Reaps every quarter of `idle` (between 50 ms and a minute) until `instances` is
    /// dropped.
    pub fn spawn_reaper(instances: Weak<Instances>, idle: Duration) {
        let period = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(instances) = instances.upgrade() else {
                    return;
                };
                for id in instances.reap(idle) {
                    tracing::info!(target: "runlog::python", "instance {id} idle for {idle:?}: stopped");
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, InstanceHandle>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `<ClassName>_<8 hex>`, the id given to an instance created without one.
pub fn generate_id(class_name: &str) -> String {
    format!("{class_name}_{:08x}", rand::random::<u32>())
}
