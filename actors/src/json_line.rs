//! JSON lines in which no control character appears raw, for the files an operator
//! reads with a terminal: the JSON log and the audit file (issue 12).
//!
//! serde_json escapes C0 (`\n`, `\u001b`...) already, but writes DEL (U+007F) and the C1
//! controls (U+0080–U+009F) raw: JSON allows them, and a terminal obeys them (U+009B is
//! CSI, an escape sequence of its own). [`encode`] escapes them too, as `\u007f`, so a
//! value from a client (a user name, a hook's URL) cannot drive the terminal of whoever
//! reads the file, and the line stays valid JSON that parses back to the same value.

use serde::Serialize;

/// serde_json's compact output, with DEL and C1 escaped as well as C0.
struct EscapingFormatter;

impl serde_json::ser::Formatter for EscapingFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        // serde_json hands C0, `"` and `\` to `write_char_escape`; what reaches this
        // point is the rest, DEL and C1 included.
        let mut rest = fragment;
        while let Some(at) = rest.find(char::is_control) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(writer, "\\u{:04x}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

/// `value` as one JSON line (no newline) in which no control character appears raw.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, EscapingFormatter);
    value.serialize(&mut serializer)?;
    // serde_json writes UTF-8 only.
    Ok(String::from_utf8(out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn del_and_c1_are_escaped_and_the_line_stays_json() {
        let value = serde_json::json!({
            "user": "x\r\n2026-01-01T00:00:00Z  INFO forged\x1b[31m",
            "message_id": "a\x7fb\u{9b}c\u{85}d\x08e",
            "plain": "ünïcödé \u{a0}",
        });
        let line = encode(&value).unwrap();
        assert!(!line.contains(char::is_control), "{line:?}");
        assert!(line.contains("\\u007f") && line.contains("\\u009b") && line.contains("\\u0085"));
        assert!(line.contains("\\r\\n") && line.contains("\\u001b"));
        assert!(line.contains("ünïcödé \u{a0}"), "other characters stay raw");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value, "the same value once parsed");
    }

    #[test]
    fn every_control_character_is_escaped_in_keys_and_values() {
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let mut map = std::collections::BTreeMap::new();
            map.insert(format!("k{c}"), format!("v{c}"));
            let line = encode(&map).unwrap();
            assert!(!line.contains(char::is_control), "{:x}: {line:?}", c as u32);
            let back: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&line).unwrap();
            assert_eq!(back, map);
        }
    }
}
