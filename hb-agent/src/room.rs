//! Room kept ahead of an append-only record file (the audit log, the events file):
//! blocks allocated past its end (`fallocate` with `FALLOC_FL_KEEP_SIZE`), which the
//! file's next appends write into and nothing else on the filesystem can take. A
//! sandbox whose work dir shares the filesystem and fills it leaves the records of what
//! it does next [`ROOM`] of room, not none (attack review 12).
//!
//! Owns: topping that room up after appends, and giving it back when the file is
//! rotated away. Must never: change a file's size or its content.

use std::{fs::File, io, os::fd::AsRawFd as _};

/// The room kept past a record file's end; topped up when less than half is left.
pub const ROOM: u64 = 1 << 20;

/// The room allocated past one open file's end.
#[derive(Default)]
pub struct Room {
    /// The offset up to which blocks are allocated (0: none asked for yet).
    until: u64,
    /// The last top-up failed (logged once until one succeeds again).
    failing: bool,
}

impl Room {
    /// The room of a file just opened, `end` bytes long: allocated at once, so the first
    /// records after a start find it too.
    pub fn ahead_of(file: &File, end: u64) -> Self {
        let mut room = Self::default();
        room.keep(file, end);
        room
    }

    /// After an append that left `file` `end` bytes long: the room past `end` is topped
    /// up to [`ROOM`] when less than half of it is left. A filesystem that is full keeps
    /// what room is left (the records go on into it), and says so once.
    pub fn keep(&mut self, file: &File, end: u64) {
        if self.until >= end + ROOM / 2 {
            return;
        }
        match allocate(file, end, ROOM) {
            Ok(()) => {
                self.until = end + ROOM;
                if std::mem::take(&mut self.failing) {
                    tracing::info!("record file room allocated again");
                }
            }
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    error = %e,
                    left = self.until.saturating_sub(end),
                    "cannot allocate room ahead of a record file (its filesystem is full?): \
                     records go on into what is left"
                );
            }
            Err(_) => {}
        }
    }

    /// Gives the room past the file's end back (it is rotated away and written no
    /// more): a truncation to its own length frees the blocks past it. Called under the
    /// lock every writer of the file appends under, so the length is the last write's.
    pub fn release(&mut self, file: &File) {
        if self.until > 0
            && let Ok(meta) = file.metadata()
        {
            let _ = file.set_len(meta.len());
        }
        self.until = 0;
    }
}

/// `fallocate(FALLOC_FL_KEEP_SIZE)`: blocks for `[offset, offset + len)`, size unchanged.
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: a valid open descriptor; fallocate takes no pointers.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, os::unix::fs::MetadataExt as _};

    use super::*;

    #[test]
    fn room_is_allocated_past_the_end_without_changing_the_file_and_given_back() {
        let dir = std::env::temp_dir().join(format!("hb-room-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("records");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(b"one record\n").expect("write");
        let mut room = Room::default();
        room.keep(&file, 11);
        let meta = file.metadata().expect("metadata");
        assert_eq!(meta.len(), 11, "the size is the records'");
        assert!(
            meta.blocks() * 512 >= ROOM,
            "{} bytes allocated",
            meta.blocks() * 512
        );
        file.write_all(b"two\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"one record\ntwo\n");
        room.release(&file);
        let meta = file.metadata().expect("metadata");
        assert_eq!(meta.len(), 15);
        assert!(
            meta.blocks() * 512 < ROOM,
            "{} bytes still allocated",
            meta.blocks() * 512
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
