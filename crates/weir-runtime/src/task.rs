//! The loops that run a task: reading channels (or polling a source), pushing into the chain,
//! flushing, firing processing-time timers, and stopping on end of input or cancellation.
use crate::channel::{Message, Receiver};
use crate::context::{CancelToken, OperatorContext};
use crate::operator::{guard, panic_message};
use crate::output::{Control, Output};
use crate::source::{Poll, SourceOutput, SourceReader};
use crate::watermark::Valve;
use crossbeam_channel as cb;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;
use weir_types::codec::Buffer;
use weir_types::{Clock, Data, Result, Watermark, WatermarkStatus, WeirError};

/// The longest a task blocks before it checks for cancellation (ms).
const POLL_CANCEL_MS: i64 = 100;

/// Wakes a task from another thread (an async completion): its operators then get
/// [`Control::Wake`]. Wake-ups coalesce.
#[derive(Clone)]
pub struct TaskWaker {
    tx: cb::Sender<()>,
}

impl TaskWaker {
    /// Wakes the task.
    pub fn wake(&self) {
        let _ = self.tx.try_send(());
    }
}

/// A task's mailbox: where wake-ups arrive.
pub struct Mailbox {
    rx: cb::Receiver<()>,
    waker: TaskWaker,
}

impl Default for Mailbox {
    fn default() -> Self {
        let (tx, rx) = cb::bounded(1);
        Mailbox {
            rx,
            waker: TaskWaker { tx },
        }
    }
}

impl Mailbox {
    /// A waker for this mailbox.
    pub fn waker(&self) -> TaskWaker {
        self.waker.clone()
    }
}

/// The head of a task that reads channels: decodes buffers and drives the chain.
pub trait InputHead {
    /// A buffer from a channel of input `input` (0 or 1).
    fn on_data(&mut self, input: usize, buf: Buffer) -> Result<()>;
    /// The task's combined input watermark advanced.
    fn on_watermark(&mut self, wm: Watermark) -> Result<()>;
    /// The task's input became idle or active.
    fn on_status(&mut self, s: WatermarkStatus) -> Result<()>;
    /// Every input ended.
    fn end_input(&mut self) -> Result<()>;
    /// Task control.
    fn control(&mut self, c: &mut Control) -> Result<()>;
}

/// The head of a one-input chain.
pub struct OneInputHead<In> {
    stage: Box<dyn Output<In>>,
}

impl<In> OneInputHead<In> {
    /// A head feeding `stage`.
    pub fn new(stage: Box<dyn Output<In>>) -> Self {
        OneInputHead { stage }
    }
}

impl<In: Data> InputHead for OneInputHead<In> {
    fn on_data(&mut self, _input: usize, buf: Buffer) -> Result<()> {
        for rec in buf.decode::<In>() {
            self.stage.collect(rec?)?;
        }
        Ok(())
    }
    fn on_watermark(&mut self, wm: Watermark) -> Result<()> {
        self.stage.watermark(wm)
    }
    fn on_status(&mut self, s: WatermarkStatus) -> Result<()> {
        self.stage.status(s)
    }
    fn end_input(&mut self) -> Result<()> {
        self.stage.end_input()
    }
    fn control(&mut self, c: &mut Control) -> Result<()> {
        self.stage.control(c)
    }
}

/// One input channel of a task, and which operator input it feeds.
pub struct InputChannel {
    /// The channel.
    pub rx: Receiver,
    /// 0 for the first input, 1 for the second.
    pub input: usize,
}

fn deadline_of(head: &mut dyn InputHead) -> Result<Option<i64>> {
    let mut c = Control::NextDeadline(None);
    head.control(&mut c)?;
    Ok(match c {
        Control::NextDeadline(d) => d,
        _ => None,
    })
}

fn wait_ms(clock: &dyn Clock, deadline: Option<i64>) -> u64 {
    let now = clock.now_ms();
    deadline.map_or(POLL_CANCEL_MS, |d| (d - now).clamp(0, POLL_CANCEL_MS)) as u64
}

/// Runs a task that reads channels until every input ends, the job is cancelled, or it fails.
pub fn run_input_task(
    head: &mut dyn InputHead,
    inputs: Vec<InputChannel>,
    mailbox: Mailbox,
    clock: Arc<dyn Clock>,
    cancel: &CancelToken,
) -> Result<()> {
    let mut valve = Valve::new(inputs.len());
    let mut open: Vec<bool> = vec![true; inputs.len()];
    let mut sel = cb::Select::new();
    for ch in &inputs {
        sel.recv(&ch.rx.rx);
    }
    let mailbox_index = sel.recv(&mailbox.rx);
    let mut open_count = inputs.len();
    if open_count == 0 {
        head.on_watermark(Watermark::MAX)?;
        return head.end_input();
    }
    loop {
        if cancel.is_cancelled() {
            return Err(WeirError::Cancelled);
        }
        let oper = match sel.try_select() {
            Ok(op) => op,
            Err(_) => {
                // Nothing ready: send partial buffers downstream, then wait.
                head.control(&mut Control::Flush)?;
                let deadline = deadline_of(head)?;
                match sel.select_timeout(Duration::from_millis(wait_ms(&*clock, deadline))) {
                    Ok(op) => op,
                    Err(_) => {
                        let now = clock.now_ms();
                        if deadline.is_some_and(|d| d <= now) {
                            head.control(&mut Control::Tick(now))?;
                        }
                        continue;
                    }
                }
            }
        };
        let i = oper.index();
        if i == mailbox_index {
            let _ = oper.recv(&mailbox.rx);
            head.control(&mut Control::Wake)?;
            continue;
        }
        let ch = &inputs[i];
        let msg = match oper.recv(&ch.rx.rx) {
            Ok(m) => m,
            Err(_) => {
                return Err(if cancel.is_cancelled() {
                    WeirError::Cancelled
                } else {
                    WeirError::Internal(
                        "an upstream task vanished without ending its channel".into(),
                    )
                })
            }
        };
        ch.rx.taken(&msg);
        match msg {
            Message::Data(buf) => head.on_data(ch.input, buf)?,
            Message::Watermark(wm) => {
                if let Some(w) = valve.watermark(i, wm.0) {
                    head.on_watermark(w)?;
                }
            }
            Message::Status(s) => {
                let (st, wm) = valve.status(i, s);
                if let Some(w) = wm {
                    head.on_watermark(w)?;
                }
                if let Some(st) = st {
                    head.on_status(st)?;
                }
            }
            Message::End => {
                open[i] = false;
                open_count -= 1;
                sel.remove(i);
                if let Some(w) = valve.end(i) {
                    head.on_watermark(w)?;
                }
                if open_count == 0 {
                    // Bounded upstreams sent the final watermark before ending.
                    head.end_input()?;
                    return head.control(&mut Control::Flush);
                }
            }
        }
        // Processing-time timers fire even while input keeps coming.
        let deadline = deadline_of(head)?;
        if let Some(d) = deadline {
            let now = clock.now_ms();
            if d <= now {
                head.control(&mut Control::Tick(now))?;
            }
        }
    }
}

/// Runs a source task: polls the reader until it finishes or the job is cancelled.
pub fn run_source_task<T: 'static>(
    reader: &mut dyn SourceReader<T>,
    out: &mut SourceOutput<T>,
    mailbox: Mailbox,
    clock: Arc<dyn Clock>,
    cancel: &CancelToken,
) -> Result<()> {
    let mut next_deadline: Option<i64> = None;
    let mut polls: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            return Err(WeirError::Cancelled);
        }
        let status = {
            let name = out.ctx.name.clone();
            let label = out.ctx.subtask_label();
            match catch_unwind(AssertUnwindSafe(|| reader.poll(out))) {
                Ok(r) => r?,
                Err(p) => {
                    return Err(WeirError::Panic {
                        operator: name,
                        subtask: label,
                        message: panic_message(&*p),
                    })
                }
            }
        };
        polls = polls.wrapping_add(1);
        let now = clock.now_ms();
        out.on_time(now)?;
        if polls.is_multiple_of(16) || status != Poll::Ready {
            let mut c = Control::NextDeadline(None);
            out.control(&mut c)?;
            next_deadline = match c {
                Control::NextDeadline(d) => d,
                _ => None,
            };
        }
        if next_deadline.is_some_and(|d| d <= now) {
            out.control(&mut Control::Tick(now))?;
            next_deadline = None;
        }
        if mailbox.rx.try_recv().is_ok() {
            out.control(&mut Control::Wake)?;
        }
        match status {
            Poll::Ready => {}
            Poll::Pending(ms) => {
                out.control(&mut Control::Flush)?;
                let wait = wait_ms(&*clock, next_deadline).min(ms.max(1));
                if mailbox.rx.recv_timeout(Duration::from_millis(wait)).is_ok() {
                    out.control(&mut Control::Wake)?;
                }
            }
            Poll::Finished => {
                out.finish()?;
                return out.control(&mut Control::Flush);
            }
        }
    }
}

/// Runs `f` for an operator, turning panics into errors that name it.
pub fn guarded<R>(ctx: &OperatorContext, f: impl FnOnce() -> Result<R>) -> Result<R> {
    guard(ctx, f)
}
