//! Two-input operators: co-process (non-keyed and keyed) and broadcast-connected processing.
use crate::functions::{
    user_result, CoProcessFunction, Collector, KeyedCoProcessFunction, ProcessContext,
    StateRegistry, TimeDomain,
};
use crate::operators::keyed::{KeyFn, KeyedCore};
use crate::stream::BroadcastState;
use weir_runtime::checkpoint::{CheckpointBarrier, OperatorSnapshot};
use weir_runtime::{OperatorContext, Output, TwoInputOperator};
use weir_types::{Data, Key, Record, Result, Watermark};

pub(crate) struct CoProcessOp<F>(pub F);

impl<A, B, Out, F: CoProcessFunction<A, B, Out>> TwoInputOperator<A, B, Out> for CoProcessOp<F> {
    fn process1(
        &mut self,
        rec: Record<A>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        let mut c = Collector::new(out, rec.ts);
        let r = self.0.process_element1(
            rec.value,
            &mut ProcessContext {
                op: ctx,
                ts: rec.ts,
            },
            &mut c,
        );
        c.finish()?;
        user_result(r, ctx)
    }
    fn process2(
        &mut self,
        rec: Record<B>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        let mut c = Collector::new(out, rec.ts);
        let r = self.0.process_element2(
            rec.value,
            &mut ProcessContext {
                op: ctx,
                ts: rec.ts,
            },
            &mut c,
        );
        c.finish()?;
        user_result(r, ctx)
    }
}

pub(crate) struct KeyedCoProcessOp<K: Key, A, B, F> {
    pub f: F,
    pub key1: KeyFn<A, K>,
    pub key2: KeyFn<B, K>,
    pub core: KeyedCore<K>,
}

impl<K: Key, A: 'static, B: 'static, F> KeyedCoProcessOp<K, A, B, F> {
    fn fire<Out: 'static>(
        &mut self,
        ts: i64,
        domain: TimeDomain,
        key: K,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()>
    where
        F: KeyedCoProcessFunction<K, A, B, Out>,
    {
        let f = &mut self.f;
        self.core.call(key, ts, Some(domain), ctx, out, |kc, c| {
            f.on_timer(ts, kc, c)
        })
    }
}

impl<K: Key, A: 'static, B: 'static, Out: 'static, F: KeyedCoProcessFunction<K, A, B, Out>>
    TwoInputOperator<A, B, Out> for KeyedCoProcessOp<K, A, B, F>
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let r = self.f.open(&mut StateRegistry {
            store: &mut self.core.store,
        });
        self.core.after_open(ctx);
        user_result(r, ctx)
    }
    fn process1(
        &mut self,
        rec: Record<A>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        let (key, f) = ((self.key1)(&rec.value), &mut self.f);
        self.core.call(key, rec.ts, None, ctx, out, |kc, c| {
            f.process_element1(rec.value, kc, c)
        })
    }
    fn process2(
        &mut self,
        rec: Record<B>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        let (key, f) = ((self.key2)(&rec.value), &mut self.f);
        self.core.call(key, rec.ts, None, ctx, out, |kc, c| {
            f.process_element2(rec.value, kc, c)
        })
    }
    fn snapshot(
        &mut self,
        b: &CheckpointBarrier,
        ctx: &mut OperatorContext,
        _: &mut dyn Output<Out>,
    ) -> Result<OperatorSnapshot> {
        self.core.snapshot(b, ctx)
    }
    fn notify_checkpoint_complete(&mut self, id: u64, _: &mut OperatorContext) -> Result<()> {
        self.core.checkpoint_complete(id);
        Ok(())
    }
    fn on_watermark(
        &mut self,
        wm: Watermark,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        while let Some((ts, key, ())) = self.core.timers.event.pop_due(wm.0) {
            self.fire(ts, TimeDomain::EventTime, key, ctx, out)?;
        }
        out.watermark(wm)
    }
    fn next_deadline(&mut self) -> Option<i64> {
        self.core.next_deadline()
    }
    fn on_processing_time(
        &mut self,
        now: i64,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        while let Some((ts, key, ())) = self.core.timers.processing.pop_due(now) {
            self.fire(ts, TimeDomain::ProcessingTime, key, ctx, out)?;
        }
        self.core.maybe_purge(now);
        Ok(())
    }
}

/// A function over a stream connected to a broadcast stream (rules pushed to every subtask).
/// Broadcast state is the same on every subtask: only the broadcast side may change it.
pub trait BroadcastProcessFunction<In, R, Out>: Clone + Send + 'static {
    /// Broadcast state key.
    type BKey: Data + std::hash::Hash + Eq;
    /// Broadcast state value.
    type BValue: Data;
    /// A record of the main stream; broadcast state is read-only here.
    fn process_element(
        &mut self,
        value: In,
        state: &BroadcastState<Self::BKey, Self::BValue>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, Out>,
    ) -> crate::functions::FnResult;
    /// A broadcast record (a rule); may change broadcast state.
    fn process_broadcast_element(
        &mut self,
        value: R,
        state: &mut BroadcastState<Self::BKey, Self::BValue>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, Out>,
    ) -> crate::functions::FnResult;
}

pub(crate) struct BroadcastOp<F: BroadcastProcessFunction<In, R, Out>, In, R, Out> {
    pub f: F,
    pub state: BroadcastState<F::BKey, F::BValue>,
    pub _p: std::marker::PhantomData<fn(In, R, Out)>,
}

impl<In: 'static, R: 'static, Out: 'static, F: BroadcastProcessFunction<In, R, Out>>
    TwoInputOperator<In, R, Out> for BroadcastOp<F, In, R, Out>
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        if let Some(entry) = ctx.restored.as_ref().and_then(|r| r.operator.first()) {
            let entries: Vec<(F::BKey, F::BValue)> = postcard::from_bytes(entry)
                .map_err(|e| ctx.operator_error(format!("restoring broadcast state: {e}")))?;
            for (k, v) in entries {
                self.state.put(k, v);
            }
        }
        Ok(())
    }
    fn snapshot(
        &mut self,
        _: &CheckpointBarrier,
        ctx: &mut OperatorContext,
        _: &mut dyn Output<Out>,
    ) -> Result<OperatorSnapshot> {
        // Identical on every subtask: subtask 0 keeps it for all (any parallelism on restore).
        if ctx.subtask != 0 {
            return Ok(OperatorSnapshot::default());
        }
        let entries: Vec<(&F::BKey, &F::BValue)> = self.state.iter().collect();
        let bytes = postcard::to_allocvec(&entries)
            .map_err(|e| ctx.operator_error(format!("snapshotting broadcast state: {e}")))?;
        Ok(OperatorSnapshot {
            operator: vec![bytes],
            ..Default::default()
        })
    }

    fn process1(
        &mut self,
        rec: Record<In>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        let mut c = Collector::new(out, rec.ts);
        let r = self.f.process_element(
            rec.value,
            &self.state,
            &mut ProcessContext {
                op: ctx,
                ts: rec.ts,
            },
            &mut c,
        );
        c.finish()?;
        user_result(r, ctx)
    }
    fn process2(
        &mut self,
        rec: Record<R>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        let mut c = Collector::new(out, rec.ts);
        let r = self.f.process_broadcast_element(
            rec.value,
            &mut self.state,
            &mut ProcessContext {
                op: ctx,
                ts: rec.ts,
            },
            &mut c,
        );
        c.finish()?;
        user_result(r, ctx)
    }
}
