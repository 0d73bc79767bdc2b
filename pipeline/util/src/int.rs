//! An integer's decimal digits on the stack: ids, headers and keys built from integers without
//! an intermediate `String`.

/// The decimal digits (and sign) of an `i64`, held in a 20-byte buffer.
pub struct IntDigits {
    buf: [u8; 20],
    start: usize,
}

impl IntDigits {
    pub fn new(v: i64) -> IntDigits {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut n = v.unsigned_abs();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if v < 0 {
            i -= 1;
            buf[i] = b'-';
        }
        IntDigits { buf, start: i }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::IntDigits;

    #[test]
    fn digits_of_every_i64() {
        for v in [
            0,
            7,
            -7,
            10,
            4_000_000_000,
            1_765_000_000_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(IntDigits::new(v).as_str(), v.to_string());
        }
    }
}
