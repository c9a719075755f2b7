//! Server-sent events as OpenAI-compatible servers stream chat completions:
//! `data: {json}` events separated by blank lines, `: comment` keep-alives, and a final
//! `data: [DONE]`.

use serde_json::Value;

use super::types::Usage;

/// Splits a byte stream into the `data` of each event. Multi-line `data` fields are
/// joined with `\n`; other fields (`event:`, `id:`) and comments are ignored.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event completed by them.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line(&String::from_utf8_lossy(&line), &mut out);
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(d) = self.data.take() {
                out.push(d);
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
    }

    /// The data of an event left open when the stream ended.
    pub(crate) fn finish(&mut self) -> Option<String> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let mut out = Vec::new();
            self.line(
                String::from_utf8_lossy(&rest).trim_end_matches('\r'),
                &mut out,
            );
        }
        self.data.take()
    }
}

/// What the chunks of a streamed completion add up to.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub content: String,
    pub usage: Option<Usage>,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
    pub done: bool,
}

impl StreamState {
    /// Applies one `chat.completion.chunk`; returns its content delta, if any.
    pub(crate) fn apply(&mut self, v: &Value) -> Option<String> {
        if let Some(m) = v.get("model").and_then(Value::as_str) {
            self.model = Some(m.to_string());
        }
        if let Some(u) = v.get("usage").and_then(Usage::from_json) {
            self.usage = Some(u);
        }
        let choice = v.get("choices")?.as_array()?.first()?;
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(r.to_string());
        }
        let delta = choice.get("delta")?.get("content")?.as_str()?;
        if delta.is_empty() {
            return None;
        }
        self.content.push_str(delta);
        Some(delta.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b": OPENROUTER PROCESSING\n\nda").is_empty());
        assert!(p.push(b"ta: {\"a\":1}\r").is_empty());
        assert_eq!(p.push(b"\n\r\ndata: [DONE]\n\n"), ["{\"a\":1}", "[DONE]"]);
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn multi_line_data_and_unterminated_event() {
        let mut p = SseParser::default();
        assert_eq!(p.push(b"event: x\ndata: a\ndata: b\n\n"), ["a\nb"]);
        assert!(p.push(b"data: tail").is_empty());
        assert_eq!(p.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn chunks_assemble_content_and_usage() {
        let mut s = StreamState::default();
        let chunks = [
            r#"{"model":"m","choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"cost":0.01}}"#,
        ];
        let deltas: Vec<_> = chunks
            .iter()
            .filter_map(|c| s.apply(&serde_json::from_str(c).unwrap()))
            .collect();
        assert_eq!(deltas, ["Hel", "lo"]);
        assert_eq!(s.content, "Hello");
        assert_eq!(s.finish_reason.as_deref(), Some("stop"));
        let u = s.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (5, 2, 7)
        );
        assert_eq!(u.cost, Some(0.01));
        assert_eq!(s.model.as_deref(), Some("m"));
    }
}
