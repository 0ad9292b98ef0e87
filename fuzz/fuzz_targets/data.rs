//! `data::DataReceiver` over a message body that arrives in pieces and is spooled off
//! in pieces.
//!
//! Input layout (kept printable so the seeds read as SMTP):
//!   byte 0      max_size = 1 + 8 * byte (1..=2041)
//!   byte 1      max_line = 3 + byte (3..=258; below 3 not even `.<CRLF>` fits)
//!   byte 2      n = byte % 16 control bytes follow; each, used in turn, gives the size
//!               of one piece, 1 + (c >> 1) % 64, and with its low bit set the caller
//!               takes the pending body after that piece; n = 0 feeds the stream whole
//!   bytes 3+n.. the stream after the DATA command's CRLF
//!
//! Properties:
//! - end detection matches a reference: the body ends at the first `.<CRLF>` that
//!   starts the stream or follows a CRLF, and nowhere else (no smuggling through `<LF>.<LF>`,
//!   `<CR>.<CR>` and the like); when it does not end, what is consumed is every complete
//!   line, plus an over-long partial line;
//! - the outcome (done, consumed, the taken pieces followed by `finish()`, and the
//!   refusal) matches a reference model of unstuffing and the faults, and is the same fed
//!   whole, byte by byte, or in the input's pieces with `take_pending()` at its points;
//! - memory is bounded: `pending()` and `len()` never exceed max_size, and the caller's
//!   unconsumed buffer never exceeds max_line;
//! - `refused()` never goes back to false, and says at the end exactly whether `finish()`
//!   refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mairust_fuzz::check;
use mairust_fuzz::proto::data::DataReceiver;
use mairust_fuzz::proto::reply::{self, Reply};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    done: bool,
    consumed: usize,
    /// Taken pieces followed by `finish()`; the refusal if any (pieces taken before a
    /// refusal are then of no interest).
    body: Result<Vec<u8>, Reply>,
}

/// A piece of the stream: how many bytes, and whether to take the pending body after it.
#[derive(Clone, Copy)]
struct Piece {
    size: usize,
    take: bool,
}

fn run(stream: &[u8], max_size: usize, max_line: usize, pieces: &[Piece]) -> Outcome {
    let mut d = DataReceiver::new(max_size, max_line);
    let mut buf: Vec<u8> = Vec::new();
    let mut taken: Vec<u8> = Vec::new();
    let mut consumed_total = 0;
    let mut done = false;
    let mut was_refused = false;
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() && !done {
        let piece = if pieces.is_empty() {
            Piece {
                size: stream.len(),
                take: false,
            }
        } else {
            pieces[i % pieces.len()]
        };
        i += 1;
        let end = (pos + piece.size).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        let (n, fin) = d.feed(&buf);
        assert!(n <= buf.len(), "consumed {n} of {}", buf.len());
        buf.drain(..n);
        consumed_total += n;
        done = fin;
        if !done {
            assert!(
                buf.len() <= max_line,
                "caller buffers {} > {max_line}",
                buf.len()
            );
        }
        assert!(
            d.pending() <= max_size,
            "pending {} > {max_size}",
            d.pending()
        );
        assert!(d.len() <= max_size, "len {} > {max_size}", d.len());
        assert!(d.pending() <= d.len());
        assert!(!was_refused || d.refused(), "refused() went back to false");
        was_refused = d.refused();
        if piece.take {
            let before = d.len();
            let got = d.take_pending();
            assert_eq!(d.pending(), 0);
            assert_eq!(d.len(), before, "taking changed len()");
            taken.extend_from_slice(&got);
        }
    }
    let refused = d.refused();
    let len = d.len();
    let body = d.finish().map(|rest| {
        taken.extend_from_slice(&rest);
        taken
    });
    assert_eq!(refused, body.is_err(), "refused() disagrees with finish()");
    match &body {
        Ok(b) => assert_eq!(b.len(), len, "len() is not the body's length"),
        Err(r) => check::reply_wire(r),
    }
    Outcome {
        done,
        consumed: consumed_total,
        body,
    }
}

/// The whole-message reference: find the terminator by position, then split what
/// precedes it into lines and apply the rules to each.
fn model(stream: &[u8], max_size: usize, max_line: usize) -> Outcome {
    let end = (0..stream.len()).find(|&i| {
        stream[i..].starts_with(b".\r\n") && (i == 0 || (i >= 2 && &stream[i - 2..i] == b"\r\n"))
    });
    let (lines_part, done, consumed) = match end {
        Some(i) => (&stream[..i], true, i + 3),
        None => {
            let complete = stream
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |p| p + 1);
            let tail = stream.len() - complete;
            let consumed = if tail > max_line {
                stream.len()
            } else {
                complete
            };
            (&stream[..complete], false, consumed)
        }
    };
    let (mut too_big, mut bare, mut nul, mut long) = (false, false, false, false);
    let mut body = Vec::new();
    // The bytes of an unfinished over-long tail are checked as they arrive too.
    let tail = &stream[lines_part.len()..consumed.max(lines_part.len())];
    let tail = if done { &[][..] } else { tail };
    for line in lines_part
        .split_inclusive(|b| *b == b'\n')
        .chain((!tail.is_empty()).then_some(tail))
    {
        let finished = line.ends_with(b"\n");
        let crlf = line.ends_with(b"\r\n");
        let content = if crlf {
            &line[..line.len() - 2]
        } else if finished {
            &line[..line.len() - 1]
        } else {
            // Unfinished tail: a CR at its very end may still become a CRLF.
            line.strip_suffix(b"\r").unwrap_or(line)
        };
        if (finished && !crlf) || content.contains(&b'\r') {
            bare = true;
        }
        if content.contains(&0) {
            nul = true;
        }
        if line.len() > max_line {
            long = true;
            continue;
        }
        let content = content.strip_prefix(b".").unwrap_or(content);
        if body.len() + content.len() + 2 > max_size {
            too_big = true;
        }
        if !too_big {
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
    }
    let body = if too_big {
        Err(reply::MESSAGE_TOO_BIG)
    } else if bare {
        Err(reply::BARE_LF_IN_DATA)
    } else if nul {
        Err(reply::NUL_IN_DATA)
    } else if long {
        Err(reply::DATA_LINE_TOO_LONG)
    } else {
        Ok(body)
    };
    Outcome {
        done,
        consumed,
        body,
    }
}

fuzz_target!(|data: &[u8]| {
    let [size_byte, line_byte, n_byte, rest @ ..] = data else {
        return;
    };
    let max_size = 1 + 8 * *size_byte as usize;
    let max_line = 3 + *line_byte as usize;
    let n = (*n_byte as usize % 16).min(rest.len());
    let (control, stream) = rest.split_at(n);
    let pieces: Vec<Piece> = control
        .iter()
        .map(|c| Piece {
            size: 1 + (*c as usize >> 1) % 64,
            take: c & 1 == 1,
        })
        .collect();

    let whole = run(stream, max_size, max_line, &[]);
    assert_eq!(
        whole,
        model(stream, max_size, max_line),
        "differs from the reference model"
    );
    let cut = run(stream, max_size, max_line, &pieces);
    assert_eq!(cut, whole, "cutting the stream changed the outcome");
    let bytewise = run(
        stream,
        max_size,
        max_line,
        &[Piece {
            size: 1,
            take: true,
        }],
    );
    assert_eq!(bytewise, whole, "feeding byte by byte changed the outcome");
});
