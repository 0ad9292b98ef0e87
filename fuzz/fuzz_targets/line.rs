//! `line::LineReader` over a byte stream that arrives in pieces.
//!
//! Input layout (kept printable so the seeds read as SMTP):
//!   byte 0      max line length = 1 + byte (1..=256)
//!   byte 1      n = byte % 16 control bytes follow; each gives the size of one piece,
//!               1 + c % 32, used in turn; n = 0 feeds the stream in one piece
//!   bytes 2+n.. the stream
//!
//! Properties: every consumed count is within the buffer and every line or refusal
//! consumes something (so a server loop always progresses); a line is exactly the
//! buffer's head up to CRLF and fits the limit; what stays buffered never exceeds the
//! limit and holds no complete line; and the lines and refusals seen, and what is left
//! buffered at the end, do not depend on how the stream was cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mairust_fuzz::check;
use mairust_fuzz::proto::line::{LineEvent, LineReader};
use mairust_fuzz::proto::reply::{self, Reply};

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Line(Vec<u8>),
    Invalid(Reply),
}

/// Feeds `stream` in pieces of the given sizes (cycled; empty = one piece) and returns
/// what the reader reported and what stayed in the buffer.
fn run(stream: &[u8], max_len: usize, pieces: &[usize]) -> (Vec<Seen>, Vec<u8>) {
    let mut reader = LineReader::default();
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    let mut pos = 0;
    let mut piece = 0;
    while pos < stream.len() {
        let size = if pieces.is_empty() {
            stream.len()
        } else {
            pieces[piece % pieces.len()]
        };
        piece += 1;
        let end = (pos + size).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        loop {
            let event = reader.next(&buf, max_len);
            let consumed = match &event {
                LineEvent::NeedMore { consumed } => *consumed,
                LineEvent::Line { consumed, .. } | LineEvent::Invalid { consumed, .. } => {
                    assert!(*consumed > 0, "no progress: {event:?}");
                    *consumed
                }
            };
            assert!(
                consumed <= buf.len(),
                "consumed {consumed} of {}",
                buf.len()
            );
            match event {
                LineEvent::NeedMore { .. } => {
                    let left = &buf[consumed..];
                    assert!(left.len() <= max_len, "buffered {} > {max_len}", left.len());
                    assert!(!left.contains(&b'\n'), "NeedMore with a line buffered");
                    buf.drain(..consumed);
                    break;
                }
                LineEvent::Line { consumed, line } => {
                    assert!(consumed <= max_len, "line of {consumed} > {max_len}");
                    assert_eq!(line.len() + 2, consumed);
                    assert_eq!(line, &buf[..consumed - 2]);
                    assert_eq!(&buf[consumed - 2..consumed], b"\r\n");
                    assert!(!line.contains(&b'\n'));
                    seen.push(Seen::Line(line.to_vec()));
                }
                LineEvent::Invalid { consumed, reply } => {
                    assert!(
                        reply == reply::LINE_TOO_LONG || reply == reply::BARE_LF_IN_COMMAND,
                        "{reply:?}"
                    );
                    check::reply_wire(&reply);
                    assert_eq!(buf[consumed - 1], b'\n', "refusal not at a line end");
                    seen.push(Seen::Invalid(reply));
                }
            }
            buf.drain(..consumed);
        }
    }
    (seen, buf)
}

fuzz_target!(|data: &[u8]| {
    let [len_byte, n_byte, rest @ ..] = data else {
        return;
    };
    let max_len = 1 + *len_byte as usize;
    let n = (*n_byte as usize % 16).min(rest.len());
    let (control, stream) = rest.split_at(n);
    let pieces: Vec<usize> = control.iter().map(|c| 1 + *c as usize % 32).collect();

    let whole = run(stream, max_len, &[]);
    let cut = run(stream, max_len, &pieces);
    assert_eq!(cut, whole, "cutting the stream changed what was read");
    let bytewise = run(stream, max_len, &[1]);
    assert_eq!(
        bytewise, whole,
        "feeding byte by byte changed what was read"
    );
});
