//! The effective configuration: flags > environment (then `.env`) > package metadata >
//! workspace metadata > defaults, each value remembering where it came from.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::workspace::Workspace;

/// The x86_64 target triple the port is checked for.
pub const DEFAULT_TARGET: &str = "x86_64-unknown-none";
/// The model asked (OpenRouter's name).
pub const DEFAULT_MODEL: &str = "x-ai/grok-4-fast";
/// OpenRouter's OpenAI-compatible API.
pub const DEFAULT_BASE_URL: &str = "https://openrouter.ai/api/v1";
/// Files larger than this (bytes) are not scanned.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 8 * 1024 * 1024;
/// The embedder of the store's index.
pub const DEFAULT_EMBEDDER: &str = "local";
/// The remote embedder's API.
pub const DEFAULT_EMBEDDINGS_BASE_URL: &str = "https://api.openai.com/v1";
/// The remote embedder's model.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";
/// Agents' heartbeat period, milliseconds.
pub const DEFAULT_HEARTBEAT_MS: u64 = 1000;
/// Total time a non-streamed LLM request may take, seconds.
pub const DEFAULT_LLM_TIMEOUT_SECS: u64 = 180;
/// Silence a streamed LLM answer may keep (no byte at all), seconds.
pub const DEFAULT_LLM_STALL_TIMEOUT_SECS: u64 = 60;
/// Tokens of one prompt (see [`Config::prompt_budget`]), estimated at 3 characters a
/// token (`swarm::groups::estimate_tokens`): sized for the default model, whose context
/// window is far larger, so that a module of a few thousand lines still goes to it
/// in one request (whole-module prompts run to about 16 000 tokens); a smaller model
/// needs a smaller budget, about half its context window (the answer needs the rest).
pub const DEFAULT_PROMPT_BUDGET: u64 = 32768;

/// API key variables, in load-balancing order.
pub const KEY_VARS: [&str; 4] = [
    "OPENROUTER_API_KEY1",
    "OPENROUTER_API_KEY2",
    "OPENROUTER_API_KEY3",
    "OPENROUTER_API_KEY",
];

/// Every environment variable the tool reads, with the setting it sets (the key of
/// `cargo eterna-port config`). The process environment comes first, then the
/// workspace's `.env`; `ETERNA_PORT_LOG` is read from the process only, before the
/// workspace is known.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("OPENROUTER_API_KEY1", "api-keys"),
    ("OPENROUTER_API_KEY2", "api-keys"),
    ("OPENROUTER_API_KEY3", "api-keys"),
    ("OPENROUTER_API_KEY", "api-keys"),
    ("OPENAI_API_KEY", "embeddings-key"),
    ("ETERNA_PORT_MODEL", "model"),
    ("ETERNA_PORT_LLM_BASE_URL", "base-url"),
    ("ETERNA_PORT_DB", "db"),
    ("ETERNA_PORT_EMBEDDER", "embedder"),
    ("ETERNA_PORT_EMBEDDINGS_BASE_URL", "embeddings-base-url"),
    ("ETERNA_PORT_EMBEDDING_MODEL", "embedding-model"),
    ("ETERNA_PORT_HEARTBEAT_MS", "heartbeat-ms"),
    ("ETERNA_PORT_LLM_TIMEOUT", "llm-timeout"),
    ("ETERNA_PORT_LLM_STALL_TIMEOUT", "llm-stall-timeout"),
    ("ETERNA_PORT_LLM_MAX_TOKENS", "llm-max-tokens"),
    ("ETERNA_PORT_PROMPT_BUDGET", "prompt-budget"),
    ("ETERNA_PORT_LLM_STREAM", "llm-stream"),
    ("ETERNA_PORT_LOG", "log"),
    ("ETERNA_PORT_SERVE_TOKEN", "serve-token"),
];

/// The variable holding `serve`'s bearer token ([`ENVIRONMENT`]; `--token-file` wins).
pub const SERVE_TOKEN_ENV: &str = "ETERNA_PORT_SERVE_TOKEN";

/// The variable that sets the log filter ([`ENVIRONMENT`]).
pub const LOG_ENV: &str = "ETERNA_PORT_LOG";

/// Keys accepted in `[workspace.metadata.eterna-port]` / `[package.metadata.eterna-port]`.
const METADATA_KEYS: [&str; 22] = [
    "target",
    "model",
    "base-url",
    "db",
    "max-file-size",
    "embedder",
    "embeddings-base-url",
    "embedding-model",
    "x86_64-linker-script",
    "x86_64-grub-cfg",
    "x86_64-bochsrc",
    "trace-prefix",
    "success-patterns",
    "failure-patterns",
    "exit-code-pattern",
    "vmx-unavailable-pattern",
    "heartbeat-ms",
    "llm-stream",
    "llm-timeout",
    "llm-stall-timeout",
    "llm-max-tokens",
    "prompt-budget",
];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// The tool's default.
    Default,
    /// Worked out from other settings.
    Derived {
        /// From what.
        reason: String,
    },
    /// A command-line flag.
    Flag {
        /// The flag.
        flag: String,
    },
    /// The process environment.
    Env {
        /// The variable.
        var: String,
    },
    /// The workspace's `.env` file.
    DotEnv {
        /// The file.
        path: String,
        /// The variable.
        var: String,
    },
    /// `[workspace.metadata.eterna-port]`.
    WorkspaceMetadata {
        /// The workspace's `Cargo.toml`.
        manifest: String,
    },
    /// `[package.metadata.eterna-port]` of a package.
    PackageMetadata {
        /// The package.
        package: String,
        /// Its `Cargo.toml`.
        manifest: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::Derived { reason } => write!(f, "derived: {reason}"),
            Source::Flag { flag } => write!(f, "flag {flag}"),
            Source::Env { var } => write!(f, "environment ${var}"),
            Source::DotEnv { path, var } => write!(f, "{var} in {path}"),
            Source::WorkspaceMetadata { manifest } => {
                write!(f, "[workspace.metadata.eterna-port] in {manifest}")
            }
            Source::PackageMetadata { package, manifest } => {
                write!(
                    f,
                    "[package.metadata.eterna-port] of `{package}` in {manifest}"
                )
            }
        }
    }
}

/// A configuration value and its origin.
#[derive(Debug, Clone, Serialize)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

impl<T> Setting<T> {
    fn new(value: T, source: Source) -> Self {
        Setting { value, source }
    }
}

/// A secret (API key). Never printed: `Debug`, `Display` and `Serialize` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `s`.
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    /// The secret itself, for the one place that sends it (the HTTP client).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What is shown instead of a secret.
pub const REDACTED: &str = "<redacted>";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Which porting backend a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The offline engine's drafts only.
    Offline,
    /// The model, through the OpenAI-compatible client.
    Llm,
}

/// Values given on the command line.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// `--target`.
    pub target: Option<String>,
}

/// The effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The x86_64 target triple.
    pub target: Setting<String>,
    /// The model asked.
    pub model: Setting<String>,
    /// The OpenAI-compatible API's base URL.
    pub base_url: Setting<String>,
    /// One entry per key variable that is set, in load-balancing order.
    pub api_keys: Vec<(String, Setting<Secret>)>,
    /// The remote embedder's key (`OPENAI_API_KEY`).
    pub openai_api_key: Option<Setting<Secret>>,
    /// `serve`'s bearer token (`ETERNA_PORT_SERVE_TOKEN`; `--token-file` beats it).
    pub serve_token: Option<Setting<Secret>>,
    /// The porting backend.
    pub backend: Setting<Backend>,
    /// The store's file.
    pub db: Setting<PathBuf>,
    /// Files larger than this (bytes) are not scanned.
    pub max_file_size: Setting<u64>,
    /// `local` (built in, no network) or `remote` (OpenAI-compatible `/embeddings`).
    pub embedder: Setting<String>,
    /// The remote embedder's API.
    pub embeddings_base_url: Setting<String>,
    /// The remote embedder's model.
    pub embedding_model: Setting<String>,
    /// Files `qemu` boots the x86_64 image with; each absent one is the tool's own.
    pub boot_files: BootFiles,
    /// How `qemu` reads the serial console; each absent one is the generic default.
    pub console: ConsolePatterns,
    /// The agents' heartbeat period in milliseconds (`ETERNA_PORT_HEARTBEAT_MS`,
    /// metadata `heartbeat-ms`); an agent silent for three periods is `unresponsive`.
    pub heartbeat_ms: Setting<u64>,
    /// Stream LLM answers (`ETERNA_PORT_LLM_STREAM=on|off`, metadata `llm-stream`).
    /// `None` (the default): streamed when the progress bar is shown (a terminal).
    pub llm_stream: Setting<Option<bool>>,
    /// Total time one non-streamed LLM request may take, in seconds
    /// (`ETERNA_PORT_LLM_TIMEOUT`, metadata `llm-timeout`).
    pub llm_timeout_secs: Setting<u64>,
    /// How long a streamed answer may stay silent (no byte, keep-alives included)
    /// before it is given up, in seconds (`ETERNA_PORT_LLM_STALL_TIMEOUT`, metadata
    /// `llm-stall-timeout`). A stream that keeps sending has no total bound.
    pub llm_stall_timeout_secs: Setting<u64>,
    /// `max_tokens` of every LLM request (`ETERNA_PORT_LLM_MAX_TOKENS`, metadata
    /// `llm-max-tokens`). `None` (the default): sized per module from its files
    /// (`swarm::answer_max_tokens`).
    pub llm_max_tokens: Option<Setting<u32>>,
    /// Upper bound, in tokens (estimated at 3 characters each), of one port prompt
    /// sent to the model: system message, task, source, draft and retrieved context
    /// together (`ETERNA_PORT_PROMPT_BUDGET`, metadata `prompt-budget`). A module whose
    /// prompt would exceed it is sent as groups of its items, each prompt within it
    /// (`swarm::groups`). The default ([`DEFAULT_PROMPT_BUDGET`]) is sized for the
    /// default model; for a small local model set about half its context window.
    pub prompt_budget: Setting<u64>,
    /// `ETERNA_PORT_LOG`: the log filter (`tracing` directives), read from the process
    /// environment before anything else; `None`: `warn` (`-v`, `-vv`, `-q` change it).
    pub log_filter: Option<Setting<String>>,
}

/// The workspace's console conventions for `qemu` (metadata keys `trace-prefix`,
/// `success-patterns`, `failure-patterns`, `exit-code-pattern`,
/// `vmx-unavailable-pattern`). Without them only the emulator's own signals, a Rust
/// panic, a stub, a triple fault and the timeout decide, and `--compare` has no trace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsolePatterns {
    /// Prefix of the guest-visible trace lines `qemu --compare` diffs.
    pub trace_prefix: Option<Setting<String>>,
    /// Serial text meaning success (replaces the generic defaults).
    pub success_patterns: Option<Setting<Vec<String>>>,
    /// Serial text meaning failure (replaces the generic `panicked at`).
    pub failure_patterns: Option<Setting<Vec<String>>>,
    /// A line prefix followed by a decimal exit code: 0 success, else failure; the
    /// line closes the trace.
    pub exit_code_pattern: Option<Setting<String>>,
    /// Serial text meaning "booted, but the CPU has no VT-x".
    pub vmx_unavailable_pattern: Option<Setting<String>>,
}

/// The workspace's own image and boot files for `qemu` (metadata keys
/// `x86_64-linker-script`, `x86_64-grub-cfg`, `x86_64-bochsrc`; a relative path is
/// relative to the directory of the `Cargo.toml` that sets it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BootFiles {
    /// Linker script of the x86_64 image. Absent: `linker-x86_64.ld` in the crate
    /// directory if there is one, else the tool's generic multiboot layout.
    pub linker_script: Option<Setting<PathBuf>>,
    /// GRUB configuration of the Bochs ISO. Absent: generated.
    pub grub_cfg: Option<Setting<PathBuf>>,
    /// Bochs configuration. Absent: generated.
    pub bochsrc: Option<Setting<PathBuf>>,
}

/// Looks up an environment variable; injectable for tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, ignoring empty values.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// The environment: process variables first, then the workspace's `.env` file.
struct Env<'a> {
    process: EnvLookup<'a>,
    dotenv: Vec<(String, String)>,
    dotenv_path: String,
}

impl Env<'_> {
    fn get(&self, var: &str) -> Option<(String, Source)> {
        if let Some(v) = (self.process)(var).filter(|v| !v.is_empty()) {
            return Some((
                v,
                Source::Env {
                    var: var.to_string(),
                },
            ));
        }
        self.dotenv
            .iter()
            .find(|(k, v)| k == var && !v.is_empty())
            .map(|(_, v)| {
                (
                    v.clone(),
                    Source::DotEnv {
                        path: self.dotenv_path.clone(),
                        var: var.to_string(),
                    },
                )
            })
    }
}

fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let iter = dotenvy::from_path_iter(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let mut out = Vec::new();
    for item in iter {
        match item {
            Ok(kv) => out.push(kv),
            Err(dotenvy::Error::LineParse(line, index)) => bail!(
                "{}: cannot parse `{}` (at character {}); lines must look like NAME=value",
                path.display(),
                line.trim(),
                index + 1
            ),
            Err(e) => bail!("{}: {e}", path.display()),
        }
    }
    Ok(out)
}

/// One metadata table and where it is.
struct MetaTable<'a> {
    table: &'a serde_json::Map<String, Value>,
    source: Source,
}

fn metadata_table<'a>(
    value: &'a Value,
    what: &str,
    source: Source,
) -> Result<Option<MetaTable<'a>>> {
    match value.get("eterna-port") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(table)) => Ok(Some(MetaTable { table, source })),
        Some(_) => bail!("`{what}.eterna-port` must be a table ({source})"),
    }
}

impl Config {
    /// Resolves the configuration of `ws`.
    pub fn resolve(
        ws: &Workspace,
        flags: &Flags,
        env: EnvLookup<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<Config> {
        let dotenv_path = ws.root.join(".env");
        let env = Env {
            process: env,
            dotenv: read_dotenv(&dotenv_path)?,
            dotenv_path: dotenv_path.display().to_string(),
        };

        // Metadata tables, lowest precedence first.
        let mut tables = Vec::new();
        let root_manifest = ws.root.join("Cargo.toml").display().to_string();
        if let Some(t) = metadata_table(
            &ws.metadata.workspace_metadata,
            "workspace.metadata",
            Source::WorkspaceMetadata {
                manifest: root_manifest,
            },
        )? {
            tables.push(t);
        }
        if let Some(pkg) = ws.config_package() {
            if let Some(t) = metadata_table(
                &pkg.metadata,
                "package.metadata",
                Source::PackageMetadata {
                    package: pkg.name.to_string(),
                    manifest: pkg.manifest_path.to_string(),
                },
            )? {
                tables.push(t);
            }
        }
        for t in &tables {
            for key in t.table.keys() {
                let lower = key.to_ascii_lowercase();
                let secret_like =
                    lower.contains("key") || lower.contains("token") || lower.contains("secret");
                // `llm-max-tokens` counts tokens of an answer; it is no secret.
                if secret_like && !METADATA_KEYS.contains(&key.as_str()) {
                    bail!(
                        "`{key}` in {}: API keys must not be stored in Cargo.toml; set {} in the environment or in {}",
                        t.source,
                        KEY_VARS[3],
                        env.dotenv_path
                    );
                }
                if !METADATA_KEYS.contains(&key.as_str()) {
                    warnings.push(format!(
                        "unknown key `{key}` in {} is ignored; known keys: {}",
                        t.source,
                        METADATA_KEYS.join(", ")
                    ));
                }
            }
        }
        let meta_str = |key: &str| -> Result<Option<Setting<String>>> {
            let mut found = None;
            for t in &tables {
                match t.table.get(key) {
                    None => {}
                    Some(Value::String(s)) => {
                        found = Some(Setting::new(s.clone(), t.source.clone()))
                    }
                    Some(other) => {
                        bail!("`{key}` in {} must be a string, found `{other}`", t.source)
                    }
                }
            }
            Ok(found)
        };

        let pick =
            |flag: Option<(&str, &Option<String>)>,
             var: Option<&str>,
             key: &str,
             default: &str|
             -> Result<Setting<String>> {
                if let Some((name, Some(v))) = flag {
                    return Ok(Setting::new(
                        v.clone(),
                        Source::Flag {
                            flag: name.to_string(),
                        },
                    ));
                }
                if let Some((v, source)) = var.and_then(|var| env.get(var)) {
                    return Ok(Setting::new(v, source));
                }
                Ok(meta_str(key)?
                    .unwrap_or_else(|| Setting::new(default.to_string(), Source::Default)))
            };

        let target = pick(
            Some(("--target", &flags.target)),
            None,
            "target",
            DEFAULT_TARGET,
        )?;
        if target.value.trim().is_empty() || target.value.contains(char::is_whitespace) {
            bail!(
                "target triple `{}` ({}) is not a target triple such as {DEFAULT_TARGET}",
                target.value,
                target.source
            );
        }
        let model = pick(None, Some("ETERNA_PORT_MODEL"), "model", DEFAULT_MODEL)?;
        let base_url = pick(
            None,
            Some("ETERNA_PORT_LLM_BASE_URL"),
            "base-url",
            DEFAULT_BASE_URL,
        )?;
        if !(base_url.value.starts_with("http://") || base_url.value.starts_with("https://")) {
            bail!(
                "LLM base URL `{}` ({}) must start with http:// or https://, e.g. {DEFAULT_BASE_URL}",
                base_url.value,
                base_url.source
            );
        }

        let api_keys: Vec<(String, Setting<Secret>)> = KEY_VARS
            .iter()
            .filter_map(|var| {
                env.get(var)
                    .map(|(v, source)| (var.to_string(), Setting::new(Secret::new(v), source)))
            })
            .collect();
        let openai_api_key = env
            .get("OPENAI_API_KEY")
            .map(|(v, source)| Setting::new(Secret::new(v), source));
        let serve_token = env
            .get(SERVE_TOKEN_ENV)
            .map(|(v, source)| (v.trim().to_string(), source))
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, source)| Setting::new(Secret::new(v), source));
        let backend = if api_keys.is_empty() {
            Setting::new(
                Backend::Offline,
                Source::Derived {
                    reason: format!("no API key set ({})", KEY_VARS.join(", ")),
                },
            )
        } else {
            Setting::new(
                Backend::Llm,
                Source::Derived {
                    reason: format!("{} API key(s) set", api_keys.len()),
                },
            )
        };

        let db = match env.get("ETERNA_PORT_DB") {
            Some((v, source)) => {
                let p = PathBuf::from(v);
                let p = if p.is_relative() {
                    std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
                } else {
                    p
                };
                Setting::new(p, source)
            }
            None => match meta_str("db")? {
                Some(s) => Setting::new(ws.root.join(s.value), s.source),
                None => Setting::new(
                    ws.target_dir.join("eterna-port").join("eterna.db"),
                    Source::Default,
                ),
            },
        };

        let mut max_file_size = Setting::new(DEFAULT_MAX_FILE_SIZE, Source::Default);
        for t in &tables {
            match t.table.get("max-file-size") {
                None => {}
                Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {
                    max_file_size = Setting::new(
                        n.as_u64().unwrap_or(DEFAULT_MAX_FILE_SIZE),
                        t.source.clone(),
                    )
                }
                Some(other) => bail!(
                    "`max-file-size` in {} must be a positive number of bytes, found `{other}`",
                    t.source
                ),
            }
        }

        let embedder = pick(
            None,
            Some("ETERNA_PORT_EMBEDDER"),
            "embedder",
            DEFAULT_EMBEDDER,
        )?;
        if !matches!(embedder.value.as_str(), "local" | "remote") {
            bail!(
                "embedder `{}` ({}) is not `local` or `remote`",
                embedder.value,
                embedder.source
            );
        }
        let embeddings_base_url = pick(
            None,
            Some("ETERNA_PORT_EMBEDDINGS_BASE_URL"),
            "embeddings-base-url",
            DEFAULT_EMBEDDINGS_BASE_URL,
        )?;
        if !(embeddings_base_url.value.starts_with("http://")
            || embeddings_base_url.value.starts_with("https://"))
        {
            bail!(
                "embeddings base URL `{}` ({}) must start with http:// or https://, e.g. {DEFAULT_EMBEDDINGS_BASE_URL}",
                embeddings_base_url.value,
                embeddings_base_url.source
            );
        }
        let embedding_model = pick(
            None,
            Some("ETERNA_PORT_EMBEDDING_MODEL"),
            "embedding-model",
            DEFAULT_EMBEDDING_MODEL,
        )?;

        let boot_path = |key: &str| -> Result<Option<Setting<PathBuf>>> {
            let Some(s) = meta_str(key)? else {
                return Ok(None);
            };
            if s.value.trim().is_empty() {
                bail!(
                    "`{key}` in {} must be a path, found an empty string",
                    s.source
                );
            }
            let base = match &s.source {
                Source::PackageMetadata { manifest, .. } => Path::new(manifest)
                    .parent()
                    .map_or_else(|| ws.root.clone(), Path::to_path_buf),
                _ => ws.root.clone(),
            };
            Ok(Some(Setting::new(base.join(&s.value), s.source)))
        };
        let boot_files = BootFiles {
            linker_script: boot_path("x86_64-linker-script")?,
            grub_cfg: boot_path("x86_64-grub-cfg")?,
            bochsrc: boot_path("x86_64-bochsrc")?,
        };

        let text = |key: &str| -> Result<Option<Setting<String>>> {
            let found = meta_str(key)?;
            if let Some(s) = &found {
                if s.value.trim().is_empty() {
                    bail!(
                        "`{key}` in {} must not be empty; give the text to look for or remove the key",
                        s.source
                    );
                }
            }
            Ok(found)
        };
        let list = |key: &str| -> Result<Option<Setting<Vec<String>>>> {
            let mut found = None;
            for t in &tables {
                let Some(value) = t.table.get(key) else {
                    continue;
                };
                let items = value.as_array().filter(|a| !a.is_empty()).and_then(|a| {
                    a.iter()
                        .map(|v| {
                            v.as_str()
                                .filter(|s| !s.trim().is_empty())
                                .map(String::from)
                        })
                        .collect::<Option<Vec<String>>>()
                });
                let Some(items) = items else {
                    bail!(
                        "`{key}` in {} must be a non-empty list of non-empty strings, e.g. {key} = [\"boot ok\"], found `{value}`",
                        t.source
                    );
                };
                found = Some(Setting::new(items, t.source.clone()));
            }
            Ok(found)
        };
        let console = ConsolePatterns {
            trace_prefix: text("trace-prefix")?,
            success_patterns: list("success-patterns")?,
            failure_patterns: list("failure-patterns")?,
            exit_code_pattern: text("exit-code-pattern")?,
            vmx_unavailable_pattern: text("vmx-unavailable-pattern")?,
        };

        // Whole numbers: the environment (then `.env`) beats the metadata. Each error
        // names the variable or key, where it was set, and what is accepted.
        let number = |var: &str,
                      key: &str,
                      range: std::ops::RangeInclusive<u64>,
                      unit: &str|
         -> Result<Option<Setting<u64>>> {
            let (lo, hi) = (*range.start(), *range.end());
            if let Some((v, source)) = env.get(var) {
                return match v.trim().parse::<u64>() {
                    Ok(n) if range.contains(&n) => Ok(Some(Setting::new(n, source))),
                    _ => bail!("{var}={v} ({source}): give {unit} between {lo} and {hi}"),
                };
            }
            let mut found = None;
            for t in &tables {
                match t.table.get(key) {
                    None => {}
                    Some(Value::Number(n)) if n.as_u64().is_some_and(|n| range.contains(&n)) => {
                        found = n.as_u64().map(|n| Setting::new(n, t.source.clone()))
                    }
                    Some(other) => bail!(
                        "`{key}` in {} must be {unit} between {lo} and {hi}, found `{other}`",
                        t.source
                    ),
                }
            }
            Ok(found)
        };
        let or_default = |s: Option<Setting<u64>>, default: u64| {
            s.unwrap_or_else(|| Setting::new(default, Source::Default))
        };
        let heartbeat_ms = or_default(
            number(
                "ETERNA_PORT_HEARTBEAT_MS",
                "heartbeat-ms",
                10..=600_000,
                "milliseconds",
            )?,
            DEFAULT_HEARTBEAT_MS,
        );
        let llm_timeout_secs = or_default(
            number(
                "ETERNA_PORT_LLM_TIMEOUT",
                "llm-timeout",
                1..=86_400,
                "seconds",
            )?,
            DEFAULT_LLM_TIMEOUT_SECS,
        );
        let llm_stall_timeout_secs = or_default(
            number(
                "ETERNA_PORT_LLM_STALL_TIMEOUT",
                "llm-stall-timeout",
                1..=86_400,
                "seconds",
            )?,
            DEFAULT_LLM_STALL_TIMEOUT_SECS,
        );
        let llm_max_tokens = number(
            "ETERNA_PORT_LLM_MAX_TOKENS",
            "llm-max-tokens",
            16..=1_048_576,
            "a number of tokens",
        )?
        .map(|s| Setting::new(s.value as u32, s.source));
        let prompt_budget = or_default(
            number(
                "ETERNA_PORT_PROMPT_BUDGET",
                "prompt-budget",
                256..=10_000_000,
                "a number of tokens",
            )?,
            DEFAULT_PROMPT_BUDGET,
        );
        let switch = |v: &str| match v.trim() {
            "on" | "1" | "true" => Some(Some(true)),
            "off" | "0" | "false" => Some(Some(false)),
            "auto" => Some(None),
            _ => None,
        };
        let mut llm_stream = Setting::new(None, Source::Default);
        match env.get("ETERNA_PORT_LLM_STREAM") {
            Some((v, source)) => match switch(&v) {
                Some(on) => llm_stream = Setting::new(on, source),
                None => bail!(
                    "ETERNA_PORT_LLM_STREAM={v} ({source}): use `on` or `off` (or `auto`: on at a terminal)"
                ),
            },
            None => {
                for t in &tables {
                    match t.table.get("llm-stream") {
                        None => {}
                        Some(Value::Bool(b)) => {
                            llm_stream = Setting::new(Some(*b), t.source.clone())
                        }
                        Some(Value::String(v)) if switch(v).is_some() => {
                            llm_stream =
                                Setting::new(switch(v).flatten(), t.source.clone())
                        }
                        Some(other) => bail!(
                            "`llm-stream` in {} must be true, false, \"on\", \"off\" or \"auto\", found `{other}`",
                            t.source
                        ),
                    }
                }
            }
        }
        // Read by the logger before the configuration exists: the process environment
        // only, as the logger sees it.
        let log_filter = (env.process)(LOG_ENV).filter(|v| !v.is_empty()).map(|v| {
            Setting::new(
                v,
                Source::Env {
                    var: LOG_ENV.into(),
                },
            )
        });

        Ok(Config {
            console,
            boot_files,
            embedder,
            embeddings_base_url,
            embedding_model,
            target,
            model,
            base_url,
            api_keys,
            openai_api_key,
            serve_token,
            backend,
            db,
            max_file_size,
            heartbeat_ms,
            llm_stream,
            llm_timeout_secs,
            llm_stall_timeout_secs,
            llm_max_tokens,
            prompt_budget,
            log_filter,
        })
    }

    /// The heartbeat period.
    pub fn heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.heartbeat_ms.value)
    }

    /// `(key, shown value, source)` rows for display; secrets redacted.
    pub fn rows(&self) -> Vec<(String, String, String)> {
        let mut rows = vec![
            (
                "target".into(),
                self.target.value.clone(),
                self.target.source.to_string(),
            ),
            (
                "backend".into(),
                format!("{:?}", self.backend.value).to_lowercase(),
                self.backend.source.to_string(),
            ),
            (
                "model".into(),
                self.model.value.clone(),
                self.model.source.to_string(),
            ),
            (
                "base-url".into(),
                self.base_url.value.clone(),
                self.base_url.source.to_string(),
            ),
        ];
        if self.api_keys.is_empty() {
            rows.push(("api-keys".into(), "(none)".into(), "offline backend".into()));
        }
        for (var, s) in &self.api_keys {
            rows.push((
                format!("api-key {var}"),
                s.value.to_string(),
                s.source.to_string(),
            ));
        }
        match &self.openai_api_key {
            Some(s) => rows.push((
                "embeddings-key".into(),
                s.value.to_string(),
                s.source.to_string(),
            )),
            None => rows.push((
                "embeddings-key".into(),
                "(none)".into(),
                "local embedder".into(),
            )),
        }
        rows.push(match &self.serve_token {
            Some(s) => (
                "serve-token".into(),
                s.value.to_string(),
                s.source.to_string(),
            ),
            None => (
                "serve-token".into(),
                "(none)".into(),
                "serve: --token-file, else no auth (loopback only)".into(),
            ),
        });
        rows.push((
            "db".into(),
            self.db.value.display().to_string(),
            self.db.source.to_string(),
        ));
        rows.push((
            "embedder".into(),
            self.embedder.value.clone(),
            self.embedder.source.to_string(),
        ));
        // Shown with the local embedder too: they are what `embedder = "remote"` uses.
        rows.push((
            "embeddings-base-url".into(),
            self.embeddings_base_url.value.clone(),
            self.embeddings_base_url.source.to_string(),
        ));
        rows.push((
            "embedding-model".into(),
            self.embedding_model.value.clone(),
            self.embedding_model.source.to_string(),
        ));
        rows.push((
            "max-file-size".into(),
            self.max_file_size.value.to_string(),
            self.max_file_size.source.to_string(),
        ));
        let n = |s: &Setting<u64>, unit: &str| (format!("{}{unit}", s.value), s.source.to_string());
        for (key, (value, source)) in [
            ("heartbeat-ms", n(&self.heartbeat_ms, " ms")),
            (
                "llm-timeout",
                n(&self.llm_timeout_secs, " s (not streamed: whole answer)"),
            ),
            (
                "llm-stall-timeout",
                n(&self.llm_stall_timeout_secs, " s (streamed: silence)"),
            ),
            (
                "prompt-budget",
                n(&self.prompt_budget, " tokens (estimated as characters / 3)"),
            ),
        ] {
            rows.push((key.into(), value, source));
        }
        rows.push(match &self.llm_max_tokens {
            Some(s) => (
                "llm-max-tokens".into(),
                s.value.to_string(),
                s.source.to_string(),
            ),
            None => (
                "llm-max-tokens".into(),
                "(per module)".into(),
                {
                    use crate::swarm::{
                        ANSWER_FACTOR, ANSWER_HEADROOM, ANSWER_MAX_TOKENS, CHARS_PER_TOKEN,
                    };
                    format!(
                        "default: the module's largest file in tokens (chars/{CHARS_PER_TOKEN}) x {ANSWER_FACTOR} + {ANSWER_HEADROOM}, at most {ANSWER_MAX_TOKENS}"
                    )
                },
            ),
        });
        rows.push((
            "llm-stream".into(),
            match self.llm_stream.value {
                Some(true) => "on".into(),
                Some(false) => "off".into(),
                None => "auto (on when the progress bar shows)".into(),
            },
            self.llm_stream.source.to_string(),
        ));
        rows.push(match &self.log_filter {
            Some(s) => ("log".into(), s.value.clone(), s.source.to_string()),
            None => (
                "log".into(),
                "(tool default)".into(),
                "warn; -v/-vv/-q change it; set ETERNA_PORT_LOG to override".into(),
            ),
        });
        for (key, setting, otherwise) in [
            (
                "x86_64-linker-script",
                &self.boot_files.linker_script,
                "<crate>/linker-x86_64.ld if present, else the generic multiboot layout",
            ),
            (
                "x86_64-grub-cfg",
                &self.boot_files.grub_cfg,
                "generated in target/eterna-port/bochs",
            ),
            (
                "x86_64-bochsrc",
                &self.boot_files.bochsrc,
                "generated in target/eterna-port/bochs",
            ),
        ] {
            rows.push(match setting {
                Some(s) => (
                    key.into(),
                    s.value.display().to_string(),
                    s.source.to_string(),
                ),
                None => (key.into(), "(tool default)".into(), otherwise.into()),
            });
        }
        let c = &self.console;
        let shown = |v: &str| format!("{v:?}");
        let shown_list = |v: &[String]| {
            v.iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (key, setting, otherwise) in [
            (
                "trace-prefix",
                c.trace_prefix
                    .as_ref()
                    .map(|s| (shown(&s.value), &s.source)),
                "none: no guest trace, `qemu --compare` refused",
            ),
            (
                "success-patterns",
                c.success_patterns
                    .as_ref()
                    .map(|s| (shown_list(&s.value), &s.source)),
                "none: the emulator's signals (QEMU isa-debug-exit, Bochs power-off)",
            ),
            (
                "failure-patterns",
                c.failure_patterns
                    .as_ref()
                    .map(|s| (shown_list(&s.value), &s.source)),
                "\"panicked at\" (and stubs, triple faults, the timeout)",
            ),
            (
                "exit-code-pattern",
                c.exit_code_pattern
                    .as_ref()
                    .map(|s| (shown(&s.value), &s.source)),
                "none",
            ),
            (
                "vmx-unavailable-pattern",
                c.vmx_unavailable_pattern
                    .as_ref()
                    .map(|s| (shown(&s.value), &s.source)),
                "none: QEMU status 33 only",
            ),
        ] {
            rows.push(match setting {
                Some((value, source)) => (key.into(), value, source.to_string()),
                None => (key.into(), "(tool default)".into(), otherwise.into()),
            });
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-or-v1-abcdef".into());
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "sk-or-v1-abcdef");
    }
}
