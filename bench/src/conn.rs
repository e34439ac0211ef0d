//! One client connection: WebSocket handshake, in-band authentication (core.md §2), frame
//! encoding and decoding, and byte accounting.

use crate::decode::{decode_binary, decode_text, ServerMsg};
use crate::encode::{self, to_bytes};
use crate::error::BenchError;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use rmpv::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connection authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Send AUTH with this token and wait for AUTH_ACK.
    Token(String),
    /// Send nothing; fail if the server asks for a token.
    None,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `ws://host:port/ws` or similar.
    pub url: String,
    /// Authentication.
    pub auth: Auth,
    /// Limit for the handshake including AUTH_ACK.
    pub handshake_timeout: Duration,
}

/// Bytes and frames moved by one connection (WebSocket payloads, without framing overhead).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Data frames sent.
    pub frames_sent: u64,
    /// Data frames received.
    pub frames_received: u64,
}

impl Traffic {
    /// What moved between `earlier` and `self`.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            bytes_received: self.bytes_received - earlier.bytes_received,
            frames_sent: self.frames_sent - earlier.frames_sent,
            frames_received: self.frames_received - earlier.frames_received,
        }
    }

    /// Both directions.
    pub fn total_bytes(&self) -> u64 {
        self.bytes_sent + self.bytes_received
    }
}

#[derive(Debug, Default)]
struct Counters {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Traffic {
        Traffic {
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
        }
    }
}

/// The sending half of a connection.
pub struct ConnWriter {
    sink: SplitSink<Ws, Message>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ConnWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnWriter")
            .field("traffic", &self.counters.snapshot())
            .finish()
    }
}

impl ConnWriter {
    /// Sends one protocol message as one binary frame.
    pub async fn send(&mut self, msg: &Value) -> Result<(), BenchError> {
        let bytes = to_bytes(msg)?;
        let len = bytes.len() as u64;
        self.sink.send(Message::Binary(bytes.into())).await?;
        self.counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        self.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends one message unless the socket stays blocked until `deadline`. Returns false when
    /// the message was not accepted; once accepted it goes out at the latest with the close.
    pub async fn send_before(
        &mut self,
        msg: &Value,
        deadline: tokio::time::Instant,
    ) -> Result<bool, BenchError> {
        let bytes = to_bytes(msg)?;
        let len = bytes.len() as u64;
        // `feed` only completes once the frame is queued, so cancelling it at the deadline
        // drops the frame whole; a cancelled flush leaves it queued, never half-written.
        match tokio::time::timeout_at(deadline, self.sink.feed(Message::Binary(bytes.into()))).await
        {
            Err(_) => return Ok(false),
            Ok(r) => r?,
        }
        self.counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        self.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        if let Ok(r) = tokio::time::timeout_at(deadline, self.sink.flush()).await {
            r?;
        }
        Ok(true)
    }

    /// Writes out frames still queued — [`Self::send_before`] leaves its frame queued when
    /// the deadline cuts the flush short; false if that takes longer than `limit`.
    pub async fn flush_within(&mut self, limit: Duration) -> Result<bool, BenchError> {
        match tokio::time::timeout(limit, self.sink.flush()).await {
            Ok(r) => {
                r?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Sends a close frame; errors are irrelevant because the run is over, and a server that
    /// stopped reading gets two seconds before the connection is simply dropped.
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sink.close()).await;
    }

    /// Traffic of the whole connection so far.
    pub fn traffic(&self) -> Traffic {
        self.counters.snapshot()
    }
}

/// The receiving half of a connection.
pub struct ConnReader {
    stream: SplitStream<Ws>,
    queue: VecDeque<ServerMsg>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ConnReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnReader")
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl ConnReader {
    /// The next protocol message; a close or stream end is `Disconnected`.
    pub async fn recv(&mut self) -> Result<ServerMsg, BenchError> {
        loop {
            if let Some(msg) = self.queue.pop_front() {
                return Ok(msg);
            }
            let frame = match self.stream.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Err(BenchError::Disconnected(e.to_string())),
                None => return Err(BenchError::Disconnected("stream ended".into())),
            };
            let decoded = match frame {
                Message::Binary(b) => {
                    self.count(b.len());
                    decode_binary(&b)?
                }
                Message::Text(t) => {
                    self.count(t.len());
                    decode_text(t.as_str())?
                }
                Message::Close(frame) => {
                    let why = frame.map_or_else(
                        || "no close frame".to_string(),
                        |f| format!("code {} {:?}", u16::from(f.code), f.reason.as_str()),
                    );
                    return Err(BenchError::Disconnected(why));
                }
                // Control frames are answered by the WebSocket library.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            self.queue.extend(decoded);
        }
    }

    /// The next message, or `None` if nothing arrives within `limit`.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Option<ServerMsg>, BenchError> {
        match tokio::time::timeout(limit, self.recv()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    fn count(&self, len: usize) {
        self.counters
            .bytes_received
            .fetch_add(len as u64, Ordering::Relaxed);
        self.counters
            .frames_received
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Traffic of the whole connection so far.
    pub fn traffic(&self) -> Traffic {
        self.counters.snapshot()
    }
}

/// An authenticated connection.
#[derive(Debug)]
pub struct Conn {
    /// Sending half.
    pub writer: ConnWriter,
    /// Receiving half.
    pub reader: ConnReader,
}

/// How long a tokenless client waits for AUTH_REQUIRED before assuming no-auth (core.md §2.2).
const AUTH_REQUIRED_GRACE: Duration = Duration::from_millis(500);

impl Conn {
    /// Opens a WebSocket and authenticates.
    pub async fn connect(opts: &ConnectOptions) -> Result<Conn, BenchError> {
        let dial = tokio_tungstenite::connect_async_with_config(opts.url.as_str(), None, true);
        let (ws, _) = tokio::time::timeout(opts.handshake_timeout, dial)
            .await
            .map_err(|_| {
                BenchError::Timeout(
                    opts.handshake_timeout,
                    format!("the WebSocket handshake with {}", opts.url),
                )
            })?
            .map_err(|source| BenchError::Connect {
                url: opts.url.clone(),
                source,
            })?;
        let (sink, stream) = ws.split();
        let counters = Arc::new(Counters::default());
        let mut conn = Conn {
            writer: ConnWriter {
                sink,
                counters: counters.clone(),
            },
            reader: ConnReader {
                stream,
                queue: VecDeque::new(),
                counters,
            },
        };
        match &opts.auth {
            Auth::Token(token) => conn.authenticate(token, opts.handshake_timeout).await?,
            Auth::None => conn.expect_no_auth().await?,
        }
        Ok(conn)
    }

    async fn authenticate(&mut self, token: &str, limit: Duration) -> Result<(), BenchError> {
        // Like the TypeScript client: AUTH right away, without waiting for AUTH_REQUIRED.
        self.writer.send(&encode::auth(token)).await?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.reader.recv_timeout(left).await? {
                Some(ServerMsg::AuthAck) => return Ok(()),
                Some(ServerMsg::AuthFail { error }) => return Err(BenchError::AuthFailed(error)),
                Some(ServerMsg::AuthRequired) => continue,
                Some(other) => {
                    return Err(BenchError::Protocol(format!(
                        "{} arrived before AUTH_ACK (core.md §1.11)",
                        other.kind()
                    )));
                }
                None => {
                    return Err(BenchError::Timeout(
                        limit,
                        "AUTH_ACK (a server without authentication may ignore AUTH: try --no-auth)"
                            .into(),
                    ))
                }
            }
        }
    }

    async fn expect_no_auth(&mut self) -> Result<(), BenchError> {
        match self.reader.recv_timeout(AUTH_REQUIRED_GRACE).await? {
            Some(ServerMsg::AuthRequired) => Err(BenchError::AuthRequired),
            Some(other) => {
                self.reader.queue.push_front(other);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Value) -> Result<(), BenchError> {
        self.writer.send(msg).await
    }

    /// Receives one message.
    pub async fn recv(&mut self) -> Result<ServerMsg, BenchError> {
        self.reader.recv().await
    }

    /// Receives one message or `None` after `limit`.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Option<ServerMsg>, BenchError> {
        self.reader.recv_timeout(limit).await
    }

    /// Traffic of the whole connection so far.
    pub fn traffic(&self) -> Traffic {
        self.writer.traffic()
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        self.writer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_difference() {
        let a = Traffic {
            bytes_sent: 10,
            bytes_received: 100,
            frames_sent: 1,
            frames_received: 2,
        };
        let b = Traffic {
            bytes_sent: 25,
            bytes_received: 400,
            frames_sent: 3,
            frames_received: 9,
        };
        let d = b.since(&a);
        assert_eq!(
            d,
            Traffic {
                bytes_sent: 15,
                bytes_received: 300,
                frames_sent: 2,
                frames_received: 7
            }
        );
        assert_eq!(d.total_bytes(), 315);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connect_error() {
        // Port 1 on loopback is closed on any sane machine.
        let opts = ConnectOptions {
            url: "ws://127.0.0.1:1/ws".into(),
            auth: Auth::None,
            handshake_timeout: Duration::from_secs(5),
        };
        assert!(matches!(
            Conn::connect(&opts).await,
            Err(BenchError::Connect { .. })
        ));
    }
}
