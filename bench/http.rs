//! The benchmarks' HTTP/1.1 client: one keep-alive connection, a request
//! written with one write, the response read by its Content-Length. Lighter
//! than a general client, so that on a machine the server shares, the
//! clients take as little of it as they can.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use muhr::Fail;

pub struct Conn<S> {
    io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: Vec::new(),
        }
    }

    /// POSTs `body` (JSON, or empty) with extra `headers`; returns the
    /// status and the response body.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), Fail> {
        self.send("POST", path, Some("application/json"), headers, body)
            .await
    }

    /// Sends `method` with `body` (sent with its Content-Length unless
    /// empty on a GET) of `content_type`; returns the status and the
    /// response body.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), Fail> {
        let io = |e: std::io::Error| Fail::internal(format!("HTTP: {e}"));
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        if let Some(t) = content_type {
            request.push_str(&format!("Content-Type: {t}\r\n"));
        }
        if method != "GET" || !body.is_empty() {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(body);
        self.io.write_all(&request).await.map_err(io)?;
        self.io.flush().await.map_err(io)?;
        let (status, length, start) = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| Fail::internal("response without content-length"))?;
                break (status, length, end + 4);
            }
            self.fill().await?;
        };
        while self.buf.len() < start + length {
            self.fill().await?;
        }
        let body = self.buf[start..start + length].to_vec();
        self.buf.drain(..start + length);
        Ok((status, body))
    }

    async fn fill(&mut self) -> Result<(), Fail> {
        let mut chunk = [0u8; 16384];
        let n = self
            .io
            .read(&mut chunk)
            .await
            .map_err(|e| Fail::internal(format!("HTTP: {e}")))?;
        if n == 0 {
            return Err(Fail::internal("connection closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}
