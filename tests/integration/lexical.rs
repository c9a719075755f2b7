//! The lexical side of retrieval learns from the knowledge base: abbreviated
//! identifiers (`mpidr`, `GICD_CTLR`, `pt_entry`) are found by the words they stand
//! for, and a question that names a concept in words ("exception return") finds the
//! code that only uses its identifiers (`eret`, `elr_el2`, `spsr_el2`).

use std::path::Path;

use serde_json::Value;

use crate::common::{assert_code, json, run, workspace};

/// A small ARM64 hypervisor whose code never spells out what its identifiers mean.
fn terse_workspace() -> tempfile::TempDir {
    workspace(&[
        (
            "Cargo.toml",
            "[package]\nname = \"terse\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        ),
        ("src/lib.rs", "#![no_std]\n#[cfg(target_arch = \"aarch64\")]\npub mod arch;\npub mod vm;\n"),
        ("src/arch/mod.rs", "pub mod aarch64;\n"),
        (
            "src/arch/aarch64/mod.rs",
            "pub mod leave;\npub mod flush;\npub mod smp;\npub mod gic;\npub mod paging;\npub mod uart;\npub mod timer;\n",
        ),
        (
            "src/arch/aarch64/leave.rs",
            "use core::arch::asm;\n\npub fn resume_vcpu(pc: u64, pstate: u64) -> ! {\n    unsafe {\n        asm!(\"msr elr_el2, {0}\", \"msr spsr_el2, {1}\", \"eret\", in(reg) pc, in(reg) pstate, options(noreturn))\n    }\n}\n",
        ),
        (
            "src/arch/aarch64/flush.rs",
            "use core::arch::asm;\n\npub fn flush_line(va: usize) {\n    unsafe { asm!(\"dc cvac, {}\", \"dsb sy\", in(reg) va) };\n}\n",
        ),
        (
            "src/arch/aarch64/smp.rs",
            "use core::arch::asm;\n\npub fn read_mpidr() -> u64 {\n    let v: u64;\n    unsafe { asm!(\"mrs {}, mpidr_el1\", out(reg) v) };\n    v & 0xff_00ff_ffff\n}\n",
        ),
        (
            "src/arch/aarch64/gic.rs",
            "pub const GICD_CTLR: usize = 0x0;\n\npub fn gicd_enable(base: usize) {\n    unsafe { core::ptr::write_volatile((base + GICD_CTLR) as *mut u32, 0x37) };\n}\n",
        ),
        (
            "src/arch/aarch64/paging.rs",
            "pub fn set_pt_entry(pt: &mut [u64; 512], idx: usize, pa: u64) {\n    pt[idx] = pa | 0x3;\n}\n",
        ),
        (
            "src/arch/aarch64/uart.rs",
            "pub fn putc(base: usize, c: u8) {\n    unsafe { core::ptr::write_volatile(base as *mut u8, c) };\n}\n",
        ),
        (
            "src/arch/aarch64/timer.rs",
            "use core::arch::asm;\n\npub fn arm_deadline(ticks: u64) {\n    unsafe { asm!(\"msr cnthp_tval_el2, {}\", in(reg) ticks) };\n}\n",
        ),
        (
            "src/vm.rs",
            "pub struct Vm {\n    pub id: u16,\n    pub vcpus: usize,\n}\n\nimpl Vm {\n    pub fn new(id: u16) -> Vm {\n        Vm { id, vcpus: 1 }\n    }\n}\n",
        ),
    ])
}

fn code_results(dir: &Path, query: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "search",
        "--message-format",
        "json",
        "--kind",
        "code",
        "-n",
        "10",
    ];
    args.extend_from_slice(extra);
    args.push(query);
    let o = run(dir, &args);
    assert_code(&o, 0);
    json(&o)["results"].as_array().unwrap().clone()
}

fn rank_of(results: &[Value], path: &str) -> Option<usize> {
    results
        .iter()
        .position(|r| r["path"] == path)
        .map(|i| i + 1)
}

#[test]
fn abbreviated_identifiers_are_found_by_the_words_they_stand_for() {
    let ws = terse_workspace();
    assert_code(&run(ws.path(), &["index"]), 0);
    for (query, file, absent) in [
        (
            "multiprocessor affinity",
            "src/arch/aarch64/smp.rs",
            "multiprocessor",
        ),
        (
            "enable the distributor",
            "src/arch/aarch64/gic.rs",
            "distributor",
        ),
        (
            "write a page table entry",
            "src/arch/aarch64/paging.rs",
            "table",
        ),
    ] {
        let text = std::fs::read_to_string(ws.path().join(file)).unwrap();
        assert!(
            !text.to_lowercase().contains(absent),
            "the test needs terse code"
        );
        let results = code_results(ws.path(), query, &[]);
        assert_eq!(rank_of(&results, file), Some(1), "{query}: {results:#?}");
        // Found by the full-text index, which only knows the words through the
        // abbreviation aliases.
        assert!(
            results[0]["text_rank"].is_u64(),
            "{query}: {:#}",
            results[0]
        );
    }
}

#[test]
fn a_concept_named_in_words_finds_the_code_using_its_identifiers() {
    let ws = terse_workspace();
    assert_code(&run(ws.path(), &["index"]), 0);
    let file = "src/arch/aarch64/flush.rs";
    let text = std::fs::read_to_string(ws.path().join(file)).unwrap();
    for w in ["clean", "point", "coherency"] {
        assert!(!text.contains(w), "the test needs terse code");
    }
    let query = "clean to the point of coherency";
    let expanded = code_results(ws.path(), query, &[]);
    assert_eq!(rank_of(&expanded, file), Some(1), "{expanded:#?}");
    // Not by the query's own words: the full-text list on them does not hold it.
    assert!(expanded[0]["text_rank"].is_null(), "{:#}", expanded[0]);
    let literal = code_results(ws.path(), query, &["--literal"]);
    assert_ne!(rank_of(&literal, file), Some(1), "{literal:#?}");
}
