//! The audit spool: a local append-only file of records the store could not take yet, one JSON
//! line each, fsync'd before the record counts as kept. Delivered to the store in order once it
//! works again, and then cut from the front of the file.
//!
//! A line torn by a crash (the process died inside `append`, before the fsync returned, so the
//! record was never acknowledged) is cut off when the spool is opened.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Most bytes read from the spool per delivery batch.
const BATCH_BYTES: u64 = 4 * 1024 * 1024;

pub(super) struct Spool {
    path: PathBuf,
    len: u64,
    max_bytes: u64,
}

/// Why a record could not be spooled.
#[derive(Debug)]
pub(super) enum SpoolFull {
    Full,
    Io(io::Error),
}

impl Spool {
    /// Opens (creating) the spool file in `dir`, dropping a torn last line.
    pub(super) fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("audit-spool.jsonl");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let len = file.metadata()?.len();
        let kept = complete_prefix(&mut file, len)?;
        if kept != len {
            file.set_len(kept)?;
            file.sync_all()?;
        }
        Ok(Spool {
            path,
            len: kept,
            max_bytes,
        })
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends complete lines and waits until they are on disk.
    pub(super) fn append(&mut self, lines: &[u8]) -> Result<(), SpoolFull> {
        if self.len + lines.len() as u64 > self.max_bytes {
            return Err(SpoolFull::Full);
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(SpoolFull::Io)?;
        let written = file.write_all(lines).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Leave no half line behind for the next append to be glued to.
            let _ = file.set_len(self.len);
            return Err(SpoolFull::Io(e));
        }
        self.len += lines.len() as u64;
        Ok(())
    }

    /// The first complete lines (up to a batch), and how many bytes they span.
    pub(super) fn read_batch(&self) -> io::Result<(Vec<u8>, u64)> {
        let file = File::open(&self.path)?;
        let mut buf = Vec::new();
        file.take(BATCH_BYTES.min(self.len)).read_to_end(&mut buf)?;
        let end = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            // A single line longer than a batch cannot be written by `append` (records are
            // bounded far below it); treat it as unreadable and skip it whole.
            None if self.len > BATCH_BYTES => return self.skip_long_line(),
            None => 0,
        };
        buf.truncate(end);
        Ok((buf, end as u64))
    }

    fn skip_long_line(&self) -> io::Result<(Vec<u8>, u64)> {
        let mut file = File::open(&self.path)?;
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

    /// Removes the first `bytes` (delivered lines); lines appended meanwhile are kept.
    pub(super) fn consume(&mut self, bytes: u64) -> io::Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        if bytes >= self.len {
            let file = OpenOptions::new().write(true).open(&self.path)?;
            file.set_len(0)?;
            file.sync_all()?;
            self.len = 0;
            return Ok(());
        }
        // Copy the rest into a new file and rename it over the old one, so a crash leaves
        // either the old spool (redelivered; the store ignores duplicates) or the new one.
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut from = File::open(&self.path)?;
            from.seek(SeekFrom::Start(bytes))?;
            let mut to = File::create(&tmp)?;
            io::copy(&mut from, &mut to)?;
            to.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // The rename itself must reach the disk too.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        self.len -= bytes;
        Ok(())
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
    fn a_torn_last_line_is_cut_and_delivered_lines_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit-spool.jsonl"), b"one\ntwo\nthr").unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.len(), 8);
        spool.append(b"four\n").unwrap();
        let (batch, bytes) = spool.read_batch().unwrap();
        assert_eq!(batch, b"one\ntwo\nfour\n");
        spool.consume(4).unwrap();
        assert_eq!(spool.read_batch().unwrap().0, b"two\nfour\n");
        spool.consume(bytes - 4).unwrap();
        assert_eq!(spool.len(), 0);
        assert!(spool.read_batch().unwrap().0.is_empty());
    }

    #[test]
    fn a_full_spool_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 10).unwrap();
        spool.append(b"12345678\n").unwrap();
        assert!(matches!(spool.append(b"abc\n"), Err(SpoolFull::Full)));
    }
}
