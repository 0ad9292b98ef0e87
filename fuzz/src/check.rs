//! Properties shared by the fuzz targets.

use crate::proto::reply::Reply;

/// The wire form of a reply: one or more lines `DDD-...` / `DDD ...` (the last with a
/// space), each ending with CRLF, with no other CR or LF anywhere (no reply injection),
/// and as many lines as the text has `\n`-separated lines.
pub fn reply_wire(r: &Reply) {
    assert!((200..=599).contains(&r.code), "odd reply code {}", r.code);
    let wire = r.to_bytes();
    let code = r.code.to_string();
    assert!(wire.ends_with(b"\r\n"), "{wire:?}");
    let lines: Vec<&[u8]> = wire[..wire.len() - 2].split(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), r.text.split('\n').count(), "{wire:?}");
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        // Every line but the last was cut at its LF, so it still ends with the CR.
        let line = if last {
            *line
        } else {
            line.strip_suffix(b"\r").expect("LF without CR in reply")
        };
        assert!(!line.contains(&b'\r') && !line.contains(&b'\n'), "{wire:?}");
        assert!(line.starts_with(code.as_bytes()), "{wire:?}");
        let sep = if last { b' ' } else { b'-' };
        assert_eq!(line.get(3), Some(&sep), "{wire:?}");
    }
    // Display must not panic either.
    let _ = r.to_string();
}
