//! `config`: every setting with its value and source, and the environment variables
//! the tool reads.

use std::fmt::Write as _;

use super::{BOLD, DIM};

use crate::config::Config;

/// The configuration as a table; secrets are already redacted by `Config::rows`.
pub fn config_human(config: &Config) -> String {
    let rows = config.rows();
    let kw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let vw = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (k, v, src) in rows {
        let _ = writeln!(s, "{BOLD}{k:<kw$}{BOLD:#}  {v:<vw$}  {DIM}{src}{DIM:#}");
    }
    let _ = writeln!(
        s,
        "\nenvironment (process first, then the workspace's .env; a flag beats both):"
    );
    let ew = crate::config::ENVIRONMENT
        .iter()
        .map(|(var, _)| var.len())
        .max()
        .unwrap_or(0);
    for (var, key) in crate::config::ENVIRONMENT {
        let _ = writeln!(s, "  {var:<ew$}  sets {key}");
    }
    s
}
