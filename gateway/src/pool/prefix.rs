//! A model request's prompt as a chain of block hashes, for cache-aware routing. Ollama's
//! runner keeps, per slot, the tokens of the last prompt it evaluated and reuses the longest
//! common prefix of the next one; a multi-turn chat resends its whole history, so the turn
//! that lands where the previous one ran evaluates only what is new. Block `i`'s hash covers
//! blocks `0..=i`, so equal hashes mean equal prefixes.
//!
//! The body is read with borrowed raw values (no string is unescaped or copied): one pass
//! over the JSON, then hashing bytes. Blocks are whole messages for chats (role, content,
//! images, tool calls as sent), and 1 KiB pieces of the prompt for completions; the first
//! hash covers the model and the tools, which the model sees before the messages.

use serde::Deserialize;
use serde_json::value::RawValue;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A completion prompt is cut into pieces of this many bytes.
const PROMPT_BLOCK: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptChain {
    pub blocks: Vec<u64>,
    /// Leading blocks that are only system prompt: a match no deeper than these is shared by
    /// every conversation with that prompt, so it does not pin a conversation anywhere.
    pub system_blocks: usize,
    /// The client's own conversation key (`X-Corral-Session`, or OpenAI's `user`).
    pub session: Option<u64>,
}

/// A model request's body as the gateway reads it: the fields it checks (see
/// `plugins::model_body`), and the prompt as borrowed raw JSON.
#[derive(Deserialize)]
pub struct Request<'a> {
    #[serde(default)]
    pub model: Option<serde_json::Value>,
    /// `/api/show` used to take `name`.
    #[serde(default)]
    pub name: Option<serde_json::Value>,
    #[serde(default)]
    pub stream: Option<serde_json::Value>,
    #[serde(borrow, default)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    images: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

fn raw(v: Option<&RawValue>) -> &[u8] {
    v.map_or(&[][..], |r| r.get().as_bytes())
}

/// Hashes `parts` as one block following `seed` (a 0xff byte separates parts, which JSON text
/// never contains).
fn block(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = seed;
    for p in parts {
        h = xxh3_64_with_seed(p, h ^ 0xff);
    }
    h
}

/// The chain of `body`, parsed on its own (the gateway hashes the prompt in the parse it does
/// anyway, see [`Request::chain`]); `None` when it is not a JSON object with a prompt or
/// messages.
#[cfg(test)]
pub fn chain(body: &[u8], session: Option<&str>) -> Option<PromptChain> {
    let r: Request = serde_json::from_slice(body).ok()?;
    let model = match &r.model {
        Some(serde_json::Value::String(m)) => super::normalize_model(m),
        _ => String::new(),
    };
    r.chain(&model, session)
}

impl Request<'_> {
    /// The prompt's chain for `model` (normalized: one model, however spelled, is one cache);
    /// `None` without a prompt or messages.
    pub fn chain(&self, model: &str, session: Option<&str>) -> Option<PromptChain> {
        let start = block(0, &[model.as_bytes(), raw(self.tools)]);
        let mut blocks = Vec::new();
        let mut system_blocks = 0;
        let mut h = start;
        if let Some(messages) = &self.messages {
            blocks.reserve(messages.len());
            for m in messages {
                let role = raw(m.role);
                h = block(h, &[role, raw(m.content), raw(m.images), raw(m.tool_calls)]);
                if role == b"\"system\"" && system_blocks == blocks.len() {
                    system_blocks += 1;
                }
                blocks.push(h);
            }
        } else {
            let prompt = self.prompt?;
            if let Some(system) = self.system {
                h = block(h, &[system.get().as_bytes()]);
                blocks.push(h);
                system_blocks = 1;
            }
            for piece in prompt.get().as_bytes().chunks(PROMPT_BLOCK) {
                h = block(h, &[piece]);
                blocks.push(h);
            }
        }
        // The JSON string's text without its quotes: the same key as the header's.
        let user = self.user.map(|u| u.get().trim_matches('"').as_bytes());
        let session = session.map(str::as_bytes).or(user);
        Some(PromptChain {
            blocks,
            system_blocks,
            session: session.map(|s| block(start, &[b"session", s])),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(turns: &[(&str, &str)]) -> Vec<u8> {
        let messages: Vec<_> = turns
            .iter()
            .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"model": "llama3:8b", "messages": messages}))
            .unwrap()
    }

    #[test]
    fn a_later_turn_extends_the_earlier_chain() {
        let one = chain(&chat(&[("system", "be brief"), ("user", "hi")]), None).unwrap();
        let two = chain(
            &chat(&[
                ("system", "be brief"),
                ("user", "hi"),
                ("assistant", "hello"),
                ("user", "more"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(one.system_blocks, 1);
        assert_eq!(two.blocks[..2], one.blocks[..]);
        assert_eq!(two.blocks.len(), 4);
        let other = chain(&chat(&[("system", "be brief"), ("user", "bye")]), None).unwrap();
        assert_eq!(other.blocks[0], one.blocks[0], "same system prompt");
        assert_ne!(other.blocks[1], one.blocks[1]);
    }

    #[test]
    fn the_model_tools_and_session_count() {
        let a = chain(
            br#"{"model":"a","messages":[{"role":"user","content":"x"}]}"#,
            None,
        );
        let b = chain(
            br#"{"model":"b","messages":[{"role":"user","content":"x"}]}"#,
            None,
        );
        assert_ne!(a.unwrap().blocks, b.unwrap().blocks);
        let s = chain(br#"{"model":"a","prompt":"x","user":"u1"}"#, None).unwrap();
        let t = chain(br#"{"model":"a","prompt":"y"}"#, Some("u1")).unwrap();
        assert!(s.session.is_some());
        assert_eq!(
            s.session, t.session,
            "the user field and the header name one session"
        );
        assert!(chain(b"[1,2]", None).is_none());
        assert!(chain(br#"{"model":"a"}"#, None).is_none());
    }

    #[test]
    fn long_prompts_are_cut_into_blocks() {
        let p = "a".repeat(3000);
        let body =
            serde_json::to_vec(&serde_json::json!({"model": "m", "prompt": p, "system": "s"}));
        let c = chain(&body.unwrap(), None).unwrap();
        assert_eq!((c.system_blocks, c.blocks.len()), (1, 1 + 3));
    }
}
