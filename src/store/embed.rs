//! Embedders: text → L2-normalised vector.
//!
//! - [`LocalEmbedder`] (the default) needs no network and no model files: it hashes
//!   code-aware features (whole identifiers such as `ICH_LR0_EL2` or `vmalls12e1is`,
//!   their parts split at `_`, case and letter/digit changes, and short prefixes that
//!   join `init`/`initialise`/`initialization`) into a fixed dimension with signed
//!   hashing, then applies a fixed randomised Hadamard rotation. The rotation keeps
//!   every inner product but spreads each feature over all dimensions, so the sign bits
//!   of the vector are a good binary code for the coarse vector search.
//! - [`RemoteEmbedder`] calls an OpenAI-compatible `POST {base}/embeddings`.
//!
//! The store records the embedder's [`Embedder::id`] and dimension; a different id
//! re-embeds everything, so vectors of two embedders never mix.

use std::time::Duration;

use crate::config::Secret;

use super::StoreError;

/// Turns texts into vectors of one fixed dimension.
pub trait Embedder: Send + Sync {
    /// Identifies the embedder and its settings; a change re-embeds the index.
    fn id(&self) -> String;
    /// One L2-normalised vector per text, all of the same dimension.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StoreError>;
    /// How many texts to send in one call.
    fn batch_size(&self) -> usize {
        256
    }
    /// The weight of this embedder's list against the full-text list (1.0) when a
    /// search fuses them: how much its nearest neighbours say about meaning.
    fn fusion_weight(&self) -> f64 {
        1.0
    }
}

/// Dimension of the local embedder (a power of two, for the Hadamard rotation).
pub const LOCAL_DIM: usize = 256;

/// The built-in embedder: deterministic feature hashing, no network, no model files.
#[derive(Debug, Clone, Default)]
pub struct LocalEmbedder;

impl LocalEmbedder {
    /// The local embedder: no network, no key.
    pub fn new() -> Self {
        LocalEmbedder
    }

    /// Embeds one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; LOCAL_DIM];
        let mut feats: Vec<(u64, f32)> = Vec::with_capacity(64);
        // The first lines of a chunk's text are its title, path and module path (see
        // `index::embed_text`): names say more about code than its body does.
        // Comments and headings say what code does in the words people search with.
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            let boost = match i {
                0 => 3.0,
                1 | 2 => 1.5,
                _ if t.starts_with("//") || t.starts_with('#') => 2.0,
                _ => 1.0,
            };
            features(line, &mut |h, w| feats.push((h, w * boost)));
        }
        // Sublinear term frequency: repeated features count 1 + ln(tf).
        feats.sort_unstable_by_key(|f| f.0);
        let mut i = 0;
        while i < feats.len() {
            let h = feats[i].0;
            let mut w = 0.0;
            let mut n = 0;
            while i < feats.len() && feats[i].0 == h {
                w += feats[i].1;
                n += 1;
                i += 1;
            }
            // Sublinear term frequency over the mean weight.
            let w = (w / n as f32) * (1.0 + (n as f32).ln());
            let bucket = (h % LOCAL_DIM as u64) as usize;
            let sign = if (h >> 63) & 1 == 1 { -1.0 } else { 1.0 };
            v[bucket] += sign * w;
        }
        rotate(&mut v);
        normalize(&mut v);
        v
    }
}

impl Embedder for LocalEmbedder {
    fn id(&self) -> String {
        format!("local-hash-v3/{LOCAL_DIM}")
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StoreError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
    /// Feature hashing sees the same words as the full-text index, less sharply: its
    /// list counts half (measured with `cargo bench --bench retrieval`: on both
    /// evaluation sets the top-3 hit rate and nDCG@5 are best at one half).
    fn fusion_weight(&self) -> f64 {
        0.5
    }
}

/// Fixed random signs followed by a fast Walsh–Hadamard transform: an orthogonal map.
fn rotate(v: &mut [f32]) {
    let n = v.len();
    for (i, x) in v.iter_mut().enumerate() {
        if fnv1a(&(i as u64 ^ 0x5eed).to_le_bytes()) & 1 == 1 {
            *x = -*x;
        }
    }
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(h * 2) {
            for j in i..i + h {
                let (a, b) = (v[j], v[j + h]);
                v[j] = a + b;
                v[j + h] = a - b;
            }
        }
        h *= 2;
    }
}

pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Final avalanche so that the low bits (bucket) and the top bit (sign) are mixed.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

fn feature_hash(prefix: u8, word: &str) -> u64 {
    let mut buf = Vec::with_capacity(word.len() + 1);
    buf.push(prefix);
    buf.extend_from_slice(word.as_bytes());
    fnv1a(&buf)
}

/// Words too common in Rust code and English prose to say anything about a chunk.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "if", "in", "into", "is", "it",
    "its", "of", "on", "or", "that", "the", "this", "to", "with", "fn", "let", "pub", "mut",
    "self", "use", "crate", "super", "impl", "struct", "enum", "const", "static", "return", "else",
    "match", "unsafe", "where", "true", "false", "u8", "u16", "u32", "u64", "usize", "i32", "i64",
    "bool", "some", "none", "ok", "err", "mod", "type", "ref", "while", "loop", "break",
    "continue", "we", "when", "which", "can", "not", "no", "so", "but", "all", "any", "one", "has",
    "have", "was", "will", "then", "than", "also", "only",
];

pub(crate) fn is_stopword(w: &str) -> bool {
    STOPWORDS.contains(&w)
}

/// Calls `f(word)` for each identifier-like token of `text` (ASCII letters, digits, `_`).
pub(crate) fn tokens(text: &str, mut f: impl FnMut(&str)) {
    let bytes = text.as_bytes();
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        let word = b.is_ascii_alphanumeric() || b == b'_';
        match (word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                f(&text[s..i]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        f(&text[s..]);
    }
}

/// Splits an identifier at `_`, lower→upper case changes and letter→digit runs kept
/// together (`ICH_LR0_EL2` → `ich lr0 el2`, `GicDistributor` → `gic distributor`,
/// `read_sysreg` → `read sysreg`).
pub(crate) fn split_identifier(token: &str, mut f: impl FnMut(&str)) {
    for part in token.split('_') {
        let b = part.as_bytes();
        let mut s = 0;
        for i in 1..b.len() {
            let boundary = (b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase())
                || (b[i].is_ascii_uppercase()
                    && b[i - 1].is_ascii_uppercase()
                    && i + 1 < b.len()
                    && b[i + 1].is_ascii_lowercase());
            if boundary {
                f(&part[s..i]);
                s = i;
            }
        }
        if s < b.len() {
            f(&part[s..]);
        }
    }
}

/// The features of `text`: `f(hash, weight)` for each occurrence.
fn features(text: &str, f: &mut dyn FnMut(u64, f32)) {
    let mut lower = String::new();
    tokens(text, |tok| {
        if tok.len() < 2 || tok.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
            return;
        }
        lower.clear();
        lower.push_str(tok);
        lower.make_ascii_lowercase();
        let compound = tok.contains('_')
            || tok.bytes().any(|b| b.is_ascii_uppercase())
                && tok.bytes().any(|b| b.is_ascii_lowercase());
        if compound {
            // Whole identifiers (register names like HCR_EL2, types like GicDistributor)
            // are strong evidence on their own.
            f(feature_hash(b'w', &lower), 1.5);
        }
        split_identifier(tok, |part| {
            if part.len() < 2 {
                return;
            }
            let p = part.to_ascii_lowercase();
            if is_stopword(&p) || p.bytes().all(|b| b.is_ascii_digit()) {
                return;
            }
            let n = normalize_word(&p);
            f(feature_hash(b'w', n), 1.0);
        });
    });
}

/// Folds inflections and the abbreviations common in systems code onto one form:
/// `initialise`, `initialization`, `init` → `init`; `controller`, `ctlr` → `ctrl`;
/// `registers`, `reg` → `reg`.
pub(crate) fn normalize_word(w: &str) -> &str {
    let mut s = w;
    for suffix in [
        "isations", "izations", "isation", "ization", "ising", "izing", "ised", "ized", "ises",
        "izes", "ise", "ize", "ations", "ation",
    ] {
        if s.len() > suffix.len() + 3 {
            if let Some(stem) = s.strip_suffix(suffix) {
                s = stem;
                break;
            }
        }
    }
    if s == w && s.len() > 4 && s.ends_with('s') && !s.ends_with("ss") {
        s = &s[..s.len() - 1];
    }
    match s {
        "initial" | "initialis" | "initializ" => "init",
        "controller" | "control" | "ctlr" | "ctl" | "cntl" => "ctrl",
        "register" | "regs" => "reg",
        "address" => "addr",
        "memory" => "mem",
        "configure" | "configur" | "configuration" | "config" => "cfg",
        "interrupt" | "irqs" => "irq",
        "acknowledge" => "ack",
        "allocate" | "allocator" | "allocat" => "alloc",
        "virtual" => "virt",
        other => other,
    }
}

/// Extra words of `text` for the full-text index: the parts of identifiers (so that
/// `GicDistributor` is found by `distributor`) and the folded forms of words (so that
/// `initialisation` finds `init`).
pub(crate) fn split_words(text: &str) -> String {
    let mut out = String::new();
    tokens(text, |tok| {
        let compound = tok.contains('_')
            || tok.bytes().any(|b| b.is_ascii_uppercase())
                && tok.bytes().any(|b| b.is_ascii_lowercase());
        split_identifier(tok, |p| {
            if p.len() < 2 {
                return;
            }
            let lower = p.to_ascii_lowercase();
            if compound && !tok.contains('_') {
                out.push_str(&lower);
                out.push(' ');
            }
            let n = normalize_word(&lower);
            if n != lower {
                out.push_str(n);
                out.push(' ');
            }
        });
    });
    out
}

/// The sign bits of `v`, 8 per byte (sqlite-vec `bit[N]`), padded to whole bytes.
pub(crate) fn quantize(v: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; v.len().div_ceil(8)];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

pub(crate) fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// An OpenAI-compatible `/embeddings` endpoint.
pub struct RemoteEmbedder {
    base_url: String,
    model: String,
    key: Secret,
    client: reqwest::blocking::Client,
}

impl std::fmt::Debug for RemoteEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEmbedder")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("key", &self.key)
            .finish()
    }
}

#[derive(serde::Serialize)]
struct EmbeddingRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
}

#[derive(serde::Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingData>,
}

#[derive(serde::Deserialize)]
struct EmbeddingData {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

impl RemoteEmbedder {
    /// An embedder for the OpenAI-compatible `/embeddings` endpoint at `base_url` (fails
    /// only when the HTTP client cannot start).
    pub fn new(base_url: &str, model: &str, key: Secret) -> Result<Self, StoreError> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| StoreError::Embed(format!("cannot start the HTTP client: {e}")))?;
        Ok(RemoteEmbedder {
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            key,
            client,
        })
    }

    fn url(&self) -> String {
        format!("{}/embeddings", self.base_url)
    }
}

impl Embedder for RemoteEmbedder {
    fn id(&self) -> String {
        format!("remote:{}@{}", self.model, self.base_url)
    }

    fn batch_size(&self) -> usize {
        64
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StoreError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.url();
        let body = EmbeddingRequest {
            model: &self.model,
            input: texts,
        };
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let result = self
                .client
                .post(&url)
                .bearer_auth(self.key.expose())
                .json(&body)
                .send();
            match result {
                Ok(r) if r.status().is_server_error() && attempt < 3 => {
                    std::thread::sleep(Duration::from_millis(200 * attempt));
                }
                Ok(r) => break r,
                Err(e) if attempt < 3 && (e.is_timeout() || e.is_connect()) => {
                    std::thread::sleep(Duration::from_millis(200 * attempt));
                }
                Err(e) => {
                    return Err(StoreError::Embed(format!(
                        "embeddings request to {url} failed: {}; check `embeddings-base-url` / ETERNA_PORT_EMBEDDINGS_BASE_URL, or use the local embedder (embedder = \"local\")",
                        e.without_url()
                    )))
                }
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().unwrap_or_default();
            let detail: String = text.chars().take(300).collect();
            let hint = match status.as_u16() {
                401 | 403 => "check OPENAI_API_KEY",
                404 => "check `embeddings-base-url` and `embedding-model`",
                429 => "the server is rate-limiting; try again later",
                _ => "try again later, or use the local embedder (embedder = \"local\")",
            };
            return Err(StoreError::Embed(format!(
                "embeddings server {url} answered {status} for model `{}`: {}; {hint}",
                self.model,
                detail.trim()
            )));
        }
        let parsed: EmbeddingResponse = resp.json().map_err(|e| {
            StoreError::Embed(format!(
                "embeddings server {url} sent a response that is not an embeddings list: {}",
                e.without_url()
            ))
        })?;
        if parsed.data.len() != texts.len() {
            return Err(StoreError::Embed(format!(
                "embeddings server {url} returned {} vectors for {} inputs",
                parsed.data.len(),
                texts.len()
            )));
        }
        let mut data = parsed.data;
        if data.iter().all(|d| d.index.is_some()) {
            data.sort_by_key(|d| d.index);
        }
        let dim = data[0].embedding.len();
        let mut out = Vec::with_capacity(data.len());
        for d in data {
            if d.embedding.is_empty() || d.embedding.len() != dim {
                return Err(StoreError::Embed(format!(
                    "embeddings server {url} returned vectors of different or zero dimension ({} and {dim})",
                    d.embedding.len()
                )));
            }
            let mut v = d.embedding;
            normalize(&mut v);
            out.push(v);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &str, b: &str) -> f32 {
        let e = LocalEmbedder::new();
        dot(&e.embed_one(a), &e.embed_one(b))
    }

    #[test]
    fn local_embedding_is_normalised_and_deterministic() {
        let e = LocalEmbedder::new();
        let a = e.embed_one("fn init_gic() { write_sysreg!(ICH_HCR_EL2, 1) }");
        assert_eq!(a.len(), LOCAL_DIM);
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4, "norm² {n}");
        assert_eq!(
            a,
            e.embed_one("fn init_gic() { write_sysreg!(ICH_HCR_EL2, 1) }")
        );
        assert!(e.embed_one("").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn related_code_is_closer_than_unrelated() {
        let gic = "pub fn init_distributor() { gicd.ctlr.write(1); ICH_HCR_EL2 }";
        assert!(cos("interrupt controller initialisation gic", gic) > cos("uart serial", gic));
        assert!(cos("ICH_HCR_EL2", gic) > cos("VTTBR_EL2", gic));
    }

    #[test]
    fn identifiers_split_into_parts() {
        let mut parts = Vec::new();
        split_identifier("GicDistributor", |p| parts.push(p.to_string()));
        split_identifier("ICH_LR0_EL2", |p| parts.push(p.to_string()));
        split_identifier("HTTPServer", |p| parts.push(p.to_string()));
        assert_eq!(
            parts,
            ["Gic", "Distributor", "ICH", "LR0", "EL2", "HTTP", "Server"]
        );
    }

    #[test]
    fn words_fold_onto_one_form() {
        for (w, n) in [
            ("initialisation", "init"),
            ("initialize", "init"),
            ("init", "init"),
            ("controller", "ctrl"),
            ("ctlr", "ctrl"),
            ("registers", "reg"),
            ("interrupts", "irq"),
            ("class", "class"),
        ] {
            assert_eq!(normalize_word(w), n, "{w}");
        }
    }

    #[test]
    fn quantize_sets_sign_bits() {
        assert_eq!(
            quantize(&[1.0, -1.0, 0.5, 0.0, 0.1, -0.1, 2.0, 3.0, 1.0]),
            [0b1101_0101, 1]
        );
    }
}
