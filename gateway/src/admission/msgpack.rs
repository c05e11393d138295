//! The admission script's arguments as one MessagePack array, the little of MessagePack it
//! needs (numbers and strings). Redis decodes it in C (`cmsgpack`, built into its Lua): as
//! separate arguments, each number would be a string for Lua to parse, a measurable part of
//! what a batch costs Redis.

/// An array being written; `finish` gives its bytes.
pub struct Pack {
    buf: Vec<u8>,
    len: u32,
}

impl Pack {
    pub fn new() -> Pack {
        // array 32, its length filled in by `finish`.
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[0xdd, 0, 0, 0, 0]);
        Pack { buf, len: 0 }
    }

    pub fn uint(&mut self, n: u64) -> &mut Pack {
        if n < 0x80 {
            self.buf.push(n as u8);
        } else if let Ok(n) = u32::try_from(n) {
            self.buf.push(0xce);
            self.buf.extend_from_slice(&n.to_be_bytes());
        } else {
            self.buf.push(0xcf);
            self.buf.extend_from_slice(&n.to_be_bytes());
        }
        self.len += 1;
        self
    }

    pub fn int(&mut self, n: i64) -> &mut Pack {
        if let Ok(n) = u64::try_from(n) {
            return self.uint(n);
        }
        if n >= -32 {
            self.buf.push(n as i8 as u8);
        } else {
            self.buf.push(0xd3);
            self.buf.extend_from_slice(&n.to_be_bytes());
        }
        self.len += 1;
        self
    }

    pub fn float(&mut self, x: f64) -> &mut Pack {
        self.buf.push(0xcb);
        self.buf.extend_from_slice(&x.to_be_bytes());
        self.len += 1;
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Pack {
        let n = s.len();
        if n < 32 {
            self.buf.push(0xa0 | n as u8);
        } else if let Ok(n) = u8::try_from(n) {
            self.buf.extend_from_slice(&[0xd9, n]);
        } else if let Ok(n) = u16::try_from(n) {
            self.buf.push(0xda);
            self.buf.extend_from_slice(&n.to_be_bytes());
        } else {
            self.buf.push(0xdb);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.buf.extend_from_slice(s.as_bytes());
        self.len += 1;
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[1..5].copy_from_slice(&self.len.to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_shortest_forms_the_script_reads() {
        let mut p = Pack::new();
        p.uint(5)
            .uint(300)
            .uint(1 << 40)
            .int(-1)
            .int(-100)
            .float(0.5)
            .str("ab");
        let b = p.finish();
        let mut want = vec![0xdd, 0, 0, 0, 7, 5, 0xce, 0, 0, 1, 44];
        want.extend_from_slice(&[0xcf, 0, 0, 1, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0xff, 0xd3]);
        want.extend_from_slice(&(-100i64).to_be_bytes());
        want.push(0xcb);
        want.extend_from_slice(&0.5f64.to_be_bytes());
        want.extend_from_slice(&[0xa2, b'a', b'b']);
        assert_eq!(b, want);
        let long = "x".repeat(40);
        let mut p = Pack::new();
        p.str(&long);
        assert_eq!(&p.finish()[5..7], &[0xd9, 40]);
    }
}
