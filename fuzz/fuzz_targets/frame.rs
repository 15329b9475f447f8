//! The frame decoder on bytes from the network: whole to `Message::decode`, and to a
//! `MessageReader` in several chunkings (all at once, a byte at a time, sizes drawn from the input
//! itself).
//!
//! Every input must end in messages and at most one `FrameError`, never a panic. Chunking must
//! not matter: each reader yields the same frames and the same error as the whole-buffer decode.
//! Whatever decodes must encode again, and that encoding must decode to a message that encodes to
//! the same bytes.
#![no_main]

use std::cell::RefCell;
use std::mem::{discriminant, Discriminant};

use libfuzzer_sys::fuzz_target;
use twinwatch_common::frame::{FrameDecoder, FrameEncoder, FrameError};
use twinwatch_common::message::Message;
use twinwatch_common::reader::MessageReader;

/// A valid stream is also fed repeated up to this length, past the reader's 64 KiB compaction.
const REPEAT_TO: usize = 72 << 10;

thread_local! {
    // Built once: loading the dictionary into zstd's contexts costs more than most inputs do.
    static CODEC: RefCell<(FrameEncoder, FrameDecoder)> = RefCell::new((FrameEncoder::new(), FrameDecoder::new()));
}

fuzz_target!(|data: &[u8]| CODEC.with_borrow_mut(|(enc, dec)| {
    let whole = decode_whole(dec, data);
    for chunks in [vec![data.len().max(1)], vec![1], chunk_sizes(data)] {
        assert_eq!(read_chunked(data, &chunks), whole, "chunks {:?}", &chunks[..chunks.len().min(8)]);
    }
    if whole.error.is_none() && !whole.frames.is_empty() && whole.consumed == data.len() {
        let times = (REPEAT_TO / data.len()).max(2);
        let stream = data.repeat(times);
        let read = read_chunked(&stream, &chunk_sizes(data));
        assert_eq!((read.frames.len(), read.error, read.consumed), (whole.frames.len() * times, None, stream.len()));
    }
    round_trip(enc, dec, data, &whole);
}));

/// What a decode made of a buffer: the frames it split off (as byte ranges), how far it got, and
/// the kind of error it stopped at. Only the kind: zstd may word its verdict on a corrupt payload
/// differently once its context has decoded other frames (and these decoders have different
/// histories), but corrupt is corrupt.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<std::ops::Range<usize>>,
    consumed: usize,
    error: Option<Discriminant<FrameError>>,
}

fn decode_whole(dec: &mut FrameDecoder, data: &[u8]) -> Outcome {
    let mut out = Outcome { frames: Vec::new(), consumed: 0, error: None };
    loop {
        match Message::decode(dec, &data[out.consumed..]) {
            Ok(Some((_, used))) => {
                assert!(used > 0 && out.consumed + used <= data.len(), "used {used} at {}", out.consumed);
                out.frames.push(out.consumed..out.consumed + used);
                out.consumed += used;
            }
            Ok(None) => return out,
            Err(e) => {
                out.error = Some(discriminant(&e));
                return out;
            }
        }
    }
}

/// Pushes `data` in pieces of the given sizes (cycled), taking every message after each push, as
/// a connection does, and stopping at the first error.
fn read_chunked(data: &[u8], sizes: &[usize]) -> Outcome {
    let mut reader = MessageReader::new();
    let mut out = Outcome { frames: Vec::new(), consumed: 0, error: None };
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at == data.len() {
            break;
        }
        let end = (at + size).min(data.len());
        reader.push(&data[at..end]);
        at = end;
        loop {
            match reader.next_message() {
                Ok(Some(_)) => {
                    let frame = reader.last_frame();
                    assert_eq!(frame, &data[out.consumed..out.consumed + frame.len()], "last_frame");
                    out.frames.push(out.consumed..out.consumed + frame.len());
                    out.consumed += frame.len();
                }
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(discriminant(&e));
                    return out;
                }
            }
        }
        assert_eq!(reader.pending(), at - out.consumed, "pending");
    }
    out
}

/// Chunk sizes from 1 to 4096, small ones more often, drawn from an xorshift seeded with the input.
fn chunk_sizes(data: &[u8]) -> Vec<usize> {
    let mut x = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)) | 1;
    (0..64)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let size = (x >> 16) as usize % 4096;
            1 + (size >> (x % 12))
        })
        .collect()
}

/// Decoded messages encode; encoded messages decode back to what encodes the same.
fn round_trip(enc: &mut FrameEncoder, dec: &mut FrameDecoder, data: &[u8], whole: &Outcome) {
    for range in &whole.frames {
        let (message, _) = Message::decode(dec, &data[range.clone()]).expect("decoded once").expect("whole");
        let once = message.to_frame(enc).expect("a decoded message encodes");
        let (again, used) = Message::decode(dec, &once).expect("an encoded message decodes").expect("whole");
        assert_eq!(used, once.len());
        assert_eq!(again.to_frame(enc).expect("encodes"), once, "{}", message.name());
    }
}
