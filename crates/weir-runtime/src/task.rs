//! The loops that run a task: reading channels (or polling a source), pushing into the chain,
//! flushing, firing processing-time timers, taking part in checkpoints, and stopping on end of
//! input or cancellation.
use crate::channel::{Message, Receiver};
use crate::checkpoint::{
    CheckpointBarrier, CheckpointMode, InFlight, OperatorSnapshot, SubtaskId, FINAL_SNAPSHOT,
};
use crate::context::{CancelToken, OperatorContext, TaskShared};
use crate::operator::{guard, panic_message};
use crate::output::{Control, Output};
use crate::source::{Poll, SourceOutput, SourceReader};
use crate::watermark::Valve;
use crossbeam_channel as cb;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_types::codec::{Batch, Buffer};
use weir_types::metrics::Counter;
use weir_types::{Clock, Data, Record, Result, Watermark, WatermarkStatus, WeirError};

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

/// Control messages from the checkpoint coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mail {
    /// (Sources) take checkpoint `n`: snapshot and emit its barrier.
    Trigger(CheckpointBarrier),
    /// Checkpoint `n` is complete.
    Complete(u64),
    /// Checkpoint `n` was abandoned: stop aligning for it.
    Abort(u64),
    /// (Sources) end now, as at the end of bounded input: final watermark, end of input (stop
    /// with a draining savepoint).
    Drain,
}

/// A task's mailbox: wake-ups (coalesced) and coordinator mail.
pub struct Mailbox {
    rx: cb::Receiver<()>,
    waker: TaskWaker,
    ctl_rx: cb::Receiver<Mail>,
    ctl_tx: cb::Sender<Mail>,
}

impl Default for Mailbox {
    fn default() -> Self {
        let (tx, rx) = cb::bounded(1);
        let (ctl_tx, ctl_rx) = cb::unbounded();
        Mailbox {
            rx,
            waker: TaskWaker { tx },
            ctl_rx,
            ctl_tx,
        }
    }
}

impl Mailbox {
    /// A waker for this mailbox.
    pub fn waker(&self) -> TaskWaker {
        self.waker.clone()
    }
    /// Where the coordinator sends mail.
    pub fn control_sender(&self) -> cb::Sender<Mail> {
        self.ctl_tx.clone()
    }
}

/// Identifies a task subtask: its chain's first node and the subtask index.
pub type TaskKey = (usize, usize);

/// What tasks tell the checkpoint coordinator.
#[derive(Debug)]
pub enum TaskEvent {
    /// The task took checkpoint `id`: its operators' snapshots.
    Ack {
        /// Checkpoint id.
        id: u64,
        /// Which task.
        task: TaskKey,
        /// Snapshots of its operators.
        snapshots: Vec<(SubtaskId, OperatorSnapshot)>,
    },
    /// The task finished: its final snapshots stand for it in later checkpoints.
    Finished {
        /// Which task.
        task: TaskKey,
        /// Final snapshots of its operators.
        snapshots: Vec<(SubtaskId, OperatorSnapshot)>,
    },
}

/// How a task reaches the checkpoint coordinator.
#[derive(Clone)]
pub struct CheckpointLink {
    /// The coordinator's inbox.
    pub events: cb::Sender<TaskEvent>,
    /// This task.
    pub task: TaskKey,
    /// Aligned or not.
    pub mode: CheckpointMode,
    /// Time spent with channels blocked for alignment (ms).
    pub alignment_ms: Counter,
    /// Bytes of records stored by unaligned snapshots (overtaken by their barriers).
    pub overtaken_bytes: Counter,
    /// Where the records an unaligned snapshot overtook go: the in-flight pseudo-operator's
    /// uid (the task's first operator's plus [`crate::checkpoint::IN_FLIGHT_SUFFIX`]), the
    /// subtask, and the parallelism.
    pub in_flight: (String, usize, usize),
}

impl CheckpointLink {
    fn ack(&self, id: u64, shared: &TaskShared) {
        let snapshots = std::mem::take(&mut *shared.snapshots.borrow_mut());
        let ev = if id == FINAL_SNAPSHOT {
            TaskEvent::Finished {
                task: self.task,
                snapshots,
            }
        } else {
            TaskEvent::Ack {
                id,
                task: self.task,
                snapshots,
            }
        };
        // The coordinator may be gone (job ending): nothing to do then.
        let _ = self.events.send(ev);
    }
}

fn final_barrier() -> CheckpointBarrier {
    CheckpointBarrier {
        id: FINAL_SNAPSHOT,
        ts_ms: 0,
        savepoint: false,
        unaligned: false,
    }
}

/// The head of a task that reads channels: decodes buffers and drives the chain.
pub trait InputHead {
    /// A buffer from a channel of input `input` (0 or 1).
    fn on_data(&mut self, input: usize, batch: Batch) -> Result<()>;
    /// A copy of `batch` (of input `input`) encoded, to store with an unaligned checkpoint.
    fn encoded_copy(&self, input: usize, batch: &Batch) -> Result<Buffer>;
    /// The task's combined input watermark advanced.
    fn on_watermark(&mut self, wm: Watermark) -> Result<()>;
    /// The task's input became idle or active.
    fn on_status(&mut self, s: WatermarkStatus) -> Result<()>;
    /// Every input ended.
    fn end_input(&mut self) -> Result<()>;
    /// Task control.
    fn control(&mut self, c: &mut Control) -> Result<()>;
    /// Barriers of every input have arrived: snapshot the chain and pass the barrier on.
    fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()>;
}

/// The head of a one-input chain.
pub struct OneInputHead<In> {
    stage: Box<dyn Output<In>>,
    /// A buffer's records, decoded, on their way into the chain as one batch.
    batch: Vec<Record<In>>,
}

impl<In> OneInputHead<In> {
    /// A head feeding `stage`.
    pub fn new(stage: Box<dyn Output<In>>) -> Self {
        OneInputHead {
            stage,
            batch: Vec::new(),
        }
    }
}

impl<In: Data> InputHead for OneInputHead<In> {
    fn on_data(&mut self, _input: usize, batch: Batch) -> Result<()> {
        if let Err(e) = batch.into_records(&mut self.batch) {
            self.batch.clear();
            return Err(e);
        }
        self.stage.collect_batch(&mut self.batch)
    }
    fn encoded_copy(&self, _input: usize, batch: &Batch) -> Result<Buffer> {
        batch.encoded_copy::<In>()
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
    fn barrier(&mut self, b: &CheckpointBarrier) -> Result<()> {
        self.stage.barrier(b)
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

/// What a `select` picked.
enum Picked {
    Channel(usize),
    Priority(usize),
    Wake,
    Mail,
}

/// Barrier alignment of one checkpoint.
struct Alignment {
    barrier: CheckpointBarrier,
    got: Vec<bool>,
    started: Instant,
}

/// An unaligned snapshot taken and not yet acknowledged: the records of every channel whose
/// marker has not come yet are stored (and processed as usual).
struct Overtaken {
    barrier: CheckpointBarrier,
    /// The marker came on channel i (or it ended).
    done: Vec<bool>,
    batches: Vec<(u8, u32, Vec<u8>)>,
    bytes: u64,
}

impl Overtaken {
    /// Takes an unaligned snapshot now, passes the barrier on, and starts storing what
    /// arrives before each channel's marker.
    fn start(head: &mut dyn InputHead, b: CheckpointBarrier, open: &[bool]) -> Result<Overtaken> {
        head.barrier(&b)?;
        Ok(Overtaken {
            barrier: b,
            done: open.iter().map(|o| !o).collect(),
            batches: Vec::new(),
            bytes: 0,
        })
    }

    /// Every marker came: hand the snapshot, with what it overtook, to the coordinator.
    fn complete(self, link: &Option<CheckpointLink>, shared: &TaskShared) {
        let Some(l) = link else { return };
        if !self.batches.is_empty() {
            let (uid, subtask, parallelism) = l.in_flight.clone();
            let entry = InFlight {
                subtask,
                parallelism,
                batches: self.batches,
            };
            shared.snapshots.borrow_mut().push((
                SubtaskId { uid, subtask },
                OperatorSnapshot {
                    operator: vec![postcard::to_allocvec(&entry).expect("in-flight data encodes")],
                    ..Default::default()
                },
            ));
            l.overtaken_bytes.add(self.bytes);
        }
        l.ack(self.barrier.id, shared);
    }
}

/// Runs a task that reads channels until every input ends, the job is cancelled, or it fails.
/// `replay` holds the records an unaligned checkpoint being restored had overtaken at this
/// subtask: they go into the chain first.
#[allow(clippy::too_many_arguments)]
pub fn run_input_task(
    head: &mut dyn InputHead,
    inputs: Vec<InputChannel>,
    mailbox: Mailbox,
    clock: Arc<dyn Clock>,
    cancel: &CancelToken,
    link: Option<CheckpointLink>,
    shared: Rc<TaskShared>,
    replay: Vec<(u8, u32, Vec<u8>)>,
) -> Result<()> {
    for (input, records, bytes) in replay {
        head.on_data(input as usize, Batch::Encoded(Buffer { bytes, records }))?;
    }
    let mut overtaken: Option<Overtaken> = None;
    let n = inputs.len();
    let mut valve = Valve::new(n);
    let mut open: Vec<bool> = vec![true; n];
    let mut blocked: Vec<bool> = vec![false; n];
    let mut open_count = n;
    let mut aligning: Option<Alignment> = None;
    // Checkpoints up to this id are settled here: taken, or abandoned (expired, or overtaken by
    // a newer one). Their barriers may still arrive late on some channels and must be ignored:
    // aligning on one again would block a channel until a barrier that was already consumed.
    let mut settled: u64 = 0;
    // Aligned barriers block channels unless at least once (savepoints align in every mode).
    let exactly_once = link
        .as_ref()
        .is_some_and(|l| l.mode != CheckpointMode::AtLeastOnce);
    let unaligned = link
        .as_ref()
        .is_some_and(|l| l.mode == CheckpointMode::Unaligned);
    if open_count == 0 {
        head.on_watermark(Watermark::MAX)?;
        head.end_input()?;
        return finish(head, &link, &shared);
    }
    loop {
        // The channels read now: open, and not blocked by an alignment in progress.
        let mut sel = cb::Select::new();
        let mut map = Vec::with_capacity(n + 2);
        for (i, ch) in inputs.iter().enumerate() {
            if open[i] && !blocked[i] {
                sel.recv(&ch.rx.rx);
                map.push(Picked::Channel(i));
            }
            if open[i] && unaligned {
                sel.recv(&ch.rx.prio_rx);
                map.push(Picked::Priority(i));
            }
        }
        sel.recv(&mailbox.rx);
        map.push(Picked::Wake);
        sel.recv(&mailbox.ctl_rx);
        map.push(Picked::Mail);
        // Read until the set of readable channels changes.
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
            let i = match map[oper.index()] {
                Picked::Wake => {
                    let _ = oper.recv(&mailbox.rx);
                    head.control(&mut Control::Wake)?;
                    continue;
                }
                Picked::Mail => {
                    let Ok(mail) = oper.recv(&mailbox.ctl_rx) else {
                        continue;
                    };
                    match mail {
                        Mail::Complete(id) => head.control(&mut Control::CheckpointComplete(id))?,
                        Mail::Abort(id) => {
                            settled = settled.max(id);
                            if overtaken.as_ref().is_some_and(|o| o.barrier.id == id) {
                                overtaken = None;
                                shared.snapshots.borrow_mut().clear();
                            }
                            if aligning.as_ref().is_some_and(|a| a.barrier.id == id) {
                                aligning = None;
                                if blocked.iter().any(|b| *b) {
                                    blocked.iter_mut().for_each(|b| *b = false);
                                    break;
                                }
                            }
                        }
                        Mail::Trigger(_) | Mail::Drain => {} // only for sources
                    }
                    continue;
                }
                Picked::Priority(i) => {
                    let Ok(b) = oper.recv(&inputs[i].rx.prio_rx) else {
                        continue;
                    };
                    let current = overtaken.as_ref().map(|o| o.barrier.id);
                    if b.id > settled && current.is_none_or(|c| c < b.id) {
                        if let Some(old) = overtaken.take() {
                            // A newer checkpoint: the older one was abandoned.
                            settled = settled.max(old.barrier.id);
                            shared.snapshots.borrow_mut().clear();
                        }
                        overtaken = Some(Overtaken::start(head, b, &open)?);
                    }
                    continue;
                }
                Picked::Channel(i) => i,
            };
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
            let mut reselect = false;
            match msg {
                Message::Data(batch) => {
                    if let Some(o) = overtaken.as_mut().filter(|o| !o.done[i]) {
                        let enc = head.encoded_copy(ch.input, &batch)?;
                        o.bytes += enc.bytes.len() as u64;
                        o.batches.push((ch.input as u8, enc.records, enc.bytes));
                    }
                    head.on_data(ch.input, batch)?
                }
                Message::Barrier(b) if b.unaligned => {
                    // The marker behind what the barrier overtook on this channel.
                    if b.id > settled {
                        if overtaken.as_ref().is_none_or(|o| o.barrier.id < b.id) {
                            // Its priority copy was not picked first: snapshot now (nothing
                            // on this channel was overtaken).
                            if overtaken.take().is_some() {
                                shared.snapshots.borrow_mut().clear();
                            }
                            overtaken = Some(Overtaken::start(head, b, &open)?);
                        }
                        let o = overtaken.as_mut().expect("started");
                        if o.barrier.id == b.id {
                            o.done[i] = true;
                            if o.done.iter().all(|d| *d) {
                                settled = settled.max(b.id);
                                overtaken.take().unwrap().complete(&link, &shared);
                            }
                        }
                    }
                }
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
                Message::Barrier(b) => {
                    match &aligning {
                        _ if b.id <= settled => {} // a late barrier of a settled checkpoint
                        Some(a) if a.barrier.id > b.id => {} // a stale barrier of an abandoned checkpoint
                        Some(a) if a.barrier.id == b.id => {}
                        _ => {
                            // A new checkpoint (a newer one abandons the older alignment).
                            if let Some(old) = &aligning {
                                settled = settled.max(old.barrier.id);
                            }
                            if blocked.iter().any(|x| *x) {
                                blocked.iter_mut().for_each(|x| *x = false);
                                reselect = true;
                            }
                            aligning = Some(Alignment {
                                barrier: b,
                                got: vec![false; n],
                                started: Instant::now(),
                            });
                        }
                    }
                    if let Some(a) = aligning.as_mut().filter(|a| a.barrier.id == b.id) {
                        a.got[i] = true;
                        if exactly_once {
                            blocked[i] = true;
                            reselect = true;
                        }
                    }
                    reselect |= complete_alignment(
                        head,
                        &mut aligning,
                        &mut settled,
                        &open,
                        &mut blocked,
                        &link,
                        &shared,
                    )?;
                }
                Message::End => {
                    open[i] = false;
                    open_count -= 1;
                    reselect = true;
                    if let Some(o) = overtaken.as_mut() {
                        o.done[i] = true;
                        if o.done.iter().all(|d| *d) {
                            settled = settled.max(o.barrier.id);
                            overtaken.take().unwrap().complete(&link, &shared);
                        }
                    }
                    if let Some(w) = valve.end(i) {
                        head.on_watermark(w)?;
                    }
                    if open_count == 0 {
                        // Bounded upstreams sent the final watermark before ending, but the valve
                        // ignores the watermarks of idle inputs: if every input was idle or ended
                        // when the last final watermark came, it has not passed yet.
                        if valve.current() < Watermark::MAX.0 {
                            head.on_watermark(Watermark::MAX)?;
                        }
                        head.end_input()?;
                        return finish(head, &link, &shared);
                    }
                    complete_alignment(
                        head,
                        &mut aligning,
                        &mut settled,
                        &open,
                        &mut blocked,
                        &link,
                        &shared,
                    )?;
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
            if reselect {
                break;
            }
        }
    }
}

/// If every open channel delivered the barrier being aligned: snapshot, pass it on, unblock.
/// Returns whether channels were unblocked.
fn complete_alignment(
    head: &mut dyn InputHead,
    aligning: &mut Option<Alignment>,
    settled: &mut u64,
    open: &[bool],
    blocked: &mut [bool],
    link: &Option<CheckpointLink>,
    shared: &TaskShared,
) -> Result<bool> {
    let done = aligning
        .as_ref()
        .is_some_and(|a| a.got.iter().zip(open).all(|(g, o)| *g || !*o));
    if !done {
        return Ok(false);
    }
    let a = aligning.take().unwrap();
    *settled = (*settled).max(a.barrier.id);
    head.barrier(&a.barrier)?;
    if let Some(l) = link {
        l.alignment_ms.add(a.started.elapsed().as_millis() as u64);
        l.ack(a.barrier.id, shared);
    }
    let was_blocked = blocked.iter().any(|b| *b);
    blocked.iter_mut().for_each(|b| *b = false);
    Ok(was_blocked)
}

/// End of a task: flush, and hand the final snapshot to the coordinator.
fn finish(
    head: &mut dyn InputHead,
    link: &Option<CheckpointLink>,
    shared: &TaskShared,
) -> Result<()> {
    head.control(&mut Control::Flush)?;
    if let Some(l) = link {
        head.barrier(&final_barrier())?;
        l.ack(FINAL_SNAPSHOT, shared);
    }
    Ok(())
}

/// Runs a source task: polls the reader until it finishes or the job is cancelled.
pub fn run_source_task<T: 'static>(
    reader: &mut dyn SourceReader<T>,
    out: &mut SourceOutput<T>,
    mailbox: Mailbox,
    clock: Arc<dyn Clock>,
    cancel: &CancelToken,
    link: Option<CheckpointLink>,
    shared: Rc<TaskShared>,
) -> Result<()> {
    let mut next_deadline: Option<i64> = None;
    let mut polls: u32 = 0;
    let guarded_reader =
        |reader: &mut dyn SourceReader<T>,
         out: &mut SourceOutput<T>,
         f: &mut dyn FnMut(&mut dyn SourceReader<T>, &mut SourceOutput<T>) -> Result<()>| {
            match catch_unwind(AssertUnwindSafe(|| f(reader, out))) {
                Ok(r) => r,
                Err(p) => Err(WeirError::Panic {
                    operator: out.ctx.name.clone(),
                    subtask: out.ctx.subtask_label(),
                    message: panic_message(&*p),
                }),
            }
        };
    let mut checkpoint = |reader: &mut dyn SourceReader<T>,
                          out: &mut SourceOutput<T>,
                          b: CheckpointBarrier|
     -> Result<()> {
        let entries = guarded_reader(reader, out, &mut |r, o| {
            let e = r.snapshot()?;
            o.ctx.add_snapshot(OperatorSnapshot {
                operator: e,
                ..Default::default()
            });
            Ok(())
        });
        entries?;
        out.barrier(&b)?;
        if let Some(l) = &link {
            l.ack(b.id, &shared);
        }
        Ok(())
    };
    let on_mail = |reader: &mut dyn SourceReader<T>,
                   out: &mut SourceOutput<T>,
                   mail: Mail,
                   checkpoint: &mut dyn FnMut(
        &mut dyn SourceReader<T>,
        &mut SourceOutput<T>,
        CheckpointBarrier,
    ) -> Result<()>|
     -> Result<()> {
        match mail {
            Mail::Trigger(b) => checkpoint(reader, out, b),
            Mail::Complete(id) => {
                reader.notify_checkpoint_complete(id)?;
                out.control(&mut Control::CheckpointComplete(id))
            }
            Mail::Abort(_) | Mail::Drain => Ok(()),
        }
    };
    let mut draining = false;
    loop {
        if cancel.is_cancelled() {
            return Err(WeirError::Cancelled);
        }
        let mut status = Poll::Ready;
        guarded_reader(reader, out, &mut |r, o| {
            status = r.poll(o)?;
            Ok(())
        })?;
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
        while let Ok(mail) = mailbox.ctl_rx.try_recv() {
            draining |= mail == Mail::Drain;
            on_mail(reader, out, mail, &mut checkpoint)?;
        }
        let status = if draining { Poll::Finished } else { status };
        match status {
            Poll::Ready => {}
            Poll::Pending(ms) => {
                out.control(&mut Control::Flush)?;
                let wait = wait_ms(&*clock, next_deadline).min(ms.max(1));
                cb::select! {
                    recv(mailbox.rx) -> m => if m.is_ok() { out.control(&mut Control::Wake)?; },
                    recv(mailbox.ctl_rx) -> m => if let Ok(mail) = m { draining |= mail == Mail::Drain; on_mail(reader, out, mail, &mut checkpoint)?; },
                    default(Duration::from_millis(wait)) => {},
                }
            }
            Poll::Finished => {
                out.finish()?;
                out.control(&mut Control::Flush)?;
                if link.is_some() {
                    checkpoint(reader, out, final_barrier())?;
                }
                return Ok(());
            }
        }
    }
}

/// Runs `f` for an operator, turning panics into errors that name it.
pub fn guarded<R>(ctx: &OperatorContext, f: impl FnOnce() -> Result<R>) -> Result<R> {
    guard(ctx, f)
}
