//! The simulator's error type: one enum, each variant saying what went wrong and where.

use std::path::PathBuf;

/// Everything the simulator can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A trace line could not be parsed.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A command-line or configuration value is invalid.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which option or field.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// The trace has no requests.
    #[error("the trace is empty")]
    EmptyTrace,
}

impl SimError {
    /// An [`SimError::Invalid`] for option `what`.
    pub fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        SimError::Invalid {
            what,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SimError::Io {
            path: path.into(),
            source,
        }
    }
}
