//! Request-path normalisation (API.md §4): the one canonical form that routes are matched against
//! and that is forwarded upstream, so a route cannot be bypassed by spelling a path differently.

use std::borrow::Cow;

/// Why a request path cannot be normalised; the proxy answers all of these with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("invalid percent-escape at byte {at}")]
    InvalidEscape { at: usize },
    #[error("byte {byte:#04x} at {at} is not allowed in a path")]
    ForbiddenByte { byte: u8, at: usize },
    #[error("the path climbs above the root")]
    EscapesRoot,
}

/// Normalises the path part of a request target (no query): percent-escapes of unreserved
/// characters decoded, every other escape kept (hex in upper case), duplicate slashes merged, `.`
/// and `..` resolved. A trailing slash (or a trailing dot-segment) leaves a trailing slash.
///
/// `%2F` stays encoded: decoding it would turn one segment into two after routing has seen it,
/// and upstreams disagree on whether it is a separator.
///
/// Borrows when `raw` is already normal, which is what real clients send.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(raw)? {
        Ok(Cow::Borrowed(raw))
    } else {
        rewrite(raw).map(Cow::Owned)
    }
}

/// One pass over `raw` that stops at the first thing needing a rewrite; `rewrite` then validates
/// the rest, so every error is still found.
fn is_normal(raw: &str) -> Result<bool, PathError> {
    let b = raw.as_bytes();
    // Start of the current segment: just past the `/` that opened it.
    let mut seg = 1;
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'/' => {
                if is_dot_or_empty(&b[seg..i]) {
                    return Ok(false);
                }
                seg = i + 1;
            }
            b'%' => {
                let v = escape(b, i)?;
                if is_unreserved(v) || b[i + 1..i + 3].iter().any(u8::is_ascii_lowercase) {
                    return Ok(false);
                }
                i += 3;
                continue;
            }
            c => check_byte(c, i)?,
        }
        i += 1;
    }
    // A final empty segment is the trailing slash (or the root), which is normal.
    let last = &b[seg..];
    Ok(last != b"." && last != b"..")
}

fn is_dot_or_empty(seg: &[u8]) -> bool {
    matches!(seg, b"" | b"." | b"..")
}

fn rewrite(raw: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    // Whether the last segment seen was empty or a dot-segment, which ends the path with `/`.
    let mut trailing = false;
    let mut offset = 1;
    for seg in raw[1..].split('/') {
        let start = out.len();
        out.push('/');
        push_decoded(&mut out, seg, offset)?;
        offset += seg.len() + 1;
        match &out[start + 1..] {
            "" | "." => {
                out.truncate(start);
                trailing = true;
            }
            ".." => {
                out.truncate(start);
                // Kept segments never hold a literal `/` (`%2F` stays encoded), so the last `/`
                // opens the segment `..` removes.
                match out.rfind('/') {
                    Some(parent) => out.truncate(parent),
                    None => return Err(PathError::EscapesRoot),
                }
                trailing = true;
            }
            _ => trailing = false,
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Appends `seg` to `out`, decoding unreserved escapes; `base` is `seg`'s offset for errors.
fn push_decoded(out: &mut String, seg: &str, base: usize) -> Result<(), PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let b = seg.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            check_byte(b[i], base + i)?;
            i += 1;
            continue;
        }
        let v = escape(b, i).map_err(|_| PathError::InvalidEscape { at: base + i })?;
        out.push_str(&seg[copied..i]);
        if is_unreserved(v) {
            out.push(char::from(v));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(v >> 4)]));
            out.push(char::from(HEX[usize::from(v & 0xf)]));
        }
        i += 3;
        copied = i;
    }
    out.push_str(&seg[copied..]);
    Ok(())
}

/// The byte value of the escape starting at `b[at] == b'%'`.
fn escape(b: &[u8], at: usize) -> Result<u8, PathError> {
    let hex = |i: usize| b.get(i).and_then(|c| char::from(*c).to_digit(16));
    match (hex(at + 1), hex(at + 2)) {
        // Both digits are below 16, so the value fits a byte.
        (Some(hi), Some(lo)) => Ok((hi * 16 + lo) as u8),
        _ => Err(PathError::InvalidEscape { at }),
    }
}

fn check_byte(c: u8, at: usize) -> Result<(), PathError> {
    if c <= b' ' || c == 0x7f {
        Err(PathError::ForbiddenByte { byte: c, at })
    } else {
        Ok(())
    }
}

/// RFC 3986 §2.3: decoding these never changes what a URI means.
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, PathError> {
        normalize_path(raw).map(Cow::into_owned)
    }

    fn is_borrowed(raw: &str) -> bool {
        matches!(normalize_path(raw), Ok(Cow::Borrowed(_)))
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/a/b/",
            "/a%2Fb",
            "/a%20b",
            "/a..b/.c/c.",
            "/é",
        ] {
            assert!(is_borrowed(p), "{p}");
            assert_eq!(norm(p).unwrap(), p);
        }
    }

    #[test]
    fn must_be_absolute() {
        assert_eq!(norm(""), Err(PathError::NotAbsolute));
        assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(norm("*"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        assert_eq!(norm("/%41%7a%30-%2D%2e%5F%7E").unwrap(), "/Az0--._~");
        assert!(!is_borrowed("/%61"));
    }

    #[test]
    fn decoded_dots_are_dot_segments() {
        assert_eq!(norm("/a/%2e%2e/b").unwrap(), "/b");
        assert_eq!(norm("/a/.%2E/b").unwrap(), "/b");
        assert_eq!(norm("/a/%2e/b").unwrap(), "/a/b");
        assert_eq!(norm("/%2e%2e"), Err(PathError::EscapesRoot));
    }

    #[test]
    fn encoded_slash_is_never_decoded() {
        assert_eq!(norm("/a/%2F/b").unwrap(), "/a/%2F/b");
        assert_eq!(norm("/a/%2f/b").unwrap(), "/a/%2F/b");
        assert_eq!(norm("/a%2F..%2Fb").unwrap(), "/a%2F..%2Fb");
        // The escaped slash is part of a segment, so `..` removes it with its segment.
        assert_eq!(norm("/x/a%2fb/../c").unwrap(), "/x/c");
    }

    #[test]
    fn other_escapes_are_kept_in_upper_case() {
        assert_eq!(norm("/a%20b%3f%25").unwrap(), "/a%20b%3F%25");
        // `%25` is never decoded, so it cannot build a new escape.
        assert_eq!(norm("/%252e%252e").unwrap(), "/%252e%252e");
    }

    #[test]
    fn invalid_escapes_are_errors() {
        assert_eq!(norm("/%zz"), Err(PathError::InvalidEscape { at: 1 }));
        assert_eq!(norm("/a%4"), Err(PathError::InvalidEscape { at: 2 }));
        assert_eq!(norm("/a%"), Err(PathError::InvalidEscape { at: 2 }));
        assert_eq!(norm("/a%4/b"), Err(PathError::InvalidEscape { at: 2 }));
        // Found after the point where a rewrite became necessary, too.
        assert_eq!(norm("//a/%g1"), Err(PathError::InvalidEscape { at: 4 }));
    }

    #[test]
    fn duplicate_slashes_are_merged() {
        assert_eq!(norm("//a///b").unwrap(), "/a/b");
        assert_eq!(norm("//").unwrap(), "/");
        assert_eq!(norm("/a//").unwrap(), "/a/");
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(norm("/a/./b").unwrap(), "/a/b");
        assert_eq!(norm("/a/b/../c").unwrap(), "/a/c");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/.").unwrap(), "/");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
    }

    #[test]
    fn climbing_above_the_root_is_an_error() {
        assert_eq!(norm("/.."), Err(PathError::EscapesRoot));
        assert_eq!(norm("/../a"), Err(PathError::EscapesRoot));
        assert_eq!(norm("/a/../../b"), Err(PathError::EscapesRoot));
        assert_eq!(norm("/a/./../.."), Err(PathError::EscapesRoot));
    }

    #[test]
    fn trailing_slash_is_kept() {
        assert_eq!(norm("/a/b/").unwrap(), "/a/b/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/a/./").unwrap(), "/a/");
        assert_eq!(norm("/a/b/c/..").unwrap(), "/a/b/");
    }

    #[test]
    fn control_bytes_and_spaces_are_errors() {
        assert_eq!(
            norm("/a b"),
            Err(PathError::ForbiddenByte { byte: b' ', at: 2 })
        );
        assert_eq!(
            norm("/a\0"),
            Err(PathError::ForbiddenByte { byte: 0, at: 2 })
        );
        assert_eq!(
            norm("/\t"),
            Err(PathError::ForbiddenByte { byte: b'\t', at: 1 })
        );
        assert_eq!(
            norm("/a\x7f"),
            Err(PathError::ForbiddenByte { byte: 0x7f, at: 2 })
        );
        assert_eq!(
            norm("//a\r\n"),
            Err(PathError::ForbiddenByte { byte: b'\r', at: 3 })
        );
    }
}
