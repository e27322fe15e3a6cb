//! Backups: `etcdctl snapshot save` streams a member's key space (history,
//! revisions, members) from one consistent read, followed by a trailer
//! that makes a damaged or cut file detectable; `raftwerk snapshot
//! restore` turns such a file into the data directory of a member of a
//! new cluster (each member of the new cluster is restored from the same
//! file, as with etcd). The file is raftwerk's format, not etcd's bbolt
//! database: `etcdctl snapshot status/restore` cannot read it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use raftwerk_kv::{KvStore, SnapshotSource};
use raftwerk_raft::{Configuration, HardState, LogStore, SnapshotMeta};
use raftwerk_wal::{RealFs, Wal, WalOptions};

use crate::config::ServerConfig;
use crate::snapshot_io::SnapshotWriter;

/// The log index of the snapshot a restored cluster's log starts from.
const RESTORED_INDEX: u64 = 1;

/// Ends every backup file, in a 32-byte trailer: this marker, the length
/// of the key-space data (u64) and its CRC-32C (u32), little-endian, then
/// zeros. Zeros pad the data to a multiple of 512 bytes first: etcd's
/// clients check that a snapshot is that, plus a 32-byte digest.
pub const TRAILER_MAGIC: &[u8; 8] = b"RWBACKUP";
const TRAILER_BYTES: u64 = 32;
const PAD_TO: u64 = 512;
/// Bytes per streamed chunk.
pub const CHUNK_BYTES: u64 = 1 << 20;

/// Produces a backup's chunks from `source`; the last one carries the
/// trailer. Blocking (it reads the key space): run it off the async
/// workers.
pub struct BackupWriter {
    source: SnapshotSource,
    crc: u32,
    length: u64,
    done: bool,
}

impl BackupWriter {
    pub fn new(source: SnapshotSource) -> Self {
        BackupWriter {
            source,
            crc: 0,
            length: 0,
            done: false,
        }
    }

    /// The next chunk, or `None` after the trailer.
    ///
    /// # Errors
    /// A failure reading the key space.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, raftwerk_kv::KvError> {
        if self.done {
            return Ok(None);
        }
        let mut chunk = Vec::with_capacity(CHUNK_BYTES as usize + 64 * 1024);
        let complete = self.source.write_some(&mut chunk, CHUNK_BYTES)?;
        self.crc = crc32c::crc32c_append(self.crc, &chunk);
        self.length += chunk.len() as u64;
        if complete {
            let pad = (PAD_TO - self.length % PAD_TO) % PAD_TO;
            chunk.resize(chunk.len() + pad as usize, 0);
            chunk.extend_from_slice(TRAILER_MAGIC);
            chunk.extend_from_slice(&self.length.to_le_bytes());
            chunk.extend_from_slice(&self.crc.to_le_bytes());
            chunk.resize(chunk.len() + (TRAILER_BYTES - 20) as usize, 0);
            self.done = true;
        }
        Ok(Some(chunk))
    }
}

/// Checks a backup file's trailer against its contents; returns the
/// length of the key-space data before the trailer.
///
/// # Errors
/// A file that is not a complete, intact backup.
pub fn verify(file: &Path) -> Result<u64, String> {
    let describe = |error: std::io::Error| format!("cannot read {}: {error}", file.display());
    let mut input = std::fs::File::open(file).map_err(describe)?;
    let length = input.metadata().map_err(describe)?.len();
    let not_backup = |why: &str| format!("{} is not a complete raftwerk backup ({why})", file.display());
    if length < TRAILER_BYTES || length % PAD_TO != TRAILER_BYTES {
        return Err(not_backup("its length is not that of one"));
    }
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    input.seek(SeekFrom::Start(length - TRAILER_BYTES)).map_err(describe)?;
    input.read_exact(&mut trailer).map_err(describe)?;
    if &trailer[..8] != TRAILER_MAGIC {
        return Err(not_backup("no trailer: another format, or damaged"));
    }
    let data_length = u64::from_le_bytes(trailer[8..16].try_into().expect("8 bytes"));
    let expected = u32::from_le_bytes(trailer[16..20].try_into().expect("4 bytes"));
    let padded = length - TRAILER_BYTES;
    if data_length > padded || padded - data_length >= PAD_TO || trailer[20..].iter().any(|byte| *byte != 0) {
        return Err(format!("{} is damaged: its trailer is inconsistent", file.display()));
    }
    input.seek(SeekFrom::Start(0)).map_err(describe)?;
    let mut crc = 0u32;
    let mut left = data_length;
    let mut buffer = vec![0u8; CHUNK_BYTES as usize];
    while left > 0 {
        let take = left.min(CHUNK_BYTES) as usize;
        input.read_exact(&mut buffer[..take]).map_err(describe)?;
        crc = crc32c::crc32c_append(crc, &buffer[..take]);
        left -= take as u64;
    }
    if crc != expected {
        return Err(format!(
            "{} is damaged: its checksum is {crc:08x}, the trailer says {expected:08x}",
            file.display()
        ));
    }
    let mut padding = vec![0u8; (padded - data_length) as usize];
    input.read_exact(&mut padding).map_err(describe)?;
    if padding.iter().any(|byte| *byte != 0) {
        return Err(format!("{} is damaged: its padding is not zeros", file.display()));
    }
    Ok(data_length)
}

/// Restores a backup into `config.data_dir` as a member of the new cluster
/// the flags describe: the key space with its history and revisions, the
/// member list and identity of the new cluster, an empty log.
///
/// # Errors
/// Invalid flags, a damaged backup, or a data directory that exists and is
/// not empty (nothing is changed then).
pub fn restore(config: &ServerConfig, file: &Path) -> Result<(), String> {
    config.validate().map_err(|error| error.to_string())?;
    if !config.initial_cluster_state_new {
        return Err("a backup restores a new cluster: --initial-cluster-state must be new".to_string());
    }
    let dir = &config.data_dir;
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!(
            "data directory {} exists and is not empty; restore into a new one",
            dir.display()
        ));
    }
    let data_length = verify(file)?;
    let identity = config.identity_from_flags()?;
    let created = !dir.exists();
    let result = (|| {
        std::fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let mut kv = KvStore::open(&dir.join("kv.redb")).map_err(|error| error.to_string())?;
        let input = std::fs::File::open(file).map_err(|error| format!("cannot read {}: {error}", file.display()))?;
        kv.restore_snapshot(&mut input.take(data_length))
            .map_err(|error| format!("{}: {error}", file.display()))?;
        kv.reset_for_new_cluster(&identity.bootstrap, RESTORED_INDEX)
            .map_err(|error| error.to_string())?;
        let revision = kv.revision();
        // The new log starts from a snapshot of the restored key space at
        // (RESTORED_INDEX, term 1), the same on every restored member: a
        // member added later is caught up from it.
        let mut wal = Wal::open(RealFs, dir, WalOptions::default()).map_err(|error| error.to_string())?;
        let mut writer = SnapshotWriter::new(&mut wal, RESTORED_INDEX, 1, 0);
        kv.write_snapshot(&mut writer).map_err(|error| error.to_string())?;
        writer.finish().map_err(|error| error.to_string())?;
        let voters = identity.bootstrap.iter().map(|member| member.id).collect();
        let meta = SnapshotMeta {
            index: RESTORED_INDEX,
            term: 1,
            configuration: Configuration::new(voters, Vec::new()),
        };
        wal.install_snapshot(&meta)
            .and_then(|()| {
                wal.save_hard_state(HardState {
                    term: 1,
                    vote: 0,
                    commit: RESTORED_INDEX,
                })
            })
            .and_then(|()| wal.sync())
            .map_err(|error| error.to_string())?;
        drop(wal);
        drop(kv);
        identity.store(dir)?;
        Ok(revision)
    })();
    match result {
        Ok(revision) => {
            let mut out = std::io::stdout();
            let _ = writeln!(
                out,
                "restored {} into {} (member {} of cluster {:x}, revision {revision})",
                file.display(),
                dir.display(),
                config.name,
                identity.cluster_id
            );
            Ok(())
        }
        Err(error) => {
            // Leave nothing half made behind.
            if created {
                let _ = std::fs::remove_dir_all(dir);
            } else if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftwerk_kv::{Command, PutRequest};

    #[test]
    fn a_backup_verifies_and_any_damage_or_cut_is_found() {
        let mut store = KvStore::in_memory().unwrap();
        for at in 0..50u64 {
            let put = PutRequest {
                key: format!("key{at}").into_bytes(),
                value: vec![b'v'; 100],
                ..PutRequest::default()
            };
            store.apply(&[(at + 1, Command::Put(put))]).unwrap();
        }
        let mut writer = BackupWriter::new(store.snapshot_source().unwrap());
        let mut bytes = Vec::new();
        while let Some(chunk) = writer.next_chunk().unwrap() {
            bytes.extend_from_slice(&chunk);
        }
        assert_eq!(bytes.len() as u64 % PAD_TO, TRAILER_BYTES, "etcd's clients check this");
        let dir = std::env::temp_dir().join(format!("raftwerk-backup-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("backup.db");
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            verify(&path)
        };
        let data_length = check(&bytes).expect("an intact backup verifies");
        assert!(data_length > 5000 && data_length <= bytes.len() as u64 - TRAILER_BYTES);
        for at in [0, bytes.len() / 2, data_length as usize - 1, bytes.len() - 20] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert!(check(&damaged).is_err(), "a flipped bit at {at} went unnoticed");
        }
        assert!(check(&bytes[..bytes.len() - 512]).is_err(), "a cut file went unnoticed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
