//! `ask`: the ResearchAgent on the command line.

use anyhow::Result;

use super::{open, EXIT_OK, EXIT_PROBLEMS};
use crate::cli::{AskArgs, BackendArg, GlobalArgs, MessageFormat};
use crate::config::Backend;
use crate::ops::ask::{self, AskOptions};
use crate::report;

pub(super) fn cmd_ask(g: &GlobalArgs, args: &AskArgs) -> Result<u8> {
    let opts = AskOptions {
        question: args.question.clone(),
        limit: args.limit,
        backend: args.backend.map(|b| match b {
            BackendArg::Offline => Backend::Offline,
            BackendArg::Llm => Backend::Llm,
        }),
    };
    // Bad input is said before the workspace is opened.
    opts.validate()?;
    let s = open(g)?;
    let answer = ask::run(&s, &opts)?;
    match g.message_format {
        MessageFormat::Json => report::print_json(&answer)?,
        MessageFormat::Human => {
            report::print_stdout(&report::ask_human(&answer, g.verbose > 0))?;
            if !g.quiet {
                for w in &answer.warnings {
                    report::stderr_message("warning", w);
                }
                if answer.passages.is_empty() {
                    report::stderr_message(
                        "note",
                        "nothing in the index matches the question; try other words (names of registers, functions, files)",
                    );
                }
            }
        }
    }
    Ok(if answer.found() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}
