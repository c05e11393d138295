//! Rendering a request into the prompt the model evaluates, through a Llama 3 style
//! chat template, as Ollama does before tokenising.
//!
//! Only the order and bytes matter to the cache: everything the model would see
//! (roles, contents, images, tool definitions and tool calls) is rendered in request
//! order, so a conversation's next turn re-renders its earlier turns byte for byte and
//! the assistant's reply, sent back as a message, lands right where generation left it.

use serde_json::Value;

use super::tokens::Rendered;

const BEGIN: &str = "<|begin_of_text|>";
const END_OF_TURN: &str = "<|eot_id|>";

/// Which request shape a route carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PromptKind {
    /// `messages`, from `/api/chat` and `/v1/chat/completions`.
    Messages,
    /// `system` + `prompt`, from `/api/generate` and `/v1/completions`.
    Completion,
}

pub(crate) fn render(request: &Value, kind: PromptKind) -> Rendered {
    match kind {
        PromptKind::Messages => messages(request),
        PromptKind::Completion => completion(request),
    }
}

fn header(out: &mut Rendered, role: &str) {
    out.push_special("<|start_header_id|>");
    out.push_text(role);
    out.push_special("<|end_header_id|>");
    out.push_text("\n\n");
}

/// Tool definitions go first, in a system turn, as most tool-capable templates put them.
fn messages(request: &Value) -> Rendered {
    let mut out = Rendered::default();
    out.push_special(BEGIN);
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        header(&mut out, "system");
        out.push_text(&format!("Tools: {tools}"));
        out.push_special(END_OF_TURN);
    }
    let empty = Vec::new();
    let list = request
        .get("messages")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for message in list {
        message_turn(&mut out, message);
    }
    header(&mut out, "assistant");
    out
}

fn message_turn(out: &mut Rendered, message: &Value) {
    let role = message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("user");
    header(out, role);
    for image in message
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_image(image.as_str().unwrap_or_default());
    }
    content(out, message.get("content"));
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        out.push_text(&calls.to_string());
    }
    out.push_special(END_OF_TURN);
}

/// A message's content: a string, or OpenAI's parts (`text` and `image_url`).
fn content(out: &mut Rendered, content: Option<&Value>) {
    match content {
        Some(Value::String(text)) => out.push_text(text),
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    out.push_text(text);
                } else if let Some(url) = part.get("image_url") {
                    let url = url.get("url").unwrap_or(url);
                    out.push_image(url.as_str().unwrap_or_default());
                }
            }
        }
        _ => {}
    }
}

/// `/api/generate` and `/v1/completions` (which Ollama turns into a generate request):
/// the template around `system` and `prompt`, or the bare prompt with `raw: true`.
fn completion(request: &Value) -> Rendered {
    let mut out = Rendered::default();
    let prompt = match request.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    };
    let images = request.get("images").and_then(Value::as_array);
    if request.get("raw").and_then(Value::as_bool) == Some(true) {
        images
            .into_iter()
            .flatten()
            .for_each(|i| out.push_image(i.as_str().unwrap_or_default()));
        out.push_text(&prompt);
        return out;
    }
    out.push_special(BEGIN);
    if let Some(system) = request.get("system").and_then(Value::as_str) {
        header(&mut out, "system");
        out.push_text(system);
        out.push_special(END_OF_TURN);
    }
    header(&mut out, "user");
    images
        .into_iter()
        .flatten()
        .for_each(|i| out.push_image(i.as_str().unwrap_or_default()));
    out.push_text(&prompt);
    out.push_special(END_OF_TURN);
    header(&mut out, "assistant");
    out
}

#[cfg(test)]
mod tests {
    use super::super::tokens::{common_prefix, IMAGE_TOKENS};
    use super::*;
    use serde_json::json;

    fn tokens(request: Value, kind: PromptKind) -> Vec<u64> {
        render(&request, kind).tokens(4)
    }

    #[test]
    fn a_second_turn_extends_the_first_turn_and_its_reply() {
        let first = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "why is the sky blue?"}
        ]});
        let reply = "tok1 tok2 tok3 ";
        let held = render(&first, PromptKind::Messages)
            .with_reply(reply)
            .tokens(4);
        let second = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "why is the sky blue?"},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "and at sunset?"}
        ]});
        let next = tokens(second, PromptKind::Messages);
        let shared = common_prefix(&held, &next);
        assert!(
            held.len() - shared <= 1,
            "all but a partial last chunk is shared"
        );
        assert!(next.len() - shared < 20, "only the new turn is new");
    }

    #[test]
    fn openai_and_native_images_and_tools_count() {
        let plain = tokens(
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            PromptKind::Messages,
        );
        let native = json!({"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]});
        let openai = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}
        ]}]});
        let tools = json!({"tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [{"role": "user", "content": "hi"}]});
        assert!(tokens(native, PromptKind::Messages).len() >= plain.len() + IMAGE_TOKENS);
        assert!(tokens(openai, PromptKind::Messages).len() >= plain.len() + IMAGE_TOKENS);
        assert!(tokens(tools, PromptKind::Messages).len() > plain.len() + 5);
    }

    #[test]
    fn generate_renders_system_and_prompt_or_raw() {
        let with_system = tokens(
            json!({"system": "s".repeat(40), "prompt": "hi"}),
            PromptKind::Completion,
        );
        let bare = tokens(json!({"prompt": "hi"}), PromptKind::Completion);
        let raw = tokens(
            json!({"prompt": "abcdefgh", "raw": true}),
            PromptKind::Completion,
        );
        assert!(with_system.len() >= bare.len() + 10);
        assert_eq!(raw.len(), 2);
    }
}
