//! `assign_timestamps` as an operator (when it cannot be fused into the source): assigns
//! timestamps and generates watermarks from the records it sees, ignoring upstream watermarks
//! except the final one.
use weir_runtime::watermark::{Generator, WatermarkEmit};
use weir_runtime::{OneInputOperator, OperatorContext, Output, WatermarkStrategy};
use weir_types::{Record, Result, Watermark, WatermarkStatus};

pub(crate) struct TimestampsOp<T> {
    pub strategy: WatermarkStrategy<T>,
    pub gen: Generator,
    pub emitted: i64,
    pub next_periodic_ms: i64,
    pub interval_ms: i64,
    pub last_record_ms: i64,
    pub idle: bool,
}

impl<T> TimestampsOp<T> {
    pub fn new(strategy: WatermarkStrategy<T>, interval_ms: i64) -> Self {
        let gen = Generator::new(strategy.out_of_orderness_ms());
        TimestampsOp {
            strategy,
            gen,
            emitted: i64::MIN,
            next_periodic_ms: 0,
            interval_ms,
            last_record_ms: i64::MIN,
            idle: false,
        }
    }
    fn emit(&mut self, out: &mut dyn Output<T>) -> Result<()> {
        let wm = self.gen.current();
        if wm > self.emitted {
            self.emitted = wm;
            out.watermark(Watermark(wm))?;
        }
        Ok(())
    }
}

impl<T: 'static> OneInputOperator<T, T> for TimestampsOp<T> {
    fn process(
        &mut self,
        rec: Record<T>,
        ctx: &mut OperatorContext,
        out: &mut dyn Output<T>,
    ) -> Result<()> {
        let ts = self.strategy.timestamp(&rec.value, rec.ts);
        self.gen.on_event(ts);
        if self.idle {
            self.idle = false;
            out.status(WatermarkStatus::Active)?;
        }
        if self.strategy.idle_timeout().is_some() {
            self.last_record_ms = ctx.clock.now_ms();
        }
        out.collect(Record {
            ts,
            value: rec.value,
        })?;
        if self.strategy.emit_mode() == WatermarkEmit::PerRecord {
            self.emit(out)?;
        }
        Ok(())
    }
    fn on_watermark(
        &mut self,
        wm: Watermark,
        _: &mut OperatorContext,
        out: &mut dyn Output<T>,
    ) -> Result<()> {
        if wm == Watermark::MAX {
            self.emitted = i64::MAX;
            out.watermark(wm)?;
        }
        Ok(())
    }
    fn on_status(
        &mut self,
        _: WatermarkStatus,
        _: &mut OperatorContext,
        _: &mut dyn Output<T>,
    ) -> Result<()> {
        Ok(())
    }
    fn next_deadline(&mut self) -> Option<i64> {
        let periodic =
            (self.strategy.emit_mode() == WatermarkEmit::Periodic).then_some(self.next_periodic_ms);
        // Idleness is checked on its own deadline: per-record mode has no periodic one.
        let idle = match self.strategy.idle_timeout() {
            Some(t) if !self.idle && self.last_record_ms != i64::MIN => {
                Some(self.last_record_ms.saturating_add(t))
            }
            _ => None,
        };
        match (periodic, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn on_processing_time(
        &mut self,
        now: i64,
        _: &mut OperatorContext,
        out: &mut dyn Output<T>,
    ) -> Result<()> {
        if let Some(t) = self.strategy.idle_timeout() {
            if !self.idle && self.last_record_ms != i64::MIN && now - self.last_record_ms >= t {
                self.idle = true;
                out.status(WatermarkStatus::Idle)?;
            }
        }
        if self.strategy.emit_mode() == WatermarkEmit::Periodic && now >= self.next_periodic_ms {
            self.next_periodic_ms = now + self.interval_ms;
            self.emit(out)?;
        }
        Ok(())
    }
}
