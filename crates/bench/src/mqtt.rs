//! A minimal MQTT 3.1.1 client over raw sockets for load generation: CONNECT, SUBSCRIBE,
//! PUBLISH at QoS 0/1/2 with a window of messages in flight, and a reader that counts what
//! arrives and acknowledges it. No library: nothing between the bench and the wire.

use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

fn varint(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut b = (n & 0x7f) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if n == 0 {
            return;
        }
    }
}

fn string(out: &mut BytesMut, s: &[u8]) {
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

/// CONNECT with clean session `clean` and keep-alive `keepalive` seconds.
pub fn connect(client_id: &str, clean: bool, keepalive: u16) -> Bytes {
    let mut body = BytesMut::new();
    string(&mut body, b"MQTT");
    body.put_u8(4);
    body.put_u8(if clean { 0x02 } else { 0 });
    body.put_u16(keepalive);
    string(&mut body, client_id.as_bytes());
    frame(0x10, &body)
}

/// SUBSCRIBE to one filter.
pub fn subscribe(pid: u16, filter: &str, qos: u8) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(pid);
    string(&mut body, filter.as_bytes());
    body.put_u8(qos);
    frame(0x82, &body)
}

/// Appends a PUBLISH to `out`.
pub fn publish(out: &mut BytesMut, topic: &str, payload: &[u8], qos: u8, pid: u16) {
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    out.put_u8(0x30 | (qos << 1));
    varint(out, len);
    string(out, topic.as_bytes());
    if qos > 0 {
        out.put_u16(pid);
    }
    out.put_slice(payload);
}

fn frame(first: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(first);
    varint(&mut out, body.len());
    out.put_slice(body);
    out.freeze()
}

/// One decoded packet: first byte and body.
pub struct Packet {
    /// Type and flags.
    pub first: u8,
    /// Body.
    pub body: Bytes,
}

/// Reads packets from a socket.
pub struct PacketReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

impl PacketReader {
    /// Wraps the reading half.
    pub fn new(rd: OwnedReadHalf) -> Self {
        Self {
            rd,
            buf: BytesMut::with_capacity(256 * 1024),
        }
    }

    /// The next packet, `None` at the end of the stream.
    pub async fn next(&mut self) -> io::Result<Option<Packet>> {
        loop {
            if let Some(p) = self.parse() {
                return Ok(Some(p));
            }
            if self.buf.capacity() - self.buf.len() < 64 * 1024 {
                self.buf.reserve(256 * 1024);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// True when more bytes are already buffered (another packet may follow at once).
    pub fn buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    fn parse(&mut self) -> Option<Packet> {
        if self.buf.len() < 2 {
            return None;
        }
        let (mut n, mut mult, mut i) = (0usize, 1usize, 1usize);
        loop {
            let b = *self.buf.get(i)?;
            n += (b & 0x7f) as usize * mult;
            mult *= 128;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if self.buf.len() < i + n {
            return None;
        }
        let first = self.buf[0];
        self.buf.advance(i);
        let body = self.buf.split_to(n).freeze();
        Some(Packet { first, body })
    }
}

/// Connects and waits for CONNACK; returns the halves.
pub async fn open(
    addr: &str,
    client_id: &str,
    clean: bool,
    keepalive: u16,
) -> io::Result<(PacketReader, OwnedWriteHalf)> {
    let sock = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    sock.set_nodelay(true)?;
    let (rd, mut wr) = sock.into_split();
    wr.write_all(&connect(client_id, clean, keepalive)).await?;
    let mut rd = PacketReader::new(rd);
    match tokio::time::timeout(Duration::from_secs(30), rd.next()).await {
        Ok(Ok(Some(p))) if p.first == 0x20 && p.body.get(1) == Some(&0) => Ok((rd, wr)),
        Ok(Ok(Some(p))) => Err(io::Error::other(format!(
            "CONNACK refused: {:02x} {:?}",
            p.first, p.body
        ))),
        Ok(Ok(None)) => Err(io::Error::other("closed before CONNACK")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no CONNACK")),
    }
}

/// Subscribes and waits for SUBACK.
pub async fn subscribe_and_wait(
    rd: &mut PacketReader,
    wr: &mut OwnedWriteHalf,
    filter: &str,
    qos: u8,
) -> io::Result<()> {
    wr.write_all(&subscribe(1, filter, qos)).await?;
    loop {
        match rd.next().await? {
            Some(p) if p.first == 0x90 => return Ok(()),
            Some(_) => {}
            None => return Err(io::Error::other("closed before SUBACK")),
        }
    }
}
