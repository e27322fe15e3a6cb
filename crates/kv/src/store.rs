//! The MVCC key space on redb.
//!
//! Every version of every key is one row of the `revisions` table, keyed by
//! `(user key, revision)` (see `keys`); a delete writes a tombstone row. The
//! `meta` table holds the applied log index, the current revision and the
//! compaction revision. `apply` runs a batch of committed commands in ONE
//! redb write transaction together with the new applied index, so a crash
//! leaves either all of a batch or none of it, and a restart resumes from
//! the applied index (RELIABILITY #2). The `members` table holds the
//! cluster's member list, changed in the same transactions.
//!
//! Memory: nothing is cached beyond redb's page cache; reads stream over
//! the table, and only a range's result (bounded by its limit, except when
//! it must be sorted by something other than the key) is held.

use std::io::{Read, Write};
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::errors::KvError;
use crate::keys::{key_prefix, row_key, split_row_key, Revision};
use crate::members::{Member, MemberChange};
use crate::types::{
    Command, CommandResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest,
    TxnResponse,
};

const REVISIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("revisions");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Member id to encoded `Member`.
const MEMBERS: TableDefinition<u64, &[u8]> = TableDefinition::new("members");
const META_APPLIED: &str = "applied_index";
const META_REVISION: &str = "revision";
const META_COMPACT: &str = "compact_revision";
/// The compaction revision of a key space never compacted (etcd's value).
pub const NEVER_COMPACTED: i64 = -1;
/// Version 2 added the member list after the header; version 3 ends the
/// rows with `END_OF_ROWS` and their count, so a cut snapshot is refused.
const SNAPSHOT_MAGIC: &[u8; 8] = b"RWKVSNP3";
const END_OF_ROWS: u32 = u32::MAX;
/// Longest row key or value a snapshot may carry (a damaged length must
/// not become a huge allocation).
const ROW_PART_BYTES_MAX: usize = 256 << 20;

const TOMBSTONE: u8 = 1;
/// redb's page cache: what the key space keeps in memory, whatever its size
/// on disk.
pub const CACHE_BYTES: usize = 64 << 20;

/// One stored version: the row value is flags, create revision, version,
/// lease, then the value bytes.
fn encode_row(kv: &KeyValue, tombstone: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + kv.value.len());
    out.push(if tombstone { TOMBSTONE } else { 0 });
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// Decodes a row into the version it stores (`None` for a tombstone).
fn decode_row(row_key_bytes: &[u8], row: &[u8]) -> Result<(Vec<u8>, Revision, Option<KeyValue>), KvError> {
    let (key, revision) = split_row_key(row_key_bytes).map_err(|error| KvError::Storage(error.to_string()))?;
    if row.len() < 25 {
        return Err(KvError::Storage("revision row too short".to_string()));
    }
    if row[0] & TOMBSTONE != 0 {
        return Ok((key, revision, None));
    }
    let field = |at: usize| i64::from_le_bytes(row[at..at + 8].try_into().expect("8 bytes"));
    let kv = KeyValue {
        key: key.clone(),
        create_revision: field(1),
        mod_revision: revision.main,
        version: field(9),
        lease: field(17),
        value: row[25..].to_vec(),
    };
    Ok((key, revision, Some(kv)))
}

/// The storage-key bounds of a user-key range: `(start, end)` with `None`
/// for an unbounded end. An empty `range_end` means the key alone.
fn row_bounds(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let start = key_prefix(key);
    if range_end.is_empty() {
        let mut end = key_prefix(key);
        end.extend_from_slice(&[0xFF; 17]);
        return (start, Some(end));
    }
    if range_end == [0] {
        return (start, None);
    }
    (start, Some(key_prefix(range_end)))
}

/// Visits the live version at `at` of every key in `[key, range_end)`, in
/// key order; stops when `visit` returns false.
fn scan<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    key: &[u8],
    range_end: &[u8],
    at: i64,
    mut visit: impl FnMut(KeyValue) -> Result<bool, KvError>,
) -> Result<(), KvError> {
    if !range_end.is_empty() && range_end != [0] && range_end <= key {
        return Ok(());
    }
    let (start, end) = row_bounds(key, range_end);
    let rows = match &end {
        Some(end) => table.range(start.as_slice()..end.as_slice())?,
        None => table.range(start.as_slice()..)?,
    };
    let mut current: Option<(Vec<u8>, Option<KeyValue>)> = None;
    for row in rows {
        let (row_key_guard, value_guard) = row?;
        let (user_key, revision, version) = decode_row(row_key_guard.value(), value_guard.value())?;
        if current.as_ref().is_some_and(|(held, _)| *held != user_key) {
            if let Some((_, Some(kv))) = current.take() {
                if !visit(kv)? {
                    return Ok(());
                }
            }
        }
        if revision.main > at {
            // A newer version than the read revision: keep what we have.
            if current.is_none() {
                current = Some((user_key, None));
            }
            continue;
        }
        current = Some((user_key, version));
    }
    if let Some((_, Some(kv))) = current {
        visit(kv)?;
    }
    Ok(())
}

/// The live version of `key` at `at`, if any.
fn latest<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    key: &[u8],
    at: i64,
) -> Result<Option<KeyValue>, KvError> {
    let start = row_key(key, Revision { main: 0, sub: 0 });
    let end = row_key(
        key,
        Revision {
            main: at,
            sub: i64::MAX,
        },
    );
    match table.range(start.as_slice()..=end.as_slice())?.next_back() {
        Some(row) => {
            let (row_key_guard, value_guard) = row?;
            Ok(decode_row(row_key_guard.value(), value_guard.value())?.2)
        }
        None => Ok(None),
    }
}

/// The MVCC store of one node.
pub struct KvStore {
    db: Database,
    applied_index: u64,
    revision: i64,
    compact_revision: i64,
    /// Batches commit durably (fsync) — or not, when the log they come
    /// from is durable elsewhere and replays them after a crash.
    durable_commits: bool,
}

/// A consistent read-only view of a `KvStore` (see `KvStore::reader`).
pub struct KvReader {
    txn: redb::ReadTransaction,
    revision: i64,
    compact_revision: i64,
}

impl KvReader {
    /// Serves a read from this view.
    ///
    /// # Errors
    /// `Compacted` or `FutureRevision` for a revision outside the history;
    /// `Storage` on failure.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, KvError> {
        let table = self.txn.open_table(REVISIONS)?;
        range_at(&table, request, self.revision, self.compact_revision, self.revision)
    }

    /// See `KvStore::hash_all`.
    ///
    /// # Errors
    /// Storage failures.
    pub fn hash_all(&self) -> Result<u32, KvError> {
        let txn = &self.txn;
        let mut hash = crc32c::crc32c(&self.revision.to_le_bytes());
        hash = crc32c::crc32c_append(hash, &self.compact_revision.to_le_bytes());
        for row in txn.open_table(REVISIONS)?.range(..)? {
            let (key, value) = row?;
            hash = crc32c::crc32c_append(hash, key.value());
            hash = crc32c::crc32c_append(hash, value.value());
        }
        for row in txn.open_table(MEMBERS)?.range(..)? {
            let (id, value) = row?;
            hash = crc32c::crc32c_append(hash, &id.value().to_le_bytes());
            hash = crc32c::crc32c_append(hash, value.value());
        }
        Ok(hash)
    }

    /// See `KvStore::hash_kv`.
    ///
    /// # Errors
    /// `Compacted` or `FutureRevision` outside the history; storage.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), KvError> {
        let table = self.txn.open_table(REVISIONS)?;
        let (current, compact_revision) = (self.revision, self.compact_revision);
        let at = if revision > 0 { revision } else { current };
        if at > current {
            return Err(KvError::FutureRevision { revision, current });
        }
        // As etcd 3.4/3.5: the compaction revision itself is compacted.
        if revision > 0 && at <= compact_revision {
            return Err(KvError::Compacted {
                revision,
                compact_revision,
            });
        }
        let mut hash = 0u32;
        for row in table.range(..)? {
            let (key, value) = row?;
            let (_, row_revision) =
                split_row_key(key.value()).map_err(|_| KvError::Storage("damaged row key".to_string()))?;
            if row_revision.main <= at {
                hash = crc32c::crc32c_append(hash, key.value());
                hash = crc32c::crc32c_append(hash, value.value());
            }
        }
        Ok((hash, compact_revision, at))
    }
}

/// A snapshot being written in steps (see `KvStore::snapshot_source`).
pub struct SnapshotSource {
    /// The header and member list, until written.
    head: Option<Vec<u8>>,
    rows: redb::OwnedRange<&'static [u8], &'static [u8]>,
    rows_written: u64,
    written: u64,
}

impl SnapshotSource {
    /// Writes at least `budget` bytes more (or all that is left); returns
    /// whether the snapshot is complete.
    ///
    /// # Errors
    /// Storage or `out` failures.
    pub fn write_some(&mut self, out: &mut impl Write, budget: u64) -> Result<bool, KvError> {
        let start = self.written;
        if let Some(head) = self.head.take() {
            out.write_all(&head)?;
            self.written += head.len() as u64;
        }
        while self.written - start < budget {
            let Some(row) = self.rows.next() else {
                out.write_all(&END_OF_ROWS.to_le_bytes())?;
                out.write_all(&self.rows_written.to_le_bytes())?;
                self.written += 12;
                return Ok(true);
            };
            self.rows_written += 1;
            let (key, value) = row?;
            let (key, value) = (key.value(), value.value());
            out.write_all(&(key.len() as u32).to_le_bytes())?;
            out.write_all(key)?;
            out.write_all(&(value.len() as u32).to_le_bytes())?;
            out.write_all(value)?;
            self.written += 8 + key.len() as u64 + value.len() as u64;
        }
        Ok(false)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

/// The state a write command works on inside a batch.
struct Writer<'txn> {
    table: redb::Table<'txn, &'static [u8], &'static [u8]>,
    /// The revision this command writes at, and the next sub-revision.
    main: i64,
    sub: i64,
}

impl Writer<'_> {
    fn wrote(&self) -> bool {
        self.sub > 0
    }

    fn put(&mut self, put: &PutRequest) -> Result<PutResponse, KvError> {
        if put.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        if put.ignore_value && !put.value.is_empty() {
            return Err(KvError::ValueProvided);
        }
        if put.ignore_lease && put.lease != 0 {
            return Err(KvError::LeaseProvided);
        }
        if put.lease != 0 {
            return Err(KvError::LeaseNotFound);
        }
        let previous = latest(&self.table, &put.key, i64::MAX)?;
        if (put.ignore_value || put.ignore_lease) && previous.is_none() {
            return Err(KvError::KeyNotFound);
        }
        let value = match (&previous, put.ignore_value) {
            (Some(previous), true) => previous.value.clone(),
            _ => put.value.clone(),
        };
        let lease = match (&previous, put.ignore_lease) {
            (Some(previous), true) => previous.lease,
            _ => put.lease,
        };
        let kv = KeyValue {
            key: put.key.clone(),
            create_revision: previous.as_ref().map_or(self.main, |previous| previous.create_revision),
            mod_revision: self.main,
            version: previous.as_ref().map_or(1, |previous| previous.version + 1),
            value,
            lease,
        };
        self.insert(&kv, false)?;
        Ok(PutResponse {
            revision: self.main,
            prev_kv: if put.prev_kv { previous } else { None },
        })
    }

    fn delete_range(&mut self, delete: &DeleteRangeRequest) -> Result<DeleteRangeResponse, KvError> {
        let mut live = Vec::new();
        scan(&self.table, &delete.key, &delete.range_end, i64::MAX, |kv| {
            live.push(kv);
            Ok(true)
        })?;
        for kv in &live {
            self.insert(kv, true)?;
        }
        Ok(DeleteRangeResponse {
            revision: if live.is_empty() { self.main - 1 } else { self.main },
            deleted: live.len() as i64,
            prev_kvs: if delete.prev_kv { live } else { Vec::new() },
        })
    }

    fn insert(&mut self, kv: &KeyValue, tombstone: bool) -> Result<(), KvError> {
        let row = row_key(
            &kv.key,
            Revision {
                main: self.main,
                sub: self.sub,
            },
        );
        self.sub += 1;
        self.table
            .insert(row.as_slice(), encode_row(kv, tombstone).as_slice())?;
        Ok(())
    }
}

impl KvStore {
    /// Opens (creating if needed) the store in the redb file at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened or is not a redb database.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        Self::from_database(Database::builder().set_cache_size(CACHE_BYTES).create(path)?)
    }

    /// A store in memory (tests, simulations).
    ///
    /// # Errors
    /// When redb cannot initialise.
    pub fn in_memory() -> Result<Self, KvError> {
        Self::from_database(Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?)
    }

    fn from_database(db: Database) -> Result<Self, KvError> {
        let txn = db.begin_write()?;
        {
            txn.open_table(REVISIONS)?;
            txn.open_table(META)?;
            txn.open_table(MEMBERS)?;
        }
        txn.commit()?;
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let read = |name: &str, fresh: u64| -> Result<u64, KvError> {
            Ok(meta.get(name)?.map_or(fresh, |value| value.value()))
        };
        // As etcd: a key space never compacted reports -1. (Unlike etcd,
        // an empty key space is at revision 0, not 1: every revision is one
        // lower than etcd's.)
        let (applied_index, revision, compact_revision) = (
            read(META_APPLIED, 0)?,
            read(META_REVISION, 0)? as i64,
            read(META_COMPACT, NEVER_COMPACTED as u64)? as i64,
        );
        drop(meta);
        drop(txn);
        Ok(KvStore {
            db,
            applied_index,
            revision,
            compact_revision,
            durable_commits: true,
        })
    }

    /// Whether `apply` makes each batch durable before returning. A server
    /// whose WAL holds every applied entry turns this off: a crash then
    /// loses the latest batches as a whole (data and applied index
    /// together), and they are applied again from the log. `persist` makes
    /// everything applied so far durable.
    pub fn set_durable_commits(&mut self, durable: bool) {
        self.durable_commits = durable;
    }

    /// Makes every batch applied so far durable.
    ///
    /// # Errors
    /// A storage failure.
    pub fn persist(&mut self) -> Result<(), KvError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_APPLIED, self.applied_index)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The last log index applied (0 for a new store).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The current revision (0 before the first write).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// The member list, sorted by id (removed members are not in it).
    ///
    /// # Errors
    /// Storage failures or a damaged record.
    pub fn members(&self) -> Result<Vec<Member>, KvError> {
        let txn = self.db.begin_read()?;
        Ok(read_members(&txn.open_table(MEMBERS)?)?
            .into_iter()
            .filter(|member| !member.removed)
            .collect())
    }

    /// The ids of members removed from the cluster.
    ///
    /// # Errors
    /// Storage failures or a damaged record.
    pub fn removed_members(&self) -> Result<Vec<u64>, KvError> {
        let txn = self.db.begin_read()?;
        Ok(read_members(&txn.open_table(MEMBERS)?)?
            .into_iter()
            .filter(|member| member.removed)
            .map(|member| member.id)
            .collect())
    }

    /// Records the cluster's first members in a store that has applied
    /// nothing yet (every node of a new cluster starts from the same list,
    /// as does a node joining it). A store that already has members keeps
    /// them.
    ///
    /// # Errors
    /// Storage failures.
    pub fn bootstrap_members(&mut self, members: &[Member]) -> Result<(), KvError> {
        if self.applied_index > 0 || !self.members()?.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(MEMBERS)?;
            for member in members {
                table.insert(member.id, member.encode().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Applies committed commands, in order, in one transaction that also
    /// records the last index as applied. Commands at or below the applied
    /// index are skipped (a replay after a restart). A command that fails
    /// changes nothing and its error is its response.
    ///
    /// # Errors
    /// A storage failure: nothing of the batch was applied.
    pub fn apply(&mut self, commands: &[(u64, Command)]) -> Result<Vec<Result<CommandResponse, KvError>>, KvError> {
        let through = commands.last().map_or(0, |(index, _)| *index);
        self.apply_through(commands, through)
    }

    /// As `apply`, recording `through` as the applied index: the batch's
    /// last log entry, which may carry no command (a new leader's empty
    /// entry, a configuration change). A snapshot taken at the log's applied
    /// index then always matches the key space's.
    ///
    /// # Errors
    /// A storage failure: nothing of the batch was applied.
    pub fn apply_through(
        &mut self,
        commands: &[(u64, Command)],
        through: u64,
    ) -> Result<Vec<Result<CommandResponse, KvError>>, KvError> {
        let fresh: Vec<&(u64, Command)> = commands
            .iter()
            .filter(|(index, _)| *index > self.applied_index)
            .collect();
        let last_index = fresh.last().map_or(0, |(index, _)| *index).max(through);
        if last_index <= self.applied_index {
            return Ok(Vec::new());
        }
        // A command that fails after writing part of itself (a transaction
        // whose later op fails) must leave nothing: the batch's transaction
        // is then abandoned and run again with that command skipped. Runs
        // are deterministic, so the retry reaches the same state.
        let mut failed: Vec<(usize, KvError)> = Vec::new();
        let durability = if self.durable_commits {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        let (txn, revision, compact_revision, responses) = 'batch: loop {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(durability)
                .map_err(|error| KvError::Storage(error.to_string()))?;
            let mut revision = self.revision;
            let mut compact_revision = self.compact_revision;
            let mut responses = Vec::with_capacity(fresh.len());
            for (position, (_, command)) in fresh.iter().enumerate() {
                if let Some((_, error)) = failed.iter().find(|(at, _)| *at == position) {
                    responses.push(Err(error.clone()));
                    continue;
                }
                if let Command::Members(change) = command {
                    match apply_member_change(&txn, change) {
                        Err(KvError::Storage(error)) => return Err(KvError::Storage(error)),
                        result => responses.push(result),
                    }
                    continue;
                }
                match Self::apply_one(&txn, command, revision, &mut compact_revision) {
                    Ok((response, wrote)) => {
                        if wrote {
                            revision += 1;
                        }
                        responses.push(Ok(response));
                    }
                    Err((KvError::Storage(error), _)) => return Err(KvError::Storage(error)),
                    Err((error, false)) => responses.push(Err(error)),
                    Err((error, true)) => {
                        txn.abort()?;
                        failed.push((position, error));
                        continue 'batch;
                    }
                }
            }
            break (txn, revision, compact_revision, responses);
        };
        self.commit_meta(txn, last_index, revision, compact_revision)?;
        Ok(responses)
    }

    /// Records the applied index, revision and compaction revision in the
    /// same transaction as the data they describe, commits, and caches them.
    fn commit_meta(
        &mut self,
        txn: WriteTransaction,
        applied_index: u64,
        revision: i64,
        compact_revision: i64,
    ) -> Result<(), KvError> {
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_APPLIED, applied_index)?;
            meta.insert(META_REVISION, revision as u64)?;
            meta.insert(META_COMPACT, compact_revision as u64)?;
        }
        txn.commit()?;
        self.applied_index = applied_index;
        self.revision = revision;
        self.compact_revision = compact_revision;
        Ok(())
    }

    /// Runs one command at revision `revision + 1`; returns its response
    /// and whether it wrote (and so took that revision). An error says
    /// whether the command had already written part of itself.
    fn apply_one(
        txn: &WriteTransaction,
        command: &Command,
        revision: i64,
        compact_revision: &mut i64,
    ) -> Result<(CommandResponse, bool), (KvError, bool)> {
        let table = txn.open_table(REVISIONS).map_err(|error| (error.into(), false))?;
        let mut writer = Writer {
            table,
            main: revision + 1,
            sub: 0,
        };
        let result = Self::run(&mut writer, command, revision, compact_revision);
        let wrote = writer.wrote();
        result.map(|response| (response, wrote)).map_err(|error| (error, wrote))
    }

    fn run(
        writer: &mut Writer<'_>,
        command: &Command,
        revision: i64,
        compact_revision: &mut i64,
    ) -> Result<CommandResponse, KvError> {
        let response = match command {
            Command::Put(put) => CommandResponse::Put(writer.put(put)?),
            Command::DeleteRange(delete) => CommandResponse::DeleteRange(writer.delete_range(delete)?),
            Command::Txn(txn_request) => {
                check_txn_keys(txn_request)?;
                let mut response = Self::txn(writer, txn_request, revision, *compact_revision)?;
                if !writer.wrote() {
                    set_txn_revision(&mut response, revision);
                }
                CommandResponse::Txn(response)
            }
            Command::Members(_) => unreachable!("member changes are applied by apply_through"),
            Command::Compact { revision: target } => {
                if *target <= *compact_revision {
                    return Err(KvError::Compacted {
                        revision: *target,
                        compact_revision: *compact_revision,
                    });
                }
                if *target > revision {
                    return Err(KvError::FutureRevision {
                        revision: *target,
                        current: revision,
                    });
                }
                compact(&mut writer.table, *target)?;
                *compact_revision = *target;
                CommandResponse::Compact { revision }
            }
        };
        Ok(response)
    }

    fn txn(
        writer: &mut Writer<'_>,
        txn: &TxnRequest,
        revision: i64,
        compact_revision: i64,
    ) -> Result<TxnResponse, KvError> {
        let mut succeeded = true;
        for compare in &txn.compare {
            if !compare_holds(&writer.table, compare)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(range) => {
                    // The transaction's own writes are visible to its later
                    // reads, and only they: before any, the next revision is
                    // still a future one (as etcd).
                    let visible = if writer.wrote() { writer.main } else { revision };
                    ResponseOp::Range(range_at(&writer.table, range, visible, compact_revision, writer.main)?)
                }
                RequestOp::Put(put) => ResponseOp::Put(writer.put(put)?),
                RequestOp::DeleteRange(delete) => ResponseOp::DeleteRange(writer.delete_range(delete)?),
                RequestOp::Txn(inner) => ResponseOp::Txn(Self::txn(writer, inner, revision, compact_revision)?),
            });
        }
        Ok(TxnResponse {
            revision: writer.main,
            succeeded,
            responses,
        })
    }

    /// Serves a read from the latest committed state.
    ///
    /// # Errors
    /// `Compacted` or `FutureRevision` for a revision outside the history;
    /// `Storage` on failure.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, KvError> {
        self.reader()?.range(request)
    }

    /// A consistent view of the store as it is now, for reads that may
    /// take long: it holds no borrow of the store, so a server can keep
    /// applying while a large range or hash runs (redb readers never block
    /// its writer).
    ///
    /// # Errors
    /// Storage failures.
    pub fn reader(&self) -> Result<KvReader, KvError> {
        Ok(KvReader {
            txn: self.db.begin_read()?,
            revision: self.revision,
            compact_revision: self.compact_revision,
        })
    }

    /// Writes the whole store (applied index, revisions, history, members)
    /// from one consistent read transaction; returns the bytes written.
    ///
    /// # Errors
    /// Storage or `out` failures.
    pub fn write_snapshot(&self, out: &mut impl Write) -> Result<u64, KvError> {
        let mut source = self.snapshot_source()?;
        while !source.write_some(out, u64::MAX)? {}
        Ok(source.written())
    }

    /// A checksum of the key space's history up to `revision` (0: the
    /// current one): every version and tombstone kept, with its revisions
    /// and lease (CRC-32C). Members that applied the same log agree on it
    /// at any revision; `etcdctl endpoint hashkv` compares them. Returns
    /// the hash, the compaction revision and the revision hashed.
    ///
    /// # Errors
    /// `Compacted` or `FutureRevision` outside the history; storage.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), KvError> {
        self.reader()?.hash_kv(revision)
    }

    /// A checksum of the whole store (etcd's Maintenance.Hash): every row
    /// of history, the member list, the revision and the compaction
    /// revision (CRC-32C).
    ///
    /// # Errors
    /// Storage failures.
    pub fn hash_all(&self) -> Result<u32, KvError> {
        self.reader()?.hash_all()
    }

    /// Turns a store restored from a backup into the first state of a new
    /// cluster: applied through `applied_index` (the snapshot the new log
    /// starts from), with `members` as its member list; the data and
    /// revisions stay. Durable on return.
    ///
    /// # Errors
    /// A member record that cannot be stored, or a storage failure.
    pub fn reset_for_new_cluster(&mut self, members: &[Member], applied_index: u64) -> Result<(), KvError> {
        let txn = self.db.begin_write()?;
        {
            txn.delete_table(MEMBERS)?;
            let mut table = txn.open_table(MEMBERS)?;
            for member in members {
                member.validate()?;
                table.insert(member.id, member.encode().as_slice())?;
            }
        }
        self.commit_meta(txn, applied_index, self.revision, self.compact_revision)
    }

    /// Makes everything durable and compacts the database file, giving
    /// freed pages back to the file system (etcd's defragment). No read
    /// may be in progress (a snapshot being written holds one).
    ///
    /// # Errors
    /// A read in progress, or a storage failure.
    pub fn defragment(&mut self) -> Result<(), KvError> {
        self.persist()?;
        self.db
            .compact(redb::CompactionMode::Balanced)
            .map_err(|error| match error {
                redb::CompactionError::TransactionInProgress => KvError::ReadsInProgress,
                error => KvError::Storage(format!("defragment: {error}")),
            })?;
        Ok(())
    }

    /// A snapshot of the store as it is now, to be written in steps (a
    /// server keeps serving between them): it reads from one consistent
    /// read transaction however long the writing takes.
    ///
    /// # Errors
    /// Storage failures.
    pub fn snapshot_source(&self) -> Result<SnapshotSource, KvError> {
        let txn = self.db.begin_read()?;
        let mut head = Vec::with_capacity(64);
        head.extend_from_slice(SNAPSHOT_MAGIC);
        head.extend_from_slice(&self.applied_index.to_le_bytes());
        head.extend_from_slice(&(self.revision as u64).to_le_bytes());
        head.extend_from_slice(&(self.compact_revision as u64).to_le_bytes());
        let members = read_members(&txn.open_table(MEMBERS)?)?;
        head.extend_from_slice(&(members.len() as u32).to_le_bytes());
        for member in &members {
            let encoded = member.encode();
            head.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
            head.extend_from_slice(&encoded);
        }
        let rows = txn.open_table(REVISIONS)?.range_owned(..)?;
        Ok(SnapshotSource {
            head: Some(head),
            rows,
            rows_written: 0,
            written: 0,
        })
    }

    /// Replaces the whole store with a snapshot written by `write_snapshot`.
    ///
    /// # Errors
    /// `BadCommand` for a damaged snapshot (the store is unchanged);
    /// storage failures.
    pub fn restore_snapshot(&mut self, input: &mut impl Read) -> Result<(), KvError> {
        let damaged = |_| KvError::BadCommand("damaged state machine snapshot");
        let mut header = [0u8; 32];
        input.read_exact(&mut header).map_err(damaged)?;
        if &header[..8] != SNAPSHOT_MAGIC {
            return Err(KvError::BadCommand("not a state machine snapshot"));
        }
        let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
        let (applied_index, revision, compact_revision) = (field(8), field(16) as i64, field(24) as i64);
        let mut length = [0u8; 4];
        input.read_exact(&mut length).map_err(damaged)?;
        let member_count = u32::from_le_bytes(length);
        if member_count as usize > MEMBERS_IN_SNAPSHOT_MAX {
            return Err(KvError::BadCommand("damaged member list in snapshot"));
        }
        let mut members = Vec::new();
        for _ in 0..member_count {
            input.read_exact(&mut length).map_err(damaged)?;
            let length = u32::from_le_bytes(length) as usize;
            if length > MEMBER_BYTES_MAX {
                return Err(KvError::BadCommand("damaged member list in snapshot"));
            }
            let mut encoded = vec![0; length];
            input.read_exact(&mut encoded).map_err(damaged)?;
            members.push(Member::decode(&encoded).map_err(|_| KvError::BadCommand("damaged member in snapshot"))?);
        }
        let txn = self.db.begin_write()?;
        {
            txn.delete_table(MEMBERS)?;
            let mut member_table = txn.open_table(MEMBERS)?;
            for member in &members {
                member_table.insert(member.id, member.encode().as_slice())?;
            }
            drop(member_table);
            txn.delete_table(REVISIONS)?;
            let mut table = txn.open_table(REVISIONS)?;
            let mut rows = 0u64;
            let part = |input: &mut dyn Read, length: [u8; 4]| -> Result<Vec<u8>, KvError> {
                let length = u32::from_le_bytes(length) as usize;
                if length > ROW_PART_BYTES_MAX {
                    return Err(KvError::BadCommand("damaged row length in snapshot"));
                }
                let mut bytes = vec![0; length];
                input.read_exact(&mut bytes).map_err(damaged)?;
                Ok(bytes)
            };
            loop {
                input.read_exact(&mut length).map_err(damaged)?;
                if u32::from_le_bytes(length) == END_OF_ROWS {
                    let mut count = [0u8; 8];
                    input.read_exact(&mut count).map_err(damaged)?;
                    if u64::from_le_bytes(count) != rows {
                        return Err(KvError::BadCommand("snapshot row count does not match its rows"));
                    }
                    let mut beyond = [0u8; 1];
                    if input.read(&mut beyond)? != 0 {
                        return Err(KvError::BadCommand("bytes after the end of the snapshot"));
                    }
                    break;
                }
                let key = part(input, length)?;
                input.read_exact(&mut length).map_err(damaged)?;
                let value = part(input, length)?;
                decode_row(&key, &value).map_err(|_| KvError::BadCommand("damaged row in snapshot"))?;
                table.insert(key.as_slice(), value.as_slice())?;
                rows += 1;
            }
        }
        self.commit_meta(txn, applied_index, revision, compact_revision)
    }
}

/// Bounds on the member list read from a snapshot (a damaged count must
/// not become a huge allocation).
const MEMBERS_IN_SNAPSHOT_MAX: usize = 1 << 16;
const MEMBER_BYTES_MAX: usize = 64 << 10;

fn read_members<T: ReadableTable<u64, &'static [u8]>>(table: &T) -> Result<Vec<Member>, KvError> {
    let mut members = Vec::new();
    for row in table.range(..)? {
        let (_, value) = row?;
        members.push(Member::decode(value.value())?);
    }
    Ok(members)
}

/// Applies a member change inside the batch's transaction; answers with
/// the member list after it.
fn apply_member_change(txn: &WriteTransaction, change: &MemberChange) -> Result<CommandResponse, KvError> {
    let mut table = txn.open_table(MEMBERS)?;
    let mut update = |id: u64, edit: &dyn Fn(&mut Member)| -> Result<(), KvError> {
        let mut member = match table.get(id)? {
            Some(value) => Member::decode(value.value())?,
            None => return Err(KvError::MemberNotFound),
        };
        if member.removed {
            return Err(KvError::MemberNotFound);
        }
        edit(&mut member);
        member.validate()?;
        table.insert(id, member.encode().as_slice())?;
        Ok(())
    };
    match change {
        MemberChange::Add(member) => {
            member.validate()?;
            table.insert(member.id, member.encode().as_slice())?;
        }
        MemberChange::Remove { id } => update(*id, &|member| member.removed = true)?,
        MemberChange::Promote { id } => update(*id, &|member| {
            member.is_learner = false;
            member.promote_when_caught_up = false;
        })?,
        MemberChange::UpdatePeerUrls { id, peer_urls } => {
            update(*id, &|member| member.peer_urls.clone_from(peer_urls))?
        }
        MemberChange::Publish { id, name, client_urls } => update(*id, &|member| {
            member.name.clone_from(name);
            member.client_urls.clone_from(client_urls);
        })?,
    }
    let members = read_members(&table)?;
    Ok(CommandResponse::Members(
        members.into_iter().filter(|member| !member.removed).collect(),
    ))
}

/// Serves `request` against `table`, whose latest revision is `current`;
/// `header` is the revision reported in the response.
fn range_at<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    request: &RangeRequest,
    current: i64,
    compact_revision: i64,
    header: i64,
) -> Result<RangeResponse, KvError> {
    let at = if request.revision > 0 {
        if request.revision > current {
            return Err(KvError::FutureRevision {
                revision: request.revision,
                current,
            });
        }
        if request.revision < compact_revision {
            return Err(KvError::Compacted {
                revision: request.revision,
                compact_revision,
            });
        }
        request.revision
    } else {
        i64::MAX
    };
    // etcd sorts ascending when a target other than the key is named
    // without an order.
    let order = match (request.sort_order, request.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let streaming =
        matches!(order, SortOrder::None) || (order == SortOrder::Ascend && request.sort_target == SortTarget::Key);
    let limit = if request.limit > 0 {
        request.limit as usize
    } else {
        usize::MAX
    };
    let mut kvs = Vec::new();
    let mut count = 0i64;
    let in_filter = |kv: &KeyValue| {
        (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
            && (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
            && (request.min_create_revision == 0 || kv.create_revision >= request.min_create_revision)
            && (request.max_create_revision == 0 || kv.create_revision <= request.max_create_revision)
    };
    // `count` is every key in the range, filtered or not (as etcd);
    // `matched` those that pass the filters, for `more`.
    let mut matched = 0usize;
    scan(table, &request.key, &request.range_end, at, |kv| {
        count += 1;
        if !in_filter(&kv) {
            return Ok(true);
        }
        matched += 1;
        if request.count_only || (streaming && kvs.len() >= limit) {
            return Ok(true);
        }
        kvs.push(kv);
        Ok(true)
    })?;
    if !streaming {
        let key_of = |kv: &KeyValue| match request.sort_target {
            SortTarget::Key => (0, kv.key.clone()),
            SortTarget::Version => (kv.version, Vec::new()),
            SortTarget::Create => (kv.create_revision, Vec::new()),
            SortTarget::Mod => (kv.mod_revision, Vec::new()),
            SortTarget::Value => (0, kv.value.clone()),
        };
        kvs.sort_by_key(key_of);
        if order == SortOrder::Descend {
            kvs.reverse();
        }
        kvs.truncate(limit);
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        revision: header,
        more: !request.count_only && matched > kvs.len(),
        kvs,
        count,
    })
}

fn compare_holds<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    compare: &Compare,
) -> Result<bool, KvError> {
    let mut kvs = Vec::new();
    if compare.range_end.is_empty() {
        kvs.extend(latest(table, &compare.key, i64::MAX)?);
        if kvs.is_empty() {
            // A missing key has no value to compare; its revisions are 0.
            if matches!(compare.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            kvs.push(KeyValue::default());
        }
    } else {
        scan(table, &compare.key, &compare.range_end, i64::MAX, |kv| {
            kvs.push(kv);
            Ok(true)
        })?;
        if kvs.is_empty() {
            // As etcd: an empty range fails a value compare and compares
            // as a missing key otherwise (not vacuously true).
            if matches!(compare.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            kvs.push(KeyValue::default());
        }
    }
    Ok(kvs.iter().all(|kv| {
        let ordering = match &compare.target {
            CompareTarget::Version(version) => kv.version.cmp(version),
            CompareTarget::Create(revision) => kv.create_revision.cmp(revision),
            CompareTarget::Mod(revision) => kv.mod_revision.cmp(revision),
            CompareTarget::Value(value) => kv.value.as_slice().cmp(value.as_slice()),
            CompareTarget::Lease(lease) => kv.lease.cmp(lease),
        };
        match compare.result {
            CompareResult::Equal => ordering.is_eq(),
            CompareResult::Greater => ordering.is_gt(),
            CompareResult::Less => ordering.is_lt(),
            CompareResult::NotEqual => !ordering.is_eq(),
        }
    }))
}

/// etcd refuses a transaction that puts one key twice, or puts a key a
/// delete of the same transaction covers (checked before proposing, and
/// again when applied).
///
/// # Errors
/// `DuplicateKey`.
pub fn check_txn_keys(txn: &TxnRequest) -> Result<(), KvError> {
    for branch in [&txn.success, &txn.failure] {
        let mut puts: Vec<&[u8]> = Vec::new();
        let mut deletes: Vec<(&[u8], &[u8])> = Vec::new();
        for op in branch {
            match op {
                RequestOp::Put(put) => {
                    if puts.contains(&put.key.as_slice()) {
                        return Err(KvError::DuplicateKey);
                    }
                    puts.push(&put.key);
                }
                RequestOp::DeleteRange(delete) => deletes.push((&delete.key, &delete.range_end)),
                RequestOp::Txn(inner) => check_txn_keys(inner)?,
                RequestOp::Range(_) => {}
            }
        }
        for (key, range_end) in deletes {
            // As etcd: a from-key delete (`range_end` "\0") is taken for an
            // empty interval and conflicts with no put.
            let covers = |put: &&[u8]| {
                if range_end.is_empty() {
                    *put == key
                } else {
                    range_end != [0] && *put >= key && *put < range_end
                }
            };
            if puts.iter().any(covers) {
                return Err(KvError::DuplicateKey);
            }
        }
    }
    Ok(())
}

fn set_txn_revision(response: &mut TxnResponse, revision: i64) {
    response.revision = revision;
    for op in &mut response.responses {
        match op {
            ResponseOp::Range(range) => range.revision = revision,
            ResponseOp::DeleteRange(delete) => delete.revision = revision,
            ResponseOp::Txn(inner) => set_txn_revision(inner, revision),
            ResponseOp::Put(_) => {}
        }
    }
}

/// Removes history below `target`: for every key, every version older than
/// its latest one at `target`, and that one too if it is a tombstone.
fn compact(table: &mut redb::Table<'_, &'static [u8], &'static [u8]>, target: i64) -> Result<(), KvError> {
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    let mut group: Vec<(Vec<u8>, Revision, bool)> = Vec::new();
    let mut group_key: Option<Vec<u8>> = None;
    let settle = |group: &mut Vec<(Vec<u8>, Revision, bool)>, doomed: &mut Vec<Vec<u8>>| {
        if let Some(keep) = group.iter().rposition(|(_, revision, _)| revision.main <= target) {
            doomed.extend(group[..keep].iter().map(|(row, _, _)| row.clone()));
            if group[keep].2 {
                doomed.push(group[keep].0.clone());
            }
        }
        group.clear();
    };
    for row in table.range(..)? {
        let (key, value) = row?;
        let (user_key, revision, version) = decode_row(key.value(), value.value())?;
        if group_key.as_ref() != Some(&user_key) {
            settle(&mut group, &mut doomed);
            group_key = Some(user_key);
        }
        group.push((key.value().to_vec(), revision, version.is_none()));
    }
    settle(&mut group, &mut doomed);
    for row in doomed {
        table.remove(row.as_slice())?;
    }
    Ok(())
}
