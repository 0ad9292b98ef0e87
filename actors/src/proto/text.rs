//! Text from a peer (a remote server's reply, a hook's message) made fit to store, log
//! and quote in a reply or a DSN.

/// Longest remote text kept in the queue, the history and DSNs.
pub const MAX_TEXT: usize = 512;

/// Remote text made safe to store and quote: control characters (NUL, CR, LF ...)
/// become spaces, and it is cut at [`MAX_TEXT`] bytes on a character boundary.
pub fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}
