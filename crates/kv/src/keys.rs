//! Order-preserving encoding of `(user key, revision)` into the keys of the
//! revisions table, so that one ordered scan visits user keys in byte
//! order and, within a key, its versions oldest first.
//!
//! A user key is escaped (`0x00` becomes `0x00 0xFF`) and terminated with
//! `0x00 0x00`, which keeps the encoding prefix-free and ordered like the
//! raw keys; the revision follows as two big-endian `u64` (main, sub).

/// A revision: `main` increases once per write transaction, `sub` orders
/// the writes inside one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

const REVISION_BYTES: usize = 16;

/// The escaped, terminated form of a user key: the common prefix of every
/// row of that key.
pub fn key_prefix(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + 2 + REVISION_BYTES);
    for &byte in user_key {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// The storage key of `user_key` at `revision`.
pub fn row_key(user_key: &[u8], revision: Revision) -> Vec<u8> {
    let mut out = key_prefix(user_key);
    out.extend_from_slice(&(revision.main as u64).to_be_bytes());
    out.extend_from_slice(&(revision.sub as u64).to_be_bytes());
    out
}

/// Splits a storage key into the user key and the revision.
///
/// # Errors
/// A key that was not produced by `row_key` (a damaged database).
pub fn split_row_key(row: &[u8]) -> Result<(Vec<u8>, Revision), &'static str> {
    if row.len() < REVISION_BYTES + 2 {
        return Err("row key too short");
    }
    let (escaped, revision) = row.split_at(row.len() - REVISION_BYTES);
    let Some(escaped) = escaped.strip_suffix(&[0, 0]) else {
        return Err("row key not terminated");
    };
    let mut user_key = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&byte) = bytes.next() {
        user_key.push(byte);
        if byte == 0 && bytes.next() != Some(&0xFF) {
            return Err("row key badly escaped");
        }
    }
    let main = u64::from_be_bytes(revision[..8].try_into().expect("8 bytes")) as i64;
    let sub = u64::from_be_bytes(revision[8..].try_into().expect("8 bytes")) as i64;
    Ok((user_key, Revision { main, sub }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_orders_by_user_key_then_revision() {
        let keys: [&[u8]; 5] = [b"", b"a", b"a\x00", b"a\x00\x01", b"ab"];
        let mut rows = Vec::new();
        for key in keys {
            for main in [1, 2, 300] {
                rows.push((row_key(key, Revision { main, sub: 0 }), key.to_vec(), main));
            }
        }
        let mut sorted = rows.clone();
        sorted.sort_by(|left, right| left.0.cmp(&right.0));
        assert_eq!(sorted, rows, "storage order is user-key order, then revision");
        for (row, key, main) in rows {
            assert_eq!(split_row_key(&row).unwrap(), (key, Revision { main, sub: 0 }));
        }
    }
}
