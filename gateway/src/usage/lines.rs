//! Splitting a byte stream into lines across chunk boundaries, with a cap on the partial line.

/// The longest line kept; longer ones are skipped (their counts, if any, are lost and logged).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct LineBuffer {
    partial: Vec<u8>,
    overflowed: bool,
}

impl LineBuffer {
    /// Calls `on_line` for each complete line (without `\n` or `\r`).
    pub fn feed(&mut self, mut chunk: &[u8], on_line: &mut dyn FnMut(&[u8])) {
        while let Some(pos) = chunk.iter().position(|b| *b == b'\n') {
            let (head, rest) = chunk.split_at(pos);
            if self.overflowed {
                self.overflowed = false;
                tracing::warn!("skipped a response line longer than {MAX_LINE} bytes");
            } else if self.partial.is_empty() {
                on_line(trim_cr(head));
            } else {
                self.partial.extend_from_slice(head);
                let line = std::mem::take(&mut self.partial);
                on_line(trim_cr(&line));
            }
            chunk = &rest[1..];
        }
        if !self.overflowed {
            if self.partial.len() + chunk.len() > MAX_LINE {
                self.partial = Vec::new();
                self.overflowed = true;
            } else {
                self.partial.extend_from_slice(chunk);
            }
        }
    }

    /// The unterminated last line, if any.
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.partial)
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}
