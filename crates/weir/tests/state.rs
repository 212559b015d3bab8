//! Keyed state through a keyed process function's `StateRegistry`: value, list, map, reducing
//! and aggregating state, clearing, and time-to-live on a manual clock.
mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use weir::prelude::*;
use weir::{AggregateFunction, AggregatingState, ManualClock};

/// `sum/count`.
struct Avg;

impl AggregateFunction<i64, (i64, i64), String> for Avg {
    fn create_accumulator(&self) -> (i64, i64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (i64, i64), v: i64) {
        acc.0 += v;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(i64, i64)) -> String {
        format!("{}/{}", acc.0, acc.1)
    }
    fn merge(&self, acc: &mut (i64, i64), other: (i64, i64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

/// The state of one key after an element.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct Snapshot {
    key: String,
    last: Option<i64>,
    list: Vec<i64>,
    map: Vec<(i64, u32)>,
    max: Option<i64>,
    avg: Option<String>,
}

#[derive(Clone, Default)]
struct AllKinds {
    ttl: Option<StateTtl>,
    last: ValueState<i64>,
    list: ListState<i64>,
    map: MapState<i64, u32>,
    max: ReducingState<i64>,
    avg: AggregatingState<i64, (i64, i64), String>,
}

impl AllKinds {
    fn snapshot(&self, ctx: &mut KeyedContext<'_, String>) -> Snapshot {
        let mut map = self.map.entries(ctx);
        map.sort();
        Snapshot {
            key: ctx.current_key().clone(),
            last: self.last.get(ctx),
            list: self.list.get(ctx),
            map,
            max: self.max.get(ctx),
            avg: self.avg.get(ctx),
        }
    }
}

/// Element `(key, v)`: `v > 0` updates every state, `v == 0` only reads, `v < 0` clears
/// everything of the key (and removes `-v` from the map first).
impl KeyedProcessFunction<String, (String, i64), Snapshot> for AllKinds {
    fn open(&mut self, s: &mut StateRegistry<'_, String>) -> FnResult {
        match self.ttl {
            None => {
                self.last = s.value_state("last")?;
                self.list = s.list_state("list")?;
                self.map = s.map_state("map")?;
            }
            Some(ttl) => {
                self.last = s.value_state_with_ttl("last", ttl)?;
                self.list = s.list_state_with_ttl("list", ttl)?;
                self.map = s.map_state_with_ttl("map", ttl)?;
            }
        }
        self.max = s.reducing_state("max", |a: i64, b: i64| a.max(b), self.ttl)?;
        self.avg = s.aggregating_state("avg", Arc::new(Avg), self.ttl)?;
        Ok(())
    }
    fn process_element(
        &mut self,
        (_, v): (String, i64),
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, Snapshot>,
    ) -> FnResult {
        if v > 0 {
            self.last.set(ctx, v);
            self.list.add(ctx, v);
            let n = self.map.get(ctx, &(v % 3)).unwrap_or(0);
            self.map.put(ctx, v % 3, n + 1);
            self.max.add(ctx, v);
            self.avg.add(ctx, v);
        } else if v < 0 {
            let removed = self.map.remove(ctx, &(-v % 3));
            assert!(
                removed.is_some(),
                "removing an existing map entry returns it"
            );
            assert!(!self.map.contains(ctx, &(-v % 3)));
            self.last.clear(ctx);
            self.list.clear(ctx);
            self.map.clear(ctx);
            self.max.clear(ctx);
            self.avg.clear(ctx);
        }
        out.collect(self.snapshot(ctx));
        Ok(())
    }
}

fn snap(key: &str, last: Option<i64>, list: &[i64], max: Option<i64>) -> Snapshot {
    let mut map: BTreeMap<i64, u32> = BTreeMap::new();
    for v in list {
        *map.entry(v % 3).or_default() += 1;
    }
    let avg = (!list.is_empty()).then(|| format!("{}/{}", list.iter().sum::<i64>(), list.len()));
    Snapshot {
        key: key.into(),
        last,
        list: list.to_vec(),
        map: map.into_iter().collect(),
        max,
        avg,
    }
}

#[test]
fn every_kind_of_keyed_state() {
    let env = StreamEnv::new().with_parallelism(2);
    let out = CollectSink::new();
    let input: Vec<(String, i64)> = [
        ("a", 5),
        ("b", 1),
        ("a", 3),
        ("a", 9),
        ("b", 0),
        ("c", 0),
        ("b", -1),
        ("b", 4),
        ("a", 2),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    env.from_collection(input)
        .key_by(|r: &(String, i64)| r.0.clone())
        .process(AllKinds::default())
        .sink(out.clone());
    run(&env, "state").unwrap();
    let got = out.values();
    let of = |k: &str| -> Vec<Snapshot> { got.iter().filter(|s| s.key == k).cloned().collect() };
    assert_eq!(
        of("a"),
        vec![
            snap("a", Some(5), &[5], Some(5)),
            snap("a", Some(3), &[5, 3], Some(5)),
            snap("a", Some(9), &[5, 3, 9], Some(9)),
            snap("a", Some(2), &[5, 3, 9, 2], Some(9)),
        ]
    );
    assert_eq!(
        of("b"),
        vec![
            snap("b", Some(1), &[1], Some(1)),
            snap("b", Some(1), &[1], Some(1)),
            snap("b", None, &[], None),
            snap("b", Some(4), &[4], Some(4)),
        ],
        "cleared state starts over"
    );
    assert_eq!(
        of("c"),
        vec![snap("c", None, &[], None)],
        "no state for a new key"
    );
}

#[test]
fn state_with_ttl_never_returns_expired_values() {
    let clock = ManualClock::new(10_000);
    let env = StreamEnv::new()
        .with_parallelism(1)
        .with_clock(Arc::new(clock.clone()));
    let (tx, src) = feed::<(String, i64)>(1);
    let out = CollectSink::new();
    let s = env
        .source(src)
        .key_by(|r: &(String, i64)| r.0.clone())
        .process(AllKinds {
            ttl: Some(StateTtl::new(secs(1))),
            ..Default::default()
        });
    let (s, l) = probe(&s);
    s.sink(out.clone());
    let h = env.execute_async("ttl").unwrap();
    let mut n = 0;
    // Sends one element and waits for its snapshot.
    let mut step = |k: &str, v: i64| -> Snapshot {
        tx.send(Feed::Emit((k.to_string(), v), 0)).unwrap();
        n += 1;
        wait_until("the element's snapshot", || records(&l).len() == n);
        records(&l)[n - 1].0.clone()
    };
    assert_eq!(step("a", 1), snap("a", Some(1), &[1], Some(1)));
    clock.set(10_999);
    assert_eq!(
        step("a", 0),
        snap("a", Some(1), &[1], Some(1)),
        "alive 999 ms after the write"
    );
    // A write restarts the clock of each entry it touches (the whole list, map, ...).
    assert_eq!(step("a", 2), snap("a", Some(2), &[1, 2], Some(2)));
    clock.set(11_998);
    assert_eq!(step("a", 0), snap("a", Some(2), &[1, 2], Some(2)));
    clock.set(11_999);
    assert_eq!(
        step("a", 0),
        snap("a", None, &[], None),
        "expired exactly 1 s after the last write"
    );
    // An expired value never leaks into an update: it starts from scratch.
    assert_eq!(step("a", 7), snap("a", Some(7), &[7], Some(7)));
    // Much later, after purges had the chance to run.
    clock.set(20_000);
    assert_eq!(step("b", 0), snap("b", None, &[], None));
    assert_eq!(step("a", 0), snap("a", None, &[], None));
    tx.send(Feed::Finish).unwrap();
    join(h).unwrap();
}

/// Per-key counts with the subtask, for the keyed exchange test.
#[derive(Clone, Default)]
struct Count {
    n: ValueState<u64>,
}

impl KeyedProcessFunction<u64, u64, (u64, u64, usize)> for Count {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.n = s.value_state("n")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        k: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64, usize)>,
    ) -> FnResult {
        let n = self.n.mutate(
            ctx,
            || 0,
            |n| {
                *n += 1;
                *n
            },
        );
        out.collect((k, n, ctx.subtask()));
        Ok(())
    }
}

#[test]
fn keyed_exchange_sends_a_key_to_one_subtask_with_its_own_state() {
    let env = StreamEnv::new()
        .with_parallelism(3)
        .with_max_parallelism(32);
    let out = CollectSink::new();
    // Every key comes from all four source subtasks.
    env.source(Datagen::new(4_000, |id, _| (id * 7) % 101))
        .set_parallelism(4)
        .key_by(|k: &u64| *k)
        .process(Count::default())
        .sink(out.clone());
    run(&env, "keyed exchange").unwrap();
    let got = out.values();
    assert_eq!(got.len(), 4_000);
    let mut by_key: BTreeMap<u64, Vec<(u64, usize)>> = BTreeMap::new();
    for (k, n, s) in got {
        by_key.entry(k).or_default().push((n, s));
    }
    assert_eq!(by_key.len(), 101);
    let mut used = std::collections::BTreeSet::new();
    for (k, v) in &by_key {
        let subtask = v[0].1;
        assert!(
            v.iter().all(|x| x.1 == subtask),
            "key {k} on several subtasks"
        );
        // The owner is the one of the key's key group.
        let kg = weir_types::keygroup::key_group(k, 32);
        assert_eq!(
            subtask,
            weir_types::keygroup::subtask_for_key_group(kg, 3, 32)
        );
        used.insert(subtask);
        // Per-key state: counts 1..=n, each once, whatever other keys share the subtask.
        let mut counts: Vec<u64> = v.iter().map(|x| x.0).collect();
        counts.sort();
        assert_eq!(counts, (1..=v.len() as u64).collect::<Vec<_>>(), "key {k}");
    }
    assert_eq!(used.len(), 3, "keys spread over every subtask");
}
