//! A listing of /proc through libc.

use std::ffi::CStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

/// A listing of a directory through libc, so that it allocates nothing per entry (std's
/// `read_dir` allocates every entry's name, and /proc has one per process).
pub(super) struct Listing {
    dir: NonNull<libc::DIR>,
}

impl Listing {
    pub(super) fn open(path: &Path) -> std::io::Result<Listing> {
        let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let dir = unsafe { libc::opendir(path.as_ptr()) };
        NonNull::new(dir).map(|dir| Listing { dir }).ok_or_else(std::io::Error::last_os_error)
    }

    /// The next entry's name, or `None` at the end of the directory.
    pub(super) fn next_name(&mut self) -> Option<&[u8]> {
        // SAFETY: `dir` is open until drop. The entry readdir returns stays valid until the next
        // readdir or closedir on this stream, which the borrow of `self` rules out. The kernel's
        // record may be shorter than `struct dirent`, so the name is reached by a raw pointer, not
        // through a reference to the whole array; it is NUL-terminated.
        unsafe {
            let entry = libc::readdir(self.dir.as_ptr());
            if entry.is_null() {
                return None;
            }
            let name = (&raw const (*entry).d_name).cast::<libc::c_char>();
            Some(CStr::from_ptr(name).to_bytes())
        }
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        // SAFETY: `dir` came from opendir and is closed only here.
        unsafe { libc::closedir(self.dir.as_ptr()) };
    }
}
