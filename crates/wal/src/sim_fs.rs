//! An in-memory file system for crash testing: reads see every write, but
//! only synced data (`sync_data`) and synced names (`sync_dir`) survive a
//! `crash`. A crash may also tear the last unsynced write, leaving a random
//! prefix of it on "disk"; syncs can be made to fail; bits can be flipped.
//! Deterministic: randomness comes from the caller.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{FileSystem, WalFile};

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct SimState {
    next_inode: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    inodes: BTreeMap<u64, Inode>,
    locked: BTreeSet<u64>,
    /// The latest write not yet synced: `(inode, offset, bytes)`.
    last_write: Option<(u64, u64, Vec<u8>)>,
    /// The next `sync_data` or `sync_dir` fails (and makes nothing durable).
    fail_next_sync: bool,
    syncs: u64,
    writes: u64,
}

/// A shared handle to one simulated disk.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

/// An open file of a `SimFs`.
#[derive(Debug)]
pub struct SimFile {
    fs: SimFs,
    inode: u64,
    holds_lock: Cell<bool>,
}

impl SimFs {
    pub fn new() -> Self {
        SimFs::default()
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().expect("sim fs lock poisoned")
    }

    /// The machine loses power: unsynced data and names are lost, locks are
    /// released. With `tear = Some(fraction_per_mille)`, the last unsynced
    /// write leaves that share of its bytes (a prefix) on disk.
    pub fn crash(&self, tear_per_mille: Option<u64>) {
        let mut state = self.state();
        if let (Some(per_mille), Some((inode, offset, bytes))) = (tear_per_mille, state.last_write.take()) {
            let kept = (bytes.len() as u64 * per_mille.min(1000) / 1000) as usize;
            if let Some(node) = state.inodes.get_mut(&inode) {
                let end = offset as usize + kept;
                if node.durable.len() < end {
                    node.durable.resize(end, 0);
                }
                node.durable[offset as usize..end].copy_from_slice(&bytes[..kept]);
            }
        }
        state.last_write = None;
        state.names = state.durable_names.clone();
        let live: BTreeSet<u64> = state.names.values().copied().collect();
        state.inodes.retain(|inode, _| live.contains(inode));
        for node in state.inodes.values_mut() {
            node.data = node.durable.clone();
        }
        state.locked.clear();
        state.fail_next_sync = false;
    }

    /// The next sync fails with an I/O error and makes nothing durable.
    pub fn fail_next_sync(&self) {
        self.state().fail_next_sync = true;
    }

    /// Flips one bit of a file's current and durable contents (media
    /// corruption).
    ///
    /// # Panics
    /// If the file does not exist or is shorter than `offset`.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) {
        let mut state = self.state();
        let inode = state.names[path];
        let node = state.inodes.get_mut(&inode).expect("named inode exists");
        node.data[offset as usize] ^= 1 << (bit % 8);
        if (offset as usize) < node.durable.len() {
            node.durable[offset as usize] ^= 1 << (bit % 8);
        }
    }

    /// Syncs done so far (each `sync_data` or `sync_dir`).
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    pub fn writes(&self) -> u64 {
        self.state().writes
    }

    /// Current length of a file, if it exists.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let state = self.state();
        state.names.get(path).map(|inode| state.inodes[inode].data.len() as u64)
    }

    fn take_failure(state: &mut SimState) -> io::Result<()> {
        state.syncs += 1;
        if std::mem::take(&mut state.fail_next_sync) {
            return Err(io::Error::other("simulated I/O error on sync"));
        }
        Ok(())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl WalFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let state = self.fs.state();
        let data = &state.inodes[&self.inode].data;
        let start = (offset as usize).min(data.len());
        let count = buf.len().min(data.len() - start);
        buf[..count].copy_from_slice(&data[start..start + count]);
        Ok(count)
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.fs.state();
        state.writes += 1;
        let node = state.inodes.get_mut(&self.inode).expect("open inode exists");
        let end = offset as usize + bytes.len();
        if node.data.len() < end {
            node.data.resize(end, 0);
        }
        node.data[offset as usize..end].copy_from_slice(bytes);
        state.last_write = Some((self.inode, offset, bytes.to_vec()));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.fs.state();
        SimFs::take_failure(&mut state)?;
        let node = state.inodes.get_mut(&self.inode).expect("open inode exists");
        node.durable = node.data.clone();
        if state
            .last_write
            .as_ref()
            .is_some_and(|(inode, _, _)| *inode == self.inode)
        {
            state.last_write = None;
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.fs.state().inodes[&self.inode].data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.fs.state();
        let node = state.inodes.get_mut(&self.inode).expect("open inode exists");
        node.data.resize(len as usize, 0);
        Ok(())
    }

    fn try_lock(&self) -> io::Result<bool> {
        let mut state = self.fs.state();
        if !state.locked.insert(self.inode) {
            return Ok(false);
        }
        self.holds_lock.set(true);
        Ok(true)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        if self.holds_lock.get() {
            self.fs.state().locked.remove(&self.inode);
        }
    }
}

impl FileSystem for SimFs {
    type File = SimFile;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let mut current = PathBuf::new();
        for component in path.components() {
            current.push(component);
            state.dirs.insert(current.clone());
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        let mut state = self.state();
        let inode = match state.names.get(path) {
            Some(inode) => *inode,
            None if create => {
                let parent = path.parent().unwrap_or(Path::new(""));
                if !parent.as_os_str().is_empty() && !state.dirs.contains(parent) {
                    return Err(not_found(parent));
                }
                state.next_inode += 1;
                let inode = state.next_inode;
                state.inodes.insert(inode, Inode::default());
                state.names.insert(path.to_path_buf(), inode);
                inode
            }
            None => return Err(not_found(path)),
        };
        Ok(SimFile {
            fs: self.clone(),
            inode,
            holds_lock: Cell::new(false),
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.names.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.state();
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        Ok(state
            .names
            .keys()
            .filter(|name| name.parent() == Some(path))
            .filter_map(|name| name.file_name().map(|file| file.to_string_lossy().into_owned()))
            .collect())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        SimFs::take_failure(&mut state)?;
        let in_dir = |name: &PathBuf| name.parent() == Some(path);
        state.durable_names.retain(|name, _| !in_dir(name));
        let current: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter(|(name, _)| in_dir(name))
            .map(|(name, inode)| (name.clone(), *inode))
            .collect();
        state.durable_names.extend(current);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_data_and_names_only() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let file = fs.open(Path::new("/d/a"), true).unwrap();
        file.write_at(b"hello", 0).unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        file.write_at(b" world", 5).unwrap();
        let other = fs.open(Path::new("/d/b"), true).unwrap();
        other.write_at(b"x", 0).unwrap();
        other.sync_data().unwrap();
        drop((file, other));
        fs.crash(None);
        assert_eq!(
            fs.list_dir(Path::new("/d")).unwrap(),
            vec!["a".to_string()],
            "b's name was never synced"
        );
        let file = fs.open(Path::new("/d/a"), false).unwrap();
        let mut buf = vec![0; 16];
        let read = file.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..read], b"hello");
    }

    #[test]
    fn crash_can_tear_the_last_write() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let file = fs.open(Path::new("/d/a"), true).unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        file.write_at(b"0123456789", 0).unwrap();
        drop(file);
        fs.crash(Some(500));
        assert_eq!(fs.file_len(Path::new("/d/a")), Some(5));
    }

    #[test]
    fn failed_sync_makes_nothing_durable() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let file = fs.open(Path::new("/d/a"), true).unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        file.write_at(b"data", 0).unwrap();
        fs.fail_next_sync();
        assert!(file.sync_data().is_err());
        drop(file);
        fs.crash(None);
        assert_eq!(fs.file_len(Path::new("/d/a")), Some(0));
    }

    #[test]
    fn a_locked_file_cannot_be_locked_again_until_dropped() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let first = fs.open(Path::new("/d/LOCK"), true).unwrap();
        assert!(first.try_lock().unwrap());
        let second = fs.open(Path::new("/d/LOCK"), true).unwrap();
        assert!(!second.try_lock().unwrap());
        drop(first);
        assert!(second.try_lock().unwrap());
    }
}
