//! Stateless operators: map, filter, flat_map, try_map, and non-keyed process.
use crate::functions::{user_result, Collector, ProcessContext, ProcessFunction};
use weir_runtime::{BadRecordPolicy, OneInputOperator, OperatorContext, Output, VecOutput};
use weir_types::{BoxError, Data, Record, Result};

/// Whether a vector of `A` can hold `B`s in its allocation: one size (not zero), one alignment.
const fn same_layout<A, B>() -> bool {
    std::mem::size_of::<A>() == std::mem::size_of::<B>()
        && std::mem::align_of::<A>() == std::mem::align_of::<B>()
        && std::mem::size_of::<A>() != 0
}

/// `v` mapped by `f`, in `v`'s allocation when [`same_layout`] (std collects a vector's own
/// iterator in place then; the test below holds it to that).
#[inline]
fn map_in_place<A, B>(v: Vec<A>, f: impl FnMut(A) -> B) -> Vec<B> {
    v.into_iter().map(f).collect()
}

/// `v` filtered and mapped by `f`, in `v`'s allocation when [`same_layout`] (as
/// [`map_in_place`]).
#[inline]
fn filter_map_in_place<A, B>(v: Vec<A>, f: impl FnMut(A) -> Option<B>) -> Vec<B> {
    v.into_iter().filter_map(f).collect()
}

/// Passes on `results`, made in the allocation of the batch they replace (the two record types
/// have the [`same_layout`]), then gives that allocation back, empty, as `batch`, for the
/// producer to refill.
fn pass_on_in_place<In, Out>(
    mut results: Vec<Record<Out>>,
    batch: &mut Vec<Record<In>>,
    out: &mut dyn Output<Out>,
) -> Result<()> {
    let r = out.collect_batch(&mut results);
    results.clear();
    *batch = map_in_place(results, |_| unreachable!("cleared"));
    r
}

pub(crate) struct MapOp<F, Out> {
    f: F,
    /// A batch's results.
    buf: Vec<Record<Out>>,
}

impl<F, Out> MapOp<F, Out> {
    pub fn new(f: F) -> Self {
        MapOp { f, buf: Vec::new() }
    }
}

impl<In, Out: 'static, F: FnMut(In) -> Out + 'static> OneInputOperator<In, Out> for MapOp<F, Out> {
    #[inline]
    fn process(
        &mut self,
        rec: Record<In>,
        _: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        out.collect(Record {
            ts: rec.ts,
            value: (self.f)(rec.value),
        })
    }
    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<In>>,
        _: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        let MapOp { f, buf } = self;
        let map = |r: Record<In>| Record {
            ts: r.ts,
            value: f(r.value),
        };
        if same_layout::<Record<In>, Record<Out>>() {
            // Each result goes where its input was: no second buffer to bring into the
            // cache (~8 % less CPU for `projfilter`). The allocation then goes back to the
            // producer, to be refilled.
            let mapped = map_in_place(std::mem::take(batch), map);
            return pass_on_in_place(mapped, batch, out);
        }
        buf.extend(batch.drain(..).map(map));
        out.collect_batch(buf)
    }
}

pub(crate) struct FilterOp<F>(pub F);

impl<T, F: FnMut(&T) -> bool + 'static> OneInputOperator<T, T> for FilterOp<F> {
    #[inline]
    fn process(
        &mut self,
        rec: Record<T>,
        _: &mut OperatorContext,
        out: &mut dyn Output<T>,
    ) -> Result<()> {
        if (self.0)(&rec.value) {
            out.collect(rec)
        } else {
            Ok(())
        }
    }
    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<T>>,
        _: &mut OperatorContext,
        out: &mut dyn Output<T>,
    ) -> Result<()> {
        batch.retain(|r| (self.0)(&r.value));
        out.collect_batch(batch)
    }
}

/// A filter and a map in one function, run in one pass over a batch: what a query planner makes
/// of `SELECT f(x) ... WHERE p(x)` (Flink's `Calc`).
pub(crate) struct FilterMapOp<F, Out> {
    f: F,
    /// A batch's results.
    buf: Vec<Record<Out>>,
}

impl<F, Out> FilterMapOp<F, Out> {
    pub fn new(f: F) -> Self {
        FilterMapOp { f, buf: Vec::new() }
    }
}

impl<In, Out: 'static, F: FnMut(In) -> Option<Out> + 'static> OneInputOperator<In, Out>
    for FilterMapOp<F, Out>
{
    #[inline]
    fn process(
        &mut self,
        rec: Record<In>,
        _: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        match (self.f)(rec.value) {
            Some(value) => out.collect(Record { ts: rec.ts, value }),
            None => Ok(()),
        }
    }
    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<In>>,
        _: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        let FilterMapOp { f, buf } = self;
        let filter_map = |r: Record<In>| {
            let ts = r.ts;
            f(r.value).map(|value| Record { ts, value })
        };
        if same_layout::<Record<In>, Record<Out>>() {
            // Kept results are written over the batch's front, as the input is read: one pass,
            // no second buffer; the allocation then goes back to the producer.
            let kept = filter_map_in_place(std::mem::take(batch), filter_map);
            return pass_on_in_place(kept, batch, out);
        }
        buf.extend(batch.drain(..).filter_map(filter_map));
        out.collect_batch(buf)
    }
}

pub(crate) struct FlatMapOp<F, Out> {
    f: F,
    /// A batch's results.
    buf: Vec<Record<Out>>,
}

impl<F, Out> FlatMapOp<F, Out> {
    pub fn new(f: F) -> Self {
        FlatMapOp { f, buf: Vec::new() }
    }
}

impl<In, Out: 'static, I: IntoIterator<Item = Out>, F: FnMut(In) -> I + 'static>
    OneInputOperator<In, Out> for FlatMapOp<F, Out>
{
    #[inline]
    fn process(
        &mut self,
        rec: Record<In>,
        _: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        for v in (self.f)(rec.value) {
            out.collect(Record {
                ts: rec.ts,
                value: v,
            })?;
        }
        Ok(())
    }
    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<In>>,
        _: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        let FlatMapOp { f, buf } = self;
        for r in batch.drain(..) {
            let ts = r.ts;
            buf.extend(f(r.value).into_iter().map(|value| Record { ts, value }));
        }
        out.collect_batch(buf)
    }
}

/// A fallible map: an `Err` follows the bad-record policy.
pub(crate) struct TryMapOp<F> {
    pub f: F,
    pub policy: BadRecordPolicy,
}

impl<In: Data, Out, E: Into<BoxError>, F: FnMut(In) -> std::result::Result<Out, E> + 'static>
    OneInputOperator<In, Out> for TryMapOp<F>
{
    #[inline]
    fn process(
        &mut self,
        rec: Record<In>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        // Keep the input only if a dead letter may need it.
        let keep = (self.policy == BadRecordPolicy::DeadLetter).then(|| rec.value.clone());
        match (self.f)(rec.value) {
            Ok(v) => out.collect(Record {
                ts: rec.ts,
                value: v,
            }),
            Err(e) => {
                let e: BoxError = e.into();
                ctx.reject(self.policy, e.to_string(), || {
                    keep.map(|v| serde_json::to_vec(&v).unwrap_or_default())
                        .unwrap_or_default()
                })
            }
        }
    }
}

pub(crate) struct ProcessOp<F, Out> {
    f: F,
    /// A batch's results.
    buf: VecOutput<Out>,
}

impl<F, Out> ProcessOp<F, Out> {
    pub fn new(f: F) -> Self {
        ProcessOp {
            f,
            buf: VecOutput::default(),
        }
    }
}

impl<F, Out: 'static> ProcessOp<F, Out> {
    #[inline]
    fn process_one<In>(
        &mut self,
        rec: Record<In>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()>
    where
        F: ProcessFunction<In, Out>,
    {
        let mut c = Collector::new(out, rec.ts);
        let r = self.f.process_element(
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

impl<In, Out: 'static, F: ProcessFunction<In, Out>> OneInputOperator<In, Out>
    for ProcessOp<F, Out>
{
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let r = self.f.open(&mut ProcessContext {
            op: ctx,
            ts: weir_types::NO_TIMESTAMP,
        });
        user_result(r, ctx)
    }
    #[inline]
    fn process(
        &mut self,
        rec: Record<In>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        self.process_one(rec, ctx, out)
    }
    fn process_batch(
        &mut self,
        batch: &mut Vec<Record<In>>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = weir_types::drain_each(batch, |rec| self.process_one(rec, ctx, &mut buf));
        // What was emitted before an error goes on, as it would record by record.
        let sent = out.collect_batch(&mut buf.buf);
        self.buf = buf;
        r.and(sent)
    }
    fn end_input(&mut self, ctx: &mut OperatorContext, out: &mut dyn Output<Out>) -> Result<()> {
        // After the final watermark: output has no event time (it would be late anywhere).
        let mut c = Collector::new(out, weir_types::NO_TIMESTAMP);
        let r = self.f.on_end(
            &mut ProcessContext {
                op: ctx,
                ts: weir_types::NO_TIMESTAMP,
            },
            &mut c,
        );
        c.finish()?;
        user_result(r, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_between_records_of_one_layout_keeps_the_allocation() {
        assert!(same_layout::<Record<(u64, u32)>, Record<(f64, i64)>>());
        assert!(!same_layout::<Record<u8>, Record<[u64; 2]>>());
        let v: Vec<Record<(u64, u32)>> = (0..1000).map(|i| Record::new(i, (i as u64, 7))).collect();
        let (ptr, cap) = (v.as_ptr() as usize, v.capacity());
        let mut out = map_in_place(v, |r| Record::new(r.ts, (r.value.0 as f64 * 0.5, -r.ts)));
        assert_eq!((out.as_ptr() as usize, out.capacity()), (ptr, cap));
        assert_eq!(out[999].value, (499.5, -999));
        out.clear();
        let back: Vec<Record<(u64, u32)>> = map_in_place(out, |_| unreachable!());
        assert_eq!(
            (back.as_ptr() as usize, back.capacity(), back.len()),
            (ptr, cap, 0)
        );
    }

    #[test]
    fn a_filter_map_between_records_of_one_layout_keeps_the_allocation() {
        let v: Vec<Record<(u64, u32)>> = (0..1000).map(|i| Record::new(i, (i as u64, 7))).collect();
        let (ptr, cap) = (v.as_ptr() as usize, v.capacity());
        let out = filter_map_in_place(v, |r| {
            (r.value.0 % 3 == 0).then(|| Record::new(r.ts, (r.value.0 as f64 * 0.5, -r.ts)))
        });
        assert_eq!((out.as_ptr() as usize, out.capacity()), (ptr, cap));
        assert_eq!(out.len(), 334);
        assert_eq!((out[1].ts, out[1].value), (3, (1.5, -3)));
        assert_eq!(out[333].value, (499.5, -999));
    }
}
