//! The byte streams a connection runs over: plain TCP, or WebSocket binary frames
//! (subprotocol `mqtt`), behind one small reader/writer pair so the protocol code is shared.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Reads bytes from the client.
pub trait Reader: Send {
    /// Appends what arrives to `buf`; `Ok(0)` at the end of the stream.
    fn read(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;
}

/// Writes bytes to the client.
pub trait Writer: Send + 'static {
    /// Writes all of `data`.
    fn write(&mut self, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the sending side (the client sees the end of the stream).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

impl Reader for OwnedReadHalf {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() == 0 {
            // An idle connection holds no read buffer: it is allocated when bytes arrive.
            self.readable().await?;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        self.read_buf(buf).await
    }
}

impl Writer for OwnedWriteHalf {
    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all(data).await
    }
    async fn close(&mut self) {
        let _ = self.shutdown().await;
    }
}

/// The reading half of an MQTT-over-WebSocket connection.
pub struct WsReader(futures_util::stream::SplitStream<WebSocketStream<TcpStream>>);
/// The writing half of an MQTT-over-WebSocket connection.
pub struct WsWriter(futures_util::stream::SplitSink<WebSocketStream<TcpStream>, Message>);

impl Reader for WsReader {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.0.next().await {
                Some(Ok(Message::Binary(b))) => {
                    buf.extend_from_slice(&b);
                    return Ok(b.len());
                }
                // Control frames: tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket must use binary frames",
                    ))
                }
                Some(Ok(Message::Close(_))) | None => return Ok(0),
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
    }
}

impl Writer for WsWriter {
    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.0
            .send(Message::Binary(bytes::Bytes::copy_from_slice(data)))
            .await
            .map_err(io::Error::other)
    }
    async fn close(&mut self) {
        let _ = self.0.close().await;
    }
}

/// Accepts a WebSocket upgrade for MQTT: the `mqtt` subprotocol is echoed (a client offering
/// only other subprotocols is refused); frames and messages are bounded by `max_packet`.
pub async fn accept_ws(sock: TcpStream, max_packet: usize) -> io::Result<(WsReader, WsWriter)> {
    let cfg = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * max_packet + 64 * 1024)
        .max_frame_size(Some(max_packet + 64))
        .max_message_size(Some(max_packet + 64));
    let ws = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::accept_hdr_async_with_config(sock, select_subprotocol, Some(cfg)),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "WebSocket handshake timed out"))?
    .map_err(io::Error::other)?;
    let (sink, stream) = ws.split();
    Ok((WsReader(stream), WsWriter(sink)))
}

#[allow(clippy::result_large_err)]
fn select_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered: Vec<String> = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    match ["mqtt", "mqttv3.1.1", "mqttv3.1"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
    {
        Some(p) => {
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
            Ok(resp)
        }
        None if offered.is_empty() => Ok(resp),
        None => {
            let mut e = ErrorResponse::new(Some(
                "MQTT over WebSocket needs the subprotocol 'mqtt'".into(),
            ));
            *e.status_mut() = StatusCode::BAD_REQUEST;
            Err(e)
        }
    }
}
