//! Files that must hold up under a crash or a second process: whole files written atomically,
//! and lock files that keep two processes apart.
//!
//! - [`write_atomic`]: a temporary file in the same directory, fsynced, renamed over the
//!   target, then the directory fsynced. A reader (or a crash) sees the old file or the new
//!   one, never half of one. [`install`] is its second half, for a file written elsewhere.
//! - [`FileSum`]: a file's size and hash, to tell later whether it still holds what was written.
//! - [`Lock`]: an OS lock (`flock`) on a lock file holding the holder's pid. The OS frees it
//!   when the process dies, `kill -9` included, so a lock is never stale.
//!
//! Knows nothing of what the files hold; callers word the messages.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes `bytes` to `path` atomically and durably (see the module docs). A device or a pipe
/// (`--report /dev/null`, a FIFO) is written as it is: renaming over it would replace it with
/// a regular file, and, for root, `/dev/null` itself.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if is_special(path) {
        return OpenOptions::new().write(true).open(path)?.write_all(bytes);
    }
    let tmp = temporary(path);
    let written = File::create(&tmp)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| install(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Puts the finished file `tmp` in the place of `path` for good: fsyncs it, renames it over
/// `path` (atomic: both in one directory), then fsyncs the directory so the rename survives a
/// power cut. For files written by a library that wants a path of its own (the workbook).
pub fn install(tmp: &Path, path: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, path)?;
    sync_dir(path)
}

/// Whether `path` (followed through links) is something other than a regular file or a
/// directory: a device or a pipe, which can be written but never replaced.
pub fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// The temporary name [`write_atomic`] writes `path` under first: hidden, beside it (the same
/// file system, so the rename is atomic), ending in `.tmp` (which the inbox never picks up).
pub fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Fsyncs the directory holding `path`, so a rename into it survives a power cut.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Not every platform can open a directory; where it cannot, there is nothing to sync.
    match File::open(dir) {
        Ok(dir) => dir.sync_all(),
        Err(_) => Ok(()),
    }
}

/// A file's size and BLAKE3 hash: enough to tell later whether it still holds these bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileSum {
    pub size: u64,
    pub blake3: String,
}

impl FileSum {
    /// Reads the whole file.
    pub fn of(path: &Path) -> io::Result<FileSum> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(file)?;
        Ok(FileSum {
            size,
            blake3: hasher.finalize().to_hex().to_string(),
        })
    }

    /// Whether `path` holds these bytes (the size is compared first, without reading).
    pub fn matches(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == self.size)
            && FileSum::of(path).is_ok_and(|sum| sum == *self)
    }
}

/// A lock held by this process until dropped.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
    /// Remove the lock file when released (for lock files beside the user's files).
    remove: bool,
}

/// Who holds a lock: the pid it wrote, when it got that far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder(pub Option<String>);

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(pid) => write!(f, "another mailsift process (pid {pid})"),
            None => f.write_str("another mailsift process"),
        }
    }
}

impl Lock {
    /// Takes the lock on `path` (creating the file), or says who holds it.
    ///
    /// A lock held for an instant is waited for, up to a second: a program that holds a lock
    /// and spawns children from other threads (the test harness does) leaves the lock's open
    /// file in a child for the instant between fork and exec. A real holder keeps it for as
    /// long as it runs, and the caller still gets its answer within a second.
    pub fn try_take(path: &Path) -> io::Result<Result<Lock, Holder>> {
        let mut tries = 0;
        loop {
            let file = open(path)?;
            match file.try_lock() {
                Ok(()) => {
                    if let Some(lock) = Lock::held(file, path)? {
                        return Ok(Ok(lock));
                    }
                }
                Err(std::fs::TryLockError::WouldBlock) if tries < 20 => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Ok(Err(holder_of(path))),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            tries += 1;
        }
    }

    /// Takes the lock on `path`, waiting for as long as another process holds it (blocking).
    pub fn wait(path: &Path) -> io::Result<Lock> {
        loop {
            let file = open(path)?;
            file.lock()?;
            if let Some(lock) = Lock::held(file, path)? {
                return Ok(lock);
            }
        }
    }

    /// The lock file is removed when the lock is released (a `kill -9` leaves it behind, freed
    /// by the OS, for the next run to take).
    pub fn removed_when_released(mut self) -> Lock {
        self.remove = true;
        self
    }

    /// A locked file still at `path` becomes the lock, with our pid written in it. `None`: the
    /// file was removed (or replaced) by its last holder between our open and our lock; the
    /// caller opens the path again.
    fn held(mut file: File, path: &Path) -> io::Result<Option<Lock>> {
        if !same_file(&file, path) {
            return Ok(None);
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Some(Lock {
            file,
            path: path.to_owned(),
            remove: false,
        }))
    }

    /// Who holds the lock on `path`, if anyone does (checked without taking it for long).
    pub fn holder(path: &Path) -> Option<Holder> {
        let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
        match file.try_lock() {
            Ok(()) => None,
            Err(_) => Some(holder_of(path)),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still held: whoever opened the old file sees it is gone once it gets
        // the lock, and opens the path again ([`Lock::held`]).
        if self.remove {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn holder_of(path: &Path) -> Holder {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    let pid = text.trim();
    Holder((!pid.is_empty()).then(|| pid.to_owned()))
}

/// Whether the open `file` is the one `path` names now.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write_atomic(&path, b"first, longer").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A directory that does not exist: an error, nothing left behind.
        assert!(write_atomic(&dir.path().join("no/such.json"), b"x").is_err());
    }

    #[test]
    fn a_sum_tells_the_same_bytes_from_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, b"a,b\n1,2\n").unwrap();
        let sum = FileSum::of(&path).unwrap();
        assert_eq!(sum.size, 8);
        assert!(sum.matches(&path));
        std::fs::write(&path, b"a,b\n1,3\n").unwrap(); // same size, other bytes
        assert!(!sum.matches(&path));
        std::fs::remove_file(&path).unwrap();
        assert!(!sum.matches(&path));
    }

    #[test]
    fn a_lock_is_exclusive_names_its_holder_and_is_freed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".out.csv.lock");
        let lock = Lock::try_take(&path).unwrap().unwrap();
        // flock locks belong to the open file: a second open in this process is refused too.
        let me = Holder(Some(std::process::id().to_string()));
        assert_eq!(Lock::try_take(&path).unwrap().unwrap_err(), me);
        assert_eq!(Lock::holder(&path), Some(me));
        drop(lock);
        assert_eq!(Lock::holder(&path), None);
        let lock = Lock::try_take(&path)
            .unwrap()
            .unwrap()
            .removed_when_released();
        drop(lock);
        assert!(!path.exists());
        // Taken again after removal: a fresh file.
        let _again = Lock::wait(&path).unwrap();
        assert!(path.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_device_or_a_pipe_is_written_in_place_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("report.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mkfifo is not available here");
            return;
        }
        // `--report /dev/null` must not replace /dev/null; a FIFO stands in for the device.
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        assert!(is_special(&fifo));
        write_atomic(&fifo, b"{\"schema\":1}").unwrap();
        assert_eq!(reader.join().unwrap(), b"{\"schema\":1}");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(!is_special(dir.path()));
        let file = dir.path().join("plain");
        write_atomic(&file, b"x").unwrap();
        assert!(!is_special(&file));
    }
}
