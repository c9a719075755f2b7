//! Scaffold checks of the x86_64 templates (`templates/x86_64/`) until the
//! offline engine instantiates them itself:
//!
//! * the manifest names existing files and the templates contain no
//!   template syntax, so minijinja renders them unchanged;
//! * every template defines every public item of the ARM64 module it
//!   replaces (the engine's coverage check);
//! * a temporary copy of the reference fixture with the templates written
//!   to their targets and the engine's wiring applied as text edits checks
//!   cleanly for `x86_64-unknown-none` and still for `aarch64-unknown-none`;
//! * the linked image boots under QEMU (TCG, no VMX), reports that VT-x is
//!   unavailable on a hypervisor line and exits with the documented status;
//! * under Bochs with VMX (corei7_skylake_x, 2 CPUs) it runs the guest and
//!   prints exactly the ARM64 fixture's expected trace.
//!
//! The boot tests need `qemu-system-x86`, `bochs bochsbios vgabios
//! bochs-term`, `grub-pc-bin grub-common xorriso mtools` (Debian) and fail
//! with the missing command's name otherwise.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;

const TEMPLATE_TRIPLE: &str = "x86_64-unknown-none";
/// QEMU exit status for `smp::VMX_UNAVAILABLE_EXIT` (0x10) through
/// isa-debug-exit: `(0x10 << 1) | 1`.
const VMX_UNAVAILABLE_STATUS: i32 = 33;

#[derive(Deserialize)]
struct Manifest {
    template: Vec<Template>,
    #[serde(default)]
    support: Vec<Support>,
    #[serde(default)]
    extra: Vec<Extra>,
}

#[derive(Deserialize)]
struct Template {
    file: String,
    component: String,
    stems: Vec<String>,
    target: String,
    summary: String,
}

#[derive(Deserialize)]
struct Support {
    file: String,
    declared_by: String,
    summary: String,
}

#[derive(Deserialize)]
struct Extra {
    file: String,
    target: String,
    summary: String,
}

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/x86_64")
}

fn manifest() -> Manifest {
    let text = fs::read_to_string(templates_dir().join("manifest.toml")).expect("manifest.toml");
    toml::from_str(&text).unwrap_or_else(|e| panic!("manifest.toml: {e}"))
}

/// The ARM64 source each template replaces (relative to the fixture's `eterna/`).
fn source_of(template: &Template) -> String {
    match template.stems[0].as_str() {
        "guest" => "src/guest.rs".to_string(),
        stem => format!("src/arch/aarch64/{stem}.rs"),
    }
}

/// Renders a template the way the engine does.
fn render(template: &Template, text: &str) -> String {
    let mut env = minijinja::Environment::new();
    // Source files end with a newline; minijinja drops it unless told not to.
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("default delimiters"),
    );
    env.render_str(
        text,
        minijinja::context! {
            crate_name => "eterna",
            source => source_of(template),
            target => &template.target,
            component => &template.component,
            target_triple => TEMPLATE_TRIPLE,
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", template.file))
}

#[test]
fn manifest_lists_existing_templates_without_template_syntax() {
    let manifest = manifest();
    let vocabulary = [
        "boot",
        "exception",
        "sysreg",
        "vm-control",
        "vcpu",
        "stage2",
        "mmu",
        "interrupt-controller",
        "timer",
        "uart",
        "smp-power",
        "hypercall",
        "cache-tlb",
        "iommu",
        "ipi",
        "platform",
    ];
    let modules = templates_dir().join("modules");
    let mut files = Vec::new();
    for template in &manifest.template {
        assert!(
            vocabulary.contains(&template.component.as_str()),
            "{}: component {}",
            template.file,
            template.component
        );
        assert!(!template.summary.is_empty() && !template.stems.is_empty());
        files.push(modules.join(&template.file));
    }
    for support in &manifest.support {
        assert!(manifest
            .template
            .iter()
            .any(|t| t.file == support.declared_by));
        assert!(!support.summary.is_empty());
        let declaring = fs::read_to_string(modules.join(&support.declared_by)).unwrap();
        assert!(
            declaring.contains(&format!("#[path = \"{}\"]", support.file)),
            "{} must declare {}",
            support.declared_by,
            support.file
        );
        files.push(modules.join(&support.file));
    }
    for extra in &manifest.extra {
        assert!(!extra.summary.is_empty() && !extra.target.is_empty());
        files.push(templates_dir().join(&extra.file));
    }
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for syntax in ["{{", "{%", "{#"] {
            assert!(
                !text.contains(syntax),
                "{} contains `{syntax}`",
                file.display()
            );
        }
    }
    for template in &manifest.template {
        let text = fs::read_to_string(modules.join(&template.file)).unwrap();
        assert_eq!(
            render(template, &text),
            text,
            "{} changes when rendered",
            template.file
        );
    }
}

/// Names of the public items of a file, methods and nested modules
/// included (`pub(crate)` and `pub(super)` count: the engine compares
/// what the rest of the crate can name).
fn public_names(path: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names = BTreeSet::new();
    collect(&file.items, &mut names);
    names
}

fn collect(items: &[syn::Item], names: &mut BTreeSet<String>) {
    let public = |vis: &syn::Visibility| !matches!(vis, syn::Visibility::Inherited);
    for item in items {
        let name = match item {
            syn::Item::Fn(i) if public(&i.vis) => Some(i.sig.ident.to_string()),
            syn::Item::Struct(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Enum(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Const(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Static(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Type(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Trait(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Mod(i) => {
                if let Some((_, inner)) = &i.content {
                    collect(inner, names);
                }
                None
            }
            syn::Item::Impl(i) => {
                for inner in &i.items {
                    if let syn::ImplItem::Fn(f) = inner {
                        if public(&f.vis) {
                            names.insert(f.sig.ident.to_string());
                        }
                    }
                }
                None
            }
            _ => None,
        };
        names.extend(name);
    }
}

/// Items of guest.rs that contain ARM64 code and are gated out on x86_64.
fn arm64_specific(item: &syn::Item) -> bool {
    let tokens = quote::ToTokens::to_token_stream(item).to_string();
    ["asm !", "global_asm !", "core :: arch"]
        .iter()
        .any(|needle| tokens.contains(needle))
}

#[test]
fn templates_cover_every_public_item_of_their_arm64_module() {
    let eterna = common::fixture_dir().join("eterna");
    let modules = templates_dir().join("modules");
    let mut report = Vec::new();
    for template in &manifest().template {
        let ours = public_names(&modules.join(&template.file));
        let wanted: BTreeSet<String> = if template.stems[0] == "guest" {
            // Only guest.rs's ARM64-specific items move to guest/x86_64.rs.
            let text = fs::read_to_string(eterna.join("src/guest.rs")).unwrap();
            let file = syn::parse_file(&text).unwrap();
            file.items
                .iter()
                .filter(|item| arm64_specific(item))
                .filter_map(|item| match item {
                    syn::Item::Fn(f) => Some(f.sig.ident.to_string()),
                    _ => None,
                })
                .collect()
        } else {
            public_names(&eterna.join(source_of(template)))
        };
        // The platform struct is renamed with the module (Aarch64 -> X86_64).
        let wanted: BTreeSet<String> = wanted.iter().map(|name| rename_idents(name)).collect();
        let missing: Vec<_> = wanted.difference(&ours).collect();
        if !missing.is_empty() {
            report.push(format!("{}: missing {missing:?}", template.file));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// ARM64 submodule names and their x86_64 targets, as the plan maps them.
const RENAMES: &[(&str, &str)] = &[
    ("aarch64", "x86_64"),
    ("Aarch64", "X86_64"),
    ("sysreg", "msr"),
    ("stage2", "ept"),
    ("vm", "vmcs"),
    ("gic", "apic"),
    ("exception", "vmexit"),
    ("mmu", "paging"),
    ("pl011", "uart16550"),
    ("psci", "smp"),
];

/// Replaces whole identifiers per [`RENAMES`].
fn rename_idents(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let replaced = RENAMES
            .iter()
            .find(|(from, _)| *from == word.as_str())
            .map_or(word.as_str(), |(_, to)| to);
        out.push_str(replaced);
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A temporary copy of the fixture with the templates instantiated.
struct Port {
    dir: tempfile::TempDir,
}

impl Port {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn crate_dir(&self) -> PathBuf {
        self.root().join("eterna")
    }
}

/// The fixture ported by the tool itself (offline engine) in a temp copy.
fn instantiate() -> Port {
    let dir = common::copy_tree(&common::fixture_dir());
    let out = common::run(dir.path(), &["--allow-no-vcs", "--message-format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the offline port is incomplete:\n{}\n{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    Port { dir }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn plan_reports_the_instantiated_port_complete() {
    let port = instantiate();
    let output = common::run(port.root(), &["plan", "--message-format", "json"]);
    common::assert_code(&output, 0);
    let plan = common::json(&output);
    let modules = plan["modules"].as_array().expect("modules");
    assert!(modules.len() >= 15, "{plan:#}");
    for module in modules {
        let target = module["target"].as_str().unwrap();
        let missing: Vec<&str> = module["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        match target {
            // The platform type is renamed with the module (Aarch64 -> X86_64).
            "eterna/src/arch/x86_64/mod.rs" => assert_eq!(missing, ["Aarch64"], "{module:#}"),
            // guest.rs keeps its architecture-neutral items; the child only
            // replaces the ARM64 ones.
            "eterna/src/guest/x86_64.rs" => {
                let shared = public_names(&port.crate_dir().join("src/guest.rs"));
                for name in missing {
                    let item = name.rsplit("::").next().unwrap();
                    assert!(
                        shared.contains(item),
                        "{name} is neither in guest.rs nor in the template"
                    );
                }
            }
            _ => {
                assert_eq!(module["status"], "exists", "{module:#}");
                assert!(missing.is_empty(), "{module:#}");
            }
        }
    }
}

/// The instantiated port, linked once for the boot tests.
struct Image {
    port: Port,
    elf: PathBuf,
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let port = instantiate();
        let linker_script = port.crate_dir().join("linker-x86_64.ld");
        // The image needs absolute addresses (multiboot header, 32-bit
        // entry) and the x86 layout; the fixture's build.rs only links for
        // aarch64.
        let build = Command::new(env!("CARGO"))
            .args(["build", "--target", "x86_64-unknown-none", "-p", "eterna"])
            .current_dir(port.root())
            .env("CARGO_TARGET_DIR", port.root().join("target"))
            .env("CARGO_NET_OFFLINE", "true")
            .env(
                "RUSTFLAGS",
                format!(
                    "-C relocation-model=static -C link-arg=-T{}",
                    linker_script.display()
                ),
            )
            .output()
            .expect("run cargo build");
        assert!(
            build.status.success(),
            "x86_64 build failed:\n{}",
            stderr(&build)
        );
        let elf = port.root().join("target/x86_64-unknown-none/debug/eterna");
        Image { port, elf }
    })
}

/// Fails with the Debian package to install when `tool` is not on PATH.
fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` not found on PATH; install it: apt-get install {package}"
    );
}

/// Runs `command` until it exits or `timeout` passes (then kills it).
fn run_bounded(mut command: Command, timeout: Duration, what: &str) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!("{what}: {e} (see templates/x86_64/README.md for the packages)")
    });
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "{what} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                stderr(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn x86_64_image_reports_missing_vmx_under_qemu_tcg() {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    let image = image();
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-M", "pc", "-m", "128M", "-smp", "2", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(&image.elf);
    let output = run_bounded(qemu, Duration::from_secs(60), "qemu-system-x86_64");
    let console = String::from_utf8_lossy(&output.stdout);
    assert!(
        console.contains("[eterna] vmx unavailable: CPUID.1:ECX.VMX is clear"),
        "console:\n{console}\nstderr:\n{}",
        stderr(&output)
    );
    assert!(
        !console.contains("[guest] "),
        "no guest line without VMX:\n{console}"
    );
    assert_eq!(
        output.status.code(),
        Some(VMX_UNAVAILABLE_STATUS),
        "console:\n{console}"
    );
}

#[test]
fn x86_64_image_runs_the_guest_under_bochs_vmx_with_the_arm64_trace() {
    require_tool("bochs", "bochs bochsbios vgabios bochs-term");
    require_tool("grub-mkrescue", "grub-pc-bin grub-common");
    require_tool("xorriso", "xorriso");
    require_tool("mformat", "mtools");
    require_tool("script", "bsdutils");
    let image = image();
    let work = image.port.root().join("bochs");
    let iso_root = work.join("iso");
    fs::create_dir_all(iso_root.join("boot/grub")).unwrap();
    fs::copy(&image.elf, iso_root.join("boot/eterna")).unwrap();
    fs::copy(
        templates_dir().join("boot/grub.cfg"),
        iso_root.join("boot/grub/grub.cfg"),
    )
    .unwrap();
    fs::copy(templates_dir().join("boot/bochsrc"), work.join("bochsrc")).unwrap();
    fs::write(work.join("cmds"), "c\n").unwrap();
    let mut mkrescue = Command::new("grub-mkrescue");
    mkrescue
        .arg("-o")
        .arg(work.join("eterna.iso"))
        .arg(&iso_root)
        .current_dir(&work);
    let output = run_bounded(mkrescue, Duration::from_secs(120), "grub-mkrescue");
    assert!(
        output.status.success(),
        "grub-mkrescue:\n{}",
        stderr(&output)
    );

    // Bochs' term display needs a terminal: run it under script(1).
    let mut bochs = Command::new("script");
    bochs
        .args(["-qec", "bochs -q -f bochsrc -rc cmds", "/dev/null"])
        .current_dir(&work);
    run_bounded(bochs, Duration::from_secs(300), "bochs (under script)");
    let serial = fs::read_to_string(work.join("serial.txt")).unwrap_or_default();
    let trace: Vec<&str> = serial
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| line.starts_with("[guest] ") || line.starts_with("[eterna] guest exited"))
        .collect();
    let expected = fs::read_to_string(common::fixture_dir().join("expected-trace.txt")).unwrap();
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(
        trace,
        expected,
        "serial console:\n{serial}\nbochs.log tail:\n{}",
        fs::read_to_string(work.join("bochs.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        serial.contains("[cpu1] online"),
        "cpu1 came up through INIT-SIPI-SIPI:\n{serial}"
    );
}
