//! Turns a byte stream, arriving in arbitrary chunks, into messages.
//!
//! Sans-IO: the caller pushes whatever its socket read and pops complete messages. The buffer
//! never holds more than one maximal frame plus one chunk, because a header that declares more
//! than the limits is refused as soon as it is seen.

use crate::frame::{FrameDecoder, FrameError};
use crate::message::Message;

#[derive(Default)]
pub struct MessageReader {
    buf: Vec<u8>,
    start: usize,
    last: std::ops::Range<usize>,
    dec: FrameDecoder,
}

/// Buffer kept by an idle reader: a live frame's worth. A thousand sessions holding the largest
/// burst each had seen came to tens of megabytes.
const KEEP: usize = 2 * 1024;

impl MessageReader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.last = 0..0;
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            // A burst (a backlog resent at once) leaves a large buffer; a session keeps what a
            // live frame needs, not its largest burst.
            self.buf.shrink_to(KEEP);
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        match Message::decode(&mut self.dec, &self.buf[self.start..])? {
            Some((message, used)) => {
                self.last = self.start..self.start + used;
                self.start += used;
                Ok(Some(message))
            }
            None => Ok(None),
        }
    }

    /// The whole frame of the message [`MessageReader::next_message`] returned last, as received.
    pub fn last_frame(&self) -> &[u8] {
        self.buf.get(self.last.clone()).unwrap_or_default()
    }

    /// Bytes received but not yet consumed as a message.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameEncoder;
    use crate::message::Ack;

    #[test]
    fn messages_split_across_any_chunking_come_out_whole() {
        let mut enc = FrameEncoder::new();
        let mut stream = Vec::new();
        for i in 0..50 {
            Message::Ack(Ack { incarnation: 1, first_seq: i, last_seq: i, server_time_ms: 0 })
                .encode(&mut enc, &mut stream)
                .unwrap();
        }
        for chunk in [1, 3, 7, 16, 17, 1000] {
            let mut reader = MessageReader::new();
            let mut got = 0;
            for piece in stream.chunks(chunk) {
                reader.push(piece);
                while let Some(Message::Ack(a)) = reader.next_message().unwrap() {
                    assert_eq!(a.last_seq, got);
                    let frame = reader.last_frame().to_vec();
                    let again = Message::decode(&mut FrameDecoder::new(), &frame).unwrap().unwrap();
                    assert_eq!(again, (Message::Ack(a), frame.len()));
                    got += 1;
                }
            }
            assert_eq!(got, 50);
            assert_eq!(reader.pending(), 0);
        }
    }

    #[test]
    fn a_burst_once_consumed_leaves_a_small_buffer() {
        let mut enc = FrameEncoder::new();
        let mut burst = Vec::new();
        for i in 0..5_000 {
            Message::Ack(Ack { incarnation: 1, first_seq: i, last_seq: i, server_time_ms: 0 })
                .encode(&mut enc, &mut burst)
                .unwrap();
        }
        assert!(burst.len() > 4 * KEEP);
        let mut reader = MessageReader::new();
        reader.push(&burst);
        while reader.next_message().unwrap().is_some() {}
        let mut live = Vec::new();
        Message::Ack(Ack { incarnation: 1, first_seq: 9, last_seq: 9, server_time_ms: 0 })
            .encode(&mut enc, &mut live)
            .unwrap();
        reader.push(&live);
        assert!(reader.buf.capacity() <= KEEP, "{} bytes kept", reader.buf.capacity());
        assert!(matches!(reader.next_message().unwrap(), Some(Message::Ack(a)) if a.last_seq == 9));
    }
}
