//! The store: `index`, `search`, `status` on temp copies of the reference fixture and on
//! generated workspaces; retrieval quality, incremental indexing, migrations and faults.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A temp copy of the reference fixture, indexed once.
fn indexed_fixture() -> tempfile::TempDir {
    let ws = copy_tree(&fixture_dir());
    let out = run(ws.path(), &["index", "--message-format", "json"]);
    assert_code(&out, 0);
    let v = json(&out);
    assert!(v["index"]["chunks_added"].as_u64().unwrap() > 300, "{v:#}");
    ws
}

fn db_path(ws: &Path) -> PathBuf {
    ws.join("target/eterna-port/eterna.db")
}

fn search(ws: &Path, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["search", "--message-format", "json"];
    a.extend_from_slice(args);
    let out = run(ws, &a);
    assert_code(&out, 0);
    json(&out)["results"].as_array().unwrap().clone()
}

fn status(ws: &Path, env: &[(&str, &str)]) -> Value {
    let mut cmd = command(ws, &["status", "--message-format", "json"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_code(&out, 0);
    json(&out)
}

fn index_json(ws: &Path, extra: &[&str]) -> Value {
    let mut a = vec!["index", "--message-format", "json"];
    a.extend_from_slice(extra);
    let out = run(ws, &a);
    assert_code(&out, 0);
    json(&out)["index"].clone()
}

/// What a labeled query must find.
type Pred = Box<dyn Fn(&Value) -> bool>;

/// 1-based rank of the first result matching `pred`.
fn rank_of(results: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    results.iter().position(pred).map(|i| i + 1)
}

fn show(results: &[Value]) -> String {
    results
        .iter()
        .map(|r| {
            format!(
                "{} {} [{}] {}",
                r["rank"], r["path"], r["component"], r["title"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn retrieval_quality_on_the_fixture_and_knowledge() {
    let ws = indexed_fixture();
    let ws = ws.path();
    // (query, what must be found, within how many results)
    let gic = |r: &Value| r["path"] == "eterna/src/arch/aarch64/gic.rs";
    // Among the modules (code), the GIC driver's initialisation is in the top 3; in
    // everything, the interrupt-controller knowledge comes first and the GIC module is
    // still on the first page.
    let results = search(
        ws,
        &[
            "interrupt controller initialisation",
            "--kind",
            "code",
            "-n",
            "5",
        ],
    );
    assert!(
        rank_of(&results, gic).is_some_and(|r| r <= 3),
        "{}",
        show(&results)
    );
    // Unfiltered too: the best code chunk sits beside the knowledge, in the top 3.
    let results = search(ws, &["interrupt controller initialisation", "-n", "10"]);
    assert!(
        rank_of(&results, gic).is_some_and(|r| r <= 3),
        "{}",
        show(&results)
    );
    assert_eq!(
        results[0]["component"],
        "interrupt-controller",
        "{}",
        show(&results)
    );
    let labeled: Vec<(&str, Pred, usize)> = vec![
        (
            "VMCS",
            Box::new(|r: &Value| r["kind"] == "knowledge" && r["component"] == "vm-control"),
            1,
        ),
        ("ICH_LR0_EL2", Box::new(gic), 1),
        (
            "PSCI CPU_ON",
            Box::new(|r: &Value| r["path"] == "eterna/src/arch/aarch64/psci.rs"),
            1,
        ),
        (
            "stage 2 translation tables",
            Box::new(|r: &Value| r["path"] == "eterna/src/arch/aarch64/stage2.rs"),
            5,
        ),
        (
            // The knowledge on stage 2 (its note, its component entry, or VTTBR_EL2's
            // "stage 2 translation table base").
            "stage 2 translation tables",
            Box::new(|r: &Value| r["kind"] == "knowledge" && r["component"] == "stage2"),
            3,
        ),
        (
            "exception vector table",
            Box::new(|r: &Value| r["path"] == "eterna/src/arch/aarch64/exception.rs"),
            3,
        ),
        (
            "EL2 entry point _start",
            Box::new(|r: &Value| {
                r["path"] == "eterna/src/arch/aarch64/boot.S" && r["component"] == "boot"
            }),
            3,
        ),
        (
            "PL011 uart",
            Box::new(|r: &Value| r["component"] == "uart"),
            1,
        ),
    ];
    for (query, pred, within) in labeled {
        let results = search(ws, &[query, "-n", "10"]);
        let rank = rank_of(&results, pred);
        assert!(
            rank.is_some_and(|r| r <= within),
            "`{query}`: expected within the top {within}, got rank {rank:?}:\n{}",
            show(&results)
        );
    }

    // The VMCS knowledge: the vm-control note is among the first results.
    let results = search(ws, &["VMCS", "-n", "5"]);
    assert!(
        rank_of(&results, |r| r["path"] == "@knowledge/notes/vm-control.md").is_some(),
        "{}",
        show(&results)
    );

    // Filters.
    let results = search(ws, &["interrupt", "-n", "8", "--kind", "knowledge"]);
    assert!(!results.is_empty());
    assert!(
        results.iter().all(|r| r["kind"] == "knowledge"),
        "{}",
        show(&results)
    );
    let results = search(ws, &["interrupt", "-n", "8", "--component", "gic"]);
    assert!(!results.is_empty());
    assert!(
        results
            .iter()
            .all(|r| r["component"] == "interrupt-controller"),
        "{}",
        show(&results)
    );
    let results = search(ws, &["register", "-n", "8", "--path", "eterna-core/"]);
    assert!(!results.is_empty());
    assert!(
        results
            .iter()
            .all(|r| r["path"].as_str().unwrap().starts_with("eterna-core/")),
        "{}",
        show(&results)
    );

    // Human output: ranked paths with line spans.
    let out = run(ws, &["search", "ICH_LR0_EL2", "-n", "2"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("  1. eterna/src/arch/aarch64/gic.rs:"),
        "{text}"
    );

    // Bad input: unknown component, empty query, unknown kind.
    let out = run(ws, &["search", "x", "--component", "floppy"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("--component floppy"),
        "{}",
        stderr(&out)
    );
    let out = run(ws, &["search", "  "]);
    assert_code(&out, 2);
    let out = run(ws, &["search", "x", "--kind", "poem"]);
    assert_code(&out, 2);
}

#[test]
fn context_for_a_planned_module_fits_the_budget() {
    use cargo_eterna_port::plan::{ModulePlan, Status};
    use cargo_eterna_port::store::{context_for_module, LocalEmbedder, Store};
    use cargo_eterna_port::workspace::{Evidence, EvidenceKind};
    let ws = indexed_fixture();
    let store = Store::open(&db_path(ws.path())).unwrap();
    let module = ModulePlan {
        package: "eterna".into(),
        source: "eterna/src/arch/aarch64/gic.rs".into(),
        module_path: "eterna::arch::aarch64::gic".into(),
        component: cargo_eterna_port::knowledge::ComponentId::InterruptController,
        target: "eterna/src/arch/x86_64/apic.rs".into(),
        x86_concept: Some("apic".into()),
        status: Status::New,
        depends_on: vec![],
        evidence: ["ICC_IAR1_EL1", "ICH_LR0_EL2", "ICH_HCR_EL2", "ICH_VMCR_EL2"]
            .iter()
            .map(|r| Evidence {
                kind: EvidenceKind::Sysreg,
                name: r.to_string(),
                line: Some(1),
                file: None,
                line_in_file: None,
                count: 1,
            })
            .collect(),
        items: vec![],
        missing: vec![],
    };
    let ctx = context_for_module(&store, &module, &LocalEmbedder::new(), 1500).unwrap();
    assert!(ctx.len() >= 3, "{ctx:#?}");
    let tokens: usize = ctx.iter().map(|c| c.tokens()).sum();
    assert!(tokens <= 1500, "{tokens} tokens");
    assert!(ctx.iter().all(|c| c.path != module.source));
    assert!(
        ctx.iter().take(5).any(
            |c| c.kind == "knowledge" && c.component.as_deref() == Some("interrupt-controller")
        ),
        "{:#?}",
        ctx.iter().map(|c| (&c.path, &c.title)).collect::<Vec<_>>()
    );
    // A budget smaller than every chunk gives nothing rather than too much.
    assert!(
        context_for_module(&store, &module, &LocalEmbedder::new(), 1)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn reindex_is_incremental() {
    let ws = indexed_fixture();
    let ws = ws.path();
    let before = status(ws, &[])["stats"].clone();

    // Unchanged: nothing embedded.
    let s = index_json(ws, &[]);
    assert_eq!(s["chunks_embedded"], 0, "{s:#}");
    assert_eq!(s["sources_unchanged"], s["sources"], "{s:#}");

    // One new function in gic.rs: exactly one chunk embedded, the rest kept.
    let gic = ws.join("eterna/src/arch/aarch64/gic.rs");
    let mut text = std::fs::read_to_string(&gic).unwrap();
    text.push_str("\n/// Reads the running priority.\npub fn running_priority_for_test() -> u64 {\n    let v: u64;\n    unsafe { core::arch::asm!(\"mrs {}, ICC_RPR_EL1\", out(reg) v) };\n    v\n}\n");
    std::fs::write(&gic, &text).unwrap();
    let s = index_json(ws, &[]);
    assert_eq!(s["sources_indexed"], 1, "{s:#}");
    assert_eq!(s["chunks_embedded"], 1, "{s:#}");
    assert_eq!(s["chunks_added"], 1, "{s:#}");
    assert_eq!(s["chunks_removed"], 0, "{s:#}");
    assert!(s["chunks_unchanged"].as_u64().unwrap() > 10, "{s:#}");
    let r = search(ws, &["running_priority_for_test", "-n", "1"]);
    assert_eq!(r[0]["title"], "fn running_priority_for_test");

    // A line inserted at the top moves every chunk: spans updated, nothing embedded.
    let text = format!("// moved\n{text}");
    std::fs::write(&gic, &text).unwrap();
    let s = index_json(ws, &[]);
    assert_eq!(s["chunks_embedded"], 0, "{s:#}");
    assert!(s["chunks_updated"].as_u64().unwrap() > 10, "{s:#}");
    let r = search(ws, &["running_priority_for_test", "-n", "1"]);
    let lines = text.lines().count() as u64;
    assert_eq!(r[0]["end_line"], lines, "{:#}", r[0]);

    // Deleting a file removes its chunks.
    let readme = ws.join("README.md");
    assert!(!search(ws, &["eterna", "--path", "README.md"]).is_empty());
    std::fs::remove_file(&readme).unwrap();
    let s = index_json(ws, &[]);
    assert_eq!(s["sources_removed"], 1, "{s:#}");
    assert!(s["chunks_removed"].as_u64().unwrap() >= 1, "{s:#}");
    assert!(search(ws, &["eterna", "--path", "README.md"]).is_empty());
    let after = status(ws, &[]);
    assert_eq!(after["consistent"], true, "{after:#}");
    assert_eq!(
        after["stats"]["chunks"].as_i64().unwrap(),
        before["chunks"].as_i64().unwrap() + 1 - s["chunks_removed"].as_i64().unwrap()
    );
}

/// A store of schema version 1 (the original design), made by hand.
fn make_v1_store(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, command TEXT NOT NULL,
             status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT);
         CREATE TABLE agent_tasks (id INTEGER PRIMARY KEY, task_id TEXT NOT NULL UNIQUE, run_id TEXT,
             module TEXT NOT NULL, agent TEXT NOT NULL, status TEXT NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0, tokens_in INTEGER NOT NULL DEFAULT 0,
             tokens_out INTEGER NOT NULL DEFAULT 0, cost REAL NOT NULL DEFAULT 0,
             started_at TEXT, finished_at TEXT, error TEXT);
         CREATE TABLE code_artifacts (id INTEGER PRIMARY KEY, module TEXT NOT NULL, path TEXT NOT NULL,
             content TEXT NOT NULL, content_hash TEXT NOT NULL, parent_id INTEGER REFERENCES code_artifacts(id),
             origin_agent TEXT NOT NULL, model TEXT, created_at TEXT NOT NULL);
         CREATE TABLE llm_cache (key TEXT PRIMARY KEY, model TEXT NOT NULL, response TEXT NOT NULL,
             created_at TEXT NOT NULL);
         CREATE TABLE agent_memory (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, source_path TEXT NOT NULL,
             content TEXT NOT NULL);
         INSERT INTO code_artifacts (module, path, content, content_hash, origin_agent, created_at)
             VALUES ('eterna::arch::aarch64::gic', 'eterna/src/arch/x86_64/apic.rs',
                     'pub fn lapic_enable_for_migration_test() {}', 'h', 'eterna-port', '2026-01-01');
         INSERT INTO agent_tasks (task_id, module, agent, status, tokens_in) VALUES
             ('t1', 'eterna::arch::aarch64::gic', 'eterna-port', 'done', 1200);
         INSERT INTO llm_cache VALUES ('k', 'm', 'cached answer', '2026-01-01');
         INSERT INTO agent_memory (kind, source_path, content) VALUES ('code', 'old.rs', 'old chunk');
         PRAGMA application_id = 1163153492;
         PRAGMA user_version = 1;",
    )
    .unwrap();
}

#[test]
fn migrates_a_version_1_store_and_keeps_its_data() {
    let ws = copy_tree(&fixture_dir());
    let db = db_path(ws.path());
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    make_v1_store(&db);

    let st = status(ws.path(), &[]);
    assert_eq!(st["stats"]["schema_version"], 6, "{st:#}");
    assert_eq!(st["stats"]["code_artifacts"], 1);
    assert_eq!(st["stats"]["agent_tasks"], 1);
    assert_eq!(st["stats"]["llm_cache"], 1);
    assert_eq!(
        st["stats"]["chunks"], 0,
        "old chunks are derived data: dropped"
    );

    let s = index_json(ws.path(), &[]);
    assert!(s["chunks_added"].as_u64().unwrap() > 300);
    // The artifact is indexed as kind `artifact`.
    let r = search(
        ws.path(),
        &["lapic_enable_for_migration_test", "--kind", "artifact"],
    );
    assert_eq!(
        r[0]["path"],
        "@artifact/eterna/src/arch/x86_64/apic.rs",
        "{}",
        show(&r)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (version, app): (i64, i64) = conn
        .query_row("SELECT (SELECT user_version FROM pragma_user_version), (SELECT application_id FROM pragma_application_id)", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((version, app), (6, 0x4554_5054));
    // Version 3's, 4's and 5's tables exist and are empty.
    for table in [
        "agent_health",
        "fix_iterations",
        "port_items",
        "serve_runs",
        "serve_events",
    ] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    let tokens: i64 = conn
        .query_row(
            "SELECT tokens_in FROM agent_tasks WHERE task_id = 't1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tokens, 1200);
}

fn assert_refused(ws: &Path, db: &Path, args: &[&str], needle: &str) {
    let before = std::fs::read(db).unwrap();
    let out = command(ws, args)
        .env("ETERNA_PORT_DB", db)
        .output()
        .unwrap();
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(std::fs::read(db).unwrap(), before, "the file was modified");
    assert!(
        !db.with_extension("db-wal").exists(),
        "a WAL file was created"
    );
}

#[test]
fn corrupt_foreign_and_newer_stores_are_refused_and_left_untouched() {
    let ws = mini_hypervisor();
    let dir = tempfile::tempdir().unwrap();

    // Random bytes.
    let corrupt = dir.path().join("corrupt.db");
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let bytes: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&corrupt, &bytes).unwrap();
    for args in [
        &["index"][..],
        &["index", "--rebuild-index"],
        &["search", "gic"],
        &["status"],
    ] {
        assert_refused(ws.path(), &corrupt, args, "not a SQLite database");
    }

    // Another program's SQLite database.
    let foreign = dir.path().join("foreign.db");
    {
        let c = rusqlite::Connection::open(&foreign).unwrap();
        c.execute_batch(
            "PRAGMA application_id = 1234; CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('mine');",
        )
        .unwrap();
    }
    for args in [&["index"][..], &["index", "--rebuild-index"], &["status"]] {
        assert_refused(ws.path(), &foreign, args, "another program");
    }
    // A plain SQLite file without our id, with tables, is foreign too.
    let plain = dir.path().join("plain.db");
    {
        let c = rusqlite::Connection::open(&plain).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    assert_refused(ws.path(), &plain, &["index"], "another program");

    // Ours, but from a newer version.
    let newer = dir.path().join("newer.db");
    {
        let c = rusqlite::Connection::open(&newer).unwrap();
        c.execute_batch("PRAGMA application_id = 1163153492; PRAGMA user_version = 99; CREATE TABLE meta (key TEXT);")
            .unwrap();
    }
    assert_refused(ws.path(), &newer, &["index"], "newer");
}

#[test]
fn rebuild_index_keeps_artifacts_and_tasks() {
    let ws = indexed_fixture();
    let db = db_path(ws.path());
    {
        use cargo_eterna_port::store::{NewArtifact, Store, TaskRecord};
        let store = Store::open(&db).unwrap();
        let first = store
            .record_artifact(&NewArtifact {
                module: "eterna::arch::aarch64::gic",
                path: "eterna/src/arch/x86_64/apic.rs",
                content: "pub fn v1() {}",
                origin_agent: "eterna-port",
                model: None,
            })
            .unwrap();
        let second = store
            .record_artifact(&NewArtifact {
                module: "eterna::arch::aarch64::gic",
                path: "eterna/src/arch/x86_64/apic.rs",
                content: "pub fn apic_version_two_marker() {}",
                origin_agent: "debug",
                model: Some("x-ai/grok-4-fast"),
            })
            .unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        let parent: Option<i64> = conn
            .query_row(
                "SELECT parent_id FROM code_artifacts WHERE id = ?1",
                [second],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(parent, Some(first));
        let mut task = TaskRecord {
            task_id: "t",
            run_id: None,
            module: "eterna::arch::aarch64::gic",
            agent: "eterna-port",
            status: "running",
            attempts: 1,
            tokens_in: 10,
            tokens_out: 0,
            cost: 0.0,
            error: None,
        };
        store.record_task(&task).unwrap();
        task.status = "done";
        task.tokens_out = 99;
        store.record_task(&task).unwrap();
        let (status, out, finished): (String, i64, Option<String>) = conn
            .query_row(
                "SELECT status, tokens_out, finished_at FROM agent_tasks WHERE task_id = 't'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((status.as_str(), out), ("done", 99));
        assert!(finished.is_some());
        store.cache_put("req", "m", "resp").unwrap();
    }
    let before = status(ws.path(), &[])["stats"].clone();
    let s = index_json(ws.path(), &["--rebuild-index"]);
    assert!(s["chunks_added"].as_u64().unwrap() > 300, "{s:#}");
    let after = status(ws.path(), &[]);
    assert_eq!(after["consistent"], true);
    let a = &after["stats"];
    assert_eq!(a["code_artifacts"], 2);
    assert_eq!(a["agent_tasks"], 1);
    assert_eq!(a["llm_cache"], 1);
    assert_eq!(
        a["runs"].as_i64().unwrap(),
        before["runs"].as_i64().unwrap() + 1
    );
    // Only the newest artifact version is indexed (one more source than before).
    assert_eq!(
        a["sources"].as_i64().unwrap(),
        before["sources"].as_i64().unwrap() + 1
    );
    let r = search(
        ws.path(),
        &["apic_version_two_marker", "--kind", "artifact"],
    );
    assert_eq!(r.len(), 1, "{}", show(&r));
}

#[test]
fn an_unwritable_store_location_is_a_clear_error() {
    let ws = mini_hypervisor();
    // Tests run as root, for whom permission bits do not stop writes; a path below a
    // regular file cannot be created by anyone.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let db = file.join("store/eterna.db");
    let out = command(ws.path(), &["index"])
        .env("ETERNA_PORT_DB", &db)
        .output()
        .unwrap();
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("ETERNA_PORT_DB"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    // The store path is a directory.
    let out = command(ws.path(), &["status"])
        .env("ETERNA_PORT_DB", dir.path())
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("directory"), "{}", stderr(&out));
}

/// A workspace of `files` modules of `fns` functions each (about one chunk per fn).
fn big_workspace(files: usize, fns: usize) -> tempfile::TempDir {
    let ws = workspace(&[(
        "Cargo.toml",
        "[package]\nname = \"big\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )]);
    let mut lib = String::from("#![no_std]\n");
    for f in 0..files {
        lib.push_str(&format!("pub mod m{f};\n"));
        let mut text = String::new();
        for i in 0..fns {
            text.push_str(&format!(
                "/// Programs block {i} of unit {f}: stage 2 tables, GIC list registers.\npub fn unit_{f}_block_{i}(v: u64) -> u64 {{\n    let x = v ^ {i};\n    x.rotate_left({f} % 64)\n}}\n\n"
            ));
        }
        write(ws.path(), &format!("src/m{f}.rs"), text.as_bytes());
    }
    write(ws.path(), "src/lib.rs", lib.as_bytes());
    ws
}

fn count(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

fn assert_consistent(ws: &Path) -> Value {
    let st = status(ws, &[]);
    let s = &st["stats"];
    assert_eq!(st["consistent"], true, "{st:#}");
    assert_eq!(s["chunks"], s["vectors"], "{st:#}");
    assert_eq!(s["chunks"], s["fts_rows"], "{st:#}");
    st
}

#[test]
fn search_works_while_index_writes() {
    let ws = big_workspace(150, 40);
    let db = db_path(ws.path());
    // Something to find from the start.
    let first = run(ws.path(), &["index", "-q"]);
    assert_code(&first, 0);
    // Change every file so the next index rewrites everything.
    for f in 0..150 {
        let p = ws.path().join(format!("src/m{f}.rs"));
        let t = std::fs::read_to_string(&p)
            .unwrap()
            .replace("Programs", "Sets up");
        std::fs::write(&p, t).unwrap();
    }
    let mut index = command(ws.path(), &["index", "-q"]).spawn().unwrap();
    let mut searches: Vec<Output> = Vec::new();
    let t = Instant::now();
    while searches.len() < 3
        || (index.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(60))
    {
        searches.push(run(
            ws.path(),
            &[
                "search",
                "stage 2 tables unit 7",
                "-n",
                "3",
                "--message-format",
                "json",
            ],
        ));
        if searches.len() >= 12 {
            break;
        }
    }
    let status_code = index.wait().unwrap();
    assert!(status_code.success(), "index failed: {status_code:?}");
    for s in &searches {
        assert_code(s, 0);
        let v = json(s);
        assert!(!v["results"].as_array().unwrap().is_empty(), "{v:#}");
    }
    assert!(count(&db, "SELECT count(*) FROM agent_memory") > 6000);
    assert_consistent(ws.path());
}

#[test]
fn a_killed_index_leaves_a_consistent_store_that_the_next_run_completes() {
    let ws = big_workspace(300, 40);
    let db = db_path(ws.path());
    let mut child = command(ws.path(), &["index", "-q"]).spawn().unwrap();
    // Wait until it has committed some sources, then kill -9.
    let t = Instant::now();
    loop {
        if db.exists() && count(&db, "SELECT count(*) FROM memory_sources") >= 5 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "index finished before it could be killed; make the workspace bigger"
        );
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "index made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed_early = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(killed_early, "index finished before the kill");

    let st = assert_consistent(ws.path());
    let partial = st["stats"]["sources"].as_i64().unwrap();
    assert!(partial >= 5, "{st:#}");

    let s = index_json(ws.path(), &[]);
    assert!(
        s["sources_unchanged"].as_i64().unwrap() >= partial - 1,
        "{s:#}"
    );
    assert!(s["sources_indexed"].as_i64().unwrap() > 0, "{s:#}");
    let st = assert_consistent(ws.path());
    assert_eq!(st["stats"]["unembedded"], 0);
    // 300 modules + lib.rs + the knowledge files.
    assert!(st["stats"]["sources"].as_i64().unwrap() > 301, "{st:#}");
    let s = index_json(ws.path(), &[]);
    assert_eq!(s["chunks_embedded"], 0, "{s:#}");
}

#[test]
fn status_without_a_store_does_not_create_one() {
    let ws = mini_hypervisor();
    let st = status(ws.path(), &[]);
    assert_eq!(st["exists"], false);
    assert!(!db_path(ws.path()).exists());
    let out = run(ws.path(), &["status"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("no store at"), "{}", stdout(&out));
}

mod remote {
    use super::*;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    const KEY: &str = "sk-test-remote-embedder-0123456789";
    const DIM: usize = 24;

    /// A deterministic fake embedding: letter counts folded into DIM dimensions.
    fn fake(text: &str) -> Vec<f32> {
        let mut v = vec![0.01f32; DIM];
        for (i, b) in text.bytes().enumerate() {
            v[(b as usize + i % 3) % DIM] += 1.0;
        }
        v
    }

    fn embeddings(req: &Request) -> ResponseTemplate {
        crate::common::embeddings_response(req, fake)
    }

    fn remote_cmd(ws: &Path, url: &str, args: &[&str]) -> std::process::Command {
        let mut cmd = command(ws, args);
        cmd.env("ETERNA_PORT_EMBEDDER", "remote")
            .env("ETERNA_PORT_EMBEDDINGS_BASE_URL", url)
            .env("ETERNA_PORT_EMBEDDING_MODEL", "test-embed")
            .env("OPENAI_API_KEY", KEY);
        cmd
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remote_embedder_request_shape_dimension_and_switching() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/embeddings"))
            .and(header("authorization", format!("Bearer {KEY}").as_str()))
            .respond_with(embeddings)
            .mount(&server)
            .await;
        let url = format!("{}/v1", server.uri());
        let ws = mini_hypervisor();
        let wsp = ws.path().to_path_buf();

        let u = url.clone();
        let w = wsp.clone();
        let out = tokio::task::spawn_blocking(move || {
            remote_cmd(&w, &u, &["index", "--message-format", "json"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_code(&out, 0);
        let v = json(&out);
        assert_eq!(
            v["index"]["embedder"],
            format!("remote:test-embed@{url}"),
            "{v:#}"
        );
        assert!(!stdout(&out).contains(KEY) && !stderr(&out).contains(KEY));

        // Request shape: model and an input array, in batches of at most 64.
        let requests = server.received_requests().await.unwrap();
        assert!(requests.len() >= 2);
        for r in &requests {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["model"], "test-embed");
            let n = body["input"].as_array().unwrap().len();
            assert!((1..=64).contains(&n), "{n} inputs");
            assert_eq!(
                r.headers.get("authorization").unwrap().to_str().unwrap(),
                format!("Bearer {KEY}")
            );
        }

        let (u, w) = (url.clone(), wsp.clone());
        let out = tokio::task::spawn_blocking(move || {
            remote_cmd(&w, &u, &["status", "--message-format", "json"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_code(&out, 0);
        let st = json(&out);
        assert_eq!(st["stats"]["embedding_dim"], DIM as i64, "{st:#}");
        assert_eq!(st["consistent"], true);
        // The key is nowhere in the store.
        let db = std::fs::read(db_path(&wsp)).unwrap();
        assert!(!db.windows(KEY.len()).any(|w| w == KEY.as_bytes()));

        // Search embeds the query remotely.
        let before = server.received_requests().await.unwrap().len();
        let (u, w) = (url.clone(), wsp.clone());
        let out = tokio::task::spawn_blocking(move || {
            remote_cmd(&w, &u, &["search", "gic", "--message-format", "json"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_code(&out, 0);
        assert!(!json(&out)["results"].as_array().unwrap().is_empty());
        assert_eq!(server.received_requests().await.unwrap().len(), before + 1);

        // The local embedder on the same store: refused by search until re-indexed,
        // then every chunk is embedded again and the dimension is 256.
        let w = wsp.clone();
        let (out, idx) = tokio::task::spawn_blocking(move || {
            (
                run(&w, &["search", "gic"]),
                run(&w, &["index", "--message-format", "json"]),
            )
        })
        .await
        .unwrap();
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains("cargo eterna-port index"),
            "{}",
            stderr(&out)
        );
        assert_code(&idx, 0);
        let v = json(&idx);
        assert_eq!(v["index"]["reembedded_all"], true, "{v:#}");
        let st = status(&wsp, &[]);
        assert_eq!(
            v["index"]["chunks_embedded"], st["stats"]["chunks"],
            "{v:#}"
        );
        assert_eq!(st["stats"]["embedding_dim"], 256);
        assert_eq!(st["consistent"], true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remote_embedder_errors_are_clear() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/unauth/embeddings"))
            .respond_with(ResponseTemplate::new(401).set_body_string("{\"error\":\"bad key\"}"))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/down/embeddings"))
            .respond_with(ResponseTemplate::new(503).set_body_string("overloaded"))
            .mount(&server)
            .await;
        let ws = mini_hypervisor();
        let wsp = ws.path().to_path_buf();
        let base = server.uri();
        let outs = tokio::task::spawn_blocking(move || {
            let unauth = remote_cmd(&wsp, &format!("{base}/unauth"), &["index"])
                .output()
                .unwrap();
            let down = remote_cmd(&wsp, &format!("{base}/down"), &["index"])
                .output()
                .unwrap();
            let nokey = {
                let mut c = remote_cmd(&wsp, &format!("{base}/down"), &["index"]);
                c.env_remove("OPENAI_API_KEY");
                c.output().unwrap()
            };
            (unauth, down, nokey)
        })
        .await
        .unwrap();
        assert_code(&outs.0, 2);
        let e = stderr(&outs.0);
        assert!(
            e.contains("401") && e.contains("check OPENAI_API_KEY"),
            "{e}"
        );
        assert!(!e.contains(KEY), "{e}");
        assert_code(&outs.1, 2);
        let e = stderr(&outs.1);
        assert!(e.contains("503") && e.contains("embeddings server"), "{e}");
        assert_code(&outs.2, 2);
        assert!(
            stderr(&outs.2).contains("OPENAI_API_KEY is not set"),
            "{}",
            stderr(&outs.2)
        );
    }
}

#[test]
fn a_new_component_moves_chunks_without_re_embedding() {
    use cargo_eterna_port::store::index::Kind;
    use cargo_eterna_port::store::{Filters, LocalEmbedder, SourceFile, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let e = LocalEmbedder::new();
    let src = |component: &str| {
        SourceFile {
        path: "hv/src/irq.rs".into(),
        kind: Kind::Code,
        text: "/// Routes a physical interrupt.\npub fn route_interrupt(intid: u32) -> u32 {\n    let x = intid;\n    x + 1\n}\n".into(),
        module_path: Some("hv::irq".into()),
        component: Some(component.into()),
        arch: "neutral".into(),
    }
    };
    let s = store.index(&[src("timer")], &e, &|_, _| {}).unwrap();
    assert_eq!((s.chunks_added, s.chunks_embedded), (1, 1));
    let s = store
        .index(&[src("interrupt-controller")], &e, &|_, _| {})
        .unwrap();
    assert_eq!((s.chunks_updated, s.chunks_embedded), (1, 0), "{s:?}");
    let only = |c: &str| Filters {
        component: Some(c.into()),
        ..Filters::default()
    };
    let hits = store
        .search("route interrupt", 5, &only("interrupt-controller"), &e)
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].vector_rank, Some(1), "{hits:?}");
    assert!(store
        .search("route interrupt", 5, &only("timer"), &e)
        .unwrap()
        .is_empty());
    assert_eq!(store.check_consistency().unwrap(), None);
}

#[test]
fn embedder_settings_come_from_metadata_and_environment() {
    let ws = workspace(&[
        (
            "Cargo.toml",
            "[package]\nname = \"e\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[package.metadata.eterna-port]\nembedder = \"remote\"\nembedding-model = \"my-embed\"\n",
        ),
        ("src/lib.rs", "pub fn f() {}\n"),
    ]);
    let out = command(ws.path(), &["config", "--message-format", "json"])
        .env("ETERNA_PORT_EMBEDDINGS_BASE_URL", "http://127.0.0.1:9/v1")
        .env("OPENAI_API_KEY", "sk-never-shown-123")
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(!stdout(&out).contains("sk-never-shown-123"));
    let c = json(&out);
    assert_eq!(c["embedder"]["value"], "remote");
    assert_eq!(c["embedder"]["source"]["kind"], "package-metadata");
    assert_eq!(c["embedding_model"]["value"], "my-embed");
    assert_eq!(c["embeddings_base_url"]["value"], "http://127.0.0.1:9/v1");
    assert_eq!(c["embeddings_base_url"]["source"]["kind"], "env");
    // The environment wins over metadata; a bad value is a clear error.
    let out = command(ws.path(), &["config"])
        .env("ETERNA_PORT_EMBEDDER", "gpu")
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("embedder `gpu`"), "{}", stderr(&out));
    let out = command(ws.path(), &["config", "--message-format", "json"])
        .env("ETERNA_PORT_EMBEDDER", "local")
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(json(&out)["embedder"]["value"], "local");
}
