//! `cargo eterna-port serve`: the flags as [`ServeOptions`] (the token read from its
//! file or the environment), and what the server says: where it listens (stderr, and a
//! JSON line on stdout with `--message-format json`, for a caller that asked for
//! port 0).

use std::io::Write;

use anyhow::{Context, Result};

use super::open;
use crate::cli::{GlobalArgs, MessageFormat, ServeArgs};
use crate::report;
use crate::serve::{ServeEvents, ServeOptions};

pub(super) fn cmd_serve(g: &GlobalArgs, a: &ServeArgs) -> Result<u8> {
    let token = match &a.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "--token-file {}: cannot read it; give a file holding the token",
                    path.display()
                )
            })?;
            let token = text.trim().to_string();
            anyhow::ensure!(
                !token.is_empty(),
                "--token-file {}: the file is empty; write the token in it",
                path.display()
            );
            Some(token)
        }
        None => None,
    };
    let s = open(g)?;
    let token = token.or_else(|| {
        s.config
            .serve_token
            .as_ref()
            .map(|t| t.value.expose().to_string())
    });
    let options = ServeOptions {
        bind: a.bind,
        token,
        allow_origins: a.allow_origin.clone(),
        body_limit: a.body_limit,
    };
    crate::serve::check_options(&options)?;
    let events = Say {
        json: g.message_format == MessageFormat::Json,
        quiet: g.quiet,
    };
    let super::Session { inner, .. } = s;
    crate::serve::run(inner, &options, &events)?;
    Ok(super::EXIT_OK)
}

struct Say {
    json: bool,
    quiet: bool,
}

impl ServeEvents for Say {
    fn listening(&self, addr: std::net::SocketAddr) {
        if self.json {
            let line = serde_json::json!({
                "reason": "listening",
                "address": addr.to_string(),
                "url": format!("http://{addr}/"),
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        if !self.quiet {
            report::stderr_message(
                "note",
                &format!("serving on http://{addr}/ (dashboard /ui, API docs /docs); Ctrl-C stops"),
            );
        }
    }

    fn message(&self, text: &str) {
        if !self.quiet {
            report::stderr_message("note", text);
        }
    }
}
