//! Operators and partitioning: map, filter, flat_map, process with side outputs, keyed process,
//! reduce, union, connect (plain, keyed, broadcast), the partitioners, and parallelism.
mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use weir::prelude::*;
use weir::WeirError;

fn env(p: usize) -> StreamEnv {
    StreamEnv::new().with_parallelism(p)
}

#[test]
fn map_filter_flat_map_transform_and_keep_timestamps() {
    let env = env(1);
    let out = CollectSink::new();
    env.from_collection((1u64..=10).collect())
        .assign_timestamps(
            WatermarkStrategy::monotonous().with_timestamps(|x: &u64, _| *x as i64 * 100),
        )
        .map(|x| x * 2)
        .filter(|x| x % 3 != 0)
        .flat_map(|x| vec![x, x + 1000])
        .sink(out.clone());
    run(&env, "stateless").unwrap();
    let got: Vec<(u64, i64)> = out.records().iter().map(|r| (r.value, r.ts)).collect();
    // x*2 for 1..=10, without multiples of 3: 2 4 8 10 14 16 20 (x = 1 2 4 5 7 8 10)
    let mut want = vec![];
    for x in [1u64, 2, 4, 5, 7, 8, 10] {
        want.push((x * 2, x as i64 * 100));
        want.push((x * 2 + 1000, x as i64 * 100));
    }
    assert_eq!(
        got, want,
        "order is kept in a chain, timestamps follow the records"
    );
}

#[test]
fn filter_map_keeps_the_some_results_in_order_with_their_timestamps() {
    // Per-record watermarks send records down the chain one by one; the default, in batches.
    // Results of the input's layout are written in place, others into a buffer.
    for per_record in [false, true] {
        let env = env(1);
        let same = CollectSink::new();
        let other = CollectSink::new();
        let strategy =
            WatermarkStrategy::monotonous().with_timestamps(|x: &(u64, u64), _| x.0 as i64);
        let strategy = if per_record {
            strategy.per_record()
        } else {
            strategy
        };
        let input = env
            .from_collection((0u64..5000).map(|x| (x, x * 3)).collect())
            .assign_timestamps(strategy);
        input
            .filter_map(|(x, y)| (x % 7 != 3).then_some((y as f64 * 0.5, x as i64)))
            .sink(same.clone());
        input
            .filter_map(|(x, _)| x.is_multiple_of(1000).then_some(x as u8))
            .sink(other.clone());
        run(&env, "filter_map").unwrap();
        let want: Vec<((f64, i64), i64)> = (0u64..5000)
            .filter(|x| x % 7 != 3)
            .map(|x| ((x as f64 * 1.5, x as i64), x as i64))
            .collect();
        let got: Vec<((f64, i64), i64)> = same.records().iter().map(|r| (r.value, r.ts)).collect();
        assert_eq!(got, want, "per_record: {per_record}");
        let got: Vec<(u8, i64)> = other.records().iter().map(|r| (r.value, r.ts)).collect();
        let want: Vec<(u8, i64)> = (0..5).map(|i| ((i * 1000) as u8, i * 1000)).collect();
        assert_eq!(got, want, "per_record: {per_record}");
    }
}

/// Evens on the main output, odds to one side output, multiples of 5 (also) to another.
#[derive(Clone)]
struct Split {
    odd: OutputTag<String>,
    five: OutputTag<u64>,
}

impl ProcessFunction<u64, u64> for Split {
    fn process_element(
        &mut self,
        x: u64,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, u64>,
    ) -> FnResult {
        if x.is_multiple_of(2) {
            out.collect(x);
        } else {
            ctx.output(&self.odd, format!("odd {x}"))?;
        }
        if x.is_multiple_of(5) {
            ctx.output(&self.five, x)?;
        }
        Ok(())
    }
}

#[test]
fn process_with_side_outputs() {
    let env = env(1);
    let odd = OutputTag::<String>::new("odd");
    let five = OutputTag::<u64>::new("five");
    let main = CollectSink::new();
    let odds = CollectSink::new();
    let fives = CollectSink::new();
    let s = env
        .from_collection((1u64..=20).collect())
        .assign_timestamps(WatermarkStrategy::monotonous().with_timestamps(|x: &u64, _| *x as i64))
        .process(Split {
            odd: odd.clone(),
            five: five.clone(),
        });
    s.sink(main.clone());
    // One side output chained into the operator's task, the other across a channel to two
    // subtasks: both must receive everything and end.
    s.side_output(&odd).sink(odds.clone());
    s.side_output(&five)
        .rebalance()
        .sink(fives.clone())
        .set_parallelism(2);
    run(&env, "side outputs").unwrap();
    assert_eq!(main.values(), (1..=10).map(|x| x * 2).collect::<Vec<u64>>());
    assert_eq!(
        odds.values(),
        (0..10)
            .map(|i| format!("odd {}", 2 * i + 1))
            .collect::<Vec<_>>()
    );
    let odd_ts: Vec<i64> = odds.records().iter().map(|r| r.ts).collect();
    assert_eq!(
        odd_ts,
        (0..10).map(|i| 2 * i + 1).collect::<Vec<i64>>(),
        "side output records keep the input timestamp"
    );
    assert_eq!(sorted(&fives), vec![5, 10, 15, 20]);
}

/// Per-key running sum with the subtask that computed it.
#[derive(Clone, Default)]
struct RunningSum {
    sum: ValueState<u64>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64, usize)> for RunningSum {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.sum = s.value_state("sum")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        (k, v): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64, usize)>,
    ) -> FnResult {
        assert_eq!(
            *ctx.current_key(),
            k,
            "the context's key is the record's key"
        );
        let s = self.sum.mutate(
            ctx,
            || 0,
            |s| {
                *s += v;
                *s
            },
        );
        out.collect((k, s, ctx.subtask()));
        Ok(())
    }
}

#[test]
fn keyed_process_keeps_state_per_key_and_order_per_key() {
    let env = env(3);
    let out = CollectSink::new();
    let input: Vec<(u64, u64)> = (0..300u64).map(|i| (i % 7, i)).collect();
    env.from_collection(input.clone())
        .key_by(|r: &(u64, u64)| r.0)
        .process(RunningSum::default())
        .sink(out.clone());
    run(&env, "keyed").unwrap();
    let got = out.values();
    assert_eq!(got.len(), 300);
    for k in 0..7u64 {
        let mut s = 0;
        let want: Vec<u64> = input
            .iter()
            .filter(|r| r.0 == k)
            .map(|r| {
                s += r.1;
                s
            })
            .collect();
        let seen: Vec<u64> = got.iter().filter(|r| r.0 == k).map(|r| r.1).collect();
        assert_eq!(seen, want, "key {k}: records of a key arrive in order");
        let subtasks: BTreeSet<usize> = got.iter().filter(|r| r.0 == k).map(|r| r.2).collect();
        assert_eq!(subtasks.len(), 1, "key {k} was processed on {subtasks:?}");
    }
}

#[test]
fn reduce_is_a_rolling_aggregate_per_key() {
    let env = env(2);
    let out = CollectSink::new();
    let input: Vec<(String, u64)> = ["a", "b", "a", "c", "a", "b"]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), i as u64 + 1))
        .collect();
    env.from_collection(input)
        .key_by(|r: &(String, u64)| r.0.clone())
        .reduce(|a, b| (a.0, a.1 + b.1))
        .sink(out.clone());
    run(&env, "reduce").unwrap();
    let got = out.values();
    let per = |k: &str| -> Vec<u64> { got.iter().filter(|r| r.0 == k).map(|r| r.1).collect() };
    assert_eq!(per("a"), vec![1, 1 + 3, 1 + 3 + 5]);
    assert_eq!(per("b"), vec![2, 2 + 6]);
    assert_eq!(per("c"), vec![4]);
}

#[test]
fn union_of_three_streams() {
    let env = env(2);
    let out = CollectSink::new();
    let a = env.from_collection((0u64..10).collect());
    let b = env.from_collection((100u64..110).collect());
    let c = env.source(Datagen::new(10, |id, _| 1000 + id));
    a.union(&[b, c]).map(|x| x + 1).sink(out.clone());
    run(&env, "union").unwrap();
    let want: Vec<u64> = (0..10)
        .chain(100..110)
        .chain(1000..1010)
        .map(|x| x + 1)
        .collect();
    assert_eq!(sorted(&out), want);
}

#[derive(Clone)]
struct Tag;

impl CoProcessFunction<u64, String, String> for Tag {
    fn process_element1(
        &mut self,
        v: u64,
        _: &mut ProcessContext<'_>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        out.collect(format!("n{v}"));
        Ok(())
    }
    fn process_element2(
        &mut self,
        v: String,
        _: &mut ProcessContext<'_>,
        out: &mut Collector<'_, String>,
    ) -> FnResult {
        out.collect(format!("s{v}"));
        Ok(())
    }
}

#[test]
fn connect_with_co_process_function() {
    let env = env(2);
    let out = CollectSink::new();
    let nums = env.source(Datagen::new(20, |id, _| id));
    let strs = env.from_collection(vec!["x".to_string(), "y".into(), "z".into()]);
    nums.connect(&strs).process(Tag).sink(out.clone());
    run(&env, "connect").unwrap();
    let mut want: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    want.extend(["sx", "sy", "sz"].map(String::from));
    want.sort();
    assert_eq!(sorted(&out), want);
}

/// Joins a name (first input) with an amount (second input) by id, in whichever order they
/// come: the keyed state is shared by both inputs.
#[derive(Clone, Default)]
struct Join {
    name: ValueState<String>,
    amount: ValueState<u64>,
}

impl KeyedCoProcessFunction<u64, (u64, String), (u64, u64), (u64, String, u64)> for Join {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.name = s.value_state("name")?;
        self.amount = s.value_state("amount")?;
        Ok(())
    }
    fn process_element1(
        &mut self,
        (id, name): (u64, String),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, String, u64)>,
    ) -> FnResult {
        match self.amount.take(ctx) {
            Some(a) => out.collect((id, name, a)),
            None => self.name.set(ctx, name),
        }
        Ok(())
    }
    fn process_element2(
        &mut self,
        (id, amount): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, String, u64)>,
    ) -> FnResult {
        match self.name.take(ctx) {
            Some(n) => out.collect((id, n, amount)),
            None => self.amount.set(ctx, amount),
        }
        Ok(())
    }
}

#[test]
fn keyed_connect_shares_state_by_key() {
    let env = env(3);
    let out = CollectSink::new();
    let names = env.from_collection((0u64..50).map(|i| (i, format!("user{i}"))).collect());
    let amounts = env
        .source(Datagen::new(50, |id, _| (49 - id, id * 10)))
        .set_parallelism(2);
    names
        .key_by(|r: &(u64, String)| r.0)
        .connect(&amounts.key_by(|r: &(u64, u64)| r.0))
        .process(Join::default())
        .sink(out.clone());
    run(&env, "keyed connect").unwrap();
    let want: Vec<(u64, String, u64)> = (0u64..50)
        .map(|i| (i, format!("user{i}"), (49 - i) * 10))
        .collect();
    assert_eq!(sorted(&out), want, "every id joined exactly once");
}

#[derive(Clone)]
struct Rules;

impl BroadcastProcessFunction<u64, String, (usize, String)> for Rules {
    type BKey = String;
    type BValue = usize;
    fn process_element(
        &mut self,
        _: u64,
        _: &BroadcastState<String, usize>,
        _: &mut ProcessContext<'_>,
        _: &mut Collector<'_, (usize, String)>,
    ) -> FnResult {
        Ok(())
    }
    fn process_broadcast_element(
        &mut self,
        rule: String,
        state: &mut BroadcastState<String, usize>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, (usize, String)>,
    ) -> FnResult {
        let n = state.len();
        state.put(rule.clone(), n);
        out.collect((ctx.subtask(), format!("{rule}#{}", state.len())));
        Ok(())
    }
}

#[test]
fn broadcast_state_reaches_every_subtask() {
    let env = env(4);
    let out = CollectSink::new();
    let rules = env.from_collection(vec!["r1".to_string(), "r2".into(), "r3".into()]);
    env.source(Datagen::new(100, |id, _| id))
        .connect_broadcast(&rules.as_broadcast())
        .process(Rules)
        .sink(out.clone());
    run(&env, "broadcast").unwrap();
    let mut want = vec![];
    for s in 0..4 {
        for (i, r) in ["r1", "r2", "r3"].iter().enumerate() {
            want.push((s, format!("{r}#{}", i + 1)));
        }
    }
    assert_eq!(
        sorted(&out),
        want,
        "each of the 4 subtasks saw every rule, in order"
    );
}

/// Emits `(subtask, value)`.
#[derive(Clone)]
struct WhereAmI;

impl ProcessFunction<u64, (usize, u64)> for WhereAmI {
    fn process_element(
        &mut self,
        x: u64,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, (usize, u64)>,
    ) -> FnResult {
        out.collect((ctx.subtask(), x));
        Ok(())
    }
}

fn per_subtask(v: &[(usize, u64)]) -> BTreeMap<usize, Vec<u64>> {
    let mut m: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (s, x) in v {
        m.entry(*s).or_default().push(*x);
    }
    m
}

fn partitioned(part: impl Fn(&DataStream<u64>) -> DataStream<u64>) -> Vec<(usize, u64)> {
    let env = env(4);
    let out = CollectSink::new();
    let src = env.from_collection((0u64..100).collect());
    part(&src).process(WhereAmI).sink(out.clone());
    run(&env, "partitioning").unwrap();
    out.values()
}

#[test]
fn rebalance_spreads_over_every_subtask() {
    let got = partitioned(|s| s.rebalance());
    assert_eq!(got.len(), 100);
    let m = per_subtask(&got);
    assert_eq!(m.len(), 4, "all subtasks got records: {m:?}");
    let sizes: Vec<usize> = m.values().map(|v| v.len()).collect();
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "round robin: {sizes:?}"
    );
}

#[test]
fn global_sends_everything_to_subtask_zero() {
    let got = partitioned(|s| s.global());
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|(s, _)| *s == 0), "{got:?}");
    assert_eq!(
        got.iter().map(|r| r.1).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>(),
        "one sender, one receiver: order kept"
    );
}

#[test]
fn partition_custom_picks_the_subtask() {
    let got = partitioned(|s| s.partition_custom(|x, n| (*x as usize * 7) % n));
    assert_eq!(got.len(), 100);
    for (s, x) in &got {
        assert_eq!(*s, (*x as usize * 7) % 4);
    }
}

#[test]
fn partition_custom_out_of_range_is_an_error() {
    let env = env(2);
    env.from_collection((0u64..10).collect())
        .partition_custom(|_, n| n)
        .sink(DiscardSink::new());
    let e = run(&env, "bad custom").unwrap_err();
    assert!(matches!(e, WeirError::Config(_)), "{e}");
}

#[test]
fn broadcast_sends_every_record_to_every_subtask() {
    let got = partitioned(|s| s.broadcast());
    let m = per_subtask(&got);
    assert_eq!(m.len(), 4);
    for v in m.values() {
        assert_eq!(*v, (0..100).collect::<Vec<u64>>());
    }
}

#[test]
fn forward_keeps_records_on_the_same_subtask() {
    let env = env(3);
    let out = CollectSink::new();
    // Datagen subtask i of 3 generates the ids ≡ i (mod 3).
    env.source(Datagen::new(90, |id, _| id))
        .forward()
        .process(WhereAmI)
        .sink(out.clone());
    run(&env, "forward").unwrap();
    let got = out.values();
    assert_eq!(got.len(), 90);
    for (s, x) in &got {
        assert_eq!(*s as u64, x % 3, "record {x} left its subtask");
    }
}

#[test]
fn forward_between_different_parallelisms_is_a_config_error() {
    let env = env(1);
    env.from_collection((0u64..10).collect())
        .forward()
        .map(|x| x + 1)
        .set_parallelism(2)
        .sink(DiscardSink::new());
    let e = run(&env, "bad forward").unwrap_err();
    assert!(matches!(e, WeirError::Config(_)), "{e}");
    assert!(e.to_string().contains("forward"), "{e}");
}

/// Sum and count per key, emitted once at the end of input (an event-time timer that only the
/// final watermark fires): independent of arrival order.
#[derive(Clone, Default)]
struct Total {
    sum: ValueState<(u64, u64)>,
}

impl KeyedProcessFunction<u64, BenchEvent, (u64, u64, u64)> for Total {
    fn open(&mut self, s: &mut StateRegistry<'_, u64>) -> FnResult {
        self.sum = s.value_state("sum")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        e: BenchEvent,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, (u64, u64, u64)>,
    ) -> FnResult {
        self.sum.mutate(
            ctx,
            || (0, 0),
            |s| {
                s.0 += e.price as u64;
                s.1 += 1;
            },
        );
        ctx.register_event_time_timer(i64::MAX - 1);
        Ok(())
    }
    fn on_timer(
        &mut self,
        _: i64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64, u64)>,
    ) -> FnResult {
        let (s, n) = self.sum.get(ctx).unwrap_or_default();
        out.collect((*ctx.current_key(), s, n));
        Ok(())
    }
}

type PipelineOut = (Vec<u64>, Vec<(u64, u64, u64)>, BTreeMap<u64, u64>);

fn pipeline(p: usize) -> PipelineOut {
    let env = env(p);
    let stateless = CollectSink::new();
    let totals = CollectSink::new();
    let counts = CollectSink::new();
    let events = env.source(Datagen::bench(2_000, 13));
    events
        .map(|e| e.id * 3)
        .filter(|x| x % 2 == 0)
        .flat_map(|x| vec![x, x + 1])
        .rebalance()
        .map(|x| x * 10)
        .sink(stateless.clone());
    events
        .key_by(|e: &BenchEvent| e.k)
        .process(Total::default())
        .sink(totals.clone());
    events
        .map(|e| (e.k, 1u64))
        .key_by(|r: &(u64, u64)| r.0)
        .reduce(|a, b| (a.0, a.1 + b.1))
        .sink(counts.clone());
    run(&env, "pipeline").unwrap();
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, n) in counts.values() {
        let e = last.entry(k).or_default();
        *e = (*e).max(n);
    }
    (sorted(&stateless), sorted(&totals), last)
}

#[test]
fn parallelism_one_and_four_give_the_same_results() {
    let one = pipeline(1);
    let four = pipeline(4);
    assert_eq!(one.0.len(), 2_000, "1000 even ids, two records each");
    assert_eq!(one.1.len(), 13);
    assert_eq!(one.1.iter().map(|t| t.2).sum::<u64>(), 2_000);
    assert_eq!(one.2.values().sum::<u64>(), 2_000);
    assert_eq!(one, four);
}

#[test]
fn invalid_parallelism_is_a_config_error() {
    let e2 = env(2).with_max_parallelism(4);
    e2.source(Datagen::new(10, |id, _| id))
        .key_by(|x: &u64| *x)
        .process(Total2)
        .set_parallelism(5)
        .sink(DiscardSink::new());
    let e = run(&e2, "too parallel").unwrap_err();
    assert!(matches!(e, WeirError::Config(_)), "{e}");

    let e1 = env(1);
    e1.from_collection(vec![1u64])
        .set_parallelism(2)
        .sink(DiscardSink::new());
    let e = run(&e1, "collection in parallel").unwrap_err();
    assert!(matches!(e, WeirError::Config(_)), "{e}");

    let e0 = env(1);
    e0.from_collection(vec![1u64])
        .map(|x| x)
        .set_parallelism(0)
        .sink(DiscardSink::new());
    let e = run(&e0, "no subtask").unwrap_err();
    assert!(matches!(e, WeirError::Config(_)), "{e}");
}

#[derive(Clone)]
struct Total2;

impl KeyedProcessFunction<u64, u64, u64> for Total2 {
    fn process_element(
        &mut self,
        x: u64,
        _: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, u64>,
    ) -> FnResult {
        out.collect(x);
        Ok(())
    }
}
