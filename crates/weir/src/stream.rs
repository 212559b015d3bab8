//! Typed streams: the builder API over the job graph.
use crate::env::StreamEnv;
use crate::functions::{
    CoProcessFunction, KeyedCoProcessFunction, KeyedProcessFunction, ProcessFunction,
};
use crate::operators::basic::{FilterMapOp, FilterOp, FlatMapOp, MapOp, ProcessOp, TryMapOp};
use crate::operators::co::{BroadcastOp, BroadcastProcessFunction, CoProcessOp, KeyedCoProcessOp};
use crate::operators::keyed::{KeyFn, KeyedCore, KeyedProcessOp, ReduceOp};
use crate::operators::sink::{Sink, SinkOp};
use crate::operators::timestamps::TimestampsOp;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use weir_runtime::channel::Partition;
use weir_runtime::graph::{Edge, NodeId, NodeKind, OneInputNode, TypedEdge, DEAD_LETTER_TAG};
use weir_runtime::two_input::TwoInputNode;
use weir_runtime::{
    BadRecordPolicy, DeadLetter, OneInputOperator, OperatorContext, TwoInputOperator,
    WatermarkStrategy,
};
use weir_types::keygroup::key_hash;
use weir_types::{BoxError, Data, Key, Result};

/// Names a typed side output.
///
/// ```
/// let late: weir::OutputTag<String> = weir::OutputTag::new("late");
/// ```
pub struct OutputTag<T> {
    id: Arc<str>,
    _p: PhantomData<fn() -> T>,
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        OutputTag {
            id: self.id.clone(),
            _p: PhantomData,
        }
    }
}

impl<T> OutputTag<T> {
    /// A tag with a unique name.
    pub fn new(id: &str) -> Self {
        OutputTag {
            id: id.into(),
            _p: PhantomData,
        }
    }
    /// Its name.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Broadcast state: identical on every subtask, changed only by broadcast elements.
#[derive(Debug, Clone)]
pub struct BroadcastState<K, V> {
    map: HashMap<K, V>,
}

impl<K, V> Default for BroadcastState<K, V> {
    fn default() -> Self {
        BroadcastState {
            map: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V> BroadcastState<K, V> {
    /// The value under `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }
    /// Sets the value under `k`.
    pub fn put(&mut self, k: K, v: V) {
        self.map.insert(k, v);
    }
    /// Removes `k`.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k)
    }
    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One upstream of a stream: a node's main or side output, and how to partition it.
pub(crate) struct Up<T> {
    pub node: NodeId,
    pub tag: Option<String>,
    pub partition: Partition<T>,
}

impl<T> Clone for Up<T> {
    fn clone(&self) -> Self {
        Up {
            node: self.node,
            tag: self.tag.clone(),
            partition: self.partition.clone(),
        }
    }
}

/// A stream of records of type `T`. Operations add operators to the job and return the new
/// stream; nothing runs until [`StreamEnv::execute`].
pub struct DataStream<T> {
    pub(crate) env: StreamEnv,
    pub(crate) ups: Vec<Up<T>>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            env: self.env.clone(),
            ups: self.ups.clone(),
        }
    }
}

impl<T: Data> DataStream<T> {
    pub(crate) fn from_node(env: StreamEnv, node: NodeId) -> Self {
        DataStream {
            env,
            ups: vec![Up {
                node,
                tag: None,
                partition: Partition::Auto,
            }],
        }
    }

    /// The node this stream comes from (its first upstream for a union).
    pub(crate) fn node(&self) -> NodeId {
        self.ups[0].node
    }

    /// Adds edges from every upstream to input `input` of `to`.
    pub(crate) fn connect_to(&self, to: NodeId, input: usize) {
        let mut inner = self.env.inner.borrow_mut();
        for up in &self.ups {
            inner.graph.add_edge(Edge {
                from: up.node,
                to,
                input,
                tag: up.tag.clone(),
                ty: Arc::new(TypedEdge::<T> {
                    partition: up.partition.clone(),
                }),
            });
        }
    }

    /// Adds a one-input operator fed by this stream.
    pub fn add_operator<Out: Data, Op: OneInputOperator<T, Out>>(
        &self,
        name: &str,
        make: impl Fn(&OperatorContext) -> Result<Op> + Send + Sync + 'static,
    ) -> DataStream<Out> {
        let node = self
            .env
            .add_operator_node(name, Arc::new(OneInputNode::<T, Out, Op, _>::new(make)));
        self.connect_to(node, 0);
        DataStream::from_node(self.env.clone(), node)
    }

    /// Transforms each record.
    pub fn map<Out: Data>(
        &self,
        f: impl FnMut(T) -> Out + Clone + Send + Sync + 'static,
    ) -> DataStream<Out> {
        self.add_operator("map", move |_| Ok(MapOp::new(f.clone())))
    }

    /// Keeps the records for which `f` is true.
    pub fn filter(
        &self,
        f: impl FnMut(&T) -> bool + Clone + Send + Sync + 'static,
    ) -> DataStream<T> {
        self.add_operator("filter", move |_| Ok(FilterOp(f.clone())))
    }

    /// Keeps the records for which `f` returns `Some`, transformed: a filter and a map in one
    /// function and one pass over each batch (`.filter_map(|e| (e.price > 5000).then(|| ...))`),
    /// as a SQL planner compiles `SELECT ... WHERE` into one operator. A result of the input's
    /// size and alignment is written in place of its input.
    pub fn filter_map<Out: Data>(
        &self,
        f: impl FnMut(T) -> Option<Out> + Clone + Send + Sync + 'static,
    ) -> DataStream<Out> {
        self.add_operator("filter_map", move |_| Ok(FilterMapOp::new(f.clone())))
    }

    /// Turns each record into zero or more.
    pub fn flat_map<Out: Data, I: IntoIterator<Item = Out> + 'static>(
        &self,
        f: impl FnMut(T) -> I + Clone + Send + Sync + 'static,
    ) -> DataStream<Out> {
        self.add_operator("flat_map", move |_| Ok(FlatMapOp::new(f.clone())))
    }

    /// A map that may fail; failures follow `policy` (fail the job, drop and count, or send to
    /// [`DataStream::dead_letters`] with the record as JSON).
    pub fn try_map<Out: Data, E: Into<BoxError> + 'static>(
        &self,
        policy: BadRecordPolicy,
        f: impl FnMut(T) -> std::result::Result<Out, E> + Clone + Send + Sync + 'static,
    ) -> DataStream<Out> {
        let s = self.add_operator("try_map", move |_| {
            Ok(TryMapOp {
                f: f.clone(),
                policy,
            })
        });
        if policy == BadRecordPolicy::DeadLetter {
            self.env
                .inner
                .borrow_mut()
                .dead_letter_producers
                .push(s.node());
        }
        s
    }

    /// Runs a [`ProcessFunction`] on each record.
    pub fn process<Out: Data>(&self, f: impl ProcessFunction<T, Out> + Sync) -> DataStream<Out> {
        self.add_operator("process", move |_| Ok(ProcessOp::new(f.clone())))
    }

    /// Assigns event timestamps and generates watermarks. Right after a source, generation
    /// happens inside the source per split (partition, file), so one slow split cannot make the
    /// others' records late; elsewhere it is an operator.
    pub fn assign_timestamps(&self, strategy: WatermarkStrategy<T>) -> DataStream<T> {
        if self.ups.len() == 1
            && self.ups[0].tag.is_none()
            && matches!(self.ups[0].partition, Partition::Auto)
        {
            let node = self.ups[0].node;
            let mut inner = self.env.inner.borrow_mut();
            let fused = match &inner.graph.nodes[node].kind {
                NodeKind::Source(s) if !inner.graph.edges.iter().any(|e| e.from == node) => {
                    s.with_strategy(&strategy)
                }
                _ => None,
            };
            if let Some(s) = fused {
                inner.graph.nodes[node].kind = NodeKind::Source(s);
                return self.clone();
            }
        }
        let interval = self.env.inner.borrow().cfg.auto_watermark_interval_ms;
        self.add_operator("timestamps", move |_| {
            Ok(TimestampsOp::new(strategy.clone(), interval))
        })
    }

    /// Partitions by key: records with equal keys go to the same subtask, where keyed state and
    /// timers are scoped to the key.
    pub fn key_by<K: Key>(&self, f: impl Fn(&T) -> K + Send + Sync + 'static) -> KeyedStream<T, K> {
        let key: KeyFn<T, K> = Arc::new(f);
        let k2 = key.clone();
        let stream = self.with_partition(Partition::Hash(Arc::new(move |t: &T| key_hash(&k2(t)))));
        KeyedStream { stream, key }
    }

    /// Adds a one-input operator chained right after this stream's upstream operators,
    /// whatever partitioning this stream was given, with their parallelism when they share
    /// one (a stage that must run before an exchange: local aggregation).
    pub(crate) fn add_chained_operator<Out: Data, Op: OneInputOperator<T, Out>>(
        &self,
        name: &str,
        make: impl Fn(&OperatorContext) -> Result<Op> + Send + Sync + 'static,
    ) -> DataStream<Out> {
        let out = self
            .with_partition(Partition::Auto)
            .add_operator(name, make);
        let ps: Vec<usize> = {
            let inner = self.env.inner.borrow();
            self.ups
                .iter()
                .map(|u| inner.graph.nodes[u.node].parallelism)
                .collect()
        };
        if ps.windows(2).all(|w| w[0] == w[1]) {
            out.set_parallelism(ps[0])
        } else {
            out
        }
    }

    fn with_partition(&self, p: Partition<T>) -> DataStream<T> {
        let mut s = self.clone();
        for up in &mut s.ups {
            up.partition = p.clone();
        }
        s
    }

    /// Round-robin to the next operator's subtasks.
    pub fn rebalance(&self) -> DataStream<T> {
        self.with_partition(Partition::Rebalance)
    }
    /// Subtask i to subtask i (the next operator must have the same parallelism).
    pub fn forward(&self) -> DataStream<T> {
        self.with_partition(Partition::Forward)
    }
    /// Every record to every subtask of the next operator.
    pub fn broadcast(&self) -> DataStream<T> {
        self.with_partition(Partition::Broadcast)
    }
    /// Everything to subtask 0 of the next operator.
    pub fn global(&self) -> DataStream<T> {
        self.with_partition(Partition::Global)
    }
    /// `f(record, n)` picks the subtask out of `n`.
    pub fn partition_custom(
        &self,
        f: impl Fn(&T, usize) -> usize + Send + Sync + 'static,
    ) -> DataStream<T> {
        self.with_partition(Partition::Custom(Arc::new(f)))
    }

    /// Merges streams of the same type.
    pub fn union(&self, others: &[DataStream<T>]) -> DataStream<T> {
        let mut s = self.clone();
        for o in others {
            s.ups.extend(o.ups.iter().cloned());
        }
        s
    }

    /// Connects another stream for a two-input operator.
    pub fn connect<B: Data>(&self, other: &DataStream<B>) -> ConnectedStreams<T, B> {
        ConnectedStreams {
            a: self.clone(),
            b: other.clone(),
        }
    }

    /// Connects a broadcast stream (rules for every subtask).
    pub fn connect_broadcast<R: Data>(
        &self,
        rules: &BroadcastStream<R>,
    ) -> BroadcastConnectedStreams<T, R> {
        BroadcastConnectedStreams {
            a: self.clone(),
            rules: rules.stream.clone(),
        }
    }

    /// This stream as a broadcast stream, to connect to another stream.
    pub fn as_broadcast(&self) -> BroadcastStream<T> {
        BroadcastStream {
            stream: self.broadcast(),
        }
    }

    /// The side output `tag` of this stream's operator.
    pub fn side_output<S: Data>(&self, tag: &OutputTag<S>) -> DataStream<S> {
        DataStream {
            env: self.env.clone(),
            ups: vec![Up {
                node: self.node(),
                tag: Some(tag.id().to_string()),
                partition: Partition::Auto,
            }],
        }
    }

    /// Records rejected by this stream's operator (or source) under the dead-letter policy.
    pub fn dead_letters(&self) -> DataStream<DeadLetter> {
        DataStream {
            env: self.env.clone(),
            ups: vec![Up {
                node: self.node(),
                tag: Some(DEAD_LETTER_TAG.to_string()),
                partition: Partition::Auto,
            }],
        }
    }

    /// For a source stream: what to do with input it cannot decode.
    pub fn on_bad_record(&self, policy: BadRecordPolicy) -> DataStream<T> {
        let node = self.node();
        let mut inner = self.env.inner.borrow_mut();
        let replaced = match &inner.graph.nodes[node].kind {
            NodeKind::Source(s) => Some(s.with_policy(policy)),
            _ => None,
        };
        match replaced {
            Some(s) => inner.graph.nodes[node].kind = NodeKind::Source(s),
            None => {
                let name = inner.graph.nodes[node].name.clone();
                inner.config_errors.push(format!(
                    "on_bad_record applies to sources, and '{name}' is not one (use try_map's policy for operators)"
                ));
            }
        }
        self.clone()
    }

    /// Writes the stream to a sink.
    pub fn sink(&self, sink: impl Sink<T>) -> DataStream<()> {
        let sink = Arc::new(sink);
        let name = sink.name();
        let committer = sink.committer();
        let c2 = committer.clone();
        let s = self.add_operator(&name, move |ctx| {
            let mut writer = sink.create_writer(ctx.subtask, ctx.parallelism)?;
            writer.open(ctx)?;
            if let Some(r) = &ctx.restored {
                writer.restore(&r.operator)?;
            }
            Ok(SinkOp {
                writer,
                committer: c2.clone(),
            })
        });
        self.env.inner.borrow_mut().graph.nodes[s.node()].committer = committer;
        s
    }

    /// Sets this stream's operator uid: its identity in checkpoints and savepoints. Set it on
    /// stateful operators to restore their state after the job graph changes.
    pub fn uid(self, uid: &str) -> Self {
        self.env.inner.borrow_mut().graph.nodes[self.node()].uid = Some(uid.to_string());
        self
    }

    /// Names this stream's operator (in errors, metrics and logs).
    pub fn name(self, name: &str) -> Self {
        self.env.inner.borrow_mut().graph.nodes[self.node()].name = name.to_string();
        self
    }

    /// Sets this stream's operator parallelism.
    pub fn set_parallelism(self, p: usize) -> Self {
        self.env.inner.borrow_mut().graph.nodes[self.node()].parallelism = p;
        self
    }

    /// Keeps this stream's operator out of chains (its own task and thread).
    pub fn disable_chaining(self) -> Self {
        self.env.inner.borrow_mut().graph.nodes[self.node()].chainable = false;
        self
    }

    /// The environment.
    pub fn env(&self) -> &StreamEnv {
        &self.env
    }
}

/// A stream partitioned by key.
pub struct KeyedStream<T, K> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key: KeyFn<T, K>,
}

impl<T, K> Clone for KeyedStream<T, K> {
    fn clone(&self) -> Self {
        KeyedStream {
            stream: self.stream.clone(),
            key: self.key.clone(),
        }
    }
}

impl<T: Data, K: Key> KeyedStream<T, K> {
    /// Runs a [`KeyedProcessFunction`] with keyed state and timers.
    pub fn process<Out: Data>(
        &self,
        f: impl KeyedProcessFunction<K, T, Out> + Sync,
    ) -> DataStream<Out> {
        let key = self.key.clone();
        self.stream.add_operator("keyed_process", move |ctx| {
            KeyedProcessOp::new(f.clone(), key.clone(), ctx)
        })
    }

    /// A rolling reduce per key: emits the accumulated value after each record.
    pub fn reduce(
        &self,
        f: impl FnMut(T, T) -> T + Clone + Send + Sync + 'static,
    ) -> DataStream<T> {
        let key = self.key.clone();
        self.stream.add_operator("reduce", move |ctx| {
            Ok(ReduceOp {
                f: f.clone(),
                key: key.clone(),
                core: KeyedCore::new(ctx)?,
                state: Default::default(),
            })
        })
    }

    /// Connects another stream keyed by the same key type: both sides share keyed state.
    pub fn connect<B: Data>(&self, other: &KeyedStream<B, K>) -> KeyedConnectedStreams<T, B, K> {
        KeyedConnectedStreams {
            a: self.clone(),
            b: other.clone(),
        }
    }

    /// The key extractor.
    pub fn key_fn(&self) -> Arc<dyn Fn(&T) -> K + Send + Sync> {
        self.key.clone()
    }

    /// The partitioned stream (without the key).
    pub fn stream(&self) -> &DataStream<T> {
        &self.stream
    }
}

fn add_two_input<A: Data, B: Data, Out: Data, Op: TwoInputOperator<A, B, Out>>(
    a: &DataStream<A>,
    b: &DataStream<B>,
    name: &str,
    make: impl Fn(&OperatorContext) -> Result<Op> + Send + Sync + 'static,
) -> DataStream<Out> {
    let node = a
        .env
        .add_operator_node(name, Arc::new(TwoInputNode::<A, B, Out, Op, _>::new(make)));
    a.connect_to(node, 0);
    b.connect_to(node, 1);
    DataStream::from_node(a.env.clone(), node)
}

/// Two streams connected for a two-input operator.
pub struct ConnectedStreams<A, B> {
    a: DataStream<A>,
    b: DataStream<B>,
}

impl<A: Data, B: Data> ConnectedStreams<A, B> {
    /// Runs a [`CoProcessFunction`].
    pub fn process<Out: Data>(
        &self,
        f: impl CoProcessFunction<A, B, Out> + Sync,
    ) -> DataStream<Out> {
        add_two_input(&self.a, &self.b, "co_process", move |_| {
            Ok(CoProcessOp(f.clone()))
        })
    }
}

/// Two keyed streams connected: keyed state and timers are shared by key.
pub struct KeyedConnectedStreams<A, B, K> {
    a: KeyedStream<A, K>,
    b: KeyedStream<B, K>,
}

impl<A: Data, B: Data, K: Key> KeyedConnectedStreams<A, B, K> {
    /// Runs a [`KeyedCoProcessFunction`].
    pub fn process<Out: Data>(
        &self,
        f: impl KeyedCoProcessFunction<K, A, B, Out> + Sync,
    ) -> DataStream<Out> {
        let (k1, k2) = (self.a.key.clone(), self.b.key.clone());
        add_two_input(
            &self.a.stream,
            &self.b.stream,
            "keyed_co_process",
            move |ctx| {
                Ok(KeyedCoProcessOp {
                    f: f.clone(),
                    key1: k1.clone(),
                    key2: k2.clone(),
                    core: KeyedCore::new(ctx)?,
                })
            },
        )
    }
}

/// A stream whose every record reaches every subtask of the operator it is connected to.
pub struct BroadcastStream<R> {
    stream: DataStream<R>,
}

/// A stream connected to a broadcast stream.
pub struct BroadcastConnectedStreams<A, R> {
    a: DataStream<A>,
    rules: DataStream<R>,
}

impl<A: Data, R: Data> BroadcastConnectedStreams<A, R> {
    /// Runs a [`BroadcastProcessFunction`].
    pub fn process<Out: Data, F: BroadcastProcessFunction<A, R, Out> + Sync>(
        &self,
        f: F,
    ) -> DataStream<Out> {
        add_two_input(&self.a, &self.rules, "broadcast_process", move |_| {
            Ok(BroadcastOp::<F, A, R, Out> {
                f: f.clone(),
                state: BroadcastState::default(),
                _p: PhantomData,
            })
        })
    }
}
