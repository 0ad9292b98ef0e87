//! Control characters out of logs (issue 12).
//!
//! Logged values come from clients (an AUTH user name, a Message-ID, a hook's error):
//! written raw, a CR or LF starts a forged log line and an ESC sequence drives the
//! terminal of whoever reads the log. Every control character (C0, DEL and C1, that is
//! Unicode's `Cc`) therefore leaves the server as a visible escape:
//!
//! - text logs: `\r`, `\n`, `\t`, and `\u{1b}` for the others (Rust's own notation),
//!   in messages and in every field, Display (`%`) ones included: [`EscapedFields`];
//! - JSON logs: serde_json escapes C0 already; [`json_line`] escapes DEL and C1 too
//!   (`\u007f`, `\u009b`), which JSON allows raw but a terminal obeys (the audit file
//!   is written through the same formatter, `mairust_actors::json_line`);
//! - `mairust logs` escapes on output as well, so a file written by anything else
//!   cannot reach the terminal raw either.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Writes what passes through it to `inner`, control characters escaped.
pub struct EscapingWriter<W> {
    inner: W,
}

impl<W: fmt::Write> EscapingWriter<W> {
    pub fn new(inner: W) -> Self {
        EscapingWriter { inner }
    }
}

impl<W: fmt::Write> fmt::Write for EscapingWriter<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(char::is_control) {
            self.inner.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\r' => self.inner.write_str("\\r")?,
                '\n' => self.inner.write_str("\\n")?,
                '\t' => self.inner.write_str("\\t")?,
                c => write!(self.inner, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.inner.write_str(rest)
    }
}

/// `text` with its control characters escaped (borrowed when it has none).
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(char::is_control) {
        return text.into();
    }
    let mut out = EscapingWriter::new(String::with_capacity(text.len() + 8));
    let _ = out.write_str(text);
    out.inner.into()
}

/// The text log's field formatter: like tracing-subscriber's default
/// (`message name=value ...`, strings quoted), with every value escaped.
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    /// Nothing written yet: no separating space.
    empty: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, name: &str, value: fmt::Arguments<'_>) {
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        if !self.empty {
            self.result = self.writer.write_char(' ');
        }
        self.empty = false;
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            // Field names are identifiers of our own code: styled, not escaped.
            self.result = self.result.and_then(|()| {
                if self.writer.has_ansi_escapes() {
                    write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")
                } else {
                    write!(self.writer, "{name}=")
                }
            });
        }
        self.result = self
            .result
            .and_then(|()| EscapingWriter::new(&mut self.writer).write_fmt(value));
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field.name(), format_args!("{value}"));
        } else {
            self.write(field.name(), format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field.name(), format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field.name(), format_args!("{value:?}"));
    }
}

/// One JSON line (no newline) in which no control character appears raw; the audit
/// file's lines are written the same way ([`mairust_actors::json_line`]).
pub fn json_line(value: &serde_json::Value) -> String {
    // A Value always serializes.
    mairust_actors::json_line::encode(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether any character of `text` is a control character.
    fn raw_controls(text: &str) -> bool {
        text.contains(char::is_control)
    }

    #[test]
    fn text_escapes_every_control_character_visibly() {
        assert_eq!(escape("a\r\nb"), "a\\r\\nb");
        assert_eq!(escape("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("tab\there"), "tab\\there");
        assert_eq!(escape("\x00\x07\x08\x7f"), "\\u{0}\\u{7}\\u{8}\\u{7f}");
        assert_eq!(escape("c1 \u{9b}31m \u{85}"), "c1 \\u{9b}31m \\u{85}");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let escaped = escape(&format!("x{c}y")).into_owned();
            assert!(!raw_controls(&escaped), "{:x}: {escaped:?}", c as u32);
            assert!(escaped.starts_with("x\\") && escaped.ends_with('y'));
        }
    }

    #[test]
    fn text_without_controls_is_kept_as_is() {
        let plain = "bob@example.test — ünïcödé ✓ \\n stays";
        assert!(matches!(escape(plain), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escape(plain), plain);
        assert_eq!(
            escape("\u{a0}nbsp"),
            "\u{a0}nbsp",
            "U+00A0 is not a control"
        );
    }

    /// The JSON log's lines are the audit file's encoding, whose escaping (DEL, C1, C0;
    /// the value parses back unchanged) `mairust_actors::json_line`'s tests check.
    #[test]
    fn json_lines_are_the_audit_files_encoding() {
        let value = serde_json::json!({
            "user": "x\r\n2026-01-01T00:00:00Z  INFO forged\x1b[31m",
            "message_id": "a\x7fb\u{9b}c\u{85}d\x08e",
            "plain": "ünïcödé",
        });
        let line = json_line(&value);
        assert!(!raw_controls(&line), "{line:?}");
        assert_eq!(line, mairust_actors::json_line::encode(&value).unwrap());
    }

    #[test]
    fn log_fields_are_escaped_in_the_text_format() {
        use tracing_subscriber::fmt::MakeWriter;

        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Captured {
            type Writer = Captured;
            fn make_writer(&'a self) -> Captured {
                self.clone()
            }
        }

        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .with_writer(captured.clone())
            .finish();
        let user = "x\r\n2026-01-01T00:00:00Z  INFO forged line\x1b[31m";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("session", session_id = %"s\x1b1");
            let _entered = span.enter();
            tracing::warn!(user = %user, debug = ?user, plain = user, n = 5, "message\r\nwith {}", "\u{9b}c1");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "one event, one line: {text:?}");
        assert!(!raw_controls(lines[0]), "{text:?}");
        assert!(
            lines[0].contains(r"user=x\r\n2026-01-01T00:00:00Z  INFO forged line\u{1b}[31m"),
            "{text}"
        );
        assert!(lines[0].contains(r#"plain="x\r\n2026"#), "{text}");
        assert!(lines[0].contains(r"message\r\nwith \u{9b}c1"), "{text}");
        assert!(
            lines[0].contains(r"session_id=s\u{1b}1"),
            "span fields: {text}"
        );
        assert!(lines[0].contains("n=5"), "{text}");
    }
}
