//! One client connection: reads size-prefixed request frames, hands each to a handler as soon
//! as it arrives (so produce requests in flight share fsyncs), and writes the responses back in
//! request order. Bad input closes the connection with a logged reason; it never panics.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::errors::KafkaError;
use crate::handlers;
use crate::KafkaBroker;

/// Requests a connection may have in flight before the reader stops reading (backpressure).
const MAX_IN_FLIGHT: usize = 32;

/// A response being prepared: `None` means "no response" (produce with acks=0).
pub type Pending = Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;

/// Why a frame could not be read.
enum FrameError {
    Eof,
    Io(std::io::Error),
    Refused(KafkaError),
}

async fn read_frame(rd: &mut (impl AsyncReadExt + Unpin), max: usize) -> Result<Bytes, FrameError> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Eof),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let size = i32::from_be_bytes(len);
    if size < 8 || size as usize > max {
        return Err(FrameError::Refused(KafkaError::FrameSize { size, max }));
    }
    let size = size as usize;
    // Grow with the bytes that actually arrive: a large claimed size reserves nothing up front.
    let mut buf = Vec::with_capacity(size.min(64 * 1024));
    (&mut *rd)
        .take(size as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(FrameError::Io)?;
    if buf.len() < size {
        return Err(FrameError::Refused(KafkaError::Truncated {
            got: buf.len(),
            want: size,
        }));
    }
    Ok(Bytes::from(buf))
}

/// Serves one connection until the client closes it, sends bad input, or the broker stops.
pub async fn run(sock: TcpStream, peer: SocketAddr, broker: Arc<KafkaBroker>) {
    let _ = sock.set_nodelay(true);
    debug!(%peer, "connection opened");
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            if let Some(bytes) = p.await {
                if let Err(e) = wr.write_all(&bytes).await {
                    debug!(error = %e, "write failed");
                    return;
                }
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut shutdown = broker.shutdown.clone();
    let max = broker.config.max_request_bytes;
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, max) => f,
            _ = shutdown.wait() => break,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(FrameError::Eof) => break,
            Err(FrameError::Io(e)) => {
                debug!(error = %e, "read failed");
                break;
            }
            Err(FrameError::Refused(reason)) => {
                warn!(%reason, "closing connection");
                break;
            }
        };
        match handlers::dispatch(&broker, frame) {
            Ok(p) => {
                if tx.send(p).await.is_err() {
                    break;
                }
            }
            Err(reason) => {
                warn!(%reason, "closing connection");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
    debug!(%peer, "connection closed");
}
