//! Splitting the command stream into lines (RFC 5321 §2.3.8: lines end with CRLF).
//!
//! The reader never holds more than `max_len` bytes of one line: a longer line is
//! discarded as it arrives and reported once its end is seen, so a client cannot make
//! the server buffer without bound.

use super::reply::{self, Reply};

/// One step of the reader over the bytes buffered so far.
#[derive(Debug, PartialEq, Eq)]
pub enum LineEvent<'a> {
    /// No complete line yet; `consumed` bytes may be dropped from the buffer.
    NeedMore { consumed: usize },
    /// A complete line without its CRLF.
    Line { consumed: usize, line: &'a [u8] },
    /// A complete line that breaks the rules; answer with the reply and go on.
    Invalid { consumed: usize, reply: Reply },
}

#[derive(Debug, Default)]
pub struct LineReader {
    /// Inside an over-long line whose start was already dropped.
    discarding: bool,
}

impl LineReader {
    pub fn next<'a>(&mut self, buf: &'a [u8], max_len: usize) -> LineEvent<'a> {
        let lf = buf.iter().position(|b| *b == b'\n');
        if self.discarding {
            return match lf {
                Some(i) => {
                    self.discarding = false;
                    LineEvent::Invalid {
                        consumed: i + 1,
                        reply: reply::LINE_TOO_LONG,
                    }
                }
                None => LineEvent::NeedMore {
                    consumed: buf.len(),
                },
            };
        }
        match lf {
            Some(i) if i + 1 > max_len => LineEvent::Invalid {
                consumed: i + 1,
                reply: reply::LINE_TOO_LONG,
            },
            Some(i) if i > 0 && buf[i - 1] == b'\r' => LineEvent::Line {
                consumed: i + 1,
                line: &buf[..i - 1],
            },
            Some(i) => LineEvent::Invalid {
                consumed: i + 1,
                reply: reply::BARE_LF_IN_COMMAND,
            },
            None if buf.len() > max_len => {
                self.discarding = true;
                LineEvent::NeedMore {
                    consumed: buf.len(),
                }
            }
            None => LineEvent::NeedMore { consumed: 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_crlf_lines() {
        let mut r = LineReader::default();
        let buf = b"NOOP\r\nQUIT\r\n";
        assert_eq!(
            r.next(buf, 100),
            LineEvent::Line {
                consumed: 6,
                line: b"NOOP"
            }
        );
        assert_eq!(
            r.next(&buf[6..], 100),
            LineEvent::Line {
                consumed: 6,
                line: b"QUIT"
            }
        );
        assert_eq!(r.next(b"NO", 100), LineEvent::NeedMore { consumed: 0 });
    }

    #[test]
    fn bare_lf_is_refused() {
        let mut r = LineReader::default();
        assert_eq!(
            r.next(b"NOOP\nQUIT\r\n", 100),
            LineEvent::Invalid {
                consumed: 5,
                reply: reply::BARE_LF_IN_COMMAND
            }
        );
    }

    #[test]
    fn long_line_is_discarded_in_pieces() {
        let mut r = LineReader::default();
        let chunk = [b'A'; 64];
        assert_eq!(r.next(&chunk, 32), LineEvent::NeedMore { consumed: 64 });
        assert_eq!(r.next(&chunk, 32), LineEvent::NeedMore { consumed: 64 });
        assert_eq!(
            r.next(b"AAA\r\nNOOP\r\n", 32),
            LineEvent::Invalid {
                consumed: 5,
                reply: reply::LINE_TOO_LONG
            }
        );
        assert_eq!(
            r.next(b"NOOP\r\n", 32),
            LineEvent::Line {
                consumed: 6,
                line: b"NOOP"
            }
        );
        let long = [b'B'; 40];
        let mut buf = long.to_vec();
        buf.extend_from_slice(b"\r\n");
        assert_eq!(
            r.next(&buf, 32),
            LineEvent::Invalid {
                consumed: 42,
                reply: reply::LINE_TOO_LONG
            }
        );
    }
}
