//! The write-ahead log across reopens, torn and damaged records, failed writes and checkpoints.

use super::record::HEADER;
use super::*;
use std::fs::File;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("twinwatch-wal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn open(d: &Path) -> Wal {
    Wal::open(d, HashMap::new()).unwrap()
}

fn frames(host: u8, n: u8) -> Vec<Vec<u8>> {
    (0..n).map(|i| vec![host, i, 0xee, i]).collect()
}

#[test]
fn frames_come_back_per_host_in_order_after_a_reopen() {
    let d = dir("order");
    let wal = open(&d);
    wal.append("a", &frames(1, 3)).unwrap();
    wal.append("b", &frames(2, 2)).unwrap();
    assert_eq!(wal.logged("a").unwrap(), frames(1, 3), "queued frames are read from memory");
    wal.write_out().unwrap();
    wal.append("a", &frames(3, 1)).unwrap();
    wal.write_out().unwrap();
    let mut want = frames(1, 3);
    want.extend(frames(3, 1));
    assert_eq!(wal.logged("a").unwrap(), want);
    assert_eq!(wal.position(), 6);
    drop(wal);
    let wal = open(&d);
    assert_eq!((wal.logged("a").unwrap(), wal.logged("b").unwrap()), (want, frames(2, 2)));
    assert_eq!(wal.logging_hosts(), ["a", "b"]);
    assert_eq!(wal.position(), 6, "positions go on from the last one logged");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_torn_tail_ends_the_segment_and_the_next_write_starts_another() {
    let d = dir("torn");
    let wal = open(&d);
    wal.append("a", &frames(1, 4)).unwrap();
    wal.write_out().unwrap();
    drop(wal);
    // A crash mid-write: the last record loses its end.
    let path = segment_path(&d, 1);
    let len = std::fs::metadata(&path).unwrap().len();
    File::options().write(true).open(&path).unwrap().set_len(len - 2).unwrap();
    let wal = open(&d);
    assert_eq!(wal.logged("a").unwrap(), frames(1, 3));
    wal.append("a", &frames(2, 1)).unwrap();
    wal.write_out().unwrap();
    assert_eq!(wal.segments(), 2, "written into a new segment, never after the torn record");
    drop(wal);
    let wal = open(&d);
    let mut want = frames(1, 3);
    want.extend(frames(2, 1));
    assert_eq!(wal.logged("a").unwrap(), want);
    // A flipped bit fails the checksum the same way.
    drop(wal);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[HEADER + 3] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let wal = open(&d);
    assert_eq!(wal.logged("a").unwrap(), frames(2, 1));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn checkpoints_release_frames_and_closed_segments_once_durable() {
    let d = dir("release");
    let wal = open(&d);
    wal.append("a", &frames(1, 2)).unwrap();
    wal.append("b", &frames(2, 2)).unwrap();
    wal.write_out().unwrap();
    // The segment is closed by age: the next write opens another.
    wal.lock().current.as_mut().unwrap().opened -= SEGMENT_AGE;
    wal.append("a", &frames(3, 1)).unwrap();
    wal.write_out().unwrap();
    assert_eq!(wal.segments(), 2);
    wal.checkpointed("a", 5);
    // Not durable yet: nothing is forgotten.
    assert_eq!(wal.logged("a").unwrap().len(), 3);
    wal.release(wal.take_covered());
    assert!(!wal.has_log("a") && wal.has_log("b"));
    assert_eq!(wal.segments(), 2, "b still needs the first segment; the second is open");
    wal.checkpointed("b", 4);
    wal.release(wal.take_covered());
    assert_eq!(wal.segments(), 1, "the closed one is deleted");
    assert!(!segment_path(&d, 1).exists());
    drop(wal);
    // Reopened with the checkpoints sled holds: nothing to replay, the rest deleted.
    let covered = HashMap::from([("a".to_owned(), 5), ("b".to_owned(), 4)]);
    let wal = Wal::open(&d, covered).unwrap();
    assert!(wal.logging_hosts().is_empty());
    assert_eq!((wal.segments(), wal.position()), (0, 5));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_failed_write_keeps_its_frames_for_the_next_flush() {
    let d = dir("fail");
    let wal = open(&d);
    wal.append("a", &frames(1, 2)).unwrap();
    // The directory is gone: the segment cannot be created.
    std::fs::remove_dir_all(&d).unwrap();
    assert!(wal.write_out().is_err());
    wal.append("a", &frames(2, 1)).unwrap();
    std::fs::create_dir_all(&d).unwrap();
    wal.write_out().unwrap();
    drop(wal);
    let wal = open(&d);
    let mut want = frames(1, 2);
    want.extend(frames(2, 1));
    assert_eq!(wal.logged("a").unwrap(), want);
    let _ = std::fs::remove_dir_all(&d);
}

/// A segment named with the largest number (a file put there by hand) neither overflows the
/// numbering nor loses what is logged: the write that cannot create its segment fails, and the
/// frames stay readable.
#[test]
fn the_largest_segment_number_fails_a_write_and_loses_nothing() {
    let d = dir("largest");
    std::fs::create_dir_all(&d).unwrap();
    File::create(segment_path(&d, u64::MAX)).unwrap();
    let wal = open(&d);
    wal.append("a", &frames(1, 2)).unwrap();
    assert!(wal.write_out().is_ok(), "the first write takes the last number");
    wal.lock().current = None;
    wal.append("a", &frames(2, 1)).unwrap();
    assert!(matches!(wal.write_out(), Err(WalError::Io { .. })), "no number is left for another segment");
    let mut want = frames(1, 2);
    want.extend(frames(2, 1));
    assert_eq!(wal.logged("a").unwrap(), want);
    let _ = std::fs::remove_dir_all(&d);
}
