//! Reading one HTTP/1.1 request off a socket, for the in-test HTTP servers (hook
//! receiver, OTLP receiver).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;

/// A request's headers (names lower-cased) and body.
pub struct Request {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// Reads the request line, the headers and a `Content-Length` body; `None` when the
/// client went away.
pub fn read_request(stream: TcpStream) -> Option<Request> {
    read_request_from(&mut BufReader::new(stream))
}

/// [`read_request`] off a reader kept across requests (a kept-alive connection).
pub fn read_request_from(reader: &mut impl BufRead) -> Option<Request> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut request = Request {
        headers,
        body: Vec::new(),
    };
    let len: usize = request.header("content-length").parse().unwrap_or(0);
    request.body = vec![0; len];
    reader.read_exact(&mut request.body).ok()?;
    Some(request)
}
