//! The LLM backend: an OpenAI-compatible chat client (OpenRouter by default, or any
//! server at `ETERNA_PORT_LLM_BASE_URL`: Ollama, vLLM, llama.cpp's server), its key
//! pool and retry policy, and the extraction and validation of code from its answers.
//!
//! - [`client`]: [`LlmClient`], streaming and non-streaming chat with retries; its
//!   answers are read in `client/response.rs`.
//! - [`settings`]: [`LlmSettings`], what the client needs to know.
//! - [`types`]: the wire types ([`Message`], [`ChatRequest`], [`Usage`], [`ChatResponse`]).
//! - [`keys`]: the round-robin key pool with cool-downs (429) and disabling (401/403).
//! - [`extract`]: files from a JSON envelope or fenced blocks, parsed and path-checked.

pub mod client;
pub mod error;
pub mod extract;
pub mod keys;
pub mod settings;
mod sse;
pub mod types;

pub use client::{ChatRequest, ChatResponse, LlmClient, LlmSettings, Message, Notice, Usage};
pub use error::LlmError;
pub use extract::{extract_files, ExtractError, ExtractOptions, ExtractedFile};
pub use keys::KeyPool;
pub use tokio_util::sync::CancellationToken;
