//! SIGTERM/SIGINT handling without any crate: a classic self-pipe.
//!
//! std already links libc, so we declare the three symbols we need by hand. The handler only
//! does async-signal-safe work (one `write(2)` to a pipe, preserving `errno`); a normal thread
//! reads the pipe and does the real work.

use std::io::{self, PipeReader, Read};
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

const SIG_IGN: usize = 1;
const SIG_ERR: usize = usize::MAX;

unsafe extern "C" {
    // glibc's signal() has BSD semantics: the handler stays installed and SA_RESTART is set.
    fn signal(signum: i32, handler: usize) -> usize;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn __errno_location() -> *mut i32;
}

static PIPE_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signum: i32) {
    let fd = PIPE_WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signum as u8;
        // SAFETY: write(2) and __errno_location are async-signal-safe; `byte` outlives the call.
        unsafe {
            let errno = __errno_location();
            let saved = *errno;
            write(fd, &byte, 1);
            *errno = saved;
        }
    }
}

pub fn name(signum: i32) -> &'static str {
    match signum {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Routes `handled` signals to the returned [`Signals`] and ignores the `ignored` ones.
/// Call once per process.
pub fn install(handled: &[i32], ignored: &[i32]) -> io::Result<Signals> {
    let (reader, writer) = io::pipe()?;
    // The write end lives for the rest of the process (the handler may fire at any time).
    let old = PIPE_WRITE_FD.swap(writer.into_raw_fd(), Ordering::SeqCst);
    assert_eq!(old, -1, "signals::install called twice");
    for &sig in handled {
        // SAFETY: on_signal is an `extern "C" fn(i32)` that only performs async-signal-safe calls.
        if unsafe { signal(sig, on_signal as extern "C" fn(i32) as usize) } == SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    for &sig in ignored {
        // SAFETY: SIG_IGN is a valid disposition.
        if unsafe { signal(sig, SIG_IGN) } == SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Signals { reader })
}

pub struct Signals {
    reader: PipeReader,
}

impl Signals {
    /// Blocks until the next handled signal arrives; returns its number.
    pub fn wait(&mut self) -> io::Result<i32> {
        let mut byte = [0u8; 1];
        loop {
            match self.reader.read(&mut byte) {
                Ok(1) => return Ok(i32::from(byte[0])),
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "signal pipe closed",
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
