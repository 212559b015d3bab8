//! # weir-postgres
//!
//! Enrichment by lookup in PostgreSQL: [`PgLookup`] runs one parameterised query per key on a
//! small pool of `tokio-postgres` connections, behind a bounded cache with a time to live
//! ([`LookupCache`]); [`enrich`] plugs it into a stream through Weir's async I/O operator
//! (`async_map`) and applies a policy for keys without a row ([`MissingRow`]).
//!
//! ```no_run
//! use weir::prelude::*;
//! use weir_postgres::{enrich, MissingRow, PgLookup};
//! use std::time::Duration;
//!
//! #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
//! struct Device { make: String, region: String }
//!
//! let lookup = PgLookup::new(
//!     "postgres://weir:weir@127.0.0.1:5432/weir",
//!     "SELECT make, region FROM devices WHERE device_id = $1",
//!     |row| Ok(Device { make: row.try_get(0)?, region: row.try_get(1)? }),
//! )
//! .cache(100_000, Duration::from_secs(60));
//! let env = StreamEnv::new();
//! let readings = env.from_collection(vec![(1i64, 20.5f64), (2, 21.0)]);
//! let out = enrich(
//!     &readings,
//!     lookup,
//!     |r: &(i64, f64)| r.0,
//!     MissingRow::SideOutput,
//!     AsyncOptions::unordered().with_capacity(64).with_max_attempts(3),
//! );
//! out.main.sink(Stdout::new());
//! out.missing.sink(Stdout::new());
//! env.execute("enrich").unwrap();
//! ```
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};
use weir::functions::{Collector, FnResult, ProcessContext, ProcessFunction};
use weir::{AsyncOptions, BoxError, Data, DataStream, OutputTag};

pub use tokio_postgres;
pub use tokio_postgres::Row;

/// A bounded map with a time to live, shared by every subtask of a lookup. A key's entry
/// (a value, or "no row") is served for `ttl` after it was loaded; when `max_entries` are held,
/// loading another evicts the oldest loaded.
pub struct LookupCache<K, V> {
    max_entries: usize,
    ttl: Duration,
    inner: Mutex<CacheInner<K, V>>,
    stats: Arc<LookupStats>,
}

struct CacheInner<K, V> {
    map: HashMap<K, (Instant, Option<V>)>,
    /// Keys in load order with their load time (stale pairs are skipped at eviction).
    order: VecDeque<(K, Instant)>,
}

impl<K: Hash + Eq + Clone, V: Clone> LookupCache<K, V> {
    /// A cache of at most `max_entries` (0: no caching) entries, each valid `ttl`.
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        LookupCache {
            max_entries,
            ttl,
            inner: Mutex::new(CacheInner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            stats: Arc::default(),
        }
    }

    /// `Some(entry)` when `k` is cached and fresh (`entry` is `None` for "no row").
    pub fn get(&self, k: &K) -> Option<Option<V>> {
        let mut g = self.inner.lock().unwrap();
        match g.map.get(k) {
            Some((at, v)) if at.elapsed() < self.ttl => {
                self.stats.hits.fetch_add(1, Relaxed);
                Some(v.clone())
            }
            Some(_) => {
                g.map.remove(k);
                self.stats.expired.fetch_add(1, Relaxed);
                None
            }
            None => None,
        }
    }

    /// Caches `v` for `k`, evicting the oldest entries beyond `max_entries`.
    pub fn put(&self, k: K, v: Option<V>) {
        if self.max_entries == 0 {
            return;
        }
        let now = Instant::now();
        let mut g = self.inner.lock().unwrap();
        g.map.insert(k.clone(), (now, v));
        g.order.push_back((k, now));
        while g.map.len() > self.max_entries {
            let Some((old, at)) = g.order.pop_front() else {
                break;
            };
            if g.map.get(&old).is_some_and(|(t, _)| *t == at) {
                g.map.remove(&old);
                self.stats.evicted.fetch_add(1, Relaxed);
            }
        }
        // Keep the order queue from growing without bound when keys are reloaded often.
        if g.order.len() > 2 * self.max_entries + 16 {
            let CacheInner { map, order } = &mut *g;
            order.retain(|(k, at)| map.get(k).is_some_and(|(t, _)| t == at));
        }
    }

    /// Entries held (fresh or not yet purged).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().map.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counters of a lookup, over all subtasks.
#[derive(Debug, Default)]
pub struct LookupStats {
    /// Answers without a query of their own: from the cache, or from the query of another
    /// lookup of the same key under way.
    pub hits: AtomicU64,
    /// Queries sent to PostgreSQL.
    pub queries: AtomicU64,
    /// Queries that found no row.
    pub not_found: AtomicU64,
    /// Queries (or connections) that failed.
    pub errors: AtomicU64,
    /// Entries evicted because the cache was full.
    pub evicted: AtomicU64,
    /// Entries found too old and reloaded.
    pub expired: AtomicU64,
}

type RowFn<V> = Arc<dyn Fn(&Row) -> Result<V, BoxError> + Send + Sync>;

struct Conn {
    client: Client,
    stmt: Statement,
}

struct PgInner<K, V> {
    url: String,
    query: String,
    map_row: RowFn<V>,
    cache: LookupCache<K, V>,
    /// A small pool: slot i holds a connection once one was opened (and again after a failure).
    slots: Vec<tokio::sync::Mutex<Option<Conn>>>,
    next: AtomicUsize,
    /// Keys being queried, with the lookups waiting for the same answer (one query per key at
    /// a time, however many records ask).
    inflight: Mutex<HashMap<K, Vec<Waiter<V>>>>,
}

type Waiter<V> = tokio::sync::oneshot::Sender<Result<Option<V>, String>>;

/// A cached lookup of one row per key in PostgreSQL, e.g.
/// `SELECT make, model, region, owner FROM devices WHERE device_id = $1`. Cloning it shares the
/// connections and the cache. Connections are opened on first use, on Weir's I/O runtime; a
/// connection that failed is reopened by the next lookup through it.
pub struct PgLookup<K, V> {
    inner: Arc<PgInner<K, V>>,
}

impl<K, V> Clone for PgLookup<K, V> {
    fn clone(&self) -> Self {
        PgLookup {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> PgLookup<K, V>
where
    K: ToSql + Sync + Send + Hash + Eq + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A lookup running `query` (one parameter, `$1`: the key) on the database at `url`
    /// (`postgres://user:password@host:port/db`), turning the first row into a value with
    /// `map_row`. Defaults: 4 connections, a cache of 10 000 entries for 60 s.
    pub fn new(
        url: impl Into<String>,
        query: impl Into<String>,
        map_row: impl Fn(&Row) -> Result<V, BoxError> + Send + Sync + 'static,
    ) -> Self {
        Self::build(
            url.into(),
            query.into(),
            Arc::new(map_row),
            4,
            LookupCache::new(10_000, Duration::from_secs(60)),
        )
    }

    fn build(
        url: String,
        query: String,
        map_row: RowFn<V>,
        connections: usize,
        cache: LookupCache<K, V>,
    ) -> Self {
        PgLookup {
            inner: Arc::new(PgInner {
                url,
                query,
                map_row,
                cache,
                slots: (0..connections.max(1))
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect(),
                next: AtomicUsize::new(0),
                inflight: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn rebuild(self, connections: usize, cache: LookupCache<K, V>) -> Self {
        let i = &self.inner;
        Self::build(
            i.url.clone(),
            i.query.clone(),
            i.map_row.clone(),
            connections,
            cache,
        )
    }

    /// Caches at most `max_entries` keys (0: no cache), each for `ttl`.
    pub fn cache(self, max_entries: usize, ttl: Duration) -> Self {
        let n = self.inner.slots.len();
        self.rebuild(n, LookupCache::new(max_entries, ttl))
    }

    /// Connections in the pool (default 4).
    pub fn connections(self, n: usize) -> Self {
        let c = &self.inner.cache;
        let cache = LookupCache::new(c.max_entries, c.ttl);
        self.rebuild(n, cache)
    }

    /// The lookup's counters.
    pub fn stats(&self) -> Arc<LookupStats> {
        self.inner.cache.stats.clone()
    }

    /// The cache (to inspect or pre-load).
    pub fn cache_ref(&self) -> &LookupCache<K, V> {
        &self.inner.cache
    }

    /// The value for `key`: from the cache when fresh, else from PostgreSQL (`None`: no row).
    /// Must run on a Tokio runtime (Weir's async operators do).
    pub fn get(
        &self,
        key: K,
    ) -> impl Future<Output = Result<Option<V>, BoxError>> + Send + 'static {
        let this = self.clone();
        async move {
            let inner = &this.inner;
            if let Some(v) = inner.cache.get(&key) {
                return Ok(v);
            }
            // Another lookup of this key is under way: wait for its answer.
            let waiting = {
                let mut f = inner.inflight.lock().unwrap();
                match f.get_mut(&key) {
                    Some(waiters) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        waiters.push(tx);
                        Some(rx)
                    }
                    None => {
                        f.insert(key.clone(), Vec::new());
                        None
                    }
                }
            };
            if let Some(rx) = waiting {
                inner.cache.stats.hits.fetch_add(1, Relaxed);
                return match rx.await {
                    Ok(r) => r.map_err(Into::into),
                    Err(_) => Err("the lookup this one waited for was cancelled".into()),
                };
            }
            // If this future is dropped (a timeout), the waiters learn it and the key is free.
            let mut guard = Inflight {
                map: &inner.inflight,
                key: Some(key.clone()),
            };
            let r = this.query(&key).await;
            match &r {
                Ok(v) => {
                    if v.is_none() {
                        inner.cache.stats.not_found.fetch_add(1, Relaxed);
                    }
                    inner.cache.put(key.clone(), v.clone());
                }
                Err(_) => {
                    inner.cache.stats.errors.fetch_add(1, Relaxed);
                }
            }
            let waiters = inner.inflight.lock().unwrap().remove(&key);
            guard.key = None;
            for w in waiters.unwrap_or_default() {
                let _ = w.send(r.as_ref().map(Clone::clone).map_err(|e| e.to_string()));
            }
            r
        }
    }

    async fn query(&self, key: &K) -> Result<Option<V>, BoxError> {
        let inner = &self.inner;
        let i = inner.next.fetch_add(1, Relaxed) % inner.slots.len();
        let mut slot = inner.slots[i].lock().await;
        let usable = matches!(slot.as_ref(), Some(c) if !c.client.is_closed());
        if !usable {
            *slot = None;
            let (client, conn) = tokio_postgres::connect(&inner.url, NoTls)
                .await
                .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!("PostgreSQL connection closed: {e}");
                }
            });
            let stmt = client
                .prepare(&inner.query)
                .await
                .map_err(|e| format!("preparing '{}': {e}", inner.query))?;
            *slot = Some(Conn { client, stmt });
        }
        let c = slot.as_ref().expect("connected above");
        inner.cache.stats.queries.fetch_add(1, Relaxed);
        let rows = match c.client.query(&c.stmt, &[key]).await {
            Ok(r) => r,
            Err(e) => {
                if c.client.is_closed() {
                    *slot = None;
                }
                return Err(format!("'{}': {e}", inner.query).into());
            }
        };
        drop(slot);
        rows.first().map(|r| (inner.map_row)(r)).transpose()
    }
}

/// Frees a key's in-flight entry when its query is abandoned.
struct Inflight<'a, K: Hash + Eq, V> {
    map: &'a Mutex<HashMap<K, Vec<Waiter<V>>>>,
    key: Option<K>,
}

impl<K: Hash + Eq, V> Drop for Inflight<'_, K, V> {
    fn drop(&mut self) {
        // Still armed: the query was abandoned. Dropping the waiters' senders tells them.
        if let Some(k) = self.key.take() {
            if let Ok(mut m) = self.map.lock() {
                m.remove(&k);
            }
        }
    }
}

/// What [`enrich`] does with a record whose key has no row.
#[derive(Clone, Debug)]
pub enum MissingRow<V> {
    /// Leave it out.
    Drop,
    /// Pass it on with this value (e.g. every field `"unknown"`).
    Default(V),
    /// Send it to [`Enriched::missing`].
    SideOutput,
}

/// The outcome of [`enrich`].
pub struct Enriched<T, V> {
    /// Records with their looked-up value (or the default).
    pub main: DataStream<(T, V)>,
    /// Records without a row, under [`MissingRow::SideOutput`] (empty otherwise).
    pub missing: DataStream<T>,
}

/// A looked-up record, before the missing-row policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Looked<T, V> {
    Found(T, V),
    Missing(T),
}

#[derive(Clone)]
struct ApplyPolicy<V> {
    policy: MissingRow<V>,
    tag_id: String,
}

impl<T: Data, V: Data> ProcessFunction<Looked<T, V>, (T, V)> for ApplyPolicy<V> {
    fn process_element(
        &mut self,
        value: Looked<T, V>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, (T, V)>,
    ) -> FnResult {
        match value {
            Looked::Found(t, v) => out.collect((t, v)),
            Looked::Missing(t) => match &self.policy {
                MissingRow::Drop => {}
                MissingRow::Default(v) => out.collect((t, v.clone())),
                MissingRow::SideOutput => ctx.output(&OutputTag::<T>::new(&self.tag_id), t)?,
            },
        }
        Ok(())
    }
}

/// Enriches each record of `stream` with the value `lookup` finds for `key(record)`, through
/// `async_map` with `options` (capacity, timeout, retries of failed queries, order). Records
/// whose key has no row follow `policy`.
pub fn enrich<T, K, V>(
    stream: &DataStream<T>,
    lookup: PgLookup<K, V>,
    key: impl Fn(&T) -> K + Clone + Send + Sync + 'static,
    policy: MissingRow<V>,
    options: AsyncOptions,
) -> Enriched<T, V>
where
    T: Data + Sync,
    K: ToSql + Sync + Send + Hash + Eq + Clone + 'static,
    V: Data + Sync,
{
    let looked = stream
        .async_map(options, move |t: T| {
            let fut = lookup.get(key(&t));
            async move {
                Ok(match fut.await? {
                    Some(v) => Looked::Found(t, v),
                    None => Looked::Missing(t),
                })
            }
        })
        .name("pg_lookup");
    let tag_id = "pg_lookup_missing".to_string();
    let main = looked
        .process(ApplyPolicy {
            policy,
            tag_id: tag_id.clone(),
        })
        .name("missing_row_policy");
    let missing = main.side_output(&OutputTag::<T>::new(&tag_id));
    Enriched { main, missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_expires() {
        let c: LookupCache<u32, String> = LookupCache::new(2, Duration::from_millis(200));
        c.put(1, Some("a".into()));
        c.put(2, None);
        assert_eq!(c.get(&1), Some(Some("a".into())));
        assert_eq!(c.get(&2), Some(None), "a missing row is cached too");
        c.put(3, Some("c".into()));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&1), None, "the oldest loaded is evicted");
        assert_eq!(c.stats.evicted.load(Relaxed), 1);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(c.get(&3), None, "expired");
        // Reloading a key many times keeps the order queue bounded.
        for i in 0..1000 {
            c.put(7, Some(i.to_string()));
        }
        assert!(c.inner.lock().unwrap().order.len() <= 2 * 2 + 16 + 1);
        let off: LookupCache<u32, u32> = LookupCache::new(0, Duration::from_secs(1));
        off.put(1, Some(1));
        assert!(off.is_empty());
    }
}
