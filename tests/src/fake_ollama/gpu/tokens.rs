//! A deterministic stand-in for a tokenizer, good enough for prompt caching.
//!
//! What caching needs from tokens is that equal text gives equal tokens and that a
//! conversation's next turn starts with the previous turn's tokens. Cutting the rendered
//! bytes into fixed chunks gives both: two renderings share `⌊common bytes / n⌋` tokens.
//! Each token is the FNV-1a hash of its bytes. A template's special marker
//! (`<|eot_id|>`) is one token, as in real vocabularies, and an image is a fixed run of
//! tokens derived from its data, as a vision model's projector turns any image into the
//! same count; text chunking restarts after either.

/// Tokens one image stands for: LLaVA 1.5's CLIP ViT-L/14 at 336 px gives 24 × 24 patches.
pub(crate) const IMAGE_TOKENS: usize = 576;

/// A prompt as the model sees it: template text, with images where they appear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rendered {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Special(u64),
    Image(u64),
}

impl Rendered {
    /// Appends text, joining it to the text before it so chunking runs across the join
    /// (a reply appended to its prompt tokenises as the next turn's rendering will).
    pub fn push_text(&mut self, text: &str) {
        if let Some(Segment::Text(last)) = self.segments.last_mut() {
            last.push_str(text);
        } else {
            self.segments.push(Segment::Text(text.to_string()));
        }
    }

    /// Appends a template marker such as `<|eot_id|>`: one token.
    pub fn push_special(&mut self, marker: &str) {
        self.segments
            .push(Segment::Special(fnv1a(marker.as_bytes())));
    }

    /// Appends an image, identified by its (base64 or URL) data.
    pub fn push_image(&mut self, data: &str) {
        self.segments.push(Segment::Image(fnv1a(data.as_bytes())));
    }

    /// The prompt followed by `reply`: what a slot holds once the reply is generated.
    pub fn with_reply(&self, reply: &str) -> Self {
        let mut whole = self.clone();
        whole.push_text(reply);
        whole
    }

    /// The token sequence, `bytes_per_token` bytes of text per token.
    pub fn tokens(&self, bytes_per_token: usize) -> Vec<u64> {
        let mut tokens = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => {
                    tokens.extend(text.as_bytes().chunks(bytes_per_token.max(1)).map(fnv1a))
                }
                Segment::Special(id) => tokens.push(*id),
                Segment::Image(id) => {
                    tokens.extend((0..IMAGE_TOKENS as u64).map(|i| id ^ i.wrapping_mul(PRIME)))
                }
            }
        }
        tokens
    }
}

const PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(PRIME)
    })
}

/// How many leading tokens `a` and `b` share.
pub(crate) fn common_prefix(a: &[u64], b: &[u64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Rendered {
        let mut r = Rendered::default();
        r.push_text(s);
        r
    }

    #[test]
    fn text_is_cut_in_fixed_chunks() {
        assert_eq!(text("abcdefghi").tokens(4).len(), 3);
        assert_eq!(text("").tokens(4).len(), 0);
        assert_eq!(text("abcd").tokens(4), text("abcd").tokens(4));
        assert_ne!(text("abcd").tokens(4), text("abce").tokens(4));
    }

    #[test]
    fn a_next_turn_shares_the_previous_turn_as_prefix() {
        let turn1 = text("user: hello\nassistant: ");
        let slot = turn1.with_reply("tok1 tok2 ").tokens(4);
        let turn2 = text("user: hello\nassistant: tok1 tok2 \nuser: more\nassistant: ");
        let turn2 = turn2.tokens(4);
        let shared = common_prefix(&slot, &turn2);
        assert_eq!(shared, "user: hello\nassistant: tok1 tok2 ".len() / 4);
        assert!(shared > 0 && shared < turn2.len());
    }

    #[test]
    fn a_special_marker_is_one_token_and_splits_text() {
        let mut r = text("ab");
        r.push_special("<|eot_id|>");
        r.push_text("cd");
        let mut marker = Rendered::default();
        marker.push_special("<|eot_id|>");
        assert_eq!(r.tokens(4).len(), 3);
        assert_eq!(r.tokens(4)[1], marker.tokens(4)[0]);
    }

    #[test]
    fn images_are_a_fixed_run_of_tokens() {
        let mut a = text("look: ");
        a.push_image("AAAA");
        a.push_text(" ok");
        let mut b = text("look: ");
        b.push_image("BBBB");
        b.push_text(" ok");
        assert_eq!(a.tokens(4).len(), 2 + IMAGE_TOKENS + 1);
        assert_eq!(common_prefix(&a.tokens(4), &b.tokens(4)), 2);
    }
}
