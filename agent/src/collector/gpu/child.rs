//! Running `nvidia-smi`: found in `$PATH`, its output read without a thread, and killed with its
//! whole process group at a deadline.

use std::ffi::OsStr;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::nvidia_smi::{NVIDIA_SMI_FORMAT, NVIDIA_SMI_QUERY};

/// How long `nvidia-smi` may take before it is killed and the collection fails.
pub(super) const NVIDIA_SMI_DEADLINE: Duration = Duration::from_secs(5);

/// Output beyond this is not kept: a GPU row is under 200 bytes.
const NVIDIA_SMI_MAX_OUTPUT: usize = 1 << 20;

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where `program` is: itself if it names a path, else the first executable of that name in the
/// directories of `path_var` (`$PATH`). `None` if there is none.
pub(super) fn resolve(program: &Path, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        return is_executable(program).then(|| program.to_owned());
    }
    if program.as_os_str().is_empty() {
        return None;
    }
    std::env::split_paths(path_var?).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

/// Makes a pipe's reads return at once when it is empty, so the child can be watched and read in
/// one loop without a thread.
fn set_nonblocking(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns, with flags only added.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads what the pipe holds now into `out`, up to the output limit.
fn drain(pipe: &mut ChildStdout, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    while out.len() < NVIDIA_SMI_MAX_OUTPUT {
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Kills the child and everything it started: it leads its own process group, so a wrapper
/// script's `nvidia-smi` (or `sleep`) dies with it instead of holding on.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory preconditions; the group is the child's own and the child
        // has not been reaped, so the id cannot have been reused.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

/// What a run of `nvidia-smi` ended as.
pub(super) enum Run {
    Exited(ExitStatus, Vec<u8>),
    /// Killed at the deadline; the child if it has not been reaped yet.
    TimedOut(Option<Child>),
}

/// Runs `program` with the query, collecting its standard output, for at most `deadline`.
pub(super) fn run(program: &Path, deadline: Duration) -> std::io::Result<Run> {
    use std::os::fd::AsRawFd;
    let mut child = Command::new(program)
        .args([NVIDIA_SMI_QUERY, NVIDIA_SMI_FORMAT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let started = Instant::now();
    let mut output = Vec::new();
    let mut pipe = child.stdout.take();
    if let Some(pipe) = &pipe {
        if let Err(e) = set_nonblocking(pipe.as_raw_fd()) {
            kill_and_reap(&mut child);
            return Err(e);
        }
    }
    let mut pause = Duration::from_millis(2);
    loop {
        let exited = match poll(&mut child, pipe.as_mut(), &mut output) {
            Ok(exited) => exited,
            Err(e) => {
                kill_and_reap(&mut child);
                return Err(e);
            }
        };
        if let Some(status) = exited {
            return Ok(Run::Exited(status, output));
        }
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            let reaped = kill_and_reap(&mut child);
            return Ok(Run::TimedOut((!reaped).then_some(child)));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Takes in what the child has written; its exit status once it has exited (and its last output
/// has been read).
fn poll(
    child: &mut Child,
    mut pipe: Option<&mut ChildStdout>,
    output: &mut Vec<u8>,
) -> std::io::Result<Option<ExitStatus>> {
    if let Some(pipe) = pipe.as_deref_mut() {
        drain(pipe, output)?;
    }
    let Some(status) = child.try_wait()? else { return Ok(None) };
    // Whatever it wrote before exiting is in the pipe now.
    if let Some(pipe) = pipe {
        drain(pipe, output)?;
    }
    Ok(Some(status))
}

/// Kills the child's group and reaps the child if it dies within 100 ms. SIGKILL takes effect
/// when a process next leaves the kernel; one stuck in the driver may take longer, and waiting
/// for it here would hang the sampler. Returns whether it was reaped.
fn kill_and_reap(child: &mut Child) -> bool {
    kill_group(child);
    for _ in 0..20 {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}
