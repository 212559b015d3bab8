//! An exactly-once file sink, like Flink's `FileSink`: each subtask writes part files in a
//! directory. A part file is written hidden (`.part-S-N.inprogress`), becomes pending
//! (`.part-S-N.pending`) when it rolls — by size, by age, or at every checkpoint — and becomes
//! visible (`part-S-N`) only when a checkpoint that contains it is complete. A visible part file
//! never changes. After a failure, part files of the failed attempt are deleted and the
//! restored checkpoint's pending files are committed (again, idempotently).
use crate::operators::{Sink, SinkSnapshot, SinkWriter};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_runtime::checkpoint::Committer;
use weir_types::{Record, Result, WeirError};

type LineFn<T> = Arc<dyn Fn(&T, &mut Vec<u8>) -> Result<()> + Send + Sync>;

/// Exactly-once part files in a directory.
pub struct RollingFileSink<T> {
    dir: PathBuf,
    line: LineFn<T>,
    part_bytes_max: u64,
    rollover: Duration,
}

impl<T> RollingFileSink<T> {
    /// Lines made by `f` (without the newline).
    pub fn lines(dir: impl AsRef<Path>, f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        RollingFileSink {
            dir: dir.as_ref().to_path_buf(),
            line: Arc::new(move |v, buf| {
                buf.extend_from_slice(f(v).as_bytes());
                buf.push(b'\n');
                Ok(())
            }),
            part_bytes_max: 128 * 1024 * 1024,
            rollover: Duration::from_secs(3600),
        }
    }
    /// Rolls a part file once it holds this many bytes (default 128 MiB).
    pub fn with_part_bytes_max(mut self, bytes: u64) -> Self {
        self.part_bytes_max = bytes.max(1);
        self
    }
    /// Rolls a part file once it is this old (default 1 h).
    pub fn with_rollover(mut self, d: Duration) -> Self {
        self.rollover = d;
        self
    }
}

impl<T: Serialize> RollingFileSink<T> {
    /// CSV lines (serde field order, no header).
    pub fn csv(dir: impl AsRef<Path>) -> Self {
        RollingFileSink {
            dir: dir.as_ref().to_path_buf(),
            line: Arc::new(|v, buf| {
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(buf);
                w.serialize(v)
                    .map_err(|e| WeirError::Internal(format!("CSV encoding: {e}")))?;
                w.flush().map_err(|e| WeirError::io("CSV encoding", e))
            }),
            part_bytes_max: 128 * 1024 * 1024,
            rollover: Duration::from_secs(3600),
        }
    }
}

/// A pre-committed part file.
#[derive(Serialize, Deserialize)]
struct PendingFile {
    pending: PathBuf,
    visible: PathBuf,
}

/// Makes pending part files visible. Idempotent: done if the visible file exists.
struct RenameCommitter;

impl Committer for RenameCommitter {
    fn commit(&self, item: &[u8]) -> Result<()> {
        let p: PendingFile = postcard::from_bytes(item)
            .map_err(|e| WeirError::Internal(format!("pending part file: {e}")))?;
        if p.visible.exists() && !p.pending.exists() {
            return Ok(());
        }
        std::fs::rename(&p.pending, &p.visible).map_err(|e| {
            WeirError::io(
                format!(
                    "committing {} as {}",
                    p.pending.display(),
                    p.visible.display()
                ),
                e,
            )
        })?;
        if let Some(d) = p.visible.parent() {
            File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(|e| WeirError::io(format!("syncing {}", d.display()), e))?;
        }
        Ok(())
    }
}

struct InProgress {
    out: BufWriter<File>,
    path: PathBuf,
    n: u64,
    bytes: u64,
    opened: Instant,
}

struct RollingWriter<T> {
    dir: PathBuf,
    line: LineFn<T>,
    part_bytes_max: u64,
    rollover: Duration,
    subtask: usize,
    parallelism: usize,
    next_part: u64,
    current: Option<InProgress>,
    rolled: Vec<PendingFile>,
    /// Pre-committed in checkpoint `.0`, not yet known committed.
    uncommitted: Vec<(u64, Vec<u8>)>,
    /// (Subtask 0 only) `(subtask, next part)` of subtasks that no longer exist after a scale
    /// down, kept in its checkpoints so that they resume their numbering if they come back:
    /// starting again at 0 would replace their committed part files.
    inherited: Vec<(u64, u64)>,
    buf: Vec<u8>,
}

impl<T: 'static> Sink<T> for RollingFileSink<T> {
    fn name(&self) -> String {
        format!("part files {}", self.dir.display())
    }
    fn create_writer(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter<T>>> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| WeirError::io(format!("creating {}", self.dir.display()), e))?;
        Ok(Box::new(RollingWriter {
            dir: self.dir.clone(),
            line: self.line.clone(),
            part_bytes_max: self.part_bytes_max,
            rollover: self.rollover,
            subtask,
            parallelism,
            next_part: 0,
            current: None,
            rolled: Vec::new(),
            uncommitted: Vec::new(),
            inherited: Vec::new(),
            buf: Vec::new(),
        }))
    }
    fn committer(&self) -> Option<Arc<dyn Committer>> {
        Some(Arc::new(RenameCommitter))
    }
}

impl<T> RollingWriter<T> {
    fn io(&self, what: &str, e: std::io::Error) -> WeirError {
        WeirError::io(format!("{what} in {}", self.dir.display()), e)
    }

    /// Closes the in-progress part file (durably) and makes it pending.
    fn roll(&mut self) -> Result<()> {
        let Some(mut cur) = self.current.take() else {
            return Ok(());
        };
        cur.out
            .flush()
            .map_err(|e| self.io("writing a part file", e))?;
        let f = cur
            .out
            .into_inner()
            .map_err(|e| self.io("writing a part file", e.into_error()))?;
        f.sync_all()
            .map_err(|e| self.io("syncing a part file", e))?;
        let pending = self
            .dir
            .join(format!(".part-{}-{}.pending", self.subtask, cur.n));
        std::fs::rename(&cur.path, &pending).map_err(|e| self.io("rolling a part file", e))?;
        let visible = self.dir.join(format!("part-{}-{}", self.subtask, cur.n));
        self.rolled.push(PendingFile { pending, visible });
        Ok(())
    }

    /// Deletes the hidden part files of subtask `s` numbered `from` or more (a failed attempt's).
    fn abort_from(&self, s: usize, from: u64) -> Result<()> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| self.io("listing part files", e))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&format!(".part-{s}-")) else {
                continue;
            };
            let n = rest.split('.').next().and_then(|n| n.parse::<u64>().ok());
            if n.is_some_and(|n| n >= from) {
                std::fs::remove_file(e.path())
                    .map_err(|e| self.io("removing an aborted part file", e))?;
            }
        }
        Ok(())
    }
}

impl<T> SinkWriter<T> for RollingWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<()> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.bytes >= self.part_bytes_max || c.opened.elapsed() >= self.rollover)
        {
            self.roll()?;
        }
        if self.current.is_none() {
            let n = self.next_part;
            self.next_part += 1;
            let path = self
                .dir
                .join(format!(".part-{}-{n}.inprogress", self.subtask));
            let f = File::create(&path).map_err(|e| self.io("creating a part file", e))?;
            self.current = Some(InProgress {
                out: BufWriter::with_capacity(256 * 1024, f),
                path,
                n,
                bytes: 0,
                opened: Instant::now(),
            });
        }
        self.buf.clear();
        (self.line)(&rec.value, &mut self.buf)?;
        let cur = self.current.as_mut().unwrap();
        cur.out
            .write_all(&self.buf)
            .map_err(|e| WeirError::io("writing a part file", e))?;
        cur.bytes += self.buf.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.roll()
    }

    fn snapshot(&mut self, checkpoint_id: u64) -> Result<SinkSnapshot> {
        self.roll()?;
        for p in self.rolled.drain(..) {
            self.uncommitted
                .push((checkpoint_id, postcard::to_allocvec(&p).expect("encodes")));
        }
        let state = std::iter::once((self.subtask as u64, self.next_part))
            .chain(self.inherited.iter().copied())
            .map(|e| postcard::to_allocvec(&e).expect("encodes"))
            .collect();
        Ok(SinkSnapshot {
            state,
            pending_commit: self.uncommitted.iter().map(|(_, i)| i.clone()).collect(),
        })
    }

    fn notify_checkpoint_complete(&mut self, id: u64) -> Result<()> {
        self.uncommitted.retain(|(c, _)| *c > id);
        Ok(())
    }

    fn restore(&mut self, state: &[Vec<u8>]) -> Result<()> {
        // The next part number of every subtask that ever wrote (one entry each).
        let mut next: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
        for e in state {
            let (s, n): (u64, u64) = postcard::from_bytes(e)
                .map_err(|x| WeirError::Config(format!("part file sink state: {x}")))?;
            let cur = next.entry(s).or_insert(n);
            *cur = (*cur).max(n);
        }
        if let Some(n) = next.get(&(self.subtask as u64)) {
            self.next_part = *n;
        }
        // What this subtask wrote after the checkpoint is discarded (it will be written again).
        self.abort_from(self.subtask, self.next_part)?;
        // Subtasks that no longer exist leave hidden files only subtask 0 can clean, and their
        // numbering, which subtask 0 keeps for them.
        if self.subtask == 0 {
            for (&s, &n) in next.range(self.parallelism as u64..) {
                self.abort_from(s as usize, n)?;
                self.inherited.push((s, n));
            }
        }
        Ok(())
    }
}
