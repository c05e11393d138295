//! The same stream split at every byte boundary must give the same counts.

use super::*;

const NDJSON: &str = concat!(
    "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n",
    "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"lo é\"},\"done\":false}\n",
    "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,",
    "\"done_reason\":\"stop\",\"prompt_eval_count\":26,\"eval_count\":2}\n",
);

const SSE: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2,\"total_tokens\":13}}\n\n",
    "data: [DONE]\n\n",
);

fn parse_split(content_type: &str, body: &[u8], split: usize) -> Usage {
    let mut p = UsageParser::for_content_type(content_type).expect("known type");
    let (a, b) = body.split_at(split);
    p.feed(a);
    p.feed(b);
    p.finish();
    p.usage().clone()
}

#[test]
fn ndjson_counts_at_every_split() {
    let bytes = NDJSON.as_bytes();
    for split in 0..=bytes.len() {
        let u = parse_split("application/x-ndjson", bytes, split);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens),
            (Some(26), Some(2)),
            "split at {split}"
        );
        assert!(u.finished);
        assert_eq!(u.chunks, 2);
    }
}

#[test]
fn ndjson_byte_by_byte() {
    let mut p = UsageParser::for_content_type("application/x-ndjson").expect("known type");
    for b in NDJSON.as_bytes() {
        p.feed(std::slice::from_ref(b));
    }
    p.finish();
    assert_eq!(p.usage().completion_tokens, Some(2));
}

#[test]
fn sse_counts_at_every_split() {
    let bytes = SSE.as_bytes();
    for split in 0..=bytes.len() {
        let u = parse_split("text/event-stream", bytes, split);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens),
            (Some(11), Some(2)),
            "split at {split}"
        );
        assert!(u.finished);
        assert_eq!(u.chunks, 2);
    }
}

#[test]
fn sse_with_crlf() {
    let body = SSE.replace('\n', "\r\n");
    let u = parse_split("text/event-stream", body.as_bytes(), 17);
    assert_eq!(u.completion_tokens, Some(2));
    assert!(u.finished);
}

#[test]
fn json_bodies_native_and_openai() {
    let native = br#"{"model":"m","message":{"role":"assistant","content":"x"},"done":true,"prompt_eval_count":5,"eval_count":7}"#;
    for split in 0..=native.len() {
        let u = parse_split("application/json; charset=utf-8", native, split);
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(5), Some(7)));
    }
    let openai = br#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
    let u = parse_split("application/json", openai, 10);
    assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(3), Some(4)));
    let anthropic = br#"{"type":"message","usage":{"input_tokens":9,"output_tokens":1}}"#;
    let u = parse_split("application/json", anthropic, 3);
    assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(9), Some(1)));
}

#[test]
fn stream_errors_are_reported() {
    let body =
        b"{\"done\":false,\"message\":{\"content\":\"a\"}}\n{\"error\":\"model runner crashed\"}\n";
    let u = parse_split("application/x-ndjson", body, 5);
    assert_eq!(u.stream_error.as_deref(), Some("model runner crashed"));
    assert!(!u.finished);
    assert_eq!(u.chunks, 1);
}

#[test]
fn unknown_types_have_no_parser() {
    assert!(UsageParser::for_content_type("text/plain").is_none());
}

#[test]
fn generate_replies_and_odd_fields_keep_their_counts() {
    // /api/generate: `response` is a string, not an object with `usage`.
    let generate = br#"{"model":"m","response":"Hi \"there\"","done":true,"context":[1,2],"prompt_eval_count":4,"eval_count":2}"#;
    let u = parse_split("application/json", generate, 7);
    assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(4), Some(2)));
    assert!(u.finished);
    // A field of an unexpected type is ignored, not fatal to the others.
    let odd = br#"{"prompt_eval_count":"many","eval_count":3,"usage":"n/a","done":true}"#;
    let u = parse_split("application/json", odd, 0);
    assert_eq!((u.prompt_tokens, u.completion_tokens), (None, Some(3)));
    // Responses API: counts under `response.usage`.
    let responses = br#"{"type":"response.completed","response":{"usage":{"input_tokens":6,"output_tokens":8}}}"#;
    let u = parse_split(
        "text/event-stream",
        &[b"data: ", &responses[..], b"\n\n"].concat(),
        9,
    );
    assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(6), Some(8)));
    assert!(u.finished);
}

#[test]
fn error_shapes() {
    let openai = br#"{"error":{"message":"bad model","type":"invalid_request_error"}}"#;
    let u = parse_split("application/json", openai, 4);
    assert_eq!(u.stream_error.as_deref(), Some("bad model"));
    let null = br#"{"error":null,"done":true,"eval_count":1}"#;
    let u = parse_split("application/json", null, 4);
    assert_eq!((u.stream_error, u.completion_tokens), (None, Some(1)));
    let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\ndata: {\"choices\":[{\"text\":\"x\"}]}\n\n";
    let u = parse_split("text/event-stream", sse, 11);
    assert_eq!(u.chunks, 1, "an empty delta is not a content chunk");
}
