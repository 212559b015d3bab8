//! Errors that say where: which operator, which subtask, which record.
use std::fmt;

/// A boxed error from user code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with [`WeirError`].
pub type Result<T, E = WeirError> = std::result::Result<T, E>;

/// Where a record came from: a file and line, or a partition and offset, or a generator index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Position {
    /// Line `line` (1-based) of `file`.
    Line {
        /// The file's path.
        file: String,
        /// 1-based line number.
        line: u64,
    },
    /// Offset `offset` of a split (a partition, a generator slice, a collection).
    Offset {
        /// The split's name, e.g. `topic/3`.
        split: String,
        /// The offset in that split.
        offset: u64,
    },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line { file, line } => write!(f, "{file}:{line}"),
            Position::Offset { split, offset } => write!(f, "{split}@{offset}"),
        }
    }
}

/// Who is to blame, so that the right person acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input data or a user function's error or panic: fix the data or the job.
    User,
    /// An external system (file, broker, network) failed: retry or fix the environment.
    External,
    /// The job's configuration is wrong: fix the flags or the program.
    Config,
    /// A bug in Weir.
    Internal,
}

/// Every error Weir reports.
#[derive(Debug, thiserror::Error)]
pub enum WeirError {
    /// A record was rejected: it could not be parsed, or a fallible user function failed on it.
    #[error("operator '{operator}' (subtask {subtask}) rejected the record at {}: {message}",
        position.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "an unknown position".into()))]
    Record {
        /// The operator's name.
        operator: String,
        /// `index/parallelism`, e.g. `0/2`.
        subtask: String,
        /// Where the record came from, when known.
        position: Option<Position>,
        /// What went wrong.
        message: String,
    },
    /// A user function failed (returned an error) outside of a specific record.
    #[error("operator '{operator}' (subtask {subtask}) failed: {message}")]
    Operator {
        /// The operator's name.
        operator: String,
        /// `index/parallelism`.
        subtask: String,
        /// What went wrong.
        message: String,
    },
    /// A user function panicked.
    #[error("operator '{operator}' (subtask {subtask}) panicked: {message}")]
    Panic {
        /// The operator's name.
        operator: String,
        /// `index/parallelism`.
        subtask: String,
        /// The panic message.
        message: String,
    },
    /// I/O with an external system failed.
    #[error("{context}: {source}")]
    Io {
        /// What Weir was doing.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The job or its options are invalid.
    #[error("invalid job configuration: {0}")]
    Config(String),
    /// The job was cancelled (Ctrl-C, a cancel call, or another task's failure).
    #[error("the job was cancelled")]
    Cancelled,
    /// A bug in Weir.
    #[error("internal error: {0}")]
    Internal(String),
}

impl WeirError {
    /// Who is to blame.
    pub fn kind(&self) -> ErrorKind {
        match self {
            WeirError::Record { .. } | WeirError::Operator { .. } | WeirError::Panic { .. } => {
                ErrorKind::User
            }
            WeirError::Io { .. } => ErrorKind::External,
            WeirError::Config(_) => ErrorKind::Config,
            WeirError::Cancelled | WeirError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// An I/O error with what Weir was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        WeirError::Io {
            context: context.into(),
            source,
        }
    }
}
