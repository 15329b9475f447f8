//! The envelope around every message on the wire.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "TWIN"
//!      4     1  protocol version
//!      5     1  message kind
//!      6     1  flags (bit 0: payload is zstd-compressed; bit 1: with the built-in dictionary)
//!      7     1  reserved, zero
//!      8     4  payload length on the wire, little endian
//!     12     4  payload length once decompressed, little endian
//!     16     …  payload: one bincode-2 encoded message body
//! ```
//!
//! Both lengths are checked against [`MAX_WIRE_LEN`] and [`MAX_RAW_LEN`] before anything is
//! allocated, zstd output is capped at the declared size, and a body must consume its payload
//! exactly. A bad frame is a [`FrameError`], never a panic.
//!
//! A batch of one tick is a few hundred bytes, too little for zstd to learn much from; most of
//! what it would spend is its entropy tables. Frames are therefore compressed against
//! [`DICTIONARY`], built into both ends and trained on real batches (`cargo xtask dictionary`
//! trains a new one). It is part of the protocol: changing it means a new frame flag.

use std::cell::RefCell;

use bincode::{Decode, Encode};

use crate::PROTOCOL_VERSION;

pub const MAGIC: [u8; 4] = *b"TWIN";
pub const HEADER_LEN: usize = 16;
/// Largest payload accepted on the wire.
pub const MAX_WIRE_LEN: usize = 4 << 20;
/// Largest payload accepted once decompressed.
pub const MAX_RAW_LEN: usize = 16 << 20;
/// Payloads smaller than this are sent uncompressed: zstd's own header would outweigh the gain.
const COMPRESS_FROM: usize = 64;
const FLAG_ZSTD: u8 = 1;
const FLAG_DICTIONARY: u8 = 2;

/// The zstd dictionary every frame with [`FLAG_DICTIONARY`] is compressed against.
pub const DICTIONARY: &[u8] = include_bytes!("wire.dict");

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RAW_LEN>,
>;

pub(crate) fn bincode_config() -> Config {
    bincode::config::standard().with_limit::<MAX_RAW_LEN>()
}

/// Why bytes could not be read as a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {0:02x?}: not a twinwatch frame")]
    BadMagic([u8; 4]),
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    Version(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    #[error("payload of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("uncompressed payload declares {declared} bytes but holds {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("zstd: {0}")]
    Decompress(String),
    #[error("payload does not decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("{0} trailing bytes after the message body")]
    TrailingBytes(usize),
    #[error("message does not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub compressed: bool,
    /// Compressed against [`DICTIONARY`].
    pub dictionary: bool,
    pub wire_len: usize,
    pub raw_len: usize,
}

impl Header {
    /// Reads and checks a header; `Ok(None)` when fewer than [`HEADER_LEN`] bytes are there yet.
    pub fn parse(buf: &[u8]) -> Result<Option<Header>, FrameError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let magic = [h[0], h[1], h[2], h[3]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        if h[4] != PROTOCOL_VERSION {
            return Err(FrameError::Version(h[4]));
        }
        let (kind, flags) = (h[5], h[6]);
        if flags & !(FLAG_ZSTD | FLAG_DICTIONARY) != 0 || flags == FLAG_DICTIONARY || h[7] != 0 {
            return Err(FrameError::Flags(flags));
        }
        let wire_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let raw_len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
        if wire_len > MAX_WIRE_LEN {
            return Err(FrameError::TooLarge { len: wire_len, limit: MAX_WIRE_LEN });
        }
        if raw_len > MAX_RAW_LEN {
            return Err(FrameError::TooLarge { len: raw_len, limit: MAX_RAW_LEN });
        }
        let compressed = flags & FLAG_ZSTD != 0;
        if !compressed && raw_len != wire_len {
            return Err(FrameError::LengthMismatch { declared: raw_len, actual: wire_len });
        }
        let dictionary = flags & FLAG_DICTIONARY != 0;
        Ok(Some(Header { kind, compressed, dictionary, wire_len, raw_len }))
    }

    /// Header plus payload length.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.wire_len
    }
}

/// Builds frames, reusing one zstd context loaded with [`DICTIONARY`].
pub struct FrameEncoder {
    zstd: zstd::bulk::Compressor<'static>,
}

impl FrameEncoder {
    pub fn new() -> Self {
        let mut zstd = zstd::bulk::Compressor::with_dictionary(3, DICTIONARY).expect("the built-in dictionary loads");
        // The frame header already carries the decompressed size, and the dictionary is implied
        // by the flag: zstd need not repeat either.
        let _ = zstd.include_contentsize(false);
        let _ = zstd.include_dictid(false);
        FrameEncoder { zstd }
    }

    /// Encodes `body` as a frame of `kind`, appending to `out`.
    pub fn encode<T: Encode>(&mut self, kind: u8, body: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let raw = bincode::encode_to_vec(body, bincode_config())?;
        if raw.len() > MAX_RAW_LEN {
            return Err(FrameError::TooLarge { len: raw.len(), limit: MAX_RAW_LEN });
        }
        let compressed = if raw.len() >= COMPRESS_FROM {
            self.zstd.compress(&raw).ok().filter(|c| c.len() < raw.len())
        } else {
            None
        };
        let (flags, payload) = match &compressed {
            Some(c) => (FLAG_ZSTD | FLAG_DICTIONARY, c.as_slice()),
            None => (0, raw.as_slice()),
        };
        if payload.len() > MAX_WIRE_LEN {
            return Err(FrameError::TooLarge { len: payload.len(), limit: MAX_WIRE_LEN });
        }
        out.reserve(HEADER_LEN + payload.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[PROTOCOL_VERSION, kind, flags, 0]);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        Ok(())
    }
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads frames. The zstd contexts (plain, and with [`DICTIONARY`]) are kept per thread rather
/// than per decoder: a decompression context costs about 100 KiB, and an aggregator holding a
/// thousand sessions would otherwise keep two for each.
#[derive(Debug, Default)]
pub struct FrameDecoder;

/// One thread's decompression contexts.
struct Contexts {
    plain: zstd::bulk::Decompressor<'static>,
    with_dictionary: zstd::bulk::Decompressor<'static>,
}

thread_local! {
    static CONTEXTS: RefCell<Option<Contexts>> = const { RefCell::new(None) };
}

/// Decompresses `payload` into at most `cap` bytes with this thread's context for the flavour.
fn decompress(payload: &[u8], cap: usize, dictionary: bool) -> Result<Vec<u8>, FrameError> {
    let failed = |e: std::io::Error| FrameError::Decompress(e.to_string());
    CONTEXTS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let contexts = match &mut *cell {
            Some(c) => c,
            None => cell.insert(Contexts {
                plain: zstd::bulk::Decompressor::new().map_err(failed)?,
                with_dictionary: zstd::bulk::Decompressor::with_dictionary(DICTIONARY).map_err(failed)?,
            }),
        };
        let zstd = if dictionary { &mut contexts.with_dictionary } else { &mut contexts.plain };
        zstd.decompress(payload, cap).map_err(failed)
    })
}

impl FrameDecoder {
    pub fn new() -> Self {
        FrameDecoder
    }

    /// Splits the first complete frame off `buf`: its header and decompressed payload, and how
    /// many bytes it took. `Ok(None)` means more bytes are needed.
    pub fn split(&mut self, buf: &[u8]) -> Result<Option<(Header, Vec<u8>, usize)>, FrameError> {
        let Some(header) = Header::parse(buf)? else {
            return Ok(None);
        };
        let Some(payload) = buf.get(HEADER_LEN..header.frame_len()) else {
            return Ok(None);
        };
        let raw = if header.compressed {
            // Capacity is the declared size, already bounded: a zstd bomb fails here instead of
            // allocating what it claims.
            let raw = decompress(payload, header.raw_len, header.dictionary)?;
            if raw.len() != header.raw_len {
                return Err(FrameError::LengthMismatch { declared: header.raw_len, actual: raw.len() });
            }
            raw
        } else {
            payload.to_vec()
        };
        Ok(Some((header, raw, header.frame_len())))
    }
}

/// Decodes a whole payload as `T`, refusing trailing bytes.
pub fn decode_body<T: Decode<()>>(raw: &[u8]) -> Result<T, FrameError> {
    let (value, used) = bincode::decode_from_slice(raw, bincode_config())?;
    if used != raw.len() {
        return Err(FrameError::TrailingBytes(raw.len() - used));
    }
    Ok(value)
}
