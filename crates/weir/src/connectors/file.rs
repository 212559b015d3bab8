use crate::operators::{Sink, SinkWriter};
use serde::{de::DeserializeOwned, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_runtime::{Poll, PositionKind, Source, SourceOutput, SourceReader};
use weir_types::{Data, Record, Result, WeirError, NO_TIMESTAMP};

/// Parses one line.
type LineParser<T> = Box<dyn FnMut(&[u8]) -> std::result::Result<T, String> + Send>;
/// Makes a file's parser when the file is opened (a CSV parser keeps its buffers from line to
/// line).
type ParseFn<T> = Arc<dyn Fn() -> LineParser<T> + Send + Sync>;

/// How records are laid out in files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// One CSV record per line (serde field order), no header.
    Csv,
    /// One JSON document per line.
    JsonLines,
    /// One `String` per line.
    Text,
}

/// Reads files line by line: a file, or every file of a directory (each file is a split; files
/// are spread over subtasks). Blank lines are skipped. A line that does not parse follows the
/// stream's bad-record policy ([`crate::DataStream::on_bad_record`]) with its `file:line`.
pub struct FileSource<T> {
    path: PathBuf,
    parse: ParseFn<T>,
    skip_lines: u64,
}

impl<T: DeserializeOwned + Data> FileSource<T> {
    /// CSV records (one per line) deserialized with serde.
    pub fn csv(path: impl AsRef<Path>) -> Self {
        FileSource {
            path: path.as_ref().to_path_buf(),
            parse: Arc::new(|| {
                let mut p = CsvLine::default();
                Box::new(move |line| p.parse(line))
            }),
            skip_lines: 0,
        }
    }
    /// JSON documents, one per line.
    pub fn json_lines(path: impl AsRef<Path>) -> Self {
        FileSource {
            path: path.as_ref().to_path_buf(),
            parse: Arc::new(|| {
                Box::new(|line| serde_json::from_slice(line).map_err(|e| e.to_string()))
            }),
            skip_lines: 0,
        }
    }
}

/// Splits CSV lines into fields with one parser and one record for a whole file (the csv
/// crate's defaults: `,`, `"` quotes, doubled quotes inside them), then deserializes the record.
struct CsvLine {
    parser: csv_core::Reader,
    fields: Vec<u8>,
    ends: Vec<usize>,
    record: csv::ByteRecord,
}

impl Default for CsvLine {
    fn default() -> Self {
        CsvLine {
            // `new`, not `default`: csv-core's derived default has no delimiter.
            parser: csv_core::Reader::new(),
            fields: Vec::new(),
            ends: Vec::new(),
            record: csv::ByteRecord::new(),
        }
    }
}

impl CsvLine {
    fn parse<T: DeserializeOwned>(&mut self, line: &[u8]) -> std::result::Result<T, String> {
        use csv_core::ReadRecordResult as R;
        self.parser.reset();
        if self.fields.len() < line.len() + 16 {
            self.fields.resize(line.len() + 16, 0);
        }
        if self.ends.is_empty() {
            self.ends.resize(16, 0);
        }
        let (mut input, mut nf, mut ne) = (line, 0, 0);
        let mut at_end = false;
        loop {
            let (res, i, o, e) =
                self.parser
                    .read_record(input, &mut self.fields[nf..], &mut self.ends[ne..]);
            input = &input[i..];
            nf += o;
            ne += e;
            match res {
                // The whole line is in: an empty input then ends the record.
                R::InputEmpty if !at_end => at_end = true,
                R::InputEmpty => return Err("unterminated record".into()),
                R::OutputFull => {
                    let n = self.fields.len() * 2;
                    self.fields.resize(n, 0);
                }
                R::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                R::Record => break,
                R::End => return Err("empty record".into()),
            }
        }
        self.record.clear();
        let mut start = 0;
        for &end in &self.ends[..ne] {
            self.record.push_field(&self.fields[start..end]);
            start = end;
        }
        self.record.deserialize::<T>(None).map_err(csv_error)
    }
}

fn csv_error(e: csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(f) => format!("field {}: {}", f + 1, err.kind()),
            None => err.kind().to_string(),
        },
        _ => e.to_string(),
    }
}

impl FileSource<String> {
    /// Lines of text.
    pub fn text(path: impl AsRef<Path>) -> Self {
        FileSource {
            path: path.as_ref().to_path_buf(),
            parse: Arc::new(|| {
                Box::new(|line| String::from_utf8(line.to_vec()).map_err(|e| e.to_string()))
            }),
            skip_lines: 0,
        }
    }
}

impl<T> FileSource<T> {
    /// Skips the first `n` lines of every file (headers).
    pub fn skip_lines(mut self, n: u64) -> Self {
        self.skip_lines = n;
        self
    }

    fn files(&self) -> Result<Vec<PathBuf>> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| WeirError::io(format!("reading {}", self.path.display()), e))?;
        if meta.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&self.path)
                .map_err(|e| WeirError::io(format!("listing {}", self.path.display()), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            v.sort();
            Ok(v)
        } else {
            Ok(vec![self.path.clone()])
        }
    }
}

/// A file being read: its split, reader, parser, line number and byte offset.
struct Open<T> {
    path: String,
    parse: LineParser<T>,
    split: usize,
    reader: BufReader<File>,
    line: u64,
    offset: u64,
}

struct FileReader<T> {
    /// Files not yet opened, with where to resume `(byte offset, line)`.
    files: Vec<(PathBuf, u64, u64)>,
    finished: Vec<String>,
    parse: ParseFn<T>,
    skip_lines: u64,
    current: Option<Open<T>>,
    buf: Vec<u8>,
}

/// A file's position in a snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
struct FilePosition {
    path: String,
    offset: u64,
    line: u64,
    finished: bool,
}

impl<T: Data> Source<T> for FileSource<T> {
    fn create_reader(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> Result<Box<dyn SourceReader<T>>> {
        let files = self
            .files()?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % parallelism == subtask)
            .map(|(_, p)| (p, 0, 0))
            .collect();
        Ok(Box::new(FileReader {
            files,
            finished: Vec::new(),
            parse: self.parse.clone(),
            skip_lines: self.skip_lines,
            current: None,
            buf: Vec::with_capacity(256),
        }))
    }
}

impl<T: Data> SourceReader<T> for FileReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<Poll> {
        if self.current.is_none() {
            if self.files.is_empty() {
                return Ok(Poll::Finished);
            }
            let (path, offset, line) = self.files.remove(0);
            let mut f = File::open(&path)
                .map_err(|e| WeirError::io(format!("opening {}", path.display()), e))?;
            if offset > 0 {
                use std::io::Seek;
                f.seek(std::io::SeekFrom::Start(offset))
                    .map_err(|e| WeirError::io(format!("seeking in {}", path.display()), e))?;
            }
            let name = path.display().to_string();
            let split = out.add_split(name.clone(), PositionKind::Line);
            self.current = Some(Open {
                path: name,
                parse: (self.parse)(),
                split,
                reader: BufReader::with_capacity(256 * 1024, f),
                line,
                offset,
            });
        }
        let cur = self.current.as_mut().unwrap();
        let split = cur.split;
        for _ in 0..1024 {
            self.buf.clear();
            let n = cur
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| WeirError::io(format!("reading {}", out.split_name(split)), e))?;
            if n == 0 {
                out.finish_split(split)?;
                self.finished.push(std::mem::take(&mut cur.path));
                self.current = None;
                return Ok(if self.files.is_empty() {
                    Poll::Finished
                } else {
                    Poll::Ready
                });
            }
            cur.offset += n as u64;
            cur.line += 1;
            if cur.line <= self.skip_lines {
                continue;
            }
            let mut line: &[u8] = &self.buf;
            while let Some((&last, rest)) = line.split_last() {
                if last == b'\n' || last == b'\r' {
                    line = rest;
                } else {
                    break;
                }
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            out.set_position(split, cur.line);
            match (cur.parse)(line) {
                Ok(v) => out.collect(split, v, NO_TIMESTAMP)?,
                Err(e) => out.bad_record(split, cur.line, line, e)?,
            }
        }
        Ok(Poll::Ready)
    }

    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut v = Vec::new();
        for p in &self.finished {
            v.push(FilePosition {
                path: p.clone(),
                offset: 0,
                line: 0,
                finished: true,
            });
        }
        if let Some(c) = &self.current {
            v.push(FilePosition {
                path: c.path.clone(),
                offset: c.offset,
                line: c.line,
                finished: false,
            });
        }
        for (p, offset, line) in &self.files {
            v.push(FilePosition {
                path: p.display().to_string(),
                offset: *offset,
                line: *line,
                finished: false,
            });
        }
        Ok(v.iter()
            .map(|p| postcard::to_allocvec(p).expect("encodes"))
            .collect())
    }

    fn restore(&mut self, entries: &[Vec<u8>]) -> Result<()> {
        for e in entries {
            let pos: FilePosition = postcard::from_bytes(e).map_err(|x| {
                WeirError::Config(format!(
                    "file position in the checkpoint does not decode: {x}"
                ))
            })?;
            if let Some(i) = self
                .files
                .iter()
                .position(|(p, _, _)| p.display().to_string() == pos.path)
            {
                if pos.finished {
                    self.files.remove(i);
                    self.finished.push(pos.path);
                } else {
                    self.files[i].1 = pos.offset;
                    self.files[i].2 = pos.line;
                }
            }
        }
        Ok(())
    }
}

type LineFn<T> = Arc<dyn Fn(&T, &mut Vec<u8>) -> Result<()> + Send + Sync>;

/// Writes records as lines of a file. With parallelism 1 it writes `path`; with more, subtask
/// `i` writes `path.i`.
pub struct FileSink<T> {
    path: PathBuf,
    line: LineFn<T>,
}

impl<T: Serialize> FileSink<T> {
    /// CSV lines (serde field order, no header).
    pub fn csv(path: impl AsRef<Path>) -> Self {
        FileSink {
            path: path.as_ref().to_path_buf(),
            line: Arc::new(|v, buf| {
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(buf);
                w.serialize(v)
                    .map_err(|e| WeirError::Internal(format!("CSV encoding: {e}")))?;
                w.flush().map_err(|e| WeirError::io("CSV encoding", e))
            }),
        }
    }
    /// JSON documents, one per line.
    pub fn json_lines(path: impl AsRef<Path>) -> Self {
        FileSink {
            path: path.as_ref().to_path_buf(),
            line: Arc::new(|v, buf| {
                serde_json::to_writer(&mut *buf, v)
                    .map_err(|e| WeirError::Internal(format!("JSON encoding: {e}")))?;
                buf.push(b'\n');
                Ok(())
            }),
        }
    }
}

impl<T> FileSink<T> {
    /// Lines made by `f` (without the newline).
    pub fn lines(path: impl AsRef<Path>, f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        FileSink {
            path: path.as_ref().to_path_buf(),
            line: Arc::new(move |v, buf| {
                buf.extend_from_slice(f(v).as_bytes());
                buf.push(b'\n');
                Ok(())
            }),
        }
    }
}

struct FileWriter<T> {
    out: BufWriter<File>,
    line: LineFn<T>,
    buf: Vec<u8>,
    path: PathBuf,
}

impl<T: 'static> Sink<T> for FileSink<T> {
    fn name(&self) -> String {
        format!("file sink {}", self.path.display())
    }
    fn create_writer(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter<T>>> {
        let path = if parallelism == 1 {
            self.path.clone()
        } else {
            PathBuf::from(format!("{}.{subtask}", self.path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| WeirError::io(format!("creating {}", dir.display()), e))?;
        }
        let f = File::create(&path)
            .map_err(|e| WeirError::io(format!("creating {}", path.display()), e))?;
        Ok(Box::new(FileWriter {
            out: BufWriter::with_capacity(256 * 1024, f),
            line: self.line.clone(),
            buf: Vec::new(),
            path,
        }))
    }
}

impl<T> SinkWriter<T> for FileWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<()> {
        self.buf.clear();
        (self.line)(&rec.value, &mut self.buf)?;
        self.out
            .write_all(&self.buf)
            .map_err(|e| WeirError::io(format!("writing {}", self.path.display()), e))
    }
    fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| WeirError::io(format!("writing {}", self.path.display()), e))
    }
}

#[cfg(test)]
mod csv_line_tests {
    use super::CsvLine;

    #[test]
    fn one_parser_reads_lines_as_the_csv_crate_does() {
        let mut p = CsvLine::default();
        let lines: [&[u8]; 5] = [
            b"1,alice,10",
            b"2,\"b, \"\"quoted\"\"\",20",
            b"3,,30",
            b"4,\"a long field that is longer than the first line's buffer\",40",
            b"5,x,50",
        ];
        for line in lines {
            let want: (i64, String, i64) = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line)
                .deserialize()
                .next()
                .unwrap()
                .unwrap();
            assert_eq!(p.parse::<(i64, String, i64)>(line).unwrap(), want);
        }
        let e = p.parse::<(i64, String, i64)>(b"x,y,z").unwrap_err();
        assert!(e.starts_with("field 1:"), "{e}");
        assert!(
            p.parse::<(i64, String, i64)>(b"1,2").is_err(),
            "too few fields"
        );
        assert_eq!(p.parse::<(i64, String, i64)>(b"6,y,60").unwrap().0, 6);
    }
}
