//! The hand-written HTTP/1.1 framing both ends rely on.

use super::super::http1::{parse_head, Dechunker, ResponseParser};

const CHUNKED: &[u8] = b"4;ext=1\r\nabcd\r\n2\r\nef\r\n0\r\nTrailer: x\r\n\r\n";

#[test]
fn dechunker_resumes_byte_by_byte() {
    let mut dechunker = Dechunker::default();
    for end in 0..=CHUNKED.len() {
        dechunker.advance(&CHUNKED[..end]);
        assert_eq!(dechunker.is_done(), end == CHUNKED.len(), "at {end}");
    }
    assert_eq!(dechunker.consumed(), CHUNKED.len());
    assert_eq!(dechunker.into_body(), b"abcdef");
}

#[test]
fn dechunker_keeps_the_data_of_a_cut_chunk() {
    let mut dechunker = Dechunker::default();
    dechunker.advance(b"a\r\n{\"mod");
    assert!(!dechunker.is_done() && !dechunker.is_malformed());
    assert_eq!(dechunker.into_body(), b"{\"mod");
}

#[test]
fn dechunker_flags_broken_framing() {
    for bad in [&b"zz\r\nabc\r\n"[..], b"2\r\nabc\r\n"] {
        let mut dechunker = Dechunker::default();
        dechunker.advance(bad);
        assert!(
            dechunker.is_malformed(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn heads_keep_duplicates_case_and_colonless_lines() {
    let head = parse_head(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nbroken\r\n\r\n");
    assert_eq!(head.start_line, "GET / HTTP/1.1");
    let expected = [("X-A", "1"), ("x-a", "2"), ("broken", "")];
    let got: Vec<(&str, &str)> = head
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn response_parser_skips_interim_responses_and_splits_pipelined_ones() {
    let raw =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 204";
    let mut parser = ResponseParser::new(false);
    assert!(parser.advance(raw));
    let parsed = parser.finish(raw, false);
    assert_eq!(parsed.status, 200);
    assert_eq!(parsed.body, b"ok");
    assert_eq!(&raw[parsed.consumed..], b"HTTP/1.1 204");
}

#[test]
fn a_body_without_framing_completes_only_on_close() {
    let raw = b"HTTP/1.1 200 OK\r\n\r\npartial";
    let mut parser = ResponseParser::new(false);
    assert!(!parser.advance(raw));
    let parsed = parser.finish(raw, true);
    assert!(parsed.complete);
    assert_eq!(parsed.body, b"partial");
}

#[test]
fn head_responses_have_no_body() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n";
    let mut parser = ResponseParser::new(true);
    assert!(parser.advance(raw));
}
