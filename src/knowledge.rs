//! The ARM64 → x86_64 concept map, loaded from `templates/knowledge/*.toml`.
//!
//! The knowledge is data, not code: which system registers, instructions, exception
//! classes and devices exist on the ARM64 side, which component of the hypervisor they
//! belong to, and what their x86_64 / VT-x counterpart is. The scan uses it to recognise
//! ARM64 evidence, the plan to classify modules and name their x86_64 targets, and later
//! stages show it to the agents.
//!
//! The files are embedded at build time so the installed binary needs no data directory.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The fixed component vocabulary, in its canonical order.
pub const COMPONENTS: [&str; 17] = [
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
    "arch-neutral",
];

/// The component given to modules that carry no architecture-specific meaning.
pub const ARCH_NEUTRAL: &str = "arch-neutral";

/// A component of the fixed vocabulary ([`COMPONENTS`]), as the plan gives it to a
/// module. Serialized as its name (`vm-control`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentId {
    /// Boot code and the entry point.
    Boot,
    /// Exception vectors and traps (VM exits on x86_64).
    Exception,
    /// System register access.
    Sysreg,
    /// Virtual machine control (HCR_EL2; the VMCS).
    VmControl,
    /// Virtual CPU state and entry.
    Vcpu,
    /// Stage-2 translation (EPT).
    Stage2,
    /// The hypervisor's own address translation.
    Mmu,
    /// The interrupt controller (GIC; the APIC).
    InterruptController,
    /// Timers.
    Timer,
    /// The serial console.
    Uart,
    /// CPU bring-up and power (PSCI).
    SmpPower,
    /// Hypercalls.
    Hypercall,
    /// Cache and TLB maintenance.
    CacheTlb,
    /// The IOMMU (SMMU; VT-d).
    Iommu,
    /// Inter-processor interrupts.
    Ipi,
    /// The architecture root that ties the layer together.
    Platform,
    /// No architecture-specific meaning.
    #[default]
    ArchNeutral,
}

impl ComponentId {
    /// Every component, in the vocabulary's order.
    pub const ALL: [ComponentId; 17] = [
        ComponentId::Boot,
        ComponentId::Exception,
        ComponentId::Sysreg,
        ComponentId::VmControl,
        ComponentId::Vcpu,
        ComponentId::Stage2,
        ComponentId::Mmu,
        ComponentId::InterruptController,
        ComponentId::Timer,
        ComponentId::Uart,
        ComponentId::SmpPower,
        ComponentId::Hypercall,
        ComponentId::CacheTlb,
        ComponentId::Iommu,
        ComponentId::Ipi,
        ComponentId::Platform,
        ComponentId::ArchNeutral,
    ];

    /// Its name in the vocabulary (`vm-control`).
    pub fn as_str(self) -> &'static str {
        COMPONENTS[ComponentId::ALL
            .iter()
            .position(|c| *c == self)
            .unwrap_or(COMPONENTS.len() - 1)]
    }

    /// The component of a vocabulary name; `None` for any other text.
    pub fn parse(name: &str) -> Option<ComponentId> {
        COMPONENTS
            .iter()
            .position(|c| *c == name)
            .map(|i| ComponentId::ALL[i])
    }
}

impl std::fmt::Display for ComponentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const COMPONENTS_TOML: &str = include_str!("../templates/knowledge/components.toml");
const CONCEPTS_TOML: &str = include_str!("../templates/knowledge/concepts.toml");
const ASM_TOML: &str = include_str!("../templates/knowledge/asm.toml");
const ARCH_TOML: &str = include_str!("../templates/knowledge/arch.toml");
const ABBREVIATIONS_TOML: &str = include_str!("../templates/knowledge/abbreviations.toml");

/// A hash of the embedded knowledge data (caches derived from it key on this).
pub fn fingerprint() -> u64 {
    let mut bytes = COMPONENTS_TOML.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(CONCEPTS_TOML.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(ASM_TOML.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(ARCH_TOML.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(ABBREVIATIONS_TOML.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// One entry of the component vocabulary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Its name in the vocabulary (`interrupt-controller`).
    pub name: String,
    #[serde(default)]
    /// Other names the command line accepts for it (`gic`, `apic`).
    pub aliases: Vec<String>,
    /// The x86_64 concept's name (`apic`, `ept`), shown as the plan's `x86_concept`
    /// (`""` for arch-neutral). Targets keep the ARM64 module's own name.
    pub x86_name: String,
    /// ARM-specific file/directory stems that name this component (`gicd`, `s2pt`).
    #[serde(default)]
    pub arm64_terms: Vec<String>,
    /// Words that suggest this component in paths and item names.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// What the component is, for prompts and `plan -v`.
    pub summary: String,
    #[serde(default)]
    /// The x86_64 concepts it maps to, for prompts.
    pub x86_concepts: Vec<String>,
}

/// An exact ARM64 system register.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sysreg {
    /// The register (`HCR_EL2`).
    pub name: String,
    /// The architecture's meaning in plain words (the register's long name and what it holds), the words a
    /// person uses in a question; query expansion matches them.
    pub means: String,
    /// The component it belongs to.
    pub component: String,
    /// Its x86_64 counterpart.
    pub x86_64: String,
    /// How to port it.
    pub note: String,
}

/// A family of system registers sharing a name prefix (`ICH_LR`, `CNTV_`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysregFamily {
    /// The name prefix.
    pub prefix: String,
    /// The architecture's meaning in plain words (the family's long name and what its registers do), the words a
    /// person uses in a question; query expansion matches them.
    pub means: String,
    /// The component it belongs to.
    pub component: String,
    /// Its x86_64 counterpart.
    pub x86_64: String,
    /// How to port it.
    pub note: String,
}

/// An AArch64-specific instruction mnemonic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instruction {
    /// The mnemonic (`eret`, `hvc`).
    pub mnemonic: String,
    /// The architecture's meaning in plain words (what the instruction does), the words a
    /// person uses in a question; query expansion matches them.
    pub means: String,
    /// The component it belongs to.
    pub component: String,
    /// Its x86_64 counterpart.
    pub x86_64: String,
    /// How to port it.
    pub note: String,
}

/// A system instruction together with its operation, as code writes it (`dc cvac`,
/// `tlbi vmalls12e1is`): the `[[instruction_form]]` entries of concepts.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructionForm {
    /// The instruction and its operation, lower case, one space (`dc cvac`).
    pub name: String,
    /// The `[[instruction]]` mnemonic it belongs to (`dc`).
    pub mnemonic: String,
    /// What the operation does in plain words ("data cache clean by virtual address to
    /// the point of coherency").
    pub means: String,
    /// The component it belongs to.
    pub component: String,
    /// Its x86_64 counterpart.
    pub x86_64: String,
    /// How to port it.
    pub note: String,
}

/// An `ESR_ELx.EC` exception class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionClass {
    /// The class's `EC` value.
    pub ec: u8,
    /// Its name (`HVC64`).
    pub name: String,
    /// The architecture's meaning in plain words (why the exception was taken), the words a
    /// person uses in a question; query expansion matches them.
    pub means: String,
    /// The component it belongs to.
    pub component: String,
    /// Its x86_64 counterpart.
    pub x86_64: String,
    /// How to port it.
    pub note: String,
}

/// A device or firmware interface of ARM64 platforms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The device (`PL011 UART`).
    pub name: String,
    /// The architecture's meaning in plain words (what the device is), the words a
    /// person uses in a question; query expansion matches them.
    pub means: String,
    #[serde(default)]
    /// Words that name it in paths and items.
    pub terms: Vec<String>,
    /// The component it belongs to.
    pub component: String,
    /// Its x86_64 counterpart.
    pub x86_64: String,
    /// How to port it.
    pub note: String,
}

/// An abbreviation that code uses in identifiers (`gicd`, `mpidr`, `s2pt`), from
/// `templates/knowledge/abbreviations.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abbreviation {
    /// The abbreviation, lower case (`gicd`); unique.
    pub short: String,
    /// The lower-case words it stands for (`["gic", "distributor"]`).
    pub means: Vec<String>,
    /// The component it usually belongs to, when it has one.
    #[serde(default)]
    pub component: Option<String>,
}

/// One concept of the concept map for query expansion ([`Knowledge::concept_terms`]):
/// its meaning in words and the identifiers code uses for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConceptTerms {
    /// The long meaning ("Exception Link Register (EL2): exception return address").
    pub means: String,
    /// The identifiers that name it in code, lower case: the system register
    /// (`elr_el2`), the register family's prefix without its trailing `_` (`ich_lr`,
    /// `cntv`), the mnemonic (`eret`) or instruction form (`dc cvac`), the exception
    /// class (`dabt_low`), the device's name and its terms (`pl011 uart`, `pl011`).
    pub terms: Vec<String>,
    /// The component it belongs to (a [`COMPONENTS`] name).
    pub component: String,
}

/// A statement-level translation of AArch64 inline assembly (`templates/knowledge/asm.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsmTranslation {
    /// Normalised AArch64 statement; `{}` marks an operand placeholder.
    pub arm64: String,
    /// The x86_64 statement (Intel syntax); empty: the statement is dropped.
    pub x86_64: String,
    /// Why, or what to watch.
    pub note: String,
}

/// The architecture of ARM64 code (the port's input).
pub const ARCH_AARCH64: &str = "aarch64";
/// RISC-V code.
pub const ARCH_RISCV64: &str = "riscv64";
/// LoongArch code.
pub const ARCH_LOONGARCH64: &str = "loongarch64";
/// x86_64 code (the port's target).
pub const ARCH_X86_64: &str = "x86_64";
/// Code of another named architecture (MIPS, PowerPC, …).
pub const ARCH_OTHER: &str = "other";
/// Code of no architecture (shared code, documents, the knowledge).
pub const NO_ARCH: &str = "neutral";
/// Every architecture label a chunk may carry.
pub const ARCHES: [&str; 6] = [
    ARCH_AARCH64,
    ARCH_RISCV64,
    ARCH_LOONGARCH64,
    ARCH_X86_64,
    ARCH_OTHER,
    NO_ARCH,
];

/// What tells architectures apart (`templates/knowledge/arch.toml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchKnowledge {
    /// Dependencies that exist only for ARM.
    pub arm_crates: Vec<String>,
    /// Words naming ARM64 in paths and crate names.
    pub arm64_tokens: Vec<String>,
    /// Words naming other architectures (`mips*` is a prefix).
    pub other_arch_tokens: Vec<String>,
    /// AArch64 mnemonics that other ISAs share.
    pub shared_mnemonics: Vec<String>,
}

impl ArchKnowledge {
    fn words(name: &str) -> impl Iterator<Item = String> + '_ {
        name.split(['_', '-', '.'])
            .filter(|w| !w.is_empty())
            .map(|w| w.to_ascii_lowercase())
    }

    /// Whether a path segment or crate name names ARM64: the whole of it
    /// (`aarch64`, `arm64`) or one of its `_`/`-` words (`arm_vcpu`, `foo-aarch64`,
    /// `aarch64_hal`), never a word that merely contains one (`swarm`, `alarm`).
    pub fn names_arm64(&self, name: &str) -> bool {
        let name = name.strip_suffix(".rs").unwrap_or(name);
        Self::words(name).any(|w| self.arm64_tokens.contains(&w))
    }

    /// Whether a path segment or crate name names another architecture (`riscv64`,
    /// `loongarch64`, `x86_64`, `mips32r2`, `axhal-riscv`).
    pub fn names_other_arch(&self, name: &str) -> bool {
        let name = name
            .strip_suffix(".rs")
            .unwrap_or(name)
            .to_ascii_lowercase();
        let hit = |w: &str| {
            self.other_arch_tokens
                .iter()
                .any(|t| match t.strip_suffix('*') {
                    Some(prefix) => w.starts_with(prefix),
                    None => w == t,
                })
        };
        // `x86_64` is one token though it holds an underscore.
        hit(&name) || Self::words(&name).any(|w| hit(&w))
    }

    /// The architecture a path segment or crate name names, by its canonical name:
    /// `aarch64` (also `arm64`, `arm_vcpu`), `riscv64` (any `riscv…`), `loongarch64`
    /// (any `loongarch…`), `x86_64` (also `x86`), or `other` for the other
    /// architectures the knowledge names (`mips…`, `powerpc…`, …); `None` for a name
    /// that names none.
    pub fn arch_label(&self, name: &str) -> Option<&'static str> {
        if self.names_arm64(name) {
            return Some(ARCH_AARCH64);
        }
        if !self.names_other_arch(name) {
            return None;
        }
        let lower = name.to_ascii_lowercase();
        let words: Vec<String> = Self::words(&lower).collect();
        let any =
            |prefix: &str| lower.starts_with(prefix) || words.iter().any(|w| w.starts_with(prefix));
        Some(if any("riscv") {
            ARCH_RISCV64
        } else if any("loongarch") {
            ARCH_LOONGARCH64
        } else if lower.contains("x86") {
            ARCH_X86_64
        } else {
            ARCH_OTHER
        })
    }

    /// Whether a dependency (by its package name) exists only for ARM.
    pub fn is_arm_crate(&self, package: &str) -> bool {
        let norm = |s: &str| s.replace('-', "_").to_ascii_lowercase();
        self.arm_crates.iter().any(|c| norm(c) == norm(package)) || self.names_arm64(package)
    }

    /// Whether an AArch64 mnemonic is shared with other ISAs (weak evidence).
    pub fn is_shared_mnemonic(&self, mnemonic: &str) -> bool {
        self.shared_mnemonics.iter().any(|m| m == mnemonic)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AsmFile {
    statement: Vec<AsmTranslation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AbbreviationsFile {
    #[serde(default)]
    abbreviation: Vec<Abbreviation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentsFile {
    component: Vec<Component>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConceptsFile {
    #[serde(default)]
    sysreg: Vec<Sysreg>,
    #[serde(default)]
    sysreg_family: Vec<SysregFamily>,
    #[serde(default)]
    instruction: Vec<Instruction>,
    #[serde(default)]
    instruction_form: Vec<InstructionForm>,
    #[serde(default)]
    exception_class: Vec<ExceptionClass>,
    #[serde(default)]
    device: Vec<Device>,
}

/// Errors in the knowledge files (they are embedded, so these are build defects that the
/// unit tests catch; the CLI still reports them instead of panicking).
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// A knowledge file that does not parse.
    #[error("templates/knowledge/{file}: {source}")]
    Parse {
        /// The file.
        file: &'static str,
        #[source]
        /// The TOML parser's error.
        source: toml::de::Error,
    },
    /// A knowledge file with an entry that breaks the rules (an unknown component, a duplicate).
    #[error("templates/knowledge/{file}: {message}")]
    Invalid {
        /// The file.
        file: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Loading panicked (a build defect).
    #[error("loading templates/knowledge failed unexpectedly")]
    Panicked,
}

/// The loaded, validated concept map with lookup indexes.
#[derive(Debug)]
pub struct Knowledge {
    /// The component vocabulary, in its order.
    pub components: Vec<Component>,
    /// Exact system registers.
    pub sysregs: Vec<Sysreg>,
    /// System register families by prefix.
    pub sysreg_families: Vec<SysregFamily>,
    /// AArch64-specific instructions.
    pub instructions: Vec<Instruction>,
    /// System instructions with their operation (`dc cvac`).
    pub instruction_forms: Vec<InstructionForm>,
    /// Exception classes.
    pub exception_classes: Vec<ExceptionClass>,
    /// Devices and firmware interfaces.
    pub devices: Vec<Device>,
    /// Statement-level translations of inline assembly.
    pub asm_translations: Vec<AsmTranslation>,
    /// What tells architectures apart.
    pub arch: ArchKnowledge,
    /// Abbreviations used in identifiers, in file order (see [`Knowledge::abbreviation`]).
    pub abbreviations: Vec<Abbreviation>,
    abbreviation_index: HashMap<String, usize>,
    sysreg_index: HashMap<String, usize>,
    instruction_index: HashMap<String, usize>,
    alias_index: HashMap<String, usize>,
}

impl Knowledge {
    /// The knowledge embedded in this binary.
    pub fn embedded() -> Result<Self, KnowledgeError> {
        let mut k = Self::from_strs(COMPONENTS_TOML, CONCEPTS_TOML, ABBREVIATIONS_TOML)?;
        let asm: AsmFile = toml::from_str(ASM_TOML).map_err(|source| KnowledgeError::Parse {
            file: "asm.toml",
            source,
        })?;
        k.asm_translations = asm.statement;
        k.arch = toml::from_str(ARCH_TOML).map_err(|source| KnowledgeError::Parse {
            file: "arch.toml",
            source,
        })?;
        Ok(k)
    }

    fn from_strs(
        components: &str,
        concepts: &str,
        abbreviations: &str,
    ) -> Result<Self, KnowledgeError> {
        let comp: ComponentsFile =
            toml::from_str(components).map_err(|source| KnowledgeError::Parse {
                file: "components.toml",
                source,
            })?;
        let conc: ConceptsFile =
            toml::from_str(concepts).map_err(|source| KnowledgeError::Parse {
                file: "concepts.toml",
                source,
            })?;
        let abbr: AbbreviationsFile =
            toml::from_str(abbreviations).map_err(|source| KnowledgeError::Parse {
                file: "abbreviations.toml",
                source,
            })?;
        let mut k = Knowledge {
            components: comp.component,
            sysregs: conc.sysreg,
            sysreg_families: conc.sysreg_family,
            instructions: conc.instruction,
            instruction_forms: conc.instruction_form,
            exception_classes: conc.exception_class,
            devices: conc.device,
            asm_translations: Vec::new(),
            arch: ArchKnowledge::default(),
            abbreviations: abbr.abbreviation,
            abbreviation_index: HashMap::new(),
            sysreg_index: HashMap::new(),
            instruction_index: HashMap::new(),
            alias_index: HashMap::new(),
        };
        k.validate_and_index()?;
        Ok(k)
    }

    fn validate_and_index(&mut self) -> Result<(), KnowledgeError> {
        let invalid = |file, message: String| KnowledgeError::Invalid { file, message };
        for name in COMPONENTS {
            if !self.components.iter().any(|c| c.name == name) {
                return Err(invalid(
                    "components.toml",
                    format!("component `{name}` is missing"),
                ));
            }
        }
        for (i, c) in self.components.iter().enumerate() {
            if !COMPONENTS.contains(&c.name.as_str()) {
                return Err(invalid(
                    "components.toml",
                    format!("`{}` is not in the component vocabulary", c.name),
                ));
            }
            for key in std::iter::once(&c.name).chain(&c.aliases) {
                if let Some(prev) = self.alias_index.insert(key.to_ascii_lowercase(), i) {
                    return Err(invalid(
                        "components.toml",
                        format!(
                            "`{key}` names both `{}` and `{}`",
                            self.components[prev].name, c.name
                        ),
                    ));
                }
            }
        }
        let known = |c: &str| COMPONENTS.contains(&c);
        let check = |what: &str, name: &str, component: &str, means: &str| {
            if !known(component) {
                Err(invalid(
                    "concepts.toml",
                    format!("{what} `{name}` has unknown component `{component}`"),
                ))
            } else if means.trim().is_empty() {
                Err(invalid(
                    "concepts.toml",
                    format!("{what} `{name}` has an empty `means`"),
                ))
            } else {
                Ok(())
            }
        };
        for s in &self.sysregs {
            check("sysreg", &s.name, &s.component, &s.means)?;
        }
        for s in &self.sysreg_families {
            check("sysreg_family", &s.prefix, &s.component, &s.means)?;
        }
        for s in &self.instructions {
            check("instruction", &s.mnemonic, &s.component, &s.means)?;
        }
        for s in &self.instruction_forms {
            check("instruction_form", &s.name, &s.component, &s.means)?;
        }
        for s in &self.exception_classes {
            check("exception_class", &s.name, &s.component, &s.means)?;
        }
        for s in &self.devices {
            check("device", &s.name, &s.component, &s.means)?;
        }
        for (i, s) in self.sysregs.iter().enumerate() {
            if self
                .sysreg_index
                .insert(s.name.to_ascii_uppercase(), i)
                .is_some()
            {
                return Err(invalid(
                    "concepts.toml",
                    format!("sysreg `{}` is listed twice", s.name),
                ));
            }
        }
        for (i, s) in self.instructions.iter().enumerate() {
            if self
                .instruction_index
                .insert(s.mnemonic.to_ascii_lowercase(), i)
                .is_some()
            {
                return Err(invalid(
                    "concepts.toml",
                    format!("instruction `{}` is listed twice", s.mnemonic),
                ));
            }
        }
        let mut forms = std::collections::HashSet::new();
        for f in &self.instruction_forms {
            let well_formed = f.name == f.name.to_ascii_lowercase()
                && f.name
                    .strip_prefix(f.mnemonic.as_str())
                    .and_then(|rest| rest.strip_prefix(' '))
                    .is_some_and(|op| !op.is_empty() && !op.contains(char::is_whitespace));
            if !well_formed {
                return Err(invalid(
                    "concepts.toml",
                    format!(
                        "instruction_form `{}` is not `{} <operation>` in lower case",
                        f.name, f.mnemonic
                    ),
                ));
            }
            if !self.instruction_index.contains_key(&f.mnemonic) {
                return Err(invalid(
                    "concepts.toml",
                    format!(
                        "instruction_form `{}` names mnemonic `{}` that has no [[instruction]]",
                        f.name, f.mnemonic
                    ),
                ));
            }
            if !forms.insert(f.name.as_str()) {
                return Err(invalid(
                    "concepts.toml",
                    format!("instruction_form `{}` is listed twice", f.name),
                ));
            }
        }
        let lower_word = |w: &str| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        for (i, a) in self.abbreviations.iter().enumerate() {
            let what = format!("abbreviation `{}`", a.short);
            if !lower_word(&a.short) {
                return Err(invalid(
                    "abbreviations.toml",
                    format!("{what}: `short` must be a lower-case identifier word"),
                ));
            }
            if a.means.is_empty() || !a.means.iter().all(|w| lower_word(w)) {
                return Err(invalid(
                    "abbreviations.toml",
                    format!("{what}: `means` must list one or more lower-case words"),
                ));
            }
            if let Some(c) = a.component.as_deref().filter(|c| !known(c)) {
                return Err(invalid(
                    "abbreviations.toml",
                    format!("{what} has unknown component `{c}`"),
                ));
            }
            if self.abbreviation_index.insert(a.short.clone(), i).is_some() {
                return Err(invalid(
                    "abbreviations.toml",
                    format!("{what} is listed twice"),
                ));
            }
        }
        // Longest prefix first, so `ICH_LR` wins over `ICH_`.
        self.sysreg_families
            .sort_by_key(|f| std::cmp::Reverse(f.prefix.len()));
        Ok(())
    }

    /// The component a command-line word names (component name or alias, any case).
    pub fn component_for_alias(&self, word: &str) -> Option<&Component> {
        self.alias_index
            .get(&word.to_ascii_lowercase())
            .map(|&i| &self.components[i])
    }

    /// The vocabulary entry of a component name.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The component a system register belongs to: the exact entry, else the longest
    /// matching family prefix.
    pub fn sysreg_component(&self, name: &str) -> Option<&str> {
        let upper = name.to_ascii_uppercase();
        if let Some(&i) = self.sysreg_index.get(&upper) {
            return Some(&self.sysregs[i].component);
        }
        self.sysreg_families
            .iter()
            .find(|f| upper.starts_with(&f.prefix.to_ascii_uppercase()))
            .map(|f| f.component.as_str())
    }

    /// Whether `name` is a system register this knowledge knows (exactly or by family).
    pub fn is_known_sysreg(&self, name: &str) -> bool {
        self.sysreg_component(name).is_some()
    }

    /// Translates one AArch64 asm statement to x86_64 (`None`: no translation known).
    /// Operand placeholders are matched by position and carried over.
    pub fn translate_asm_statement(&self, stmt: &str) -> Option<String> {
        let (shape, operands) = asm_shape(stmt);
        let t = self
            .asm_translations
            .iter()
            .find(|t| asm_shape(&t.arm64).0 == shape)?;
        let mut out = String::new();
        let mut ops = operands.iter();
        let mut rest = t.x86_64.as_str();
        while let Some(i) = rest.find("{}") {
            out.push_str(&rest[..i]);
            out.push_str(ops.next().map(String::as_str).unwrap_or("{}"));
            rest = &rest[i + 2..];
        }
        out.push_str(rest);
        Some(out)
    }

    /// Every concept of the concept map with its meaning in words and the identifiers
    /// code uses for it, for query expansion: one per `[[sysreg]]`, `[[sysreg_family]]`,
    /// `[[instruction]]`, `[[instruction_form]]`, `[[exception_class]]` and `[[device]]`
    /// entry that has a `means`, in that order. Terms are lower case and deduplicated.
    pub fn concept_terms(&self) -> Vec<ConceptTerms> {
        let entry = |means: &str, terms: Vec<String>, component: &str| {
            let mut uniq: Vec<String> = Vec::with_capacity(terms.len());
            for t in terms {
                let t = t.trim().to_lowercase();
                if !t.is_empty() && !uniq.contains(&t) {
                    uniq.push(t);
                }
            }
            (!means.trim().is_empty() && !uniq.is_empty()).then(|| ConceptTerms {
                means: means.trim().to_string(),
                terms: uniq,
                component: component.to_string(),
            })
        };
        let sysregs = self
            .sysregs
            .iter()
            .map(|s| entry(&s.means, vec![s.name.clone()], &s.component));
        let families = self.sysreg_families.iter().map(|f| {
            let prefix = f.prefix.trim_end_matches('_').to_string();
            entry(&f.means, vec![prefix], &f.component)
        });
        let instructions = self
            .instructions
            .iter()
            .map(|i| entry(&i.means, vec![i.mnemonic.clone()], &i.component));
        let forms = self
            .instruction_forms
            .iter()
            .map(|f| entry(&f.means, vec![f.name.clone()], &f.component));
        let classes = self
            .exception_classes
            .iter()
            .map(|e| entry(&e.means, vec![e.name.clone()], &e.component));
        let devices = self.devices.iter().map(|d| {
            let terms = std::iter::once(d.name.clone())
                .chain(d.terms.iter().cloned())
                .collect();
            entry(&d.means, terms, &d.component)
        });
        sysregs
            .chain(families)
            .chain(instructions)
            .chain(forms)
            .chain(classes)
            .chain(devices)
            .flatten()
            .collect()
    }

    /// The words an identifier abbreviation stands for (`gicd` → `["gic",
    /// "distributor"]`); the lookup ignores case. `None` for a word that is no known
    /// abbreviation.
    pub fn abbreviation(&self, short: &str) -> Option<&[String]> {
        self.abbreviation_index
            .get(&short.to_ascii_lowercase())
            .map(|&i| self.abbreviations[i].means.as_slice())
    }

    /// Every identifier abbreviation, in the order of abbreviations.toml.
    pub fn abbreviations(&self) -> &[Abbreviation] {
        &self.abbreviations
    }

    /// The entry of an AArch64-specific mnemonic (lower case).
    pub fn instruction(&self, mnemonic: &str) -> Option<&Instruction> {
        self.instruction_index
            .get(mnemonic)
            .map(|&i| &self.instructions[i])
    }
}

/// A statement's shape (lower case, single spaces, no space after commas, operand
/// placeholders as `{}`) and its placeholders in order.
fn asm_shape(stmt: &str) -> (String, Vec<String>) {
    let mut shape = String::new();
    let mut operands = Vec::new();
    let mut chars = stmt.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c == '{' {
            let mut op = String::from("{");
            for d in chars.by_ref() {
                op.push(d);
                if d == '}' {
                    break;
                }
            }
            operands.push(op);
            shape.push_str("{}");
        } else if c.is_whitespace() {
            while chars.peek().is_some_and(|d| d.is_whitespace()) {
                chars.next();
            }
            if !shape.ends_with(',') && chars.peek().is_some() {
                shape.push(' ');
            }
        } else if c == ',' {
            if shape.ends_with(' ') {
                shape.pop();
            }
            shape.push(',');
        } else {
            shape.push(c.to_ascii_lowercase());
        }
    }
    (shape, operands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_knowledge_loads_and_covers_the_vocabulary() {
        let k = Knowledge::embedded().expect("embedded knowledge is valid");
        assert_eq!(k.components.len(), COMPONENTS.len());
        for (name, id) in COMPONENTS.iter().zip(ComponentId::ALL) {
            assert_eq!(id.as_str(), *name);
            assert_eq!(ComponentId::parse(name), Some(id));
            assert_eq!(serde_json::to_value(id).unwrap(), *name);
        }
        assert_eq!(ComponentId::parse("gic"), None);
        for (alias, component) in [
            ("vmcs", "vm-control"),
            ("ept", "stage2"),
            ("apic", "interrupt-controller"),
            ("gic", "interrupt-controller"),
            ("vmexit", "exception"),
            ("trap", "exception"),
            ("serial", "uart"),
            ("VMCS", "vm-control"),
        ] {
            assert_eq!(
                k.component_for_alias(alias).map(|c| c.name.as_str()),
                Some(component),
                "alias {alias}"
            );
        }
        assert!(k.component_for_alias("nonsense").is_none());
    }

    #[test]
    fn arch_labels_are_canonical() {
        let k = Knowledge::embedded().unwrap();
        let a = &k.arch;
        for (name, label) in [
            ("aarch64", Some("aarch64")),
            ("arm_vcpu", Some("aarch64")),
            ("riscv64", Some("riscv64")),
            ("axhal-riscv", Some("riscv64")),
            ("loongarch64", Some("loongarch64")),
            ("x86_64", Some("x86_64")),
            ("x86", Some("x86_64")),
            ("mips32r2", Some("other")),
            ("vcpu", None),
            ("swarm", None),
        ] {
            assert_eq!(a.arch_label(name), label, "{name}");
        }
    }

    #[test]
    fn arch_words_tell_arm_from_other_architectures() {
        let a = &Knowledge::embedded().unwrap().arch;
        for yes in [
            "aarch64",
            "arm64",
            "arm_vcpu",
            "arm-gic",
            "foo-aarch64",
            "aarch64_hal",
            "aarch64.rs",
        ] {
            assert!(a.names_arm64(yes), "{yes}");
        }
        for no in ["swarm", "alarm", "farm", "armada", "aarch64x", "hv"] {
            assert!(!a.names_arm64(no), "{no}");
        }
        for yes in [
            "riscv64",
            "loongarch64",
            "x86_64",
            "mips32",
            "axhal-riscv",
            "riscv.rs",
        ] {
            assert!(a.names_other_arch(yes), "{yes}");
        }
        for no in ["aarch64", "arch", "vcpu", "src"] {
            assert!(!a.names_other_arch(no), "{no}");
        }
        assert!(a.is_arm_crate("aarch64-cpu") && a.is_arm_crate("arm_gicv2"));
        assert!(!a.is_arm_crate("tock-registers") && !a.is_arm_crate("bitflags"));
        assert!(a.is_shared_mnemonic("bl") && !a.is_shared_mnemonic("eret"));
    }

    #[test]
    fn sysreg_lookup_uses_exact_entries_then_longest_family() {
        let k = Knowledge::embedded().unwrap();
        assert_eq!(k.sysreg_component("hcr_el2"), Some("vm-control"));
        assert_eq!(k.sysreg_component("VTTBR_EL2"), Some("stage2"));
        assert_eq!(
            k.sysreg_component("ICH_LR7_EL2"),
            Some("interrupt-controller")
        );
        assert_eq!(k.sysreg_component("CNTV_CTL_EL0"), Some("timer"));
        assert_eq!(k.sysreg_component("NOT_A_REGISTER"), None);
        assert!(k.instruction("hvc").is_some());
        assert!(k.instruction("mov").is_none(), "mov is not ARM64-specific");
    }

    #[test]
    fn asm_statements_translate_with_their_operands() {
        let k = Knowledge::embedded().unwrap();
        assert_eq!(
            k.translate_asm_statement("  DSB   SY ").as_deref(),
            Some("mfence")
        );
        assert_eq!(
            k.translate_asm_statement("dc civac, {addr}").as_deref(),
            Some("clflush [{addr}]")
        );
        assert_eq!(k.translate_asm_statement("ic iallu").as_deref(), Some(""));
        assert_eq!(k.translate_asm_statement("mrs {}, cntvct_el0"), None);
    }

    #[test]
    fn every_concept_has_a_meaning_and_lower_case_terms() {
        let k = Knowledge::embedded().unwrap();
        let terms = k.concept_terms();
        let entries = k.sysregs.len()
            + k.sysreg_families.len()
            + k.instructions.len()
            + k.instruction_forms.len()
            + k.exception_classes.len()
            + k.devices.len();
        assert_eq!(terms.len(), entries, "one ConceptTerms per entry");
        for t in &terms {
            assert!(!t.means.trim().is_empty(), "{t:?}");
            assert!(!t.terms.is_empty(), "{t:?}");
            assert!(COMPONENTS.contains(&t.component.as_str()), "{t:?}");
            for term in &t.terms {
                assert_eq!(*term, term.to_lowercase(), "{t:?}");
                assert_eq!(term.trim(), term, "{t:?}");
            }
        }
        let find = |term: &str| {
            terms
                .iter()
                .find(|t| t.terms.iter().any(|x| x == term))
                .unwrap_or_else(|| panic!("no concept has term `{term}`"))
        };
        // The words a person asks with reach the identifiers code uses.
        for (term, words, component) in [
            ("esr_el2", "syndrome", "exception"),
            ("elr_el2", "exception return address", "exception"),
            ("spsr_el2", "exception return", "exception"),
            ("far_el2", "fault", "exception"),
            ("ttbr0_el2", "translation table base", "mmu"),
            ("vttbr_el2", "stage 2", "stage2"),
            ("eret", "exception return", "exception"),
            ("hvc", "hypervisor call", "hypercall"),
            ("wfi", "wait for interrupt", "exception"),
            ("dc cvac", "point of coherency", "cache-tlb"),
            ("tlbi vmalls12e1is", "stage 1 and stage 2", "cache-tlb"),
            (
                "icc_iar1_el1",
                "interrupt acknowledge",
                "interrupt-controller",
            ),
            ("icc_eoir1_el1", "end of interrupt", "interrupt-controller"),
            ("ich_lr", "list register", "interrupt-controller"),
            ("cntv", "virtual timer", "timer"),
            ("mpidr_el1", "affinity", "smp-power"),
            ("dabt_low", "data abort", "stage2"),
            ("pl011", "uart", "uart"),
            ("gicd", "distributor", "interrupt-controller"),
        ] {
            let c = find(term);
            assert!(
                c.means.to_lowercase().contains(words),
                "`{term}` means {:?}, not {words:?}",
                c.means
            );
            assert_eq!(c.component, component, "{term}");
        }
        // A device carries its name and its code terms.
        let uart = find("pl011 uart");
        assert!(uart.terms.contains(&"pl011".to_string()), "{uart:?}");
    }

    #[test]
    fn abbreviations_expand_to_words_with_any_case() {
        let k = Knowledge::embedded().unwrap();
        let n = k.abbreviations().len();
        assert!((50..=150).contains(&n), "{n} abbreviations");
        assert_eq!(
            k.abbreviation("gicd"),
            Some(&["gic".to_string(), "distributor".to_string()][..])
        );
        assert_eq!(k.abbreviation("GICD"), k.abbreviation("gicd"));
        for (short, word) in [
            ("mpidr", "affinity"),
            ("lr", "list"),
            ("eoi", "end"),
            ("iar", "acknowledge"),
            ("dabt", "abort"),
            ("iabt", "instruction"),
            ("ec", "class"),
            ("ipa", "intermediate"),
            ("pte", "entry"),
            ("s2pt", "stage"),
            ("cntv", "virtual"),
            ("cd", "descriptor"),
            ("vcpu", "virtual"),
            ("tlbi", "invalidate"),
        ] {
            let words = k.abbreviation(short).unwrap_or_else(|| panic!("{short}"));
            assert!(words.iter().any(|w| w == word), "{short}: {words:?}");
        }
        assert_eq!(k.abbreviation("distributor"), None);
        assert_eq!(k.abbreviation(""), None);
        for a in k.abbreviations() {
            if let Some(c) = &a.component {
                assert!(COMPONENTS.contains(&c.as_str()), "{a:?}");
            }
            assert!(!a.means.is_empty(), "{a:?}");
        }
    }

    #[test]
    fn knowledge_data_names_nothing_of_the_reference_workspace() {
        // The knowledge stays generic: no crate, item or trace name of the bundled
        // reference workspace appears in the files this module adds to.
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/eterna-arm64");
        let mut names = std::collections::BTreeSet::new();
        let mut stack = vec![std::path::PathBuf::from(fixture)];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = e.path();
                if path.is_dir() {
                    if let Some(n) = path.file_name().and_then(|n| n.to_str()) {
                        if n.contains('-') || n.contains('_') {
                            names.insert(n.replace('-', "_"));
                        }
                    }
                    stack.push(path);
                }
            }
        }
        assert!(
            !names.is_empty(),
            "the fixture's crate directories are found"
        );
        for text in [CONCEPTS_TOML, ABBREVIATIONS_TOML] {
            for name in &names {
                assert!(!text.contains(name.as_str()), "knowledge names `{name}`");
            }
        }
    }

    #[test]
    fn invalid_abbreviations_and_forms_are_rejected() {
        let with_abbr = |abbr: &str| Knowledge::from_strs(COMPONENTS_TOML, CONCEPTS_TOML, abbr);
        let one = "[[abbreviation]]\nshort = \"gicd\"\nmeans = [\"gic\", \"distributor\"]\n";
        assert!(with_abbr(one).is_ok());
        for (bad, expect) in [
            (format!("{one}{one}"), "listed twice"),
            (one.replace("gicd", "GICD"), "lower-case identifier"),
            (one.replace("[\"gic\", \"distributor\"]", "[]"), "`means`"),
            (one.replace("\"distributor\"", "\"Distributor\""), "`means`"),
            (
                format!("{one}component = \"gic-ish\"\n"),
                "unknown component",
            ),
        ] {
            let err = with_abbr(&bad).unwrap_err().to_string();
            assert!(err.contains("abbreviations.toml"), "{err}");
            assert!(err.contains(expect), "{expect}: {err}");
        }
        let insn = "[[instruction]]\nmnemonic = \"dc\"\nmeans = \"data cache\"\ncomponent = \"cache-tlb\"\nx86_64 = \"a\"\nnote = \"b\"\n";
        let form = "[[instruction_form]]\nname = \"dc cvac\"\nmnemonic = \"dc\"\nmeans = \"clean\"\ncomponent = \"cache-tlb\"\nx86_64 = \"a\"\nnote = \"b\"\n";
        let with_conc =
            |conc: &str| Knowledge::from_strs(COMPONENTS_TOML, conc, ABBREVIATIONS_TOML);
        assert!(with_conc(&format!("{insn}{form}")).is_ok());
        for (bad, expect) in [
            (form.to_string(), "has no [[instruction]]"),
            (format!("{insn}{form}{form}"), "listed twice"),
            (
                format!("{insn}{}", form.replace("dc cvac", "ic cvac")),
                "<operation>",
            ),
            (
                format!("{insn}{}", form.replace("dc cvac", "DC CVAC")),
                "<operation>",
            ),
            (insn.replace("data cache", " "), "empty `means`"),
        ] {
            let err = with_conc(&bad).unwrap_err().to_string();
            assert!(
                err.contains("concepts.toml") && err.contains(expect),
                "{expect}: {err}"
            );
        }
        // `means` is required on every concept entry.
        let err = with_conc(&insn.replace("means = \"data cache\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("means"), "{err}");
    }

    #[test]
    fn new_knowledge_is_indexed_for_retrieval() {
        use crate::store::chunk::chunk_knowledge_toml;
        let k = Knowledge::embedded().unwrap();
        let sources = crate::ops::index::knowledge_sources();
        let abbr = sources
            .iter()
            .find(|s| s.path.ends_with("abbreviations.toml"))
            .expect("abbreviations.toml is a knowledge source");
        // One chunk for the whole table: a hundred tiny entries would outrank code.
        let chunks = chunk_knowledge_toml(&abbr.text, &abbr.path);
        assert_eq!(chunks.len(), 1, "{chunks:?}");
        for a in k.abbreviations() {
            assert!(
                chunks[0]
                    .content
                    .contains(&format!("short = \"{}\"", a.short)),
                "{a:?}"
            );
        }
        let chunks = chunk_knowledge_toml(CONCEPTS_TOML, "concepts.toml");
        let form = chunks
            .iter()
            .find(|c| c.title == "instruction_form dc cvac")
            .expect("instruction forms chunk by name");
        assert!(form.content.contains("point of coherency"), "{form:?}");
        assert_eq!(form.component.as_deref(), Some("cache-tlb"));
        let esr = chunks.iter().find(|c| c.title == "sysreg ESR_EL2").unwrap();
        assert!(
            esr.content.contains("means = \"Exception Syndrome"),
            "{esr:?}"
        );
    }

    #[test]
    fn invalid_knowledge_is_rejected_with_the_file_named() {
        let comps = COMPONENTS_TOML.replace("name = \"uart\"", "name = \"serialport\"");
        let err = Knowledge::from_strs(&comps, CONCEPTS_TOML, ABBREVIATIONS_TOML).unwrap_err();
        assert!(err.to_string().contains("components.toml"), "{err}");
        let conc =
            "[[sysreg]]\nname = \"X_EL2\"\nmeans = \"x\"\ncomponent = \"nope\"\nx86_64 = \"a\"\nnote = \"b\"\n";
        let err = Knowledge::from_strs(COMPONENTS_TOML, conc, ABBREVIATIONS_TOML).unwrap_err();
        assert!(
            err.to_string().contains("unknown component `nope`"),
            "{err}"
        );
    }
}
