//! Retrieval on the multi-architecture test workspace (tests/fixtures/retrieval).
//!
//! The remote embedder against a local OpenAI-compatible `/embeddings` server that
//! answers real vectors: a hashed bag of words computed from each input text, with a
//! few synonyms folded in the way a trained model puts related words close together.
//! A query made only of words the workspace never uses can then be answered only by the
//! vectors, and the expected file must come first.

use std::path::{Path, PathBuf};

use serde_json::Value;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::common::{assert_code, command, copy_tree, json, stderr, stdout};

const KEY: &str = "sk-test-retrieval-embedder-9876543210";
const DIM: usize = 128;

/// Words of the queries below mapped to the identifiers they are "close to" in the
/// served vector space. None of the left-hand words occurs in the workspace.
const SYNONYMS: [(&str, &[&str]); 3] = [
    ("doorbell", &["sgi"]),
    ("sibling", &["mpidr", "aff"]),
    ("hourglass", &["cnthp"]),
];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/retrieval/multi-arch-hv")
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Lower-case words, identifiers split at `_` and every other non-alphanumeric.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
}

/// The served embedding: a random projection of the bag of words (each word, or its
/// synonyms, adds a pseudo-random ±1 vector seeded by its hash), L2-normalised. Dense,
/// like a trained model's vectors, so the store's sign-bit prefilter keeps its meaning
/// (SimHash), and texts sharing words have a high cosine similarity.
fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIM];
    for w in words(text) {
        let targets: Vec<&str> = SYNONYMS
            .iter()
            .find(|(k, _)| *k == w)
            .map(|(_, t)| t.to_vec())
            .unwrap_or_else(|| vec![w.as_str()]);
        for t in targets {
            let mut state = fnv1a(t);
            for x in v.iter_mut() {
                // splitmix64: one pseudo-random sign per dimension.
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                *x += if (z ^ (z >> 31)) & 1 == 0 { 1.0 } else { -1.0 };
            }
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn embeddings(req: &Request) -> ResponseTemplate {
    crate::common::embeddings_response(req, embed)
}

fn remote(ws: &Path, url: &str, args: &[&str]) -> std::process::Output {
    command(ws, args)
        .env("ETERNA_PORT_EMBEDDER", "remote")
        .env("ETERNA_PORT_EMBEDDINGS_BASE_URL", url)
        .env("ETERNA_PORT_EMBEDDING_MODEL", "bag-of-words")
        .env("OPENAI_API_KEY", KEY)
        .output()
        .unwrap()
}

fn no_key(out: &std::process::Output) {
    assert!(
        !stdout(out).contains(KEY) && !stderr(out).contains(KEY),
        "the API key leaked:\n{}\n{}",
        stdout(out),
        stderr(out)
    );
}

#[test]
fn the_served_vectors_embed_related_words_close() {
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let q = embed("doorbell sibling");
    let sgi = embed("send_sgi(mpidr, intid): aff(mpidr) into ICC_SGI1R_EL1");
    let uart = embed("console_putc: wait while the transmit FIFO is full");
    assert!(cos(&q, &sgi) > 0.3, "{}", cos(&q, &sgi));
    assert!(cos(&q, &uart).abs() < 0.2, "{}", cos(&q, &uart));
    assert!((cos(&q, &q) - 1.0).abs() < 1e-5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_embedder_with_real_vectors_answers_what_words_cannot() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(embeddings)
        .mount(&server)
        .await;
    let url = format!("{}/v1", server.uri());
    let ws = copy_tree(&fixture());
    let wsp = ws.path().to_path_buf();

    let (u, w) = (url.clone(), wsp.clone());
    let (idx, st, q1, q2) = tokio::task::spawn_blocking(move || {
        let idx = remote(&w, &u, &["index", "--message-format", "json"]);
        let st = remote(&w, &u, &["status", "--message-format", "json"]);
        let search = |q: &str| {
            remote(
                &w,
                &u,
                &[
                    "search",
                    "--message-format",
                    "json",
                    "--kind",
                    "code",
                    "-n",
                    "5",
                    q,
                ],
            )
        };
        (idx, st, search("doorbell sibling"), search("hourglass"))
    })
    .await
    .unwrap();

    assert_code(&idx, 0);
    no_key(&idx);
    let v = json(&idx);
    assert_eq!(v["index"]["embedder"], format!("remote:bag-of-words@{url}"));
    assert_code(&st, 0);
    let st = json(&st);
    assert_eq!(st["stats"]["embedding_dim"], DIM as i64, "{st:#}");
    assert_eq!(st["stats"]["unembedded"], 0, "{st:#}");

    // Every chunk's text went to the server, among them the aarch64 SGI sender's.
    let requests = server.received_requests().await.unwrap();
    let inputs: Vec<String> = requests
        .iter()
        .flat_map(|r| {
            let b: Value = serde_json::from_slice(&r.body).unwrap();
            b["input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(inputs.len() as i64 >= st["stats"]["chunks"].as_i64().unwrap() - 1);
    assert!(inputs.iter().any(|t| t.contains("icc_sgi1r_el1")));
    assert!(
        inputs.iter().any(|t| t == "hourglass"),
        "the query is embedded remotely"
    );

    for (out, query, expected) in [
        (&q1, "doorbell sibling", "src/arch/aarch64/ipi.rs"),
        (&q2, "hourglass", "src/arch/aarch64/timer.rs"),
    ] {
        assert_code(out, 0);
        no_key(out);
        let v = json(out);
        let results = v["results"].as_array().unwrap();
        let top = results
            .first()
            .unwrap_or_else(|| panic!("{query}: no result\n{v:#}"));
        assert_eq!(top["path"], expected, "{query}: {v:#}");
        // It came from the vectors alone: the lexical side matched none of its words.
        assert_eq!(top["vector_rank"], 1, "{query}: {top:#}");
        assert!(
            results.iter().all(|r| r["text_rank"].is_null()),
            "{query}: a word matched lexically: {v:#}"
        );
    }
}

/// The evaluation workspace is what the retrieval work assumes: its aarch64 backend is
/// planned, module by module, and nothing of the other backends is.
#[test]
fn the_multi_arch_workspace_plans_its_aarch64_backend_only() {
    let ws = copy_tree(&fixture());
    let out = crate::common::run(ws.path(), &["plan", "--message-format", "json"]);
    assert_code(&out, 0);
    let v = json(&out);
    let sources: Vec<&str> = v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["source"].as_str().unwrap())
        .collect();
    for f in [
        "exception",
        "vcpu",
        "cache",
        "stage2",
        "psci",
        "vgic",
        "ipi",
        "timer",
        "pl011",
        "smmu",
    ] {
        let want = format!("src/arch/aarch64/{f}.rs");
        assert!(
            sources.contains(&want.as_str()),
            "{want} not planned: {sources:?}"
        );
    }
    for s in &sources {
        assert!(
            !["riscv64", "loongarch64", "x86_64"]
                .iter()
                .any(|a| s.starts_with(&format!("src/arch/{a}/"))),
            "another architecture's file is planned: {s}"
        );
    }
}
