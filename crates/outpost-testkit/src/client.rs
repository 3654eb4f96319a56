//! A hand-written HTTP/1.1 client for tests: writes the request bytes itself and parses the response
//! itself (status line, headers, Content-Length / chunked / read-to-close bodies), deliberately
//! without hyper so tests observe exactly what arrives on the wire. Also [`raw_request`] for
//! arbitrary (malformed, smuggling) byte sequences.

use std::io::{Error, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest a whole [`http_request`] may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response head accepted.
const MAX_HEAD: usize = 1024 * 1024;

/// A parsed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleResponse {
    pub status: u16,
    /// Header fields in wire order, names lower-cased, values with surrounding whitespace trimmed.
    pub headers: Vec<(String, String)>,
    /// The body after removing chunked framing.
    pub body: Vec<u8>,
}

impl SimpleResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in wire order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with `Host: host`, the extra `headers` and `Connection: close`.
pub async fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<SimpleResponse> {
    http_request(addr, "GET", host, path, headers, b"").await
}

/// Any method. Adds `Host`, `Connection: close` (unless `headers` has a Connection) and, when `body`
/// is non-empty and `headers` sets neither, `Content-Length`. A HEAD response is read without a body.
/// Fails with `TimedOut` after 30 s.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<SimpleResponse> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has("connection") {
        request.push_str("Connection: close\r\n");
    }
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let head_request = method.eq_ignore_ascii_case("HEAD");

    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        read_response(BufReader::new(stream), head_request).await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::TimedOut,
            format!("{method} {path} to {addr} timed out"),
        )),
    }
}

/// Writes `bytes` as-is and returns everything read until the peer closes, an error occurs or
/// `timeout` elapses (what was read so far is returned in every case). Fails only if the connection
/// cannot be made.
pub async fn raw_request(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(stream) => stream?,
        Err(_) => return Err(Error::new(ErrorKind::TimedOut, "connect timed out")),
    };
    stream.set_nodelay(true)?;
    // A server may answer and close before reading everything; still collect what it sent.
    let _ = tokio::time::timeout_at(deadline, stream.write_all(bytes)).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    Ok(out)
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidData, msg.into())
}

/// Reads one CRLF- (or bare LF-) terminated line without the terminator; `None` at EOF.
async fn read_line(
    reader: &mut BufReader<TcpStream>,
    budget: &mut usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = reader.read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    *budget = budget
        .checked_sub(n)
        .ok_or_else(|| invalid("response head too large"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else {
        return Err(Error::new(ErrorKind::UnexpectedEof, "truncated line"));
    }
    Ok(Some(line))
}

async fn read_response(
    mut reader: BufReader<TcpStream>,
    head_request: bool,
) -> std::io::Result<SimpleResponse> {
    loop {
        let mut budget = MAX_HEAD;
        let status_line = read_line(&mut reader, &mut budget).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed before a response",
            )
        })?;
        let status_line = String::from_utf8_lossy(&status_line).into_owned();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s| (100..1000).contains(s))
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;

        let mut headers = Vec::new();
        loop {
            let line = read_line(&mut reader, &mut budget)
                .await?
                .ok_or_else(|| Error::new(ErrorKind::UnexpectedEof, "truncated response head"))?;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        // Interim responses (100 Continue, 103 Early Hints): skip to the final one.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let mut response = SimpleResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(response);
        }
        let chunked = response
            .header_all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .next_back()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        response.body = if chunked {
            read_chunked(&mut reader).await?
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).await?;
            body
        } else {
            let mut body = Vec::new();
            reader.read_to_end(&mut body).await?;
            body
        };
        return Ok(response);
    }
}

/// Decodes a chunked body (RFC 9112 §7.1), ignoring chunk extensions and trailer fields.
async fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut budget = MAX_HEAD;
        let line = read_line(reader, &mut budget)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::UnexpectedEof, "truncated chunked body"))?;
        let line = String::from_utf8_lossy(&line).into_owned();
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailer section, ended by an empty line.
            loop {
                match read_line(reader, &mut budget).await? {
                    Some(line) if !line.is_empty() => continue,
                    _ => return Ok(body),
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            return Err(invalid("chunk data not followed by CRLF"));
        }
    }
}
