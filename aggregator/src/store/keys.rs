//! Every sled tree and key prefix the aggregator writes, in one place, so no two key spaces can
//! collide unnoticed.
//!
//! ```text
//! tree "data":
//!   h <agent id>                                  -> HostTwin, as of its last checkpoint (mod.rs)
//!   c <agent id>                                  -> log position its checkpoint covers (mod.rs)
//!   w <agent id> 0x00 <n u64>                     -> a logged frame, as stores before the file
//!                                                    log (wal.rs) kept them: read, then deleted
//!   s <host> 0x00 <index u32>                     -> series key (archive.rs)
//!   r <window i64> <host> 0x00 <segment u32>      -> raw segment (archive.rs)
//!   u <tier u8> <period i64> <host> 0x00 <index>  -> rollup block of one series (archive.rs)
//! tree "remote_write/<name>":                     -> one remote's queue (remote_write/queue.rs)
//! ```

/// The tree of host twins, the write-ahead log and history.
pub const DATA_TREE: &str = "data";
/// A host twin.
pub const HOST: u8 = b'h';
/// A logged frame, as older stores kept them.
pub const LOG: u8 = b'w';
/// The log position a host's checkpoint covers.
pub const COVERED: u8 = b'c';
/// A series key of a host's history.
pub const SERIES: u8 = b's';
/// A raw history segment.
pub const RAW: u8 = b'r';
/// A rollup block.
pub const ROLLUP: u8 = b'u';

/// The tree holding remote `name`'s queue.
pub fn remote_write_tree(name: &str) -> String {
    format!("remote_write/{name}")
}
