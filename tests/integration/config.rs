//! `cargo eterna-port config`: precedence, provenance, redaction and bad values.

use crate::common;

use common::*;

const SECRET_A: &str = "sk-or-v1-TESTSECRETAAAAAAAAAAAAAAAAAAAA";
const SECRET_B: &str = "sk-or-v1-TESTSECRETBBBBBBBBBBBBBBBBBBBB";

fn ws_with_metadata(workspace_meta: &str, package_meta: &str) -> tempfile::TempDir {
    workspace(&[
        (
            "Cargo.toml",
            &format!(
                "[workspace]\nmembers = [\"hv\"]\nresolver = \"2\"\n\n[workspace.metadata.eterna-port]\n{workspace_meta}\n"
            ),
        ),
        (
            "hv/Cargo.toml",
            &format!(
                "[package]\nname = \"hv\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[package.metadata.eterna-port]\n{package_meta}\n"
            ),
        ),
        ("hv/src/main.rs", "fn main() {}\n"),
    ])
}

fn config_json(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut args = vec!["config", "--message-format", "json"];
    args.extend_from_slice(extra);
    let mut cmd = command(dir, &args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_code(&out, 0);
    for s in [SECRET_A, SECRET_B] {
        assert!(
            !stdout(&out).contains(s) && !stderr(&out).contains(s),
            "secret leaked"
        );
    }
    json(&out)
}

#[test]
fn defaults_without_any_configuration() {
    let ws = ws_with_metadata("", "");
    let c = config_json(ws.path(), &[], &[]);
    assert_eq!(c["target"]["value"], "x86_64-unknown-none");
    assert_eq!(c["target"]["source"]["kind"], "default");
    assert_eq!(c["model"]["value"], "x-ai/grok-4-fast");
    assert_eq!(c["base_url"]["value"], "https://openrouter.ai/api/v1");
    assert_eq!(c["backend"]["value"], "offline");
    assert_eq!(c["api_keys"], serde_json::json!([]));
    let db = c["db"]["value"].as_str().unwrap();
    assert!(db.ends_with("target/eterna-port/eterna.db"), "{db}");
}

#[test]
fn flags_beat_env_beat_dotenv_beat_package_beat_workspace_metadata() {
    let ws = ws_with_metadata(
        "model = \"ws/model\"\ntarget = \"x86_64-unknown-linux-gnu\"\nbase-url = \"http://127.0.0.1:9/v1\"\ndb = \"store/ws.db\"",
        "model = \"pkg/model\"",
    );
    write(
        ws.path(),
        ".env",
        format!("# keys\nOPENROUTER_API_KEY1={SECRET_A}\nOPENROUTER_API_KEY2=\"{SECRET_B}\"\nETERNA_PORT_MODEL=dotenv/model\n").as_bytes(),
    );
    let c = config_json(ws.path(), &[], &[]);
    assert_eq!(c["model"]["value"], "dotenv/model");
    assert_eq!(c["model"]["source"]["kind"], "dot-env");
    assert_eq!(c["target"]["value"], "x86_64-unknown-linux-gnu");
    assert_eq!(c["target"]["source"]["kind"], "workspace-metadata");
    assert_eq!(c["base_url"]["value"], "http://127.0.0.1:9/v1");
    let root = std::fs::canonicalize(ws.path()).unwrap();
    assert_eq!(
        c["db"]["value"],
        root.join("store/ws.db").display().to_string()
    );
    assert_eq!(c["backend"]["value"], "llm");
    let keys = c["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0][0], "OPENROUTER_API_KEY1");
    assert_eq!(keys[0][1]["value"], "<redacted>");

    // The process environment beats .env; a flag beats metadata.
    let c = config_json(
        ws.path(),
        &["--target", "x86_64-unknown-uefi"],
        &[
            ("ETERNA_PORT_MODEL", "env/model"),
            ("OPENROUTER_API_KEY", SECRET_B),
        ],
    );
    assert_eq!(c["model"]["value"], "env/model");
    assert_eq!(c["model"]["source"]["kind"], "env");
    assert_eq!(c["target"]["value"], "x86_64-unknown-uefi");
    assert_eq!(c["target"]["source"]["flag"], "--target");
    assert_eq!(c["api_keys"].as_array().unwrap().len(), 3);
}

#[test]
fn package_metadata_beats_workspace_metadata() {
    let ws = ws_with_metadata("model = \"ws/model\"", "model = \"pkg/model\"");
    let c = config_json(ws.path(), &["-p", "hv"], &[]);
    assert_eq!(c["model"]["value"], "pkg/model");
    assert_eq!(c["model"]["source"]["kind"], "package-metadata");
    assert_eq!(c["model"]["source"]["package"], "hv");
}

#[test]
fn human_output_shows_sources_and_redacts_keys() {
    let ws = ws_with_metadata("model = \"ws/model\"", "");
    let out = command(ws.path(), &["config"])
        .env("OPENROUTER_API_KEY3", SECRET_A)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("ws/model"), "{text}");
    assert!(text.contains("[workspace.metadata.eterna-port]"), "{text}");
    assert!(text.contains("OPENROUTER_API_KEY3"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    assert!(!text.contains(SECRET_A), "secret leaked: {text}");
}

#[test]
fn api_keys_in_cargo_toml_are_refused() {
    let ws = ws_with_metadata(&format!("api-key = \"{SECRET_A}\""), "");
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("must not be stored in Cargo.toml"), "{err}");
    assert!(!err.contains(SECRET_A) && !stdout(&out).contains(SECRET_A));
}

#[test]
fn wrong_types_and_values_are_usage_errors_naming_the_place() {
    let ws = ws_with_metadata("model = 3", "");
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("`model`") && err.contains("Cargo.toml"),
        "{err}"
    );

    let ws = ws_with_metadata("max-file-size = \"big\"", "");
    let out = run(ws.path(), &["plan"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("max-file-size"), "{}", stderr(&out));

    let ws = ws_with_metadata("", "");
    let out = command(ws.path(), &["config"])
        .env("ETERNA_PORT_LLM_BASE_URL", "openrouter.ai/api/v1")
        .output()
        .unwrap();
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("ETERNA_PORT_LLM_BASE_URL") && err.contains("http"),
        "{err}"
    );
}

#[test]
fn unknown_keys_warn_and_malformed_dotenv_fails() {
    let ws = ws_with_metadata("modle = \"typo\"", "");
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("unknown key `modle`"),
        "{}",
        stderr(&out)
    );

    let ws = ws_with_metadata("", "");
    write(ws.path(), ".env", b"GOOD=1\nthis is not an assignment\n");
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains(".env") && err.contains("NAME=value"), "{err}");
}

#[test]
fn max_file_size_from_metadata_applies_to_the_scan() {
    let ws = mini_hypervisor();
    let manifest = ws.path().join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[workspace.metadata.eterna-port]\nmax-file-size = 200\n");
    std::fs::write(&manifest, text).unwrap();
    let out = run(ws.path(), &["plan"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("not scanned"), "{}", stderr(&out));
}

#[test]
fn boot_files_come_from_metadata_relative_to_their_manifest() {
    let ws = ws_with_metadata(
        "x86_64-grub-cfg = \"boot/grub.cfg\"",
        "x86_64-linker-script = \"x86/image.ld\"\nx86_64-bochsrc = \"/etc/bochsrc\"",
    );
    let c = config_json(ws.path(), &[], &[]);
    let files = &c["boot_files"];
    let linker = files["linker_script"]["value"].as_str().unwrap();
    assert!(linker.ends_with("hv/x86/image.ld"), "{files:#}");
    assert_eq!(files["linker_script"]["source"]["kind"], "package-metadata");
    let grub = files["grub_cfg"]["value"].as_str().unwrap();
    assert!(
        grub.ends_with("boot/grub.cfg") && !grub.contains("hv/"),
        "{files:#}"
    );
    assert_eq!(files["bochsrc"]["value"], "/etc/bochsrc");

    // Unset: the tool's own, and `config` says which.
    let ws = ws_with_metadata("", "");
    let c = config_json(ws.path(), &[], &[]);
    assert!(c["boot_files"]["linker_script"].is_null(), "{c:#}");
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("x86_64-linker-script"), "{text}");
    assert!(text.contains("generic multiboot layout"), "{text}");
    assert!(
        text.contains("generated in target/eterna-port/bochs"),
        "{text}"
    );

    let ws = ws_with_metadata("x86_64-bochsrc = \"\"", "");
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("x86_64-bochsrc"), "{}", stderr(&out));
}

#[test]
fn console_patterns_come_from_metadata_with_their_source() {
    let ws = ws_with_metadata(
        "trace-prefix = \"[vm] \"\nexit-code-pattern = \"[hv] exit code=\"\nfailure-patterns = [\"[hv] oops\"]",
        "vmx-unavailable-pattern = \"[hv] no vmx\"\nfailure-patterns = [\"[hv] panic\", \"panicked at\"]",
    );
    let c = config_json(ws.path(), &[], &[]);
    let console = &c["console"];
    assert_eq!(console["trace_prefix"]["value"], "[vm] ", "{console:#}");
    assert_eq!(
        console["trace_prefix"]["source"]["kind"],
        "workspace-metadata"
    );
    assert_eq!(console["exit_code_pattern"]["value"], "[hv] exit code=");
    assert_eq!(console["vmx_unavailable_pattern"]["value"], "[hv] no vmx");
    // The package's list beats the workspace's.
    assert_eq!(
        console["failure_patterns"]["value"],
        serde_json::json!(["[hv] panic", "panicked at"])
    );
    assert_eq!(
        console["failure_patterns"]["source"]["kind"],
        "package-metadata"
    );
    assert!(console["success_patterns"].is_null(), "{console:#}");
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    for key in [
        "trace-prefix",
        "success-patterns",
        "failure-patterns",
        "exit-code-pattern",
        "vmx-unavailable-pattern",
    ] {
        assert!(text.contains(key), "{key} missing: {text}");
    }
    assert!(text.contains("\"[vm] \""), "{text}");
    assert!(!text.contains("unknown key"), "{text}");

    // Unset: generic defaults, and `config` says what they are.
    let ws = ws_with_metadata("", "");
    let c = config_json(ws.path(), &[], &[]);
    assert!(c["console"]["trace_prefix"].is_null(), "{c:#}");
    let text = stdout(&run(ws.path(), &["config"]));
    assert!(text.contains("`qemu --compare` refused"), "{text}");
    assert!(text.contains("\"panicked at\""), "{text}");
}

#[test]
fn bad_console_patterns_are_usage_errors_naming_key_and_file() {
    for (meta, key) in [
        ("trace-prefix = \"\"", "trace-prefix"),
        ("exit-code-pattern = 3", "exit-code-pattern"),
        ("success-patterns = \"boot ok\"", "success-patterns"),
        ("failure-patterns = []", "failure-patterns"),
        ("failure-patterns = [\"ok\", \"\"]", "failure-patterns"),
        ("vmx-unavailable-pattern = \" \"", "vmx-unavailable-pattern"),
    ] {
        let ws = ws_with_metadata(meta, "");
        let out = run(ws.path(), &["config"]);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(&format!("`{key}`")), "{meta}: {err}");
        assert!(err.contains("Cargo.toml"), "{meta}: {err}");
    }
}

/// The `config` rows by key: (value, source).
fn rows(out: &std::process::Output) -> std::collections::BTreeMap<String, String> {
    stdout(out)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (key, rest) = l.split_once(char::is_whitespace)?;
            Some((key.to_string(), rest.trim().to_string()))
        })
        .collect()
}

#[test]
fn every_request_and_swarm_setting_shows_with_its_source() {
    // Defaults: each listed, each from `default`.
    let ws = ws_with_metadata("", "");
    let c = config_json(ws.path(), &[], &[]);
    for (key, value) in [
        ("heartbeat_ms", 1000),
        ("llm_timeout_secs", 180),
        ("llm_stall_timeout_secs", 60),
        ("prompt_budget", 32768),
    ] {
        assert_eq!(c[key]["value"], value, "{key}: {c:#}");
        assert_eq!(c[key]["source"]["kind"], "default", "{key}");
    }
    assert_eq!(c["llm_stream"]["value"], serde_json::Value::Null);
    assert_eq!(c["llm_max_tokens"], serde_json::Value::Null);
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 0);
    let shown = rows(&out);
    for key in [
        "heartbeat-ms",
        "llm-stream",
        "llm-timeout",
        "llm-stall-timeout",
        "llm-max-tokens",
        "prompt-budget",
        "log",
    ] {
        assert!(
            shown.contains_key(key),
            "`{key}` is not shown:\n{}",
            stdout(&out)
        );
    }
    assert!(shown["llm-max-tokens"].contains("per module"), "{shown:?}");

    // From the metadata (package over workspace), `.env` and the environment.
    let ws = ws_with_metadata(
        "llm-timeout = 90\nllm-max-tokens = 2048\nprompt-budget = 3000\nllm-stream = \"off\"",
        "llm-timeout = 120",
    );
    write(
        ws.path(),
        ".env",
        b"ETERNA_PORT_LLM_STALL_TIMEOUT=15\nETERNA_PORT_HEARTBEAT_MS=250\n",
    );
    let c = config_json(
        ws.path(),
        &["-p", "hv"],
        &[
            ("ETERNA_PORT_PROMPT_BUDGET", "8000"),
            ("ETERNA_PORT_LLM_STREAM", "on"),
            ("ETERNA_PORT_LOG", "cargo_eterna_port=info"),
        ],
    );
    assert_eq!(c["llm_timeout_secs"]["value"], 120);
    assert_eq!(c["llm_timeout_secs"]["source"]["kind"], "package-metadata");
    assert_eq!(c["llm_max_tokens"]["value"], 2048);
    assert_eq!(c["llm_max_tokens"]["source"]["kind"], "workspace-metadata");
    assert_eq!(c["llm_stall_timeout_secs"]["value"], 15);
    assert_eq!(c["llm_stall_timeout_secs"]["source"]["kind"], "dot-env");
    assert_eq!(c["heartbeat_ms"]["value"], 250);
    assert_eq!(c["prompt_budget"]["value"], 8000);
    assert_eq!(
        c["prompt_budget"]["source"]["var"],
        "ETERNA_PORT_PROMPT_BUDGET"
    );
    assert_eq!(c["llm_stream"]["value"], true);
    assert_eq!(c["llm_stream"]["source"]["kind"], "env");
    assert_eq!(c["log_filter"]["value"], "cargo_eterna_port=info");

    let out = command(ws.path(), &["config", "-p", "hv"])
        .env("ETERNA_PORT_LLM_MAX_TOKENS", "512")
        .output()
        .unwrap();
    assert_code(&out, 0);
    let shown = rows(&out);
    assert!(
        shown["llm-max-tokens"].starts_with("512")
            && shown["llm-max-tokens"].contains("ETERNA_PORT_LLM_MAX_TOKENS"),
        "{shown:?}"
    );
    assert!(shown["llm-stall-timeout"].contains(".env"), "{shown:?}");
    assert!(
        shown["llm-timeout"].contains("[package.metadata.eterna-port]"),
        "{shown:?}"
    );
    assert!(shown["llm-stream"].starts_with("off"), "{shown:?}");
}

#[test]
fn bad_request_settings_are_usage_errors_naming_the_variable_or_key() {
    let ws = ws_with_metadata("", "");
    for (var, value, says) in [
        ("ETERNA_PORT_HEARTBEAT_MS", "5", "between 10 and 600000"),
        ("ETERNA_PORT_LLM_TIMEOUT", "soon", "seconds"),
        ("ETERNA_PORT_LLM_STALL_TIMEOUT", "0", "seconds"),
        ("ETERNA_PORT_LLM_MAX_TOKENS", "-1", "tokens"),
        ("ETERNA_PORT_PROMPT_BUDGET", "lots", "tokens"),
        ("ETERNA_PORT_LLM_STREAM", "sometimes", "`on` or `off`"),
    ] {
        // Every command reads the configuration: `plan` fails as `port` would.
        let out = command(ws.path(), &["plan"])
            .env(var, value)
            .output()
            .unwrap();
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{var}={value}")) && err.contains(says),
            "{var}: {err}"
        );
    }
    let ws = ws_with_metadata("llm-max-tokens = \"many\"", "");
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("`llm-max-tokens`") && err.contains("Cargo.toml") && err.contains("\"many\""),
        "{err}"
    );
    let ws = ws_with_metadata("llm-stream = 3", "");
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("`llm-stream`"), "{}", stderr(&out));
}

/// Every `ETERNA_PORT_*` name in the source, and the key variables: what the tool reads.
fn variables_in_source() -> std::collections::BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut std::collections::BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let mut rest = text.as_str();
                while let Some(at) = rest.find("ETERNA_PORT_") {
                    let name: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    rest = &rest[at + name.len()..];
                    out.insert(name.trim_end_matches('_').to_string());
                }
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut out,
    );
    out
}

#[test]
fn config_lists_every_environment_variable_the_source_reads() {
    let read = variables_in_source();
    assert!(
        read.len() >= 10 && read.contains("ETERNA_PORT_HEARTBEAT_MS"),
        "{read:?}"
    );
    let ws = ws_with_metadata("", "");
    let out = run(ws.path(), &["config"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let doc = config_json(ws.path(), &[], &[]);
    let listed: std::collections::BTreeSet<String> = doc["environment"]
        .as_array()
        .expect("config JSON has `environment`")
        .iter()
        .map(|e| e["var"].as_str().unwrap().to_string())
        .collect();
    for var in &read {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{var} "))),
            "{var} is read but not listed by `config`:\n{text}"
        );
        assert!(listed.contains(var), "{var} missing from config JSON");
    }
    // Each listed variable names a setting the table shows.
    let keys = rows(&out);
    for e in doc["environment"].as_array().unwrap() {
        let setting = e["setting"].as_str().unwrap();
        assert!(
            keys.keys()
                .any(|k| k == setting || k.starts_with(&format!("{setting} ")))
                || (setting == "api-keys" && keys.contains_key("api-keys")),
            "{setting} is not a row of `config`:\n{text}"
        );
    }
}
