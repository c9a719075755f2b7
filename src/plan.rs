//! The port plan: which ARM64 modules exist, what component each is, where its x86_64
//! counterpart goes, whether that counterpart exists, and in which order to port them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, Result};
use petgraph::graph::DiGraph;
use serde::{Deserialize, Serialize};

use crate::knowledge::{ComponentId, Knowledge, ARCH_NEUTRAL};
use crate::workspace::{
    relative_to, Diagnostic, Evidence, EvidenceKind, Item, ItemKind, ScannedModule,
};

/// Version of the JSON document; bumped only on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Whether the x86_64 counterpart of a module exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The target file does not exist.
    #[default]
    New,
    /// The target exists and covers the source's public API.
    Exists,
    /// The target exists but misses items, has placeholders or does not parse.
    Partial,
}

impl Status {
    /// `new`, `exists` or `partial`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Exists => "exists",
            Status::Partial => "partial",
        }
    }
}

/// The plan for one ARM64 module.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModulePlan {
    /// The package the module belongs to.
    pub package: String,
    /// Source file, relative to the workspace root.
    pub source: String,
    /// The module's path (`hv::arch::aarch64::gic`).
    pub module_path: String,
    /// The component of the vocabulary it implements.
    pub component: ComponentId,
    /// Target file, relative to the workspace root. It keeps the module's name
    /// (`arch/aarch64/gic.rs` → `arch/x86_64/gic.rs`); equal to `source` when the
    /// file is edited in place (cfg wiring).
    pub target: String,
    /// The x86_64 concept the target implements (`apic`, `ept`, `vmcs`), for docs.
    pub x86_concept: Option<String>,
    /// Whether its x86_64 counterpart exists.
    pub status: Status,
    /// Module paths of the planned modules this one `use`s (port those first).
    pub depends_on: Vec<String>,
    /// The ARM64 evidence that made it a planned module.
    pub evidence: Vec<Evidence>,
    /// The module's public API.
    pub items: Vec<Item>,
    /// For `partial`: what the target still lacks.
    pub missing: Vec<String>,
}

/// The whole plan (`cargo eterna-port plan --message-format json`).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The document's version.
    pub schema_version: u32,
    /// The workspace planned.
    pub workspace_root: String,
    /// The x86_64 target triple the port is for.
    pub target_triple: String,
    /// In dependency order: every module comes after the modules it depends on
    /// (modules in a `use` cycle are adjacent, by module path).
    pub modules: Vec<ModulePlan>,
    /// What the scan could not read, and other scan problems.
    pub diagnostics: Vec<Diagnostic>,
    /// Dependencies of the workspace's packages that exist only for ARM.
    pub arm_dependencies: Vec<ArmDependency>,
}

/// A dependency that exists only for ARM (a known ARM crate or one named after ARM64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArmDependency {
    /// The workspace package that depends on it.
    pub package: String,
    /// The dependency's name as written in Cargo.toml (its `package = …` rename, if any,
    /// is the key's name).
    pub name: String,
    /// `normal`, `build` or `dev`.
    pub kind: String,
    /// Already under a `[target.'cfg(target_arch = "aarch64")'.dependencies]` table.
    pub already_gated: bool,
    /// Module paths that `use` or name it.
    pub used_by: Vec<String>,
    /// Those of `used_by` that are not ARM64 modules of the plan (shared code, or a
    /// module only edited in place for wiring).
    pub used_outside_arm64: Vec<String>,
}

impl Plan {
    /// The packages holding planned modules, in plan order, each once.
    pub fn packages(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in &self.modules {
            if !out.contains(&m.package) {
                out.push(m.package.clone());
            }
        }
        out
    }
}

/// Builds the plan from the scanned modules.
pub fn build(
    root: &Path,
    target_triple: &str,
    scanned: &[ScannedModule],
    diagnostics: Vec<Diagnostic>,
    knowledge: &Knowledge,
) -> Plan {
    let index: HashMap<String, usize> = scanned
        .iter()
        .enumerate()
        .map(|(i, m)| (m.module_path(), i))
        .collect();
    let crates: BTreeSet<&str> = scanned.iter().map(|m| m.crate_name.as_str()).collect();

    // x86_64 modules (`arch/x86_64/…`, `guest/x86_64.rs`) are the port's output, never
    // its input, even where they still hold carried-over ARM64 code; other
    // architectures' modules are never planned.
    let mut planned: Vec<usize> = (0..scanned.len())
        .filter(|&i| {
            scanned[i].is_arm64(knowledge) && !is_x86_64_path(&relative_to(root, &scanned[i].file))
        })
        .collect();
    let by_file: HashMap<&Path, usize> = scanned
        .iter()
        .enumerate()
        .map(|(i, m)| (m.file.as_path(), i))
        .collect();
    // Files declaring a gated subtree root are edited in place: the engine adds the
    // x86_64 `mod` line beside the gated one.
    let in_place: BTreeSet<usize> = planned
        .iter()
        .filter(|&&i| {
            let m = &scanned[i];
            m.gated.as_ref().is_some_and(|g| g.root_file == m.file) && !is_arm64_dir_path(m)
        })
        .filter_map(|&i| scanned[i].parent_file.as_deref())
        .filter_map(|f| by_file.get(f).copied())
        .collect();
    let mut targets: HashMap<usize, String> = HashMap::new();
    let mut components: HashMap<usize, &str> = HashMap::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for &i in &planned {
        let m = &scanned[i];
        let source = relative_to(root, &m.file);
        let component = classify(m, &source, knowledge);
        let mut target = if in_place.contains(&i) {
            source.clone()
        } else {
            target_path(m, &source, root)
        };
        let mut n = 2;
        let base = target.clone();
        while taken.contains(&target) {
            target = match base.strip_suffix(".rs") {
                Some(stem) => format!("{stem}_{n}.rs"),
                None => format!("{base}_{n}"),
            };
            n += 1;
        }
        taken.insert(target.clone());
        components.insert(i, component);
        targets.insert(i, target);
    }
    // Parent wiring: a file declaring a planned module whose target is elsewhere gets
    // the x86_64 `mod` line, so it is planned too (in place).
    let planned_set: BTreeSet<usize> = planned.iter().copied().collect();
    let mut wiring: BTreeSet<usize> = BTreeSet::new();
    for &i in &planned {
        let source = relative_to(root, &scanned[i].file);
        // Only mirrored targets need a new `mod` line in the parent; a split target
        // (`guest.rs` → `guest/x86_64.rs`) is declared by the module itself.
        let mirrored = is_arm64_dir_path(&scanned[i]) || scanned[i].gated.is_some();
        if targets[&i] == source || !mirrored {
            continue;
        }
        if let Some(&p) = scanned[i]
            .parent_file
            .as_deref()
            .and_then(|f| by_file.get(f))
        {
            if !planned_set.contains(&p)
                && !scanned[p].other_arch
                && !is_x86_64_path(&relative_to(root, &scanned[p].file))
            {
                wiring.insert(p);
            }
        }
    }
    for &p in &wiring {
        let m = &scanned[p];
        let source = relative_to(root, &m.file);
        components.insert(p, classify(m, &source, knowledge));
        taken.insert(source.clone());
        targets.insert(p, source);
        planned.push(p);
    }
    let planned_set: BTreeSet<usize> = planned.iter().copied().collect();

    // Dependencies between planned modules.
    let mut deps: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for &i in &planned {
        let m = &scanned[i];
        let set = deps.entry(i).or_default();
        for u in &m.facts.uses {
            if let Some(j) = resolve_use(m, &u.inline_path, &u.segments, &index, &crates) {
                if j != i && planned_set.contains(&j) {
                    set.insert(j);
                }
            }
        }
    }

    let mut modules: HashMap<usize, ModulePlan> = HashMap::new();
    for &i in &planned {
        let m = &scanned[i];
        let source = relative_to(root, &m.file);
        let component = components[&i];
        let target = targets[&i].clone();
        let (status, missing) = status_of(m, &source, &target, root, knowledge);
        let x86_concept = knowledge
            .component(component)
            .map(|c| c.x86_name.clone())
            .filter(|n| !n.is_empty());
        modules.insert(
            i,
            ModulePlan {
                package: m.package.clone(),
                source,
                module_path: m.module_path(),
                // The knowledge's component names are checked against the vocabulary
                // when it loads.
                component: ComponentId::parse(component).unwrap_or_default(),
                target,
                x86_concept,
                status,
                depends_on: deps[&i].iter().map(|&j| scanned[j].module_path()).collect(),
                evidence: m.evidence().cloned().collect(),
                items: m.facts.items.clone(),
                missing,
            },
        );
    }

    // Dependency order: Tarjan's SCCs come out in reverse topological order of the
    // edges, and our edges point from a module to what it depends on.
    let mut graph = DiGraph::<usize, ()>::new();
    let nodes: HashMap<usize, _> = planned.iter().map(|&i| (i, graph.add_node(i))).collect();
    for (&i, ds) in &deps {
        for &j in ds {
            graph.add_edge(nodes[&i], nodes[&j], ());
        }
    }
    let mut ordered = Vec::with_capacity(planned.len());
    for mut scc in petgraph::algo::tarjan_scc(&graph) {
        scc.sort_by_key(|n| scanned[graph[*n]].module_path());
        for n in scc {
            if let Some(p) = modules.remove(&graph[n]) {
                ordered.push(p);
            }
        }
    }

    Plan {
        schema_version: SCHEMA_VERSION,
        workspace_root: root.display().to_string(),
        target_triple: target_triple.to_string(),
        modules: ordered,
        diagnostics,
        arm_dependencies: Vec::new(),
    }
}

/// The ARM-only dependencies of `packages` (cargo metadata), with the modules of the
/// plan's scan that use them.
pub fn arm_dependencies<'a>(
    packages: impl IntoIterator<Item = &'a cargo_metadata::Package>,
    scanned: &[ScannedModule],
    plan: &Plan,
    knowledge: &Knowledge,
) -> Vec<ArmDependency> {
    let mut out = Vec::new();
    for pkg in packages {
        for dep in &pkg.dependencies {
            // A path dependency whose directory names ARM64 (`arch/aarch64_hal/gic`)
            // is ARM-only too.
            let arm_dir = dep.path.as_ref().is_some_and(|p| {
                let rel = relative_to(Path::new(&plan.workspace_root), p.as_std_path());
                rel.split('/').any(|seg| knowledge.arch.names_arm64(seg))
            });
            if !knowledge.arch.is_arm_crate(&dep.name) && !arm_dir {
                continue;
            }
            let name = dep.rename.clone().unwrap_or_else(|| dep.name.clone());
            let ident = name.replace('-', "_");
            let kind = match dep.kind {
                cargo_metadata::DependencyKind::Build => "build",
                cargo_metadata::DependencyKind::Development => "dev",
                _ => "normal",
            };
            let already_gated = dep.target.as_ref().is_some_and(|t| {
                let t = t.to_string();
                if t.starts_with("cfg(") {
                    crate::workspace::arch_gate_of(&t) == Some(crate::workspace::ArchGate::Arm)
                } else {
                    t.starts_with("aarch64") || t.starts_with("arm")
                }
            });
            let mut used_by: Vec<String> = scanned
                .iter()
                .filter(|m| m.package == pkg.name.as_str())
                .filter(|m| {
                    m.facts.path_roots.contains(&ident)
                        || m.facts.uses.iter().any(|u| {
                            u.segments.first().map(String::as_str) == Some(ident.as_str())
                                || (u.segments.first().map(String::as_str) == Some("")
                                    && u.segments.get(1) == Some(&ident))
                        })
                })
                .map(ScannedModule::module_path)
                .collect();
            used_by.sort();
            used_by.dedup();
            let used_outside_arm64 = used_by
                .iter()
                .filter(|p| {
                    !plan.modules.iter().any(|m| {
                        &m.module_path == *p
                            && (m.target != m.source
                                || m.evidence.iter().any(|e| {
                                    matches!(
                                        e.kind,
                                        EvidenceKind::Path
                                            | EvidenceKind::GatedMod
                                            | EvidenceKind::ArchCrate
                                    )
                                }))
                    })
                })
                .cloned()
                .collect();
            out.push(ArmDependency {
                package: pkg.name.to_string(),
                name,
                kind: kind.to_string(),
                already_gated,
                used_by,
                used_outside_arm64,
            });
        }
    }
    out
}

/// Whether the module is under an `aarch64`/`arm64` directory of its package (or is an
/// `aarch64.rs`): such modules are mirrored, whatever gates them.
fn is_arm64_dir_path(m: &ScannedModule) -> bool {
    crate::workspace::is_arm64_path(&relative_to(&m.package_dir, &m.file))
}

/// Whether a workspace-relative path is in (or is) an `x86_64` module.
fn is_x86_64_path(rel: &str) -> bool {
    rel.split('/')
        .any(|seg| seg == "x86_64" || seg == "x86_64.rs")
}

/// Resolves a `use` path written in module `m` (inside its inline modules
/// `inline`) to the index of the deepest scanned module it names.
fn resolve_use(
    m: &ScannedModule,
    inline: &[String],
    segments: &[String],
    index: &HashMap<String, usize>,
    crates: &BTreeSet<&str>,
) -> Option<usize> {
    let mut here: Vec<String> = std::iter::once(m.crate_name.clone())
        .chain(m.segments.iter().cloned())
        .chain(inline.iter().cloned())
        .collect();
    let mut rest = segments;
    let mut path: Vec<String> = match rest.first()?.as_str() {
        "crate" => {
            rest = &rest[1..];
            vec![m.crate_name.clone()]
        }
        "self" => {
            rest = &rest[1..];
            here
        }
        "super" => {
            while rest.first().map(String::as_str) == Some("super") {
                if here.len() > 1 {
                    here.pop();
                }
                rest = &rest[1..];
            }
            here
        }
        first => {
            let mut child = here.clone();
            child.push(first.to_string());
            if index.contains_key(&child.join("::")) {
                here
            } else if crates.contains(first) {
                let c = first.to_string();
                rest = &rest[1..];
                vec![c]
            } else {
                return None;
            }
        }
    };
    let mut best = index.get(&path.join("::")).copied();
    for seg in rest {
        path.push(seg.clone());
        match index.get(&path.join("::")) {
            Some(&i) => best = Some(i),
            None => break,
        }
    }
    best
}

/// Splits an identifier into lower-case words (`snake_case` and `CamelCase`).
fn words(ident: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in ident.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut cur = String::new();
        let mut prev_lower = false;
        for c in part.chars() {
            if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            cur.push(c.to_ascii_lowercase());
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

/// Path segments that say nothing about the component.
const NEUTRAL_SEGMENTS: [&str; 8] = [
    "src", "arch", "aarch64", "arm64", "mod", "lib", "main", "rs",
];

/// Classifies a module into the component vocabulary by weighing its file name and
/// directories, its system registers and instructions, and its item names.
pub fn classify<'k>(m: &ScannedModule, source: &str, knowledge: &'k Knowledge) -> &'k str {
    let mut scores: HashMap<&str, i32> = HashMap::new();
    let pkg_rel = source
        .split('/')
        .skip_while(|s| *s != "src")
        .collect::<Vec<_>>();
    let pkg_rel = if pkg_rel.is_empty() {
        source.split('/').collect()
    } else {
        pkg_rel
    };
    let (stem, dirs) = match pkg_rel.split_last() {
        Some((file, dirs)) => (file.trim_end_matches(".rs"), dirs),
        None => ("", &[][..]),
    };
    // The root of an ARM64 arch directory (`arch/aarch64/mod.rs`, `arch/aarch64.rs`)
    // is platform glue: it wires the submodules and implements the arch boundary.
    let is_arch_root = matches!(stem, "aarch64" | "arm64")
        || (matches!(stem, "mod" | "lib" | "main")
            && dirs
                .last()
                .is_some_and(|d| matches!(*d, "aarch64" | "arm64")));
    if is_arch_root {
        scores.insert("platform", 30);
    }
    // A crate root says little itself; its crate's directory and name do
    // (`arm_vcpu/src/lib.rs`, `arch/aarch64_hal/gic/src/lib.rs`).
    // So does an ARM64-named crate's for every module in it (`arm_vgic/src/v3/utils.rs`).
    let in_arch_crate = m
        .context_evidence
        .iter()
        .any(|e| e.kind == EvidenceKind::ArchCrate);
    let mut crate_words: Vec<String> = if in_arch_crate || matches!(stem, "lib" | "main") {
        source
            .split('/')
            .take_while(|s| *s != "src")
            .chain(std::iter::once(m.package.as_str()))
            .flat_map(words)
            .filter(|w| !NEUTRAL_SEGMENTS.contains(&w.as_str()) && w != "arm" && w != "hal")
            .collect()
    } else {
        Vec::new()
    };
    crate_words.sort();
    crate_words.dedup();
    let stem = if NEUTRAL_SEGMENTS.contains(&stem) {
        ""
    } else {
        stem
    };
    let stem_words = words(stem);
    let item_words: Vec<Vec<String>> = m.facts.items.iter().map(|it| words(&it.name)).collect();
    for c in &knowledge.components {
        if c.name == ARCH_NEUTRAL {
            continue;
        }
        let mut s = 0;
        let has = |list: &[String], w: &str| list.iter().any(|t| t == w);
        if !stem.is_empty() {
            if has(&c.arm64_terms, stem) {
                s += 10;
            } else if stem_words.iter().any(|w| has(&c.arm64_terms, w)) {
                s += 6;
            }
            if has(&c.keywords, stem) || stem_words.iter().any(|w| has(&c.keywords, w)) {
                s += 5;
            }
        }
        for d in dirs
            .iter()
            .copied()
            .chain(crate_words.iter().map(String::as_str))
            .filter(|d| !NEUTRAL_SEGMENTS.contains(d))
        {
            if has(&c.arm64_terms, d) {
                s += 4;
            } else if has(&c.keywords, d) {
                s += 3;
            }
        }
        let item_hits = item_words
            .iter()
            .filter(|ws| ws.iter().any(|w| has(&c.keywords, w)))
            .count();
        s += item_hits.min(4) as i32;
        if s > 0 {
            *scores.entry(c.name.as_str()).or_default() += s;
        }
    }
    let mut per_evidence: HashMap<&str, (i32, i32)> = HashMap::new();
    for e in m.evidence() {
        match e.kind {
            EvidenceKind::Sysreg => {
                if let Some(c) = knowledge.sysreg_component(&e.name) {
                    per_evidence.entry(c).or_default().0 += 2;
                }
            }
            EvidenceKind::AsmMnemonic => {
                if let Some(i) = knowledge.instruction(&e.name) {
                    per_evidence.entry(i.component.as_str()).or_default().1 += 1;
                }
            }
            _ => {}
        }
    }
    for (c, (sys, ins)) in per_evidence {
        if c != ARCH_NEUTRAL {
            *scores.entry(c).or_default() += sys.min(8) + ins.min(3);
        }
    }
    let best = knowledge
        .components
        .iter()
        .filter_map(|c| scores.get(c.name.as_str()).map(|&s| (s, c.name.as_str())))
        // Highest score; on a tie, the earlier component in the vocabulary.
        .fold(None::<(i32, &str)>, |acc, (s, n)| match acc {
            Some((bs, _)) if bs >= s => acc,
            _ => Some((s, n)),
        });
    match best {
        Some((s, name)) if s >= 3 => name,
        _ => ARCH_NEUTRAL,
    }
}

/// Where the x86_64 counterpart of a module goes. Targets keep the module's name; the
/// x86 concept only goes into `x86_concept`.
///
/// - Under an `aarch64`/`arm64` directory of its package the layout is mirrored with
///   that segment → `x86_64` (`arch/aarch64/gic.rs` → `arch/x86_64/gic.rs`), and
///   `foo/aarch64.rs` → `foo/x86_64.rs`.
/// - A gated subtree root `D/foo.rs` / `D/foo/mod.rs` goes to `D/x86_64/foo/mod.rs`
///   when it has child modules (a `#[path]`-loaded file resolves its children in its
///   own directory), else to `D/x86_64/foo.rs`; its descendants mirror their path
///   below `D/x86_64/foo/`. An ARM64 crate's top-level modules are such roots.
/// - An ARM64 crate's root is edited in place.
/// - Elsewhere a module that only wires architectures together (cfg gates) is edited in
///   place; one that holds ARM64 code gets an `x86_64` child beside it
///   (`guest.rs` → `guest/x86_64.rs`), unless it declares an ARM64-named child
///   (`mod aarch64;`), whose counterpart is its `x86_64` child: then it is edited in
///   place too, its ARM64 items twinned.
fn target_path(m: &ScannedModule, source: &str, root: &Path) -> String {
    let pkg_prefix = relative_to(root, &m.package_dir);
    let in_pkg = relative_to(&m.package_dir, &m.file);
    let with_prefix = |rel: String| {
        if pkg_prefix.is_empty() || m.file.strip_prefix(&m.package_dir).is_err() {
            rel
        } else {
            format!("{pkg_prefix}/{rel}")
        }
    };
    let segs: Vec<&str> = in_pkg.split('/').collect();
    if m.file.strip_prefix(&m.package_dir).is_ok() {
        if let Some(pos) = segs[..segs.len() - 1]
            .iter()
            .position(|s| *s == "aarch64" || *s == "arm64")
        {
            let mut out: Vec<&str> = segs.clone();
            out[pos] = "x86_64";
            return with_prefix(out.join("/"));
        }
        if let Some(last) = segs.last() {
            if *last == "aarch64.rs" || *last == "arm64.rs" {
                let mut out: Vec<&str> = segs[..segs.len() - 1].to_vec();
                out.push("x86_64.rs");
                return with_prefix(out.join("/"));
            }
        }
    }
    if let Some(g) = &m.gated {
        let base = g.dir.join("x86_64").join(&g.name);
        if g.root_file == m.file {
            let has_children = m.facts.mods.iter().any(|d| {
                !matches!(
                    d.gate,
                    Some(crate::workspace::ArchGate::X86_64 | crate::workspace::ArchGate::Other)
                )
            });
            let t = if has_children {
                base.join("mod.rs")
            } else {
                g.dir.join("x86_64").join(format!("{}.rs", g.name))
            };
            return relative_to(root, &t);
        }
        if let Ok(rel) = m.file.strip_prefix(&g.root_child_dir) {
            return relative_to(root, &base.join(rel));
        }
    }
    if m.arch_crate_root {
        return source.to_string();
    }
    let wiring_only = m.evidence().all(|e| {
        matches!(
            e.kind,
            EvidenceKind::Cfg
                | EvidenceKind::Path
                | EvidenceKind::ArchPath
                | EvidenceKind::ArmCratePath
        )
    });
    // A module that declares an ARM64-named child (`mod aarch64;`) has that child's
    // counterpart as its `x86_64` child already: a split child of its own would be a
    // second `x86_64` module (E0761). Its ARM64 items get x86_64 twins in place.
    let arm_child = m.facts.mods.iter().any(|d| {
        d.inline_path.is_empty()
            && matches!(d.name.as_str(), "aarch64" | "arm64")
            && !matches!(
                d.gate,
                Some(crate::workspace::ArchGate::X86_64 | crate::workspace::ArchGate::Other)
            )
    });
    if wiring_only || arm_child {
        return source.to_string();
    }
    let segs: Vec<&str> = source.split('/').collect();
    let dir = match source.rsplit_once('/') {
        Some((d, _)) => d,
        None => "",
    };
    let file = segs.last().copied().unwrap_or_default();
    let join = |parts: &[&str]| {
        parts
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    };
    match file {
        "mod.rs" | "lib.rs" | "main.rs" => join(&[dir, "x86_64.rs"]),
        f => join(&[dir, f.trim_end_matches(".rs"), "x86_64.rs"]),
    }
}

fn status_of(
    m: &ScannedModule,
    source: &str,
    target: &str,
    root: &Path,
    knowledge: &Knowledge,
) -> (Status, Vec<String>) {
    if source == target {
        return if m.facts.has_x86_64_cfg {
            (Status::Exists, Vec::new())
        } else {
            (
                Status::Partial,
                vec!["cfg(target_arch = \"x86_64\") wiring".to_string()],
            )
        };
    }
    let path = root.join(target);
    if !path.exists() {
        return (Status::New, Vec::new());
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return (Status::Partial, vec![format!("unreadable: {e}")]),
    };
    let facts = match crate::workspace::analyze_target(&text, &path, knowledge) {
        Ok(f) => f,
        Err(e) => {
            return (
                Status::Partial,
                vec![format!("does not parse (line {}): {e}", e.line)],
            )
        }
    };
    let have: BTreeSet<&str> = facts.items.iter().map(|i| i.name.as_str()).collect();
    let mut missing: Vec<String> = m
        .facts
        .items
        .iter()
        .filter(|i| i.kind != ItemKind::Impl && !have.contains(i.name.as_str()))
        .map(|i| i.name.clone())
        .collect();
    if facts.has_placeholders {
        missing.insert(0, "todo!/unimplemented! placeholders".to_string());
    }
    if missing.is_empty() {
        (Status::Exists, missing)
    } else {
        (Status::Partial, missing)
    }
}

/// Keeps the modules that `selectors` name: a component or alias (`vmcs`, `ept`), a
/// module path (`hv::arch::aarch64::gic`, or its tail `aarch64::gic`), or a source
/// or target file path.
pub fn select(plan: &mut Plan, selectors: &[String], knowledge: &Knowledge) -> Result<()> {
    if selectors.is_empty() {
        return Ok(());
    }
    let mut keep = vec![false; plan.modules.len()];
    for sel in selectors {
        let sel_norm = sel.trim_start_matches("./").replace('\\', "/");
        let matched: Vec<usize> = if let Some(c) = knowledge.component_for_alias(sel) {
            plan.modules
                .iter()
                .enumerate()
                .filter(|(_, m)| m.component.as_str() == c.name)
                .map(|(i, _)| i)
                .collect()
        } else {
            plan.modules
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    m.module_path == sel_norm
                        || m.module_path.ends_with(&format!("::{sel_norm}"))
                        || m.source == sel_norm
                        || m.target == sel_norm
                        || m.source.ends_with(&format!("/{sel_norm}"))
                        || m.target.ends_with(&format!("/{sel_norm}"))
                })
                .map(|(i, _)| i)
                .collect()
        };
        if matched.is_empty() && knowledge.component_for_alias(sel).is_none() {
            let mut names: Vec<String> = knowledge
                .components
                .iter()
                .map(|c| c.name.clone())
                .collect();
            names.extend(
                ["vmcs", "ept", "apic", "gic", "vmexit", "trap", "serial"].map(String::from),
            );
            bail!(
                "port target `{sel}` is not a component, an alias or a planned module\n  components and aliases: {}\n  run `cargo eterna-port plan` to list the planned modules",
                names.join(", ")
            );
        }
        for i in matched {
            keep[i] = true;
        }
    }
    let mut k = keep.into_iter();
    plan.modules.retain(|_| k.next().unwrap_or(false));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_snake_and_camel_case() {
        assert_eq!(
            words("init_gic_distributor"),
            ["init", "gic", "distributor"]
        );
        assert_eq!(words("VgicState"), ["vgic", "state"]);
        assert_eq!(words("Stage2Table::map"), ["stage2", "table", "map"]);
    }
}
