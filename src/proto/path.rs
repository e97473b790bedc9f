//! Request-path normalisation (RFC 3986 §6.2.2): the one form that is routed and forwarded.

/// Why a request path was refused before routing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding")]
    BadEncoding,
    /// `..` segments climbing above the root.
    #[error("path escapes the root")]
    EscapesRoot,
    /// Not an absolute path.
    #[error("path must start with `/`")]
    NotAbsolute,
}

/// Normalises a request path (RFC 3986 §6.2.2): decodes percent-encoded unreserved
/// characters, upper-cases the hex of the rest, collapses `//`, and resolves `.`/`..`.
///
/// `%2F` stays encoded, so it is never a separator; the result is what is routed and forwarded.
pub fn normalize_path(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path) {
        return Ok(path.to_string());
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
            let (h, l) = (hex_val(hex[0])?, hex_val(hex[1])?);
            let c = (h << 4) | l;
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(hex[0].to_ascii_uppercase() as char);
                out.push(hex[1].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // Copy the run up to the next `%` in one go (keeps multi-byte UTF-8 intact).
            let end = path[i..].find('%').map_or(bytes.len(), |p| i + p);
            out.push_str(&path[i..end]);
            i = end;
        }
    }
    Ok(out)
}

/// Whether `path` (absolute) is its own normal form: no `%`, no empty segment but a
/// trailing one, no `.` or `..` segment. Most paths are; they are then copied as they are
/// rather than taken apart and rebuilt.
fn is_normal(path: &str) -> bool {
    let rest = &path.as_bytes()[1..];
    if memchr::memchr(b'%', rest).is_some() {
        return false;
    }
    let mut segments = rest.split(|&b| b == b'/').peekable();
    // Bounded by the path's segments.
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            b"." | b".." => return false,
            b"" if !last => return false,
            _ => {}
        }
    }
    true
}

fn hex_val(b: u8) -> Result<u8, PathError> {
    (b as char)
        .to_digit(16)
        .map(|d| d as u8)
        .ok_or(PathError::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_tricks() {
        assert_eq!(normalize_path("/a//b/./c/../d").unwrap(), "/a/b/d");
        assert_eq!(normalize_path("/%2e%2E/x"), Err(PathError::EscapesRoot));
        assert_eq!(normalize_path("/chat/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(normalize_path("/%7euser/").unwrap(), "/~user/");
        assert_eq!(normalize_path("/x%zz"), Err(PathError::BadEncoding));
        assert_eq!(normalize_path("/x%4"), Err(PathError::BadEncoding));
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("/caf\u{e9}").unwrap(), "/caf\u{e9}");
        assert_eq!(normalize_path("x"), Err(PathError::NotAbsolute));
    }

    /// The shortcut for paths already normal gives what the full normalisation gives.
    #[test]
    fn the_normal_form_shortcut_agrees_with_the_full_normalisation() {
        let pieces = ["", "a", ".", "..", "%2e", "b.c", "~x", "caf\u{e9}"];
        // Every path of up to four segments from `pieces`, with and without a trailing slash.
        let mut paths = vec!["/".to_string()];
        for _ in 0..4 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| {
                    pieces
                        .iter()
                        .map(move |s| format!("{}/{s}", p.trim_end_matches('/')))
                })
                .collect();
            paths.extend(longer);
            paths.sort();
            paths.dedup();
        }
        assert!(paths.len() > 1000);
        for p in paths.iter().chain(
            paths
                .iter()
                .map(|p| p.clone() + "/")
                .collect::<Vec<_>>()
                .iter(),
        ) {
            let full = decode_unreserved(p).map(|d| {
                let mut segs: Vec<&str> = Vec::new();
                let trailing = d.ends_with('/') || d.ends_with("/.") || d.ends_with("/..");
                for seg in d.split('/') {
                    match seg {
                        "" | "." => {}
                        ".." => {
                            if segs.pop().is_none() {
                                return Err(PathError::EscapesRoot);
                            }
                        }
                        s => segs.push(s),
                    }
                }
                let mut out: String = segs.iter().map(|s| format!("/{s}")).collect();
                if out.is_empty() || trailing {
                    out.push('/');
                }
                Ok(out)
            });
            let full = full.and_then(|r| r);
            assert_eq!(normalize_path(p), full, "{p:?}");
            if is_normal(p) {
                assert_eq!(full.as_deref(), Ok(p.as_str()), "{p:?}");
            }
        }
    }
}
