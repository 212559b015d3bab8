//! State backends by name, for `--state-backend NAME[:ARG]`: the built-in `memory` and
//! `memory-bytes`, and any a backend crate registers (`weir_rocksdb::register()` adds `disk`),
//! so that the API crate does not depend on heavy backends at compile time.
use crate::store::{BytesMemoryBackend, MemoryBackend, StateBackend};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

/// What a backend is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendSpec {
    /// The text after `NAME:`, if any (a disk backend's directory).
    pub arg: Option<String>,
    /// The memory the backend may use for its caches and buffers (`--state-memory`).
    pub memory_budget_bytes: Option<u64>,
}

/// Builds a backend from a spec.
pub type BackendConstructor =
    Arc<dyn Fn(&BackendSpec) -> Result<Arc<dyn StateBackend>, String> + Send + Sync>;

fn registry() -> &'static RwLock<BTreeMap<String, BackendConstructor>> {
    static R: OnceLock<RwLock<BTreeMap<String, BackendConstructor>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Makes `--state-backend NAME` build a backend with `ctor`.
pub fn register_backend(name: &str, ctor: BackendConstructor) {
    registry()
        .write()
        .expect("backend registry")
        .insert(name.to_string(), ctor);
}

/// The backend named by `spec` (`NAME` or `NAME:ARG`).
pub fn backend_from_spec(
    spec: &str,
    memory_budget_bytes: Option<u64>,
) -> Result<Arc<dyn StateBackend>, String> {
    let (name, arg) = match spec.split_once(':') {
        Some((n, a)) => (n, Some(a.to_string())),
        None => (spec, None),
    };
    match (name, &arg) {
        ("memory", None) => return Ok(Arc::new(MemoryBackend)),
        ("memory-bytes", None) => return Ok(Arc::new(BytesMemoryBackend)),
        ("memory" | "memory-bytes", Some(_)) => {
            return Err(format!("state backend '{name}' takes no argument"))
        }
        _ => {}
    }
    let ctor = registry()
        .read()
        .expect("backend registry")
        .get(name)
        .cloned();
    match ctor {
        Some(c) => c(&BackendSpec {
            arg,
            memory_budget_bytes,
        }),
        None => {
            let mut known = vec!["memory".to_string(), "memory-bytes".to_string()];
            known.extend(registry().read().expect("backend registry").keys().cloned());
            let hint = if name == "disk" {
                " ('disk' is in the weir-rocksdb crate: call weir_rocksdb::register() before parsing options)"
            } else {
                ""
            };
            Err(format!(
                "unknown state backend '{name}' (available: {}){hint}",
                known.join(", ")
            ))
        }
    }
}
