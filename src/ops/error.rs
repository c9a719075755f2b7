//! The errors of the library calls ([`super`]), and the exit code each means. The
//! library says what went wrong; `app::run` is the one place that turns an error into
//! an exit code (as cargo-nextest's `ExpectedError` does).

use crate::emulate::EmulateError;
use crate::knowledge::KnowledgeError;
use crate::llm::LlmError;
use crate::store::StoreError;
use crate::toolchain::ToolchainError;
use crate::workspace::Diagnostic;

/// Exit code: the work was done and nothing is wrong.
pub const EXIT_OK: u8 = 0;
/// Exit code: the work was done and found problems (check errors, a failed boot, an
/// incomplete port).
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit code: usage, configuration or environment error.
pub const EXIT_ERROR: u8 = 2;
/// Exit code: interrupted (Ctrl-C or a cancelled run), as shells report SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Why a library call could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, configuration or environment, with what to do about it. Shown with
    /// its whole context chain, and with no `source` of its own, so that the chain is
    /// said once.
    #[error("{0:#}")]
    Usage(anyhow::Error),
    /// The embedded concept map does not load (a build defect).
    #[error(transparent)]
    Knowledge(#[from] KnowledgeError),
    /// The model client cannot be set up (a bad base URL, say).
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The store cannot be opened or used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The workspace's toolchain or target is missing or unusable.
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    /// An emulator, a boot file or the image build is missing or failed to start.
    #[error(transparent)]
    Emulate(#[from] EmulateError),
    /// Source files could not be scanned; nothing was done with the rest.
    #[error("{} source file(s) could not be scanned; fix them before porting", .diagnostics.len())]
    Unscannable {
        /// The scan's error diagnostics, one per file.
        diagnostics: Vec<Diagnostic>,
    },
    /// The run was cancelled (Ctrl-C, or its token); the message says what was kept.
    #[error("{0}")]
    Interrupted(String),
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Usage(e)
    }
}

impl Error {
    /// The process exit code this error means.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted(_) => EXIT_INTERRUPTED,
            // The image did not build: the port was done and has problems.
            Error::Emulate(e) => e.exit_code(),
            _ => EXIT_ERROR,
        }
    }
}

/// How a library call that did its work ended: the exit code of a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done, nothing wrong (exit 0).
    Done,
    /// Done, with problems the result lists (exit 1).
    Problems,
}

impl Outcome {
    /// `Problems` when `problems`, else `Done`.
    pub fn from_problems(problems: bool) -> Outcome {
        if problems {
            Outcome::Problems
        } else {
            Outcome::Done
        }
    }

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => EXIT_OK,
            Outcome::Problems => EXIT_PROBLEMS,
        }
    }
}
