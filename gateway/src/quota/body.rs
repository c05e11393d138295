//! Rewriting a model request's body for the quota: cap its completion (`options.num_predict`
//! on Ollama routes, `max_tokens` and friends on `/v1`) to what the budget allows, and ask
//! for usage on OpenAI streams so counts are exact.

use serde_json::{json, Value};

/// The completion cap the client asked for, if any.
pub fn client_cap(body: &Value, path: &str) -> Option<u64> {
    let v = match path {
        "/api/chat" | "/api/generate" => body.pointer("/options/num_predict"),
        "/v1/responses" => body.get("max_output_tokens"),
        _ => body
            .get("max_completion_tokens")
            .or_else(|| body.get("max_tokens")),
    };
    // Ollama reads a negative num_predict as "no limit".
    v.and_then(Value::as_i64)
        .and_then(|n| u64::try_from(n).ok())
}

/// Whether the path generates tokens (embeddings and `show` do not).
pub fn generates(path: &str) -> bool {
    matches!(
        path,
        "/api/chat"
            | "/api/generate"
            | "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/responses"
            | "/v1/messages"
    )
}

/// Sets the completion cap in the body.
pub fn set_cap(body: &mut Value, path: &str, cap: u64) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    match path {
        "/api/chat" | "/api/generate" => {
            let options = obj.entry("options").or_insert_with(|| json!({}));
            if let Some(o) = options.as_object_mut() {
                o.insert("num_predict".into(), json!(cap));
            }
        }
        "/v1/responses" => {
            obj.insert("max_output_tokens".into(), json!(cap));
        }
        _ => {
            obj.insert("max_tokens".into(), json!(cap));
            if obj.contains_key("max_completion_tokens") {
                obj.insert("max_completion_tokens".into(), json!(cap));
            }
        }
    }
}

/// On an OpenAI stream that did not ask for usage, asks for it; returns whether it did (the
/// extra usage chunk is then removed before the client sees it).
pub fn request_usage(body: &mut Value, path: &str) -> bool {
    if !matches!(path, "/v1/chat/completions" | "/v1/completions") {
        return false;
    }
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return false;
    }
    if body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return false;
    }
    let Some(obj) = body.as_object_mut() else {
        return false;
    };
    let opts = obj.entry("stream_options").or_insert_with(|| json!({}));
    match opts.as_object_mut() {
        Some(o) => {
            o.insert("include_usage".into(), json!(true));
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_by_route() {
        let mut b = json!({"model": "m", "options": {"temperature": 0.1, "num_predict": 500}});
        assert_eq!(client_cap(&b, "/api/chat"), Some(500));
        set_cap(&mut b, "/api/chat", 40);
        assert_eq!(b["options"]["num_predict"], 40);
        assert_eq!(b["options"]["temperature"], 0.1);
        let mut o = json!({"model": "m"});
        assert_eq!(client_cap(&o, "/v1/chat/completions"), None);
        set_cap(&mut o, "/v1/chat/completions", 7);
        assert_eq!(o["max_tokens"], 7);
        assert_eq!(
            client_cap(&json!({"options": {"num_predict": -1}}), "/api/generate"),
            None
        );
    }

    #[test]
    fn usage_is_requested_only_when_missing() {
        let mut b = json!({"model": "m", "stream": true});
        assert!(request_usage(&mut b, "/v1/chat/completions"));
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(
            !request_usage(&mut b, "/v1/chat/completions"),
            "already asked"
        );
        assert!(!request_usage(
            &mut json!({"stream": false}),
            "/v1/chat/completions"
        ));
        assert!(!request_usage(&mut json!({"stream": true}), "/api/chat"));
    }
}
