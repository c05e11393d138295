//! The fields of a response document that carry counts, errors and content, read without
//! building a whole `serde_json::Value`: unknown fields and long content strings are only
//! skipped over (no allocation), and a field of an unexpected type is ignored rather than
//! spoiling the rest of the document. Runs once per SSE event and per non-streaming reply.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::Usage;

/// Raw (unparsed) top-level fields; each is parsed on its own only when asked for.
#[derive(Deserialize)]
pub(super) struct Doc<'a> {
    #[serde(borrow, default)]
    prompt_eval_count: Option<&'a RawValue>,
    #[serde(borrow, default)]
    eval_count: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    done: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<&'a RawValue>,
}

/// An object that may hold a `usage` object (`message` and `response` in some shapes).
#[derive(Deserialize)]
struct Nested<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

/// OpenAI's (`prompt_tokens`, `completion_tokens`) and the Anthropic-style and Responses
/// (`input_tokens`, `output_tokens`) names for the counts.
#[derive(Deserialize)]
struct Counts<'a> {
    #[serde(borrow, default)]
    prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    output_tokens: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

impl<'a> Doc<'a> {
    /// `None` when the bytes are not one JSON object.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// The message of an `{"error": ...}` object, in Ollama's or OpenAI's shape.
    pub fn error_message(&self) -> Option<String> {
        let v: Value = serde_json::from_str(self.error?.get()).ok()?;
        match v {
            Value::String(s) => Some(s),
            Value::Object(o) => o.get("message").and_then(Value::as_str).map(str::to_string),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// `"done": true` (Ollama's last chunk).
    pub fn is_done(&self) -> bool {
        self.done.and_then(parse::<bool>) == Some(true)
    }

    /// The `type` of an Anthropic-style or Responses event, borrowed (the names compared
    /// against have no escapes, so an escaped one counts as none).
    pub fn kind(&self) -> Option<&'a str> {
        self.kind.and_then(parse::<&str>)
    }

    /// Copies whatever counts the document reports into `usage`: native (`prompt_eval_count`,
    /// `eval_count`) and a `usage` object at the top or under `message` or `response`.
    pub fn read_counts(&self, usage: &mut Usage) {
        if let Some(n) = self.prompt_eval_count.and_then(parse::<u64>) {
            usage.prompt_tokens = Some(n);
        }
        if let Some(n) = self.eval_count.and_then(parse::<u64>) {
            usage.completion_tokens = Some(n);
        }
        let nested = [
            self.usage,
            nested_usage(self.message),
            nested_usage(self.response),
        ];
        for counts in nested.into_iter().flatten().filter_map(parse::<Counts>) {
            let prompt = counts.prompt_tokens.or(counts.input_tokens);
            if let Some(n) = prompt.and_then(parse::<u64>) {
                usage.prompt_tokens = Some(n);
            }
            let completion = counts.completion_tokens.or(counts.output_tokens);
            if let Some(n) = completion.and_then(parse::<u64>) {
                usage.completion_tokens = Some(n);
            }
        }
    }

    /// Some choice carries text (`delta.content`, or `text` on completions).
    pub fn has_choice_content(&self) -> bool {
        let Some(choices) = self.choices.and_then(parse::<Vec<Choice>>) else {
            return false;
        };
        choices.iter().any(|c| {
            let content = c.delta.and_then(parse::<Delta>).and_then(|d| d.content);
            content.or(c.text).is_some_and(non_empty_string)
        })
    }

    /// A non-null `usage` and an empty `choices` list: the usage-only chunk of an OpenAI stream.
    pub fn is_usage_only(&self) -> bool {
        self.usage.is_some()
            && self
                .choices
                .and_then(parse::<Vec<&RawValue>>)
                .is_some_and(|c| c.is_empty())
    }
}

fn nested_usage(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.and_then(parse::<Nested>).and_then(|n| n.usage)
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    serde_json::from_str(raw.get()).ok()
}

fn non_empty_string(raw: &RawValue) -> bool {
    let text = raw.get();
    text.starts_with('"') && text != "\"\""
}
