//! Stateless operators: map, filter, flat_map, try_map, and non-keyed process.
use crate::functions::{user_result, Collector, ProcessContext, ProcessFunction};
use weir_runtime::{BadRecordPolicy, OneInputOperator, OperatorContext, Output};
use weir_types::{BoxError, Data, Record, Result};

pub(crate) struct MapOp<F>(pub F);

impl<In, Out, F: FnMut(In) -> Out + 'static> OneInputOperator<In, Out> for MapOp<F> {
    #[inline]
    fn process(
        &mut self,
        rec: Record<In>,
        _: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        out.collect(Record {
            ts: rec.ts,
            value: (self.0)(rec.value),
        })
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
}

pub(crate) struct FlatMapOp<F>(pub F);

impl<In, Out, I: IntoIterator<Item = Out>, F: FnMut(In) -> I + 'static> OneInputOperator<In, Out>
    for FlatMapOp<F>
{
    #[inline]
    fn process(
        &mut self,
        rec: Record<In>,
        _: &mut OperatorContext,
        out: &mut dyn Output<Out>,
    ) -> Result<()> {
        for v in (self.0)(rec.value) {
            out.collect(Record {
                ts: rec.ts,
                value: v,
            })?;
        }
        Ok(())
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

pub(crate) struct ProcessOp<F>(pub F);

impl<In, Out, F: ProcessFunction<In, Out>> OneInputOperator<In, Out> for ProcessOp<F> {
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let r = self.0.open(&mut ProcessContext {
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
        let mut c = Collector::new(out, rec.ts);
        let r = self.0.process_element(
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
    fn end_input(&mut self, ctx: &mut OperatorContext, out: &mut dyn Output<Out>) -> Result<()> {
        // After the final watermark: output has no event time (it would be late anywhere).
        let mut c = Collector::new(out, weir_types::NO_TIMESTAMP);
        let r = self.0.on_end(
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
