//! Incremental UTF-8 validation of a text message whose frames arrive one at a time.

/// Validates a text message fragment by fragment; a character may be split across fragments.
#[derive(Debug, Default)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: usize,
}

/// The bytes are not UTF-8 (or the message ended inside a character).
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Feeds the next fragment; `fin` marks the last one. Fails as soon as the text cannot be valid.
    pub fn feed(&mut self, mut data: &[u8], fin: bool) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let need = char_len(self.pending[0]) - self.pending_len;
            let take = need.min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() && data.is_empty() && !fin => return Ok(()),
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() && !fin => {
                let rest = &data[e.valid_up_to()..];
                self.pending[..rest.len()].copy_from_slice(rest);
                self.pending_len = rest.len();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }
}

/// Length of the character a valid lead byte starts (only called on lead bytes `from_utf8` accepted as a prefix).
fn char_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parts: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        for (i, p) in parts.iter().enumerate() {
            v.feed(p, i + 1 == parts.len())?;
        }
        Ok(())
    }

    #[test]
    fn split_characters() {
        let euro = "€".as_bytes(); // E2 82 AC
        assert_eq!(
            feed_all(&[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]),
            Ok(())
        );
        let emoji = "😀".as_bytes();
        assert_eq!(feed_all(&[&emoji[..3], &emoji[3..]]), Ok(()));
        assert_eq!(feed_all(&[&euro[..2]]), Err(InvalidUtf8));
        assert_eq!(feed_all(&[&euro[..2], b""]), Err(InvalidUtf8));
        assert_eq!(feed_all(&[b"ok", &[0xff], b"x"]), Err(InvalidUtf8));
        assert_eq!(feed_all(&[&[0xE2, 0x28]]), Err(InvalidUtf8));
        // Fails fast on a fragment that can never become valid.
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xCE, 0xBA, 0xF4, 0x90], false), Err(InvalidUtf8));
        assert_eq!(feed_all(&[&[], b"", b"\xce", b"\xba"]), Ok(()));
    }
}
