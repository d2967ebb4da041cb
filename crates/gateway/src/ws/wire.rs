//! WebSocket framing (RFC 6455) on top of actix-http's codec: server frames
//! encoded once into the bytes that go on the wire (a server frame is not
//! masked, so one frame's bytes serve every subscriber), and client frames
//! decoded from a read buffer that holds only what an unfinished frame needs.

use actix_http::ws::{Codec, Frame, Item, OpCode, Parser, ProtocolError};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder as _;

/// A text frame's wire bytes.
pub fn text(payload: &[u8]) -> Bytes {
    message(payload, OpCode::Text)
}

/// A close frame's wire bytes (a reason is cut to fit the 125-byte limit of
/// control frames, at a character boundary).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    message(&payload, OpCode::Close)
}

/// An empty close frame: the echo of a client's close that carried no code.
pub fn close_empty() -> Bytes {
    message(b"", OpCode::Close)
}

pub fn ping() -> Bytes {
    message(b"", OpCode::Ping)
}

pub fn pong(payload: &[u8]) -> Bytes {
    message(payload, OpCode::Pong)
}

fn message(payload: &[u8], op: OpCode) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut out, payload, op, true, false);
    out.freeze()
}

/// A whole message from the client (fragments reassembled).
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    Close,
}

/// Why a client's bytes are not a WebSocket stream this server takes.
#[derive(Debug, PartialEq, Eq)]
pub enum Violation {
    /// A message larger than the limit (close 1009).
    TooBig,
    /// Anything else that breaks RFC 6455 (close 1002).
    Protocol(String),
}

impl From<ProtocolError> for Violation {
    fn from(error: ProtocolError) -> Self {
        match error {
            ProtocolError::Overflow => Violation::TooBig,
            other => Violation::Protocol(other.to_string()),
        }
    }
}

/// How much a read asks for at once: small, since a client sends ops and
/// pongs, and only a frame that is larger grows the buffer.
const READ_CHUNK: usize = 512;

/// Client frames as they arrive: the unread bytes, and the fragments of a
/// message not yet finished. Empty between messages, it holds no memory.
pub struct Reader {
    buf: BytesMut,
    codec: Codec,
    max: usize,
    /// A fragmented message so far: whether it is text, and its bytes.
    partial: Option<(bool, BytesMut)>,
}

impl Reader {
    /// `leftover`: bytes that arrived with the handshake.
    pub fn new(max_message_bytes: usize, leftover: &[u8]) -> Self {
        Self {
            buf: BytesMut::from(leftover),
            codec: Codec::new().max_size(max_message_bytes),
            max: max_message_bytes,
            partial: None,
        }
    }

    /// Room for the next read.
    pub fn buffer(&mut self) -> &mut BytesMut {
        self.buf.reserve(READ_CHUNK);
        &mut self.buf
    }

    /// The next whole message in the buffer, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Inbound>, Violation> {
        loop {
            // A frame that says it is too large is refused before its bytes
            // are buffered (the codec would wait for all of them).
            if declared_len(&self.buf).is_some_and(|len| len > self.max as u64) {
                return Err(Violation::TooBig);
            }
            let Some(frame) = self.codec.decode(&mut self.buf)? else {
                if self.buf.is_empty() {
                    // Nothing pending: give the buffer back.
                    self.buf = BytesMut::new();
                }
                return Ok(None);
            };
            let message = match frame {
                Frame::Text(bytes) => Inbound::Text(bytes),
                Frame::Binary(bytes) => Inbound::Binary(bytes),
                Frame::Ping(bytes) => Inbound::Ping(bytes),
                Frame::Pong(_) => Inbound::Pong,
                Frame::Close(_) => Inbound::Close,
                Frame::Continuation(item) => match self.fragment(item)? {
                    Some(message) => message,
                    None => continue,
                },
            };
            return Ok(Some(message));
        }
    }

    fn fragment(&mut self, item: Item) -> Result<Option<Inbound>, Violation> {
        let (text, bytes, last) = match item {
            Item::FirstText(bytes) => (Some(true), bytes, false),
            Item::FirstBinary(bytes) => (Some(false), bytes, false),
            Item::Continue(bytes) => (None, bytes, false),
            Item::Last(bytes) => (None, bytes, true),
        };
        if let Some(text) = text {
            self.partial = Some((text, BytesMut::new()));
        }
        let Some((text, so_far)) = self.partial.as_mut() else {
            return Err(Violation::Protocol("a continuation without a first fragment".into()));
        };
        if so_far.len() + bytes.len() > self.max {
            return Err(Violation::TooBig);
        }
        so_far.extend_from_slice(&bytes);
        if !last {
            return Ok(None);
        }
        let text = *text;
        let whole = self.partial.take().map(|(_, b)| b.freeze()).unwrap_or_default();
        Ok(Some(if text {
            Inbound::Text(whole)
        } else {
            Inbound::Binary(whole)
        }))
    }
}

/// The payload length a frame's header declares, once the header is there.
fn declared_len(buf: &[u8]) -> Option<u64> {
    let len = *buf.get(1)? & 0x7f;
    match len {
        126 => buf.get(2..4).map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        127 => buf
            .get(2..10)
            .map(|b| u64::from_be_bytes(b.try_into().expect("eight bytes"))),
        small => Some(u64::from(small)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as RFC 6455 requires of clients.
    fn client(payload: &[u8], op: OpCode, fin: bool) -> Vec<u8> {
        let mut out = BytesMut::new();
        Parser::write_message(&mut out, payload, op, fin, true);
        out.to_vec()
    }

    fn reader(max: usize, bytes: &[u8]) -> Reader {
        let mut reader = Reader::new(max, b"");
        reader.buffer().extend_from_slice(bytes);
        reader
    }

    #[test]
    fn server_frames_are_unmasked_and_sized() {
        let frame = text(b"{\"type\":\"pong\"}");
        assert_eq!(frame[0], 0x81);
        assert_eq!(frame[1], 15);
        assert_eq!(&frame[2..], b"{\"type\":\"pong\"}");
        let big = text(&[b'x'; 300]);
        assert_eq!((big[1], u16::from_be_bytes([big[2], big[3]])), (126, 300));
        let close = close(4008, "slow consumer");
        assert_eq!(&close[..4], &[0x88, 15, 0x0f, 0xa8]);
        assert_eq!(&close[4..], b"slow consumer");
    }

    #[test]
    fn a_close_reason_is_cut_to_the_control_frame_limit_at_a_character() {
        let frame = close(1001, &"é".repeat(100));
        assert!(frame.len() - 2 <= 125);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn messages_are_read_whole_and_the_buffer_is_freed() {
        let mut bytes = client(b"{\"op\"", OpCode::Text, false);
        bytes.extend(client(b"", OpCode::Ping, true));
        bytes.extend(client(b":\"ping\"}", OpCode::Continue, true));
        let mut reader = reader(1024, &bytes);
        assert_eq!(reader.next_message(), Ok(Some(Inbound::Ping(Bytes::new()))));
        assert_eq!(
            reader.next_message(),
            Ok(Some(Inbound::Text(Bytes::from_static(b"{\"op\":\"ping\"}"))))
        );
        assert_eq!(reader.next_message(), Ok(None));
        assert_eq!(reader.buf.capacity(), 0);
    }

    #[test]
    fn a_half_arrived_frame_waits_for_the_rest() {
        let bytes = client(b"hello", OpCode::Text, true);
        let mut reader = reader(1024, &bytes[..4]);
        assert_eq!(reader.next_message(), Ok(None));
        reader.buffer().extend_from_slice(&bytes[4..]);
        assert_eq!(
            reader.next_message(),
            Ok(Some(Inbound::Text(Bytes::from_static(b"hello"))))
        );
    }

    #[test]
    fn too_large_frames_and_messages_are_refused_before_they_are_buffered() {
        // Only the header of a 4 KiB frame has arrived.
        let bytes = client(&[b'x'; 4096], OpCode::Text, true);
        assert_eq!(reader(1024, &bytes[..8]).next_message(), Err(Violation::TooBig));
        // Fragments each under the limit, together over it.
        let mut bytes = client(&[b'x'; 800], OpCode::Text, false);
        bytes.extend(client(&[b'x'; 800], OpCode::Continue, true));
        assert_eq!(reader(1024, &bytes).next_message(), Err(Violation::TooBig));
    }

    #[test]
    fn unmasked_client_frames_and_stray_continuations_break_the_protocol() {
        let mut unmasked = BytesMut::new();
        Parser::write_message(&mut unmasked, b"hi", OpCode::Text, true, false);
        assert!(matches!(
            reader(1024, &unmasked).next_message(),
            Err(Violation::Protocol(_))
        ));
        let stray = client(b"hi", OpCode::Continue, true);
        assert!(matches!(
            reader(1024, &stray).next_message(),
            Err(Violation::Protocol(_))
        ));
    }
}
