//! Property tests: random Ollama NDJSON and OpenAI SSE streams, cut at random byte boundaries,
//! give the counts of the whole stream (and of the model the stream was built from); garbage
//! never panics; [`FrameGate`] passes every byte on, whole lines (or events) first.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;

use super::frames::MAX_HELD;
use super::*;

const NDJSON: &str = "application/x-ndjson";
const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are kept as plain #[test]s, not as regression files in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- random text and its JSON encoding ----

/// Pieces of message text: single characters (JSON's specials, line breaks, non-ASCII) and
/// snippets that look like the keys and framing the parsers look for.
fn text_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z ]{1,6}",
        3 => prop::sample::select(vec![
            '"', '\\', '{', '}', '[', ']', '\n', '\r', '\t', ':', ',', '/', '\u{0}', '\u{1f}',
            'é', 'ß', '中', '🦀', '\u{2028}', '\u{feff}', '\u{7f}',
        ])
        .prop_map(String::from),
        1 => any::<char>().prop_map(String::from),
        1 => prop::sample::select(vec![
            "\"done\":true",
            "\"done\": false",
            "\"error\":\"boom\"",
            "data: [DONE]",
            "\n\ndata: {}\n\n",
            "}\n{",
            "\"prompt_eval_count\":7",
            "\"usage\":{\"prompt_tokens\":1}",
            "done",
        ])
        .prop_map(String::from),
    ]
}

/// Message text and, per piece, whether non-ASCII characters are written as `\uXXXX`.
fn text() -> impl Strategy<Value = Vec<(String, bool)>> {
    prop::collection::vec((text_piece(), any::<bool>()), 0..8)
}

/// A JSON string literal for `pieces`, escaped the ways encoders do.
fn json_string(pieces: &[(String, bool)]) -> String {
    let mut out = String::from("\"");
    for (piece, escape_unicode) in pieces {
        for c in piece.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if *escape_unicode && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
    out
}

// ---- random streams, with the usage they must give ----

#[derive(Debug, Clone)]
enum NdjsonEnd {
    /// `done: true` with the counts (either may be absent).
    Done(Option<u64>, Option<u64>),
    /// `{"error": "..."}` after streaming began.
    Error(String),
    /// The stream was cut: no last line.
    Cut,
}

#[derive(Debug, Clone)]
struct NdjsonStream {
    /// `/api/generate` (`response`) rather than `/api/chat` (`message.content`).
    generate: bool,
    contents: Vec<Vec<(String, bool)>>,
    end: NdjsonEnd,
    crlf: bool,
    /// Whether the last line ends with a newline.
    trailing_newline: bool,
}

fn ndjson_end() -> impl Strategy<Value = NdjsonEnd> {
    prop_oneof![
        6 => (any::<Option<u64>>(), any::<Option<u64>>()).prop_map(|(p, e)| NdjsonEnd::Done(p, e)),
        1 => "[a-z \"\\\\]{0,12}".prop_map(NdjsonEnd::Error),
        1 => Just(NdjsonEnd::Cut),
    ]
}

fn ndjson_stream() -> impl Strategy<Value = NdjsonStream> {
    (
        any::<bool>(),
        prop::collection::vec(text(), 0..10),
        ndjson_end(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(generate, contents, end, crlf, trailing_newline)| NdjsonStream {
                generate,
                contents,
                end,
                crlf,
                trailing_newline,
            },
        )
}

fn content_line(generate: bool, content: &str) -> String {
    if generate {
        format!(
            "{{\"model\":\"m\",\"created_at\":\"2025-01-01T00:00:00Z\",\"response\":{content},\"done\":false}}"
        )
    } else {
        format!(
            "{{\"model\":\"m\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{{\"role\":\"assistant\",\"content\":{content}}},\"done\":false}}"
        )
    }
}

fn done_line(generate: bool, prompt: Option<u64>, eval: Option<u64>) -> String {
    let mut line = if generate {
        String::from("{\"model\":\"m\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"context\":[1,2,3]")
    } else {
        String::from("{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":12345")
    };
    if let Some(p) = prompt {
        line.push_str(&format!(",\"prompt_eval_count\":{p}"));
    }
    if let Some(e) = eval {
        line.push_str(&format!(",\"eval_count\":{e}"));
    }
    line.push('}');
    line
}

impl NdjsonStream {
    fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .contents
            .iter()
            .map(|c| content_line(self.generate, &json_string(c)))
            .collect();
        match &self.end {
            NdjsonEnd::Done(p, e) => lines.push(done_line(self.generate, *p, *e)),
            NdjsonEnd::Error(msg) => lines.push(format!(
                "{{\"error\":{}}}",
                serde_json::Value::String(msg.clone())
            )),
            NdjsonEnd::Cut => {}
        }
        lines
    }

    fn bytes(&self) -> Vec<u8> {
        join_lines(&self.lines(), self.crlf, self.trailing_newline)
    }

    fn expected(&self) -> Usage {
        let mut u = Usage {
            chunks: self.contents.len() as u64,
            ..Usage::default()
        };
        match &self.end {
            NdjsonEnd::Done(p, e) => {
                u.finished = true;
                u.prompt_tokens = *p;
                u.completion_tokens = *e;
            }
            NdjsonEnd::Error(msg) => u.stream_error = Some(msg.clone()),
            NdjsonEnd::Cut => {}
        }
        u
    }
}

fn join_lines(lines: &[String], crlf: bool, trailing_newline: bool) -> Vec<u8> {
    let eol = if crlf { "\r\n" } else { "\n" };
    let mut out = lines.join(eol);
    if trailing_newline && !lines.is_empty() {
        out.push_str(eol);
    }
    out.into_bytes()
}

#[derive(Debug, Clone)]
enum SseEvent {
    /// A chat chunk with `delta.content`.
    Content(Vec<(String, bool)>),
    /// The last chat chunk: empty content and a finish reason.
    Finish,
    /// `choices: []` with the counts.
    Usage(u64, u64),
    /// A comment line (`: ping`), which carries nothing.
    Comment,
}

#[derive(Debug, Clone)]
struct SseStream {
    events: Vec<SseEvent>,
    done: bool,
    crlf: bool,
    /// `data:{...}` rather than `data: {...}`.
    tight: bool,
}

fn sse_event() -> impl Strategy<Value = SseEvent> {
    prop_oneof![
        6 => text().prop_map(SseEvent::Content),
        1 => Just(SseEvent::Finish),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(p, c)| SseEvent::Usage(p, c)),
        1 => Just(SseEvent::Comment),
    ]
}

fn sse_stream() -> impl Strategy<Value = SseStream> {
    (
        prop::collection::vec(sse_event(), 0..10),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(events, done, crlf, tight)| SseStream {
            events,
            done,
            crlf,
            tight,
        })
}

impl SseStream {
    fn event_text(&self, e: &SseEvent) -> String {
        let data = if self.tight { "data:" } else { "data: " };
        match e {
            SseEvent::Content(c) => format!(
                "{data}{{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":{}}},\"finish_reason\":null}}]}}",
                json_string(c)
            ),
            SseEvent::Finish => format!(
                "{data}{{\"id\":\"chatcmpl-1\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":\"stop\"}}]}}"
            ),
            SseEvent::Usage(p, c) => format!(
                "{data}{{\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{}}}}}",
                u128::from(*p) + u128::from(*c)
            ),
            SseEvent::Comment => String::from(": ping"),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let sep = if self.crlf { "\r\n\r\n" } else { "\n\n" };
        let mut out = String::new();
        for e in &self.events {
            out.push_str(&self.event_text(e));
            out.push_str(sep);
        }
        if self.done {
            out.push_str(if self.tight {
                "data:[DONE]"
            } else {
                "data: [DONE]"
            });
            out.push_str(sep);
        }
        out.into_bytes()
    }

    fn expected(&self) -> Usage {
        let mut u = Usage {
            finished: self.done,
            ..Usage::default()
        };
        for e in &self.events {
            match e {
                SseEvent::Content(c) if !c.iter().all(|(piece, _)| piece.is_empty()) => {
                    u.chunks += 1
                }
                SseEvent::Usage(p, c) => {
                    u.prompt_tokens = Some(*p);
                    u.completion_tokens = Some(*c);
                }
                _ => {}
            }
        }
        u
    }
}

// ---- cutting a stream into chunks ----

/// Where to cut: anywhere, or next to a line break (where chunk and line ends meet).
#[derive(Debug, Clone)]
enum Cut {
    Anywhere(Index),
    NearNewline(Index, i8),
}

fn cuts() -> impl Strategy<Value = Vec<Cut>> {
    let cut = prop_oneof![
        3 => any::<Index>().prop_map(Cut::Anywhere),
        1 => (any::<Index>(), -1i8..=1).prop_map(|(i, d)| Cut::NearNewline(i, d)),
    ];
    prop::collection::vec(cut, 0..12)
}

/// `data` cut at `cuts` (sorted, possibly empty chunks at the edges).
fn split<'a>(data: &'a [u8], cuts: &[Cut]) -> Vec<&'a [u8]> {
    let newlines: Vec<usize> = (0..data.len()).filter(|i| data[*i] == b'\n').collect();
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| match c {
            Cut::Anywhere(i) => i.index(data.len() + 1),
            Cut::NearNewline(i, d) if !newlines.is_empty() => {
                let nl = newlines[i.index(newlines.len())] as isize + 1 + isize::from(*d);
                nl.clamp(0, data.len() as isize) as usize
            }
            Cut::NearNewline(i, _) => i.index(data.len() + 1),
        })
        .collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for end in at {
        chunks.push(&data[start..end]);
        start = end;
    }
    chunks.push(&data[start..]);
    chunks
}

fn usage_of(content_type: &str, chunks: &[&[u8]]) -> Usage {
    let mut p = UsageParser::for_content_type(content_type).expect("known type");
    for c in chunks {
        p.feed(c);
    }
    p.finish();
    p.usage().clone()
}

fn whole(content_type: &str, data: &[u8]) -> Usage {
    usage_of(content_type, &[data])
}

/// Inserts each `(position, bytes)` into `data`.
fn splice(data: &[u8], inserts: &[(Index, Vec<u8>)]) -> Vec<u8> {
    let mut out = data.to_vec();
    for (at, bytes) in inserts {
        let at = at.index(out.len() + 1);
        out.splice(at..at, bytes.iter().copied());
    }
    out
}

/// Random bytes, weighted towards the ones that frame and delimit.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => any::<u8>(),
        2 => prop::sample::select(b"\n\r{}[]\":,\\ dat:0123456789".to_vec()),
    ];
    prop::collection::vec(byte, 0..64)
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn ndjson_counts_do_not_depend_on_chunking(s in ndjson_stream(), cuts in cuts()) {
        let data = s.bytes();
        let all = whole(NDJSON, &data);
        prop_assert_eq!(&all, &s.expected(), "stream: {:?}", String::from_utf8_lossy(&data));
        prop_assert_eq!(usage_of(NDJSON, &split(&data, &cuts)), all);
    }

    #[test]
    fn sse_counts_do_not_depend_on_chunking(s in sse_stream(), cuts in cuts()) {
        let data = s.bytes();
        let all = whole(SSE, &data);
        prop_assert_eq!(&all, &s.expected(), "stream: {:?}", String::from_utf8_lossy(&data));
        prop_assert_eq!(usage_of(SSE, &split(&data, &cuts)), all);
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_native_json_reply_does_not_depend_on_chunking(
        content in text(),
        prompt in any::<Option<u64>>(),
        eval in any::<Option<u64>>(),
        cuts in cuts(),
    ) {
        let mut body = done_line(false, prompt, eval);
        body.insert_str(body.len() - 1, &format!(",\"x\":{}", json_string(&content)));
        let all = whole(JSON, body.as_bytes());
        let expected = Usage {
            prompt_tokens: prompt,
            completion_tokens: eval,
            finished: true,
            ..Usage::default()
        };
        prop_assert_eq!(&all, &expected, "body: {}", body);
        prop_assert_eq!(usage_of(JSON, &split(body.as_bytes(), &cuts)), all);
    }

    /// A broken upstream that sends a second `done` line is charged once, for the first.
    #[test]
    fn ndjson_charges_the_first_done_line(
        s in ndjson_stream(),
        after in prop::collection::vec(text(), 0..3),
        second in (any::<Option<u64>>(), any::<Option<u64>>()),
        cuts in cuts(),
    ) {
        let (p, e) = match s.end {
            NdjsonEnd::Done(p, e) => (p, e),
            _ => (Some(1), Some(2)),
        };
        let s = NdjsonStream { end: NdjsonEnd::Done(p, e), trailing_newline: true, ..s };
        let mut data = s.bytes();
        for c in &after {
            data.extend(content_line(s.generate, &json_string(c)).bytes());
            data.push(b'\n');
        }
        data.extend(done_line(s.generate, second.0, second.1).bytes());
        data.push(b'\n');
        let got = usage_of(NDJSON, &split(&data, &cuts));
        prop_assert_eq!(got, s.expected());
    }

    /// Nothing after `data: [DONE]` is charged, not even a second usage chunk.
    #[test]
    fn sse_charges_nothing_after_done(
        s in sse_stream(),
        second in (any::<u64>(), any::<u64>()),
        cuts in cuts(),
    ) {
        let s = SseStream { done: true, ..s };
        let mut data = s.bytes();
        let extra = SseStream {
            events: vec![SseEvent::Content(vec![("x".into(), false)]), SseEvent::Usage(second.0, second.1)],
            ..s.clone()
        };
        data.extend(extra.bytes());
        let got = usage_of(SSE, &split(&data, &cuts));
        prop_assert_eq!(got, s.expected());
    }

    /// Arbitrary bytes, under any content type: no panic, and chunking changes nothing.
    #[test]
    fn garbage_never_panics(
        data in prop::collection::vec(any::<u8>(), 0..512),
        cuts in cuts(),
        content_type in "[a-zA-Z/+;=. -]{0,40}",
    ) {
        if let Some(mut p) = UsageParser::for_content_type(&content_type) {
            p.feed(&data);
            p.finish();
        }
        for ct in [NDJSON, SSE, JSON] {
            prop_assert_eq!(usage_of(ct, &split(&data, &cuts)), whole(ct, &data));
        }
    }

    /// Valid streams with random bytes spliced in: no panic, and chunking changes nothing.
    #[test]
    fn spliced_streams_never_panic(
        n in ndjson_stream(),
        s in sse_stream(),
        inserts in prop::collection::vec((any::<Index>(), garbage()), 1..4),
        cuts in cuts(),
    ) {
        for (ct, data) in [(NDJSON, n.bytes()), (SSE, s.bytes()), (JSON, n.bytes())] {
            let data = splice(&data, &inserts);
            prop_assert_eq!(usage_of(ct, &split(&data, &cuts)), whole(ct, &data));
        }
    }
}

// ---- FrameGate ----

/// `true` when `sent` ends a line (NDJSON) or an event (SSE).
fn at_boundary(sent: &[u8], sse: bool) -> bool {
    if sse {
        sent.ends_with(b"\n\n") || sent.ends_with(b"\r\n\r\n")
    } else {
        sent.ends_with(b"\n")
    }
}

/// The ends (exclusive) of the lines (NDJSON) or events (SSE) in `data`.
fn boundaries(data: &[u8], sse: bool) -> Vec<usize> {
    (1..=data.len())
        .filter(|&i| at_boundary(&data[..i], sse))
        .collect()
}

/// Pushes `chunks` through a gate and returns what was sent in all. After each push, checks
/// the documented contract: while no line (or event) seen so far is longer than `MAX_HELD`,
/// only whole lines (or events) were sent; and [`FrameGate::terminator`] is empty exactly
/// when what was sent ends a line (or event), so an error line always starts on its own.
fn gate(sse: bool, chunks: &[&[u8]]) -> Result<Vec<u8>, TestCaseError> {
    let parser = UsageParser::for_content_type(if sse { SSE } else { NDJSON }).expect("type");
    let mut g = FrameGate::for_parser(&parser).expect("gate");
    let data = chunks.concat();
    let ends = boundaries(&data, sse);
    let mut sent = Vec::new();
    let mut consumed = 0usize;
    for c in chunks {
        let out = g.push(Bytes::copy_from_slice(c));
        consumed += c.len();
        sent.extend_from_slice(&out);
        let mut longest = 0;
        let mut start = 0;
        for &end in ends.iter().take_while(|&&end| end <= consumed) {
            longest = longest.max(end - start);
            start = end;
        }
        longest = longest.max(consumed - start);
        let ended = sent.is_empty() || at_boundary(&sent, sse);
        let tail = String::from_utf8_lossy(&sent[sent.len().saturating_sub(40)..]).into_owned();
        if longest <= MAX_HELD {
            prop_assert!(ended, "{} sent, ending mid-line: {:?}", sent.len(), tail);
        }
        prop_assert_eq!(
            g.terminator().is_empty(),
            ended,
            "{} sent, ending {:?}",
            sent.len(),
            tail
        );
    }
    sent.extend_from_slice(&g.finish());
    Ok(sent)
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn frame_gate_passes_every_byte_in_whole_lines(n in ndjson_stream(), cuts in cuts()) {
        let data = n.bytes();
        prop_assert_eq!(gate(false, &split(&data, &cuts))?, data);
    }

    #[test]
    fn frame_gate_passes_every_byte_in_whole_events(s in sse_stream(), cuts in cuts()) {
        let data = s.bytes();
        prop_assert_eq!(gate(true, &split(&data, &cuts))?, data);
    }

    #[test]
    fn frame_gate_passes_garbage_unchanged(
        data in garbage(),
        sse in any::<bool>(),
        cuts in cuts(),
    ) {
        prop_assert_eq!(gate(sse, &split(&data, &cuts))?, data);
    }
}

proptest! {
    // Each case moves a line of more than a MiB: few cases.
    #![proptest_config(config(24))]

    #[test]
    fn frame_gate_passes_giant_lines(
        before in prop::collection::vec("[a-z]{0,5}\n", 0..3),
        extra in 0usize..64,
        after in prop::collection::vec("[a-z]{0,5}\n?", 0..3),
        sse in any::<bool>(),
        cuts in cuts(),
    ) {
        let mut data = before.concat().into_bytes();
        data.extend(std::iter::repeat_n(b'x', MAX_HELD - 32 + extra));
        data.extend_from_slice(if sse { b"\n\n" } else { b"\n" });
        data.extend(after.concat().into_bytes());
        prop_assert_eq!(gate(sse, &split(&data, &cuts))?, data);
    }
}

// ---- cases found by the properties above, kept as plain tests ----

fn ndjson_gate() -> FrameGate {
    FrameGate::for_parser(&UsageParser::for_content_type(NDJSON).expect("ndjson")).expect("gate")
}

/// Found by `frame_gate_passes_giant_lines`: once the held part plus a new chunk passed
/// `MAX_HELD`, the gate sent everything, including the unfinished start of the next line,
/// although no line was longer than `MAX_HELD`; a stream failing then left the client holding
/// half a line (`{"a"` here). Only an unfinished line longer than `MAX_HELD` passes now.
#[test]
fn frame_gate_holds_a_short_line_after_a_long_one() {
    let mut g = ndjson_gate();
    let long = vec![b'x'; MAX_HELD - 100];
    assert_eq!(g.push(Bytes::from(long)), "");
    // Completes a line of MAX_HELD - 49 bytes, then starts the next one.
    let mut rest = vec![b'y'; 50];
    rest.extend_from_slice(b"\n{\"a\"");
    rest.extend(std::iter::repeat_n(b'z', 60));
    let sent = g.push(Bytes::from(rest));
    assert_eq!(
        sent.len(),
        MAX_HELD - 49,
        "expected the whole line and nothing more"
    );
    assert!(sent.ends_with(b"y\n"));
    assert_eq!(g.terminator(), b"");
}

/// Found by `frame_gate_passes_giant_lines`: when what was sent past `MAX_HELD` happened to end
/// a line, the gate still asked for a terminator, so the error line came after an empty line
/// (which breaks NDJSON clients that `json.loads` every line; in SSE, an empty event).
#[test]
fn frame_gate_needs_no_terminator_after_a_long_line_that_ended() {
    let mut g = ndjson_gate();
    assert_eq!(g.push(Bytes::from(vec![b'x'; MAX_HELD - 10])), "");
    let mut rest = vec![b'y'; 20];
    rest.push(b'\n');
    let sent = g.push(Bytes::from(rest));
    assert_eq!(sent.len(), MAX_HELD + 11);
    assert!(sent.ends_with(b"\n"));
    assert_eq!(g.terminator(), b"", "the client's last byte ended a line");
}
