//! The audit spool: local append-only files of records the store could not take yet, one JSON
//! line each, fsync'd before the record counts as kept. Delivered to the store in order once it
//! works again.
//!
//! Each process writes its own file (`audit-spool-PID-RANDOM.jsonl`) and holds an exclusive
//! `flock` on it while it lives, so two instances sharing a data directory (say, during a
//! restart) never write into or cut each other's spool. A file whose lock is free belongs to a
//! process that is gone: another process adopts it, delivers it and deletes it. A line torn by a
//! crash (the process died inside `append`, before the fsync returned, so the record was never
//! acknowledged) is cut off when the file is adopted.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Most bytes read from a spool per delivery batch.
const BATCH_BYTES: u64 = 4 * 1024 * 1024;
const PREFIX: &str = "audit-spool-";
const SUFFIX: &str = ".jsonl";

pub(super) struct Spool {
    path: PathBuf,
    /// Opened for appending; holds the lock for as long as the spool is ours.
    file: File,
    len: u64,
    /// Bytes at the front already in the store. The file is emptied once all of it is, rather
    /// than rewritten after each batch: a crash redelivers, and the store drops duplicates.
    delivered: u64,
    max_bytes: u64,
    /// Lines were appended without waiting for the disk.
    unsynced: bool,
}

/// Why a record could not be spooled.
#[derive(Debug)]
pub(super) enum SpoolFull {
    Full,
    Io(io::Error),
}

impl Spool {
    /// Creates this process's spool file in `dir`.
    pub(super) fn create(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        crate::files::make_private(dir)?;
        let name = format!(
            "{PREFIX}{}-{}{SUFFIX}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)?;
        if !try_lock(&file)? {
            return Err(io::Error::other(format!(
                "{} is locked by another process",
                path.display()
            )));
        }
        Ok(Spool {
            path,
            file,
            len: 0,
            delivered: 0,
            max_bytes,
            unsynced: false,
        })
    }

    /// Takes over one spool file in `dir` whose process is gone (its lock is free), without its
    /// torn last line, if there is such a file.
    pub(super) fn adopt_orphan(dir: &Path, own: &Path) -> io::Result<Option<Spool>> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.starts_with(PREFIX) || !name.ends_with(SUFFIX) || path == own {
                continue;
            }
            let mut file = match OpenOptions::new().read(true).append(true).open(&path) {
                Ok(file) => file,
                // Deleted meanwhile by its adopter.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !try_lock(&file)? {
                continue;
            }
            let len = file.metadata()?.len();
            let kept = complete_prefix(&mut file, len)?;
            if kept != len {
                file.set_len(kept)?;
                file.sync_all()?;
            }
            return Ok(Some(Spool {
                path,
                file,
                len: kept,
                delivered: 0,
                max_bytes: u64::MAX,
                unsynced: false,
            }));
        }
        Ok(None)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes not yet delivered.
    pub(super) fn pending(&self) -> u64 {
        self.len - self.delivered
    }

    /// Appends complete lines and waits until they are on disk.
    #[cfg(test)]
    pub(super) fn append(&mut self, lines: &[u8]) -> Result<(), SpoolFull> {
        self.append_with(lines, true)
    }

    /// Appends complete lines to the file without waiting for the disk: they survive the
    /// process being killed (they are in the kernel's page cache), and the worker makes them
    /// durable with [`Spool::sync`] moments later. For callers that must not wait (the login
    /// path when the audit queue is full).
    pub(super) fn append_unsynced(&mut self, lines: &[u8]) -> Result<(), SpoolFull> {
        self.append_with(lines, false)
    }

    /// A handle to make lines appended with [`Spool::append_unsynced`] durable, if there are
    /// any: the caller syncs it after releasing the spool's lock, so appends never wait for
    /// the disk.
    pub(super) fn sync_handle(&mut self) -> std::io::Result<Option<File>> {
        if !self.unsynced {
            return Ok(None);
        }
        let handle = self.file.try_clone()?;
        self.unsynced = false;
        Ok(Some(handle))
    }

    fn append_with(&mut self, lines: &[u8], durable: bool) -> Result<(), SpoolFull> {
        if self.len + lines.len() as u64 > self.max_bytes {
            return Err(SpoolFull::Full);
        }
        let written = self.file.write_all(lines).and_then(|()| {
            if durable {
                self.file.sync_data()
            } else {
                self.unsynced = true;
                Ok(())
            }
        });
        if let Err(e) = written {
            // Leave no half line behind for the next append to be glued to.
            let _ = self.file.set_len(self.len);
            return Err(SpoolFull::Io(e));
        }
        self.len += lines.len() as u64;
        Ok(())
    }

    /// The next complete lines not yet delivered (up to a batch), and how many bytes they
    /// span.
    pub(super) fn read_batch(&self) -> io::Result<(Vec<u8>, u64)> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.delivered))?;
        let mut buf = Vec::new();
        file.take(BATCH_BYTES.min(self.pending()))
            .read_to_end(&mut buf)?;
        match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                buf.truncate(i + 1);
                Ok((buf, i as u64 + 1))
            }
            // A line longer than a batch cannot come from `append` (records are bounded far
            // below it): skip it whole as unreadable.
            None if self.pending() > BATCH_BYTES => self.skip_long_line(),
            None => Ok((Vec::new(), 0)),
        }
    }

    fn skip_long_line(&self) -> io::Result<(Vec<u8>, u64)> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.delivered))?;
        let mut skipped = 0u64;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let n = file.read(&mut chunk)?;
            if n == 0 {
                return Ok((Vec::new(), 0));
            }
            if let Some(i) = chunk[..n].iter().position(|&b| b == b'\n') {
                return Ok((b"\n".to_vec(), skipped + i as u64 + 1));
            }
            skipped += n as u64;
        }
    }

    /// Marks the next `bytes` as delivered; once everything is, the file is emptied.
    pub(super) fn consume(&mut self, bytes: u64) -> io::Result<()> {
        self.delivered = (self.delivered + bytes).min(self.len);
        if self.delivered == self.len && self.len > 0 {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.len = 0;
            self.delivered = 0;
        }
        Ok(())
    }
}

impl Drop for Spool {
    /// An empty spool is removed (the lock goes with the file); one with records stays for
    /// the next start or another instance to deliver.
    fn drop(&mut self) {
        if self.len == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Takes the file's exclusive lock without waiting; false when another process holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a file descriptor we own and keep open; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(error)
    }
}

/// The length of the file up to and including its last newline.
fn complete_prefix(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_lines_are_skipped_and_the_file_emptied_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path(), 1 << 20).unwrap();
        spool.append(b"one\ntwo\n").unwrap();
        let (batch, bytes) = spool.read_batch().unwrap();
        assert_eq!((batch.as_slice(), bytes), (&b"one\ntwo\n"[..], 8));
        spool.consume(4).unwrap();
        spool.append(b"three\n").unwrap();
        assert_eq!(spool.read_batch().unwrap().0, b"two\nthree\n");
        spool.consume(10).unwrap();
        assert_eq!(spool.pending(), 0);
        assert_eq!(std::fs::metadata(spool.path()).unwrap().len(), 0);
        let path = spool.path().to_path_buf();
        drop(spool);
        assert!(!path.exists(), "an empty spool is removed");
    }

    #[test]
    fn a_live_spool_is_not_adopted_and_a_dead_ones_torn_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = Spool::create(dir.path(), 1 << 20).unwrap();
        live.append(b"mine\n").unwrap();
        let own = dir.path().join("audit-spool-own.jsonl");
        assert!(Spool::adopt_orphan(dir.path(), &own).unwrap().is_none());

        std::fs::write(dir.path().join("audit-spool-1-dead.jsonl"), b"one\ntw").unwrap();
        let orphan = Spool::adopt_orphan(dir.path(), &own).unwrap().unwrap();
        assert!(orphan.path().ends_with("audit-spool-1-dead.jsonl"));
        assert_eq!(orphan.read_batch().unwrap().0, b"one\n");
        // Held by its adopter now.
        assert!(Spool::adopt_orphan(dir.path(), &own).unwrap().is_none());
    }

    #[test]
    fn a_full_spool_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path(), 10).unwrap();
        spool.append(b"12345678\n").unwrap();
        assert!(matches!(spool.append(b"abc\n"), Err(SpoolFull::Full)));
    }
}
