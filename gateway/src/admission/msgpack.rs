//! The admission script's arguments as one MessagePack array (numbers and strings). Redis
//! decodes it in C (`cmsgpack`, built into its Lua): as separate arguments, each number
//! would be a string for Lua to parse, a measurable part of what a batch costs Redis.

use rmp::encode;

/// An array being written; `finish` gives its bytes. Writes go to a `Vec`, which cannot
/// fail, so the encoder's `Result`s are dropped.
pub struct Pack {
    body: Vec<u8>,
    len: u32,
}

impl Pack {
    pub fn new() -> Pack {
        Pack {
            body: Vec::with_capacity(256),
            len: 0,
        }
    }

    pub fn uint(&mut self, n: u64) -> &mut Pack {
        let _ = encode::write_uint(&mut self.body, n);
        self.item()
    }

    pub fn int(&mut self, n: i64) -> &mut Pack {
        let _ = encode::write_sint(&mut self.body, n);
        self.item()
    }

    pub fn float(&mut self, x: f64) -> &mut Pack {
        let _ = encode::write_f64(&mut self.body, x);
        self.item()
    }

    pub fn str(&mut self, s: &str) -> &mut Pack {
        let _ = encode::write_str(&mut self.body, s);
        self.item()
    }

    fn item(&mut self) -> &mut Pack {
        self.len += 1;
        self
    }

    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 5);
        let _ = encode::write_array_len(&mut out, self.len);
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmp::decode;

    #[test]
    fn writes_an_array_the_script_reads_back() {
        let long = "x".repeat(40);
        let mut p = Pack::new();
        p.uint(5)
            .uint(300)
            .uint(1 << 40)
            .int(-1)
            .int(-100)
            .float(0.5)
            .str("ab")
            .str(&long);
        let bytes = p.finish();
        let mut r = &bytes[..];
        assert_eq!(decode::read_array_len(&mut r).unwrap(), 8);
        assert_eq!(decode::read_int::<u64, _>(&mut r).unwrap(), 5);
        assert_eq!(decode::read_int::<u64, _>(&mut r).unwrap(), 300);
        assert_eq!(decode::read_int::<u64, _>(&mut r).unwrap(), 1 << 40);
        assert_eq!(decode::read_int::<i64, _>(&mut r).unwrap(), -1);
        assert_eq!(decode::read_int::<i64, _>(&mut r).unwrap(), -100);
        assert_eq!(decode::read_f64(&mut r).unwrap(), 0.5);
        let mut buf = [0u8; 64];
        assert_eq!(decode::read_str(&mut r, &mut buf).unwrap(), "ab");
        assert_eq!(decode::read_str(&mut r, &mut buf).unwrap(), long);
        assert!(r.is_empty());
    }
}
