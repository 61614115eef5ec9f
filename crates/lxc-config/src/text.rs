//! Checks and encodings that keep spec values inside their config line.
//!
//! LXC reads its config line by line: it trims leading and trailing whitespace from key and value,
//! treats a line that starts with `#` as a comment, splits on the first `=`, strips one pair of
//! matching quotes around a value, and treats an empty value as "clear this key". Mount entries
//! are then parsed again as fstab lines (fields split on blanks, `\040`-style escapes decoded).
//! Proxmox's config parser splits on `\n` and trims values. Every value that comes from the spec
//! passes through [`value`] (or a stricter check) before it reaches a line, so none of these rules
//! can turn a spec value into a different line, key or value.

use crate::PlanError;

/// A value that may stand after `key = `: non-empty, no control characters (that includes
/// `\n`, `\r`, NUL, tab, DEL and the C1 controls), no whitespace at either end, not wrapped in a
/// matching pair of quotes.
pub(crate) fn value(field: &str, v: &str) -> Result<String, PlanError> {
    if v.is_empty() {
        return Err(PlanError::invalid(field, "must not be empty"));
    }
    if let Some(c) = v.chars().find(|c| is_forbidden_char(*c)) {
        return Err(PlanError::invalid(
            field,
            format!("contains the control character {:?}", c),
        ));
    }
    if v.starts_with(char::is_whitespace) || v.ends_with(char::is_whitespace) {
        return Err(PlanError::invalid(
            field,
            "must not start or end with whitespace",
        ));
    }
    let bytes = v.as_bytes();
    if bytes.len() > 1
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0]
    {
        return Err(PlanError::invalid(field, "must not be wrapped in quotes"));
    }
    Ok(v.to_string())
}

/// Control characters, and the Unicode line and paragraph separators (some tools split lines on
/// them), are never accepted in a config value.
pub(crate) fn is_forbidden_char(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// A token used as (part of) a config key or an enum-like word: `[A-Za-z0-9_.-]+`.
pub(crate) fn key_part(field: &str, v: &str) -> Result<String, PlanError> {
    if v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        return Err(PlanError::invalid(
            field,
            format!("{v:?} is not a plain name ([A-Za-z0-9_.-]+)"),
        ));
    }
    if v.starts_with('.') || v.ends_with('.') || v.contains("..") {
        return Err(PlanError::invalid(
            field,
            format!("{v:?} is not a plain name"),
        ));
    }
    Ok(v.to_string())
}

/// An absolute path, normalised (no `.`/`..`/empty components), checked as a [`value`].
pub(crate) fn abs_path(field: &str, p: &std::path::Path) -> Result<String, PlanError> {
    let s = p
        .to_str()
        .ok_or_else(|| PlanError::invalid(field, "is not valid UTF-8"))?;
    if !s.starts_with('/') {
        return Err(PlanError::invalid(
            field,
            format!("{s:?} is not an absolute path"),
        ));
    }
    let mut out = String::new();
    for comp in s.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                return Err(PlanError::invalid(field, format!("{s:?} contains \"..\"")));
            }
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    value(field, &out)
}

/// Encodes one field of an fstab line (a `lxc.mount.entry` value) the way getmntent decodes it:
/// blanks and backslashes become octal escapes, so a path cannot split into more fields. The
/// value must already have passed [`value`] (no control characters). A field that would start a
/// comment is refused: getmntent has no escape for `#`.
pub(crate) fn fstab_field(field: &str, v: &str) -> Result<String, PlanError> {
    value(field, v)?;
    if v.starts_with('#') {
        return Err(PlanError::invalid(field, "must not start with '#'"));
    }
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Proxmox's `encode_text` for description lines: every byte outside printable ASCII, `:` and
/// (so that decoding gives the text back) `%` is percent-encoded.
pub(crate) fn pve_encode_text(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for b in line.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b':' && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// A Proxmox tag (`pve-tag-list` element: `[a-z0-9_][a-z0-9_\-+.]*`, case-insensitive): other
/// characters become `_`.
pub(crate) fn pve_tag(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.') {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out
        .chars()
        .next()
        .map(|c| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(true)
    {
        out.insert(0, '_');
    }
    out
}

/// Proxmox `dns-name`: labels of `[A-Za-z0-9-]`, not starting or ending with `-`, joined by dots.
pub(crate) fn is_dns_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 255
        && v.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rejects_what_lxc_would_reinterpret() {
        for bad in [
            "", "a\nb", "a\rb", "a\0b", " a", "a ", "\"a\"", "'a'", "a\u{85}b", "\t",
        ] {
            assert!(value("f", bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a b", "#a", "a=b", "\"a", "é", "a'"] {
            assert_eq!(value("f", good).unwrap(), good);
        }
    }

    #[test]
    fn fstab_fields_cannot_split() {
        assert_eq!(fstab_field("f", "/a b\\c").unwrap(), "/a\\040b\\134c");
        assert!(fstab_field("f", "#x").is_err());
    }

    #[test]
    fn abs_path_normalises() {
        assert_eq!(abs_path("f", "/a//b/./c/".as_ref()).unwrap(), "/a/b/c");
        assert_eq!(abs_path("f", "/".as_ref()).unwrap(), "/");
        assert!(abs_path("f", "a/b".as_ref()).is_err());
        assert!(abs_path("f", "/a/../b".as_ref()).is_err());
    }

    #[test]
    fn pve_text_and_tags() {
        assert_eq!(pve_encode_text("a: b%\u{e9}"), "a%3a b%25%c3%a9");
        assert_eq!(pve_tag("My Pod/1"), "my_pod_1");
        assert_eq!(pve_tag("-x"), "_-x");
        assert!(is_dns_name("web-0.ns"));
        assert!(!is_dns_name("-bad"));
    }
}
