//! The DATA phase (RFC 5321 §4.1.1.4, §4.5.2): end detection and dot-unstuffing.
//!
//! The only end of data is `<CRLF>.<CRLF>`, where the first CRLF ends the previous line
//! (or is the end of the DATA command itself). `<LF>.<LF>`, `<LF>.<CRLF>`,
//! `<CR>.<CR>` and other variants do not end the message: they are content, and the
//! content is then refused as a whole (bare LF/CR), which closes the SMTP smuggling hole
//! (CVE-2023-51764 and relatives). Memory is bounded by `max_size` and `max_line`.

use super::reply::{self, Reply};

/// What went wrong with a message body; checked in this order when the body ends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BodyFaults {
    pub too_big: bool,
    pub bare_newline: bool,
    pub nul: bool,
    pub line_too_long: bool,
}

impl BodyFaults {
    pub fn reply(&self) -> Option<Reply> {
        if self.too_big {
            Some(reply::MESSAGE_TOO_BIG)
        } else if self.bare_newline {
            Some(reply::BARE_LF_IN_DATA)
        } else if self.nul {
            Some(reply::NUL_IN_DATA)
        } else if self.line_too_long {
            Some(reply::DATA_LINE_TOO_LONG)
        } else {
            None
        }
    }
}

/// Receives one message body. Feed it bytes with [`DataReceiver::feed`] until it says
/// the body is complete; bytes after the terminator are left for the command reader.
/// The unstuffed body collects in a buffer the caller may empty at any time with
/// [`DataReceiver::take_pending`] (to spool a large message to disk); the size limit
/// counts every byte received, taken or not.
#[derive(Debug)]
pub struct DataReceiver {
    /// Body bytes not yet taken by the caller.
    body: Vec<u8>,
    /// Body bytes received in all (after unstuffing), up to the limit.
    received: usize,
    max_size: usize,
    max_line: usize,
    faults: BodyFaults,
    /// The previous line ended with CRLF (true at the start: DATA's own CRLF).
    after_crlf: bool,
    /// Inside an over-long line whose start was not kept.
    discarding: bool,
    /// The last discarded byte was CR (a CRLF may be split across reads).
    discard_last_cr: bool,
}

impl DataReceiver {
    pub fn new(max_size: usize, max_line: usize) -> Self {
        DataReceiver {
            body: Vec::with_capacity(8192.min(max_size)),
            received: 0,
            max_size,
            max_line,
            faults: BodyFaults::default(),
            after_crlf: true,
            discarding: false,
            discard_last_cr: false,
        }
    }

    /// Consumes complete lines from `buf`. Returns the number of bytes consumed and
    /// whether the terminating `.` line was seen.
    pub fn feed(&mut self, buf: &[u8]) -> (usize, bool) {
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let Some(lf) = rest.iter().position(|b| *b == b'\n') else {
                if self.discarding || rest.len() > self.max_line {
                    // An over-long line: checked and dropped as it arrives.
                    self.discard(rest);
                    return (buf.len(), false);
                }
                return (pos, false);
            };
            let line = &rest[..=lf];
            pos += lf + 1;
            if self.discarding || line.len() > self.max_line {
                self.discard(&line[..lf]);
                let crlf = self.discard_last_cr;
                if !crlf {
                    self.faults.bare_newline = true;
                }
                self.after_crlf = crlf;
                self.discarding = false;
                self.discard_last_cr = false;
                continue;
            }
            if self.after_crlf && line == b".\r\n" {
                return (pos, true);
            }
            let crlf = lf > 0 && rest[lf - 1] == b'\r';
            let content = if crlf {
                &line[..line.len() - 2]
            } else {
                &line[..line.len() - 1]
            };
            if !crlf || content.contains(&b'\r') {
                self.faults.bare_newline = true;
            }
            if content.contains(&0) {
                self.faults.nul = true;
            }
            self.after_crlf = crlf;
            // Dot-unstuffing (§4.5.2): a leading dot was doubled by the client.
            let content = content.strip_prefix(b".").unwrap_or(content);
            if self.received + content.len() + 2 > self.max_size {
                self.faults.too_big = true;
            }
            if !self.faults.too_big {
                self.body.extend_from_slice(content);
                self.body.extend_from_slice(b"\r\n");
                self.received += content.len() + 2;
            }
        }
        (pos, false)
    }

    /// Part of an over-long line (without its LF): not kept, but checked for the same
    /// faults as any line, so the outcome never depends on how the bytes were split.
    fn discard(&mut self, bytes: &[u8]) {
        self.faults.line_too_long = true;
        self.discarding = true;
        for &b in bytes {
            if self.discard_last_cr {
                self.faults.bare_newline = true;
            }
            if b == 0 {
                self.faults.nul = true;
            }
            self.discard_last_cr = b == b'\r';
        }
    }

    /// Body bytes received so far (after unstuffing), taken ones included.
    pub fn len(&self) -> usize {
        self.received
    }

    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// Body bytes held and not yet taken.
    pub fn pending(&self) -> usize {
        self.body.len()
    }

    /// Takes the body bytes held so far; later bytes collect anew. A body already over
    /// the limit keeps nothing (it will be refused), so there is nothing to take.
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// Whether the body is already known to be refused at its end (too big, bare
    /// newline, NUL, over-long line): nothing more of it needs keeping.
    pub fn refused(&self) -> bool {
        self.faults.reply().is_some()
    }

    /// The rest of the finished body (what was not taken), or the reply that refuses it.
    pub fn finish(self) -> Result<Vec<u8>, Reply> {
        match self.faults.reply() {
            Some(reply) => Err(reply),
            None => Ok(self.body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (usize, bool, DataReceiver) {
        let mut d = DataReceiver::new(1 << 20, 1000);
        let (n, done) = d.feed(input);
        (n, done, d)
    }

    #[test]
    fn simple_body_and_pipelined_rest() {
        let (n, done, d) = run(b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n");
        assert!(done);
        assert_eq!(n, 24);
        assert_eq!(d.finish().unwrap(), b"Subject: hi\r\n\r\nbody\r\n");
    }

    #[test]
    fn empty_body() {
        let (n, done, d) = run(b".\r\n");
        assert!(done && n == 3);
        assert!(d.finish().unwrap().is_empty());
    }

    #[test]
    fn dot_unstuffing() {
        let (_, done, d) = run(b"..leading\r\n...\r\n.\r\n");
        assert!(done);
        assert_eq!(d.finish().unwrap(), b".leading\r\n..\r\n");
    }

    #[test]
    fn split_across_feeds() {
        let mut d = DataReceiver::new(1 << 20, 1000);
        let input = b"line one\r\nline two\r\n.\r\n";
        let mut buf = Vec::new();
        let mut done = false;
        for b in input {
            buf.push(*b);
            let (n, fin) = d.feed(&buf);
            buf.drain(..n);
            done |= fin;
        }
        assert!(done);
        assert_eq!(d.finish().unwrap(), b"line one\r\nline two\r\n");
    }

    #[test]
    fn smuggling_lf_dot_lf_does_not_end_data() {
        let input = b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@x.test>\r\n";
        let (n, done, _) = run(input);
        assert!(!done);
        assert_eq!(n, input.len());
    }

    #[test]
    fn smuggling_variants_do_not_end_data() {
        for input in [
            &b"a\r\n\n.\r\n"[..],
            b"a\n.\r\n",
            b"a\r.\r\n",
            b"a\r\n.\n",
            b"a\r\n.\r\r\n",
            b"a\r\n\r.\r\n",
        ] {
            let (_, done, d) = run(input);
            assert!(!done, "{input:?} ended DATA");
            assert!(d.faults.bare_newline, "{input:?} not flagged");
        }
    }

    #[test]
    fn bare_lf_body_is_refused_at_the_real_end() {
        let (_, done, d) = run(b"a\nb\r\n.\r\n");
        assert!(done);
        assert_eq!(d.finish().unwrap_err(), reply::BARE_LF_IN_DATA);
    }

    #[test]
    fn nul_is_refused() {
        let (_, done, d) = run(b"a\0b\r\n.\r\n");
        assert!(done);
        assert_eq!(d.finish().unwrap_err(), reply::NUL_IN_DATA);
    }

    #[test]
    fn too_big_stops_buffering() {
        let mut d = DataReceiver::new(10, 1000);
        let (_, done) = d.feed(b"0123456789\r\nmore\r\n.\r\n");
        assert!(done);
        assert!(d.len() <= 10);
        assert_eq!(d.finish().unwrap_err(), reply::MESSAGE_TOO_BIG);
    }

    #[test]
    fn long_line_bounded_and_refused() {
        let mut d = DataReceiver::new(1 << 20, 16);
        let (n, done) = d.feed(&[b'x'; 100]);
        assert_eq!((n, done), (100, false));
        let (_, done) = d.feed(b"yy\r\n.\r\n");
        assert!(done);
        assert_eq!(d.finish().unwrap_err(), reply::DATA_LINE_TOO_LONG);
    }

    #[test]
    fn crlf_split_inside_discarded_line() {
        let mut d = DataReceiver::new(1 << 20, 16);
        let mut long = vec![b'x'; 40];
        long.push(b'\r');
        d.feed(&long);
        let (_, done) = d.feed(b"\n.\r\n");
        assert!(done);
        assert_eq!(d.finish().unwrap_err(), reply::DATA_LINE_TOO_LONG);
    }

    #[test]
    fn taken_pieces_make_the_whole_body_and_count_toward_the_limit() {
        let mut d = DataReceiver::new(20, 1000);
        d.feed(b"0123456789\r\n");
        let first = d.take_pending();
        assert_eq!((d.len(), d.pending()), (12, 0));
        let (_, done) = d.feed(b"abc\r\n.\r\n");
        assert!(done);
        let mut body = first;
        body.extend(d.finish().unwrap());
        assert_eq!(body, b"0123456789\r\nabc\r\n");

        let mut d = DataReceiver::new(20, 1000);
        d.feed(b"0123456789\r\n");
        d.take_pending();
        let (_, done) = d.feed(b"0123456789\r\n.\r\n");
        assert!(done && d.refused());
        assert_eq!(d.finish().unwrap_err(), reply::MESSAGE_TOO_BIG);
    }

    /// A tiny deterministic generator, so the property tests need no extra crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random bodies made of the bytes that matter (CR, LF, dot, NUL, text), fed whole
    /// and in random pieces: the outcome must not depend on how the bytes arrive, and
    /// memory stays within the limits.
    #[test]
    fn chunking_never_changes_the_outcome() {
        let alphabet = [b'\r', b'\n', b'.', b'a', b'\0', b' '];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = (rng.next() % 200) as usize;
            let mut input: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            input.extend_from_slice(b"\r\n.\r\n");
            let whole = {
                let mut d = DataReceiver::new(64, 32);
                let (n, done) = d.feed(&input);
                assert!(d.len() <= 64);
                (n, done, d.finish())
            };
            let mut d = DataReceiver::new(64, 32);
            let mut buf = Vec::new();
            let mut consumed_total = 0;
            let mut done = false;
            let mut pos = 0;
            while pos < input.len() && !done {
                let step = 1 + (rng.next() % 7) as usize;
                let end = (pos + step).min(input.len());
                buf.extend_from_slice(&input[pos..end]);
                pos = end;
                let (n, fin) = d.feed(&buf);
                buf.drain(..n);
                consumed_total += n;
                done = fin;
                assert!(buf.len() <= 32 + 7, "unbounded buffering");
            }
            assert_eq!(done, whole.1, "{input:?}");
            if done {
                assert_eq!(consumed_total, whole.0, "{input:?}");
                assert_eq!(d.finish(), whole.2, "{input:?}");
            }
        }
    }
}
