//! A MsgPack WebSocket client written from the protocol spec: messages are JSON values
//! here, encoded as MsgPack maps with string keys on the wire.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long `recv` waits by default.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// One client connection.
#[derive(Debug)]
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Inner messages of a BATCH frame not yet handed out.
    unpacked: std::collections::VecDeque<Value>,
}

/// What arrived instead of a message.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// A protocol message.
    Message(Value),
    /// A Close frame with code and reason.
    Closed(u16, String),
    /// Nothing within the timeout.
    Timeout,
}

/// MsgPack bytes of a JSON value (maps keep string keys).
pub fn encode(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("json encodes as msgpack")
}

/// JSON view of MsgPack bytes; binary strings become arrays of byte values.
pub fn decode(bytes: &[u8]) -> Value {
    let value = rmpv::decode::read_value(&mut &bytes[..]).expect("server sent valid msgpack");
    rmpv::ext::from_value(bytes_as_arrays(value)).expect("server message converts to json")
}

fn bytes_as_arrays(value: rmpv::Value) -> rmpv::Value {
    match value {
        rmpv::Value::Binary(bytes) => {
            rmpv::Value::Array(bytes.into_iter().map(rmpv::Value::from).collect())
        }
        rmpv::Value::Array(items) => {
            rmpv::Value::Array(items.into_iter().map(bytes_as_arrays).collect())
        }
        rmpv::Value::Map(entries) => rmpv::Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k, bytes_as_arrays(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The inner messages of a server BATCH (core.md §1.6: LE u32 count, then per message
/// an LE u32 length and its MsgPack bytes); panics if `message` is not a whole BATCH.
pub fn unpack_batch(message: &Value) -> Vec<Value> {
    assert_eq!(message["type"], "BATCH", "not a BATCH: {message}");
    let data: Vec<u8> = message["data"]
        .as_array()
        .expect("BATCH data is binary")
        .iter()
        .map(|b| {
            b.as_u64()
                .and_then(|b| u8::try_from(b).ok())
                .expect("a byte")
        })
        .collect();
    let inner = topgun_proto::wire::batch::unpack_batch_data(&data).expect("whole BATCH data");
    assert_eq!(message["count"], inner.len(), "count matches the data");
    inner.into_iter().map(decode).collect()
}

impl WsClient {
    /// Connects to a `ws://` URL.
    pub async fn connect(url: &str) -> WsClient {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        WsClient {
            stream,
            unpacked: std::collections::VecDeque::new(),
        }
    }

    /// Connects and authenticates with `token` (expects AUTH_REQUIRED, then AUTH_ACK).
    pub async fn connect_authed(url: &str, token: &str) -> WsClient {
        let mut client = Self::connect(url).await;
        let first = client.recv().await;
        assert_eq!(first["type"], "AUTH_REQUIRED", "first frame: {first}");
        client
            .send(&serde_json::json!({"type": "AUTH", "token": token}))
            .await;
        let ack = client.recv_type("AUTH_ACK").await;
        assert_eq!(ack["type"], "AUTH_ACK");
        client
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &Value) {
        self.send_raw(encode(message)).await;
    }

    /// Sends raw bytes as one binary frame.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.stream
            .send(Ws::Binary(bytes.into()))
            .await
            .expect("send frame");
    }

    /// Next protocol message or close, within `timeout`. The messages of a BATCH frame
    /// come one by one, as the client handles them (core.md §1.6).
    pub async fn next_within(&mut self, timeout: Duration) -> Received {
        if let Some(message) = self.unpacked.pop_front() {
            return Received::Message(message);
        }
        match self.next_frame_within(timeout).await {
            Received::Message(frame) if frame["type"] == "BATCH" => {
                self.unpacked.extend(unpack_batch(&frame));
                match self.unpacked.pop_front() {
                    Some(message) => Received::Message(message),
                    None => Received::Message(frame),
                }
            }
            other => other,
        }
    }

    /// The next frame as sent (a BATCH stays whole), within `timeout`.
    pub async fn next_frame_within(&mut self, timeout: Duration) -> Received {
        loop {
            let frame = match tokio::time::timeout(timeout, self.stream.next()).await {
                Err(_) => return Received::Timeout,
                Ok(None) => return Received::Closed(1006, String::new()),
                Ok(Some(Err(_))) => return Received::Closed(1006, String::new()),
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                Ws::Binary(bytes) => return Received::Message(decode(&bytes)),
                Ws::Close(frame) => {
                    return match frame {
                        Some(f) => Received::Closed(f.code.into(), f.reason.to_string()),
                        None => Received::Closed(1005, String::new()),
                    }
                }
                _ => continue,
            }
        }
    }

    /// The next frame as sent (a BATCH stays whole); panics on close or timeout.
    pub async fn recv_frame(&mut self) -> Value {
        assert!(
            self.unpacked.is_empty(),
            "messages of an earlier BATCH are unread"
        );
        match self.next_frame_within(RECV_TIMEOUT).await {
            Received::Message(m) => m,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Next protocol message; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.next_within(RECV_TIMEOUT).await {
            Received::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Skips messages until one of `type_name` arrives.
    pub async fn recv_type(&mut self, type_name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Received::Message(m) if m["type"] == type_name => return m,
                Received::Message(m) => {
                    if std::env::var_os("DEBUG_WS").is_some() {
                        eprintln!("skipped while waiting for {type_name}: {m}");
                    }
                    continue;
                }
                other => panic!("waiting for {type_name}: {other:?}"),
            }
        }
    }

    /// Asserts that nothing of `type_name` arrives within `wait` (others are skipped).
    pub async fn expect_no(&mut self, type_name: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.next_within(left).await {
                Received::Message(m) if m["type"] == type_name => {
                    panic!("unexpected {type_name}: {m}")
                }
                Received::Message(_) => continue,
                Received::Timeout => return,
                Received::Closed(code, reason) => panic!("closed ({code} {reason}) while waiting"),
            }
        }
    }

    /// Sends PING and waits for the PONG echo: proves the connection still works.
    pub async fn ping(&mut self) {
        let ts = 1_700_000_000_000u64 + u64::from(rand_u16());
        self.send(&serde_json::json!({"type": "PING", "timestamp": ts}))
            .await;
        let pong = self.recv_type("PONG").await;
        assert_eq!(pong["timestamp"], ts);
    }
}

fn rand_u16() -> u16 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff) as u16
}
