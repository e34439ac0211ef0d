//! The `/ws` endpoint (also served on `/`): upgrade, one reader loop that handles the
//! connection's messages strictly in arrival order, and one writer task that drains the
//! bounded outbound queue.

mod extended;
mod merkle;
mod queries;
mod search;
pub mod session;

pub(crate) use search::run as search_http;

use crate::live::connections::{ConnHandle, Outbound, OutboundQueues};
use crate::state::{Gateway, LifecycleState};
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use session::{Flow, Session};
use std::sync::Arc;
use std::time::Duration;
use topgun_proto::wire::{AuthRequired, Message};

/// Close code for a message over the size limit (RFC 6455 "message too big").
const CLOSE_TOO_BIG: u16 = 1009;

/// Axum handler: upgrades and runs the connection.
pub async fn upgrade(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if gw.state() >= LifecycleState::Draining {
        return (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "server shutting down",
        )
            .into_response();
    }
    let limits = gw.network.connection.clone();
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    ws.max_message_size(limits.max_message_size)
        .max_frame_size(limits.max_message_size)
        .read_buffer_size(limits.ws_read_buffer_size)
        .write_buffer_size(limits.ws_write_buffer_size)
        .max_write_buffer_size(limits.ws_max_write_buffer_size)
        .on_upgrade(move |socket| run(gw, socket, host))
}

async fn run(gw: Arc<Gateway>, socket: WebSocket, host: String) {
    let limits = gw.network.connection.clone();
    let (conn, queues) = ConnHandle::new(
        gw.next_conn_id(),
        limits.outbound_channel_capacity,
        limits.send_timeout,
        gw.metrics.clone(),
    );
    gw.connections.insert(conn.clone());
    gw.metrics.active_connections.inc();
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(write_loop(sink, queues, limits.send_timeout));

    let mut session = Session::new(gw.clone(), conn.clone(), host);
    if gw.auth.is_some() {
        // The very first frame, without waiting for input: token-less clients wait only 500 ms.
        conn.reply(&Message::AuthRequired(AuthRequired {})).await;
    }
    loop {
        let next = tokio::time::timeout(limits.idle_timeout, stream.next()).await;
        let frame = match next {
            Err(_) => {
                conn.close(4002, "idle timeout");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                if is_capacity_error(&err) {
                    gw.metrics.bad_frames.with_label_values(&["too_big"]).inc();
                    conn.close(CLOSE_TOO_BIG, "message too big");
                }
                tracing::debug!(conn = conn.id, error = %err, "websocket read ended");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            WsMessage::Binary(bytes) => {
                let _guard = gw.track();
                if session.handle(&bytes).await == Flow::Stop {
                    break;
                }
            }
            // Text frames are not part of the protocol; ignored as upstream does.
            WsMessage::Text(_) => gw.metrics.bad_frames.with_label_values(&["text"]).inc(),
            WsMessage::Close(_) => break,
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
        }
    }
    session.close();
    gw.connections.remove(conn.id);
    gw.metrics.active_connections.dec();
    drop(conn);
    // The writer ends once every handle is dropped or after it sent a Close.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Slowest link a client may have and still receive large frames (≈1 Mbit/s).
const MIN_CLIENT_BYTES_PER_SEC: u64 = 128 * 1024;

/// How long writing a frame of `len` bytes may take: the send timeout, plus the frame's
/// transfer time on the slowest link we serve, so a big frame (a delta push, a query
/// page) does not disconnect a slow but reading client.
fn write_deadline(send_timeout: Duration, len: usize) -> Duration {
    send_timeout + Duration::from_millis(len as u64 * 1000 / MIN_CLIENT_BYTES_PER_SEC)
}

fn is_capacity_error(err: &axum::Error) -> bool {
    let text = err.to_string();
    text.contains("Space limit exceeded")
        || text.contains("too long")
        || text.contains("Message too big")
        || text.contains("capacity")
}

async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, WsMessage>,
    mut queues: OutboundQueues,
    send_timeout: Duration,
) {
    loop {
        let next = tokio::select! {
            biased;
            close = queues.control.recv() => close,
            frame = queues.frames.recv() => frame,
        };
        let Some(out) = next else { break };
        match out {
            Outbound::Frame(bytes) => {
                let len = bytes.len();
                let limit = write_deadline(send_timeout, len);
                match tokio::time::timeout(limit, sink.send(WsMessage::Binary(bytes))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        tracing::debug!(bytes = len, error = %err, "websocket write failed");
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(bytes = len, "websocket write timed out");
                        break;
                    }
                }
            }
            Outbound::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ =
                    tokio::time::timeout(send_timeout, sink.send(WsMessage::Close(Some(frame))))
                        .await;
                break;
            }
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_frames_get_their_transfer_time_on_a_slow_link() {
        let base = Duration::from_secs(5);
        assert_eq!(write_deadline(base, 100), base);
        assert_eq!(
            write_deadline(base, 4 * 1024 * 1024),
            base + Duration::from_secs(32)
        );
    }
}
