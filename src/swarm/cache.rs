//! The LLM response cache in the store, keyed by (model, messages, parameters): an
//! unchanged re-run makes no request at all.

use std::sync::Mutex;

use crate::llm::ChatRequest;
use crate::store::Store;

/// A store connection used for the cache only (the agents share it).
pub struct ResponseCache {
    store: Mutex<Store>,
    model: String,
}

impl ResponseCache {
    /// A cache over `store` for answers of `model`.
    pub fn new(store: Store, model: impl Into<String>) -> Self {
        ResponseCache {
            store: Mutex::new(store),
            model: model.into(),
        }
    }

    /// The cache key of a request: a hash of the model, the parameters and every
    /// message (role and content), each length-prefixed so no two requests collide by
    /// concatenation. Keys never contain API keys: those are not part of a request.
    pub fn key(&self, req: &ChatRequest) -> String {
        let mut h = blake3::Hasher::new();
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(b"eterna-port-llm-cache-v1");
        field(req.model.as_deref().unwrap_or(&self.model).as_bytes());
        field(format!("{:?}", req.temperature).as_bytes());
        field(format!("{:?}", req.max_tokens).as_bytes());
        for m in &req.messages {
            field(m.role.as_bytes());
            field(m.content.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    /// A cached answer. A store that cannot be read counts as a miss (logged).
    pub fn get(&self, key: &str) -> Option<String> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        match store.cache_get(key) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("LLM cache read failed, asking the model: {e}");
                None
            }
        }
    }

    /// Stores an answer. A failed write only costs a request next time (logged).
    pub fn put(&self, key: &str, answer: &str) {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = store.cache_put(key, &self.model, answer) {
            tracing::warn!("LLM cache write failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Message;

    #[test]
    fn keys_depend_on_model_messages_and_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let c = ResponseCache::new(Store::open(&dir.path().join("s.db")).unwrap(), "m1");
        let req = ChatRequest::new(vec![Message::system("ab"), Message::user("c")]);
        let k = c.key(&req);
        assert_eq!(k, c.key(&req.clone()));
        // Moving a character between messages changes the key.
        let shifted = ChatRequest::new(vec![Message::system("a"), Message::user("bc")]);
        assert_ne!(k, c.key(&shifted));
        let mut warmer = req.clone();
        warmer.temperature = Some(0.7);
        assert_ne!(k, c.key(&warmer));
        let mut other_model = req.clone();
        other_model.model = Some("m2".into());
        assert_ne!(k, c.key(&other_model));
        assert_eq!(c.get(&k), None);
        c.put(&k, "answer");
        assert_eq!(c.get(&k).as_deref(), Some("answer"));
    }
}
