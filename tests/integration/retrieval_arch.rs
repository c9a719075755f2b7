//! Architecture-aware retrieval on a workspace with aarch64, riscv64 and loongarch64
//! code side by side: every chunk carries its file's architecture, `search --arch`
//! keeps to one, and an ARM64 module's agent context never holds another
//! architecture's code.

use std::path::Path;

use serde_json::Value;

use crate::common::{assert_code, copy_tree, json, run};
use cargo_eterna_port::ops::{index, Session, SessionOptions};
use cargo_eterna_port::store::{context_for_module, Filters};

fn multi_arch() -> tempfile::TempDir {
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layouts/multi-arch"))
}

fn search(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["search", "--message-format", "json"];
    all.extend_from_slice(args);
    let o = run(dir, &all);
    assert_code(&o, 0);
    json(&o)["results"].as_array().unwrap().clone()
}

#[test]
fn chunks_carry_their_files_architecture_and_search_can_keep_to_one() {
    let ws = multi_arch();
    assert_code(&run(ws.path(), &["index"]), 0);
    let results = search(ws.path(), &["-n", "20", "enter guest"]);
    let arch_of = |path: &str| -> Option<String> {
        results
            .iter()
            .find(|r| r["path"] == path)
            .map(|r| r["arch"].as_str().unwrap().to_string())
    };
    assert_eq!(
        arch_of("src/arch/aarch64/mod.rs").as_deref(),
        Some("aarch64"),
        "{results:#?}"
    );
    assert_eq!(
        arch_of("src/arch/riscv64/mod.rs").as_deref(),
        Some("riscv64")
    );
    assert_eq!(
        arch_of("src/arch/loongarch64/mod.rs").as_deref(),
        Some("loongarch64")
    );
    let human = run(ws.path(), &["search", "enter guest"]);
    assert!(
        crate::common::stdout(&human).contains("riscv64"),
        "the arch is shown per result"
    );

    let only = search(ws.path(), &["-n", "20", "--arch", "aarch64", "enter guest"]);
    assert!(!only.is_empty());
    for r in &only {
        assert!(
            matches!(r["arch"].as_str(), Some("aarch64" | "neutral")),
            "{r:#}"
        );
    }
    assert!(only.iter().any(|r| r["path"] == "src/arch/aarch64/mod.rs"));
    let o = run(ws.path(), &["search", "--arch", "sparc9", "x"]);
    assert_code(&o, 2);
    assert!(crate::common::stderr(&o).contains("--arch sparc9"));
}

/// The workspace at `dir` indexed through the library: its store, embedder and plan.
fn indexed(
    dir: &Path,
) -> (
    cargo_eterna_port::store::Store,
    Box<dyn cargo_eterna_port::store::Embedder>,
    cargo_eterna_port::plan::Plan,
) {
    let s = Session::open(&SessionOptions {
        manifest_path: Some(dir.join("Cargo.toml")),
        ..SessionOptions::default()
    })
    .unwrap();
    let store = index::open_store(&s.config).unwrap();
    index::refresh(&s, &store).unwrap();
    let embedder = index::make_embedder(&s.config).unwrap();
    let plan = s.full_plan(true, &|_| {});
    (store, embedder, plan)
}

#[test]
fn an_arm64_modules_context_holds_no_other_architectures_code() {
    let ws = multi_arch();
    let (store, embedder, plan) = indexed(ws.path());
    assert!(!plan.modules.is_empty());
    for m in &plan.modules {
        // Unfiltered, the other architectures' look-alike code is found...
        let unfiltered = store
            .search(
                &cargo_eterna_port::store::rag::module_query(m),
                40,
                &Filters::default(),
                embedder.as_ref(),
            )
            .unwrap();
        assert!(
            unfiltered
                .iter()
                .any(|c| c.arch == "riscv64" || c.arch == "loongarch64"),
            "the test needs look-alike code: {unfiltered:#?}"
        );
        // ...and the agent's context never holds it.
        let context = context_for_module(&store, m, embedder.as_ref(), 100_000).unwrap();
        assert!(!context.is_empty());
        for c in &context {
            assert!(
                !c.path.contains("riscv") && !c.path.contains("loongarch"),
                "{}: {} ({})",
                m.module_path,
                c.path,
                c.arch
            );
            assert!(matches!(c.arch.as_str(), "aarch64" | "neutral" | "x86_64"));
        }
    }
}

/// The evaluation workspace with aarch64, riscv64, loongarch64 and x86_64 backends.
fn multi_arch_hv() -> tempfile::TempDir {
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/retrieval/multi-arch-hv"))
}

#[test]
fn on_the_evaluation_workspace_arm64_context_is_arm64_and_every_question_hits_the_top_3() {
    let ws = multi_arch_hv();
    let (store, embedder, plan) = indexed(ws.path());
    assert!(plan.modules.len() >= 10, "{}", plan.modules.len());
    for m in &plan.modules {
        let context = context_for_module(&store, m, embedder.as_ref(), 3000).unwrap();
        for c in &context {
            assert!(
                !c.path.contains("/riscv64/") && !c.path.contains("/loongarch64/"),
                "{}: {} ({})",
                m.module_path,
                c.path,
                c.arch
            );
        }
    }

    // The questions a porting agent asks (tests/fixtures/retrieval), searched as the
    // agents search: ARM64 and neutral code. An expected file among the first three
    // code and document results, for every one.
    let set: toml::Value = toml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/retrieval/multi-arch-hv.questions.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let questions = set["question"].as_array().unwrap();
    assert!(questions.len() >= 12);
    let mut misses = Vec::new();
    for q in questions {
        let question = q["question"].as_str().unwrap();
        let expected: Vec<&str> = q["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        let results = search(ws.path(), &["-n", "10", "--arch", "aarch64", question]);
        let top: Vec<&str> = results
            .iter()
            .filter(|r| matches!(r["kind"].as_str(), Some("code" | "doc")))
            .take(3)
            .map(|r| r["path"].as_str().unwrap())
            .collect();
        if !top.iter().any(|p| expected.contains(p)) {
            misses.push(format!("{question}: expected {expected:?}, got {top:?}"));
        }
    }
    assert!(misses.is_empty(), "{misses:#?}");
}
