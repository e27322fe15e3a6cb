//! The cluster's member list, kept in the key space's database so that it
//! changes in the same transaction as the applied index, travels in
//! snapshots, and survives restarts. Voting rights live in the consensus
//! core's configuration; this list holds what the core does not: each
//! member's name and peer URLs, and whether a learner should be promoted
//! once it has caught up.

use crate::errors::KvError;

/// One member of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// The name given at bootstrap; empty for a member added at run time
    /// until it starts and publishes its own.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Published by the member once it has started (empty before): a
    /// member that has started can never join again under its identity.
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    /// Added as a voter: it joins as a learner and the leader promotes it
    /// once its log has caught up.
    pub promote_when_caught_up: bool,
    /// Removed from the cluster. Its record is kept so that the others
    /// can tell it so if it still talks to them (it then stops).
    pub removed: bool,
}

/// A change to the member list, applied in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Adds (or replaces) a member.
    Add(Member),
    Remove {
        id: u64,
    },
    /// The learner becomes a voter.
    Promote {
        id: u64,
    },
    UpdatePeerUrls {
        id: u64,
        peer_urls: Vec<String>,
    },
    /// A started member's name and client URLs.
    Publish {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
}

/// Most peer (or client) URLs one member may have, and the longest URL
/// and name accepted.
pub const PEER_URLS_MAX: usize = 16;
pub const URL_BYTES_MAX: usize = 1024;
pub const NAME_BYTES_MAX: usize = 1024;

impl Member {
    /// Checks the record can be stored and read back: at most
    /// `PEER_URLS_MAX` URLs of each kind, names and URLs within their
    /// bounds.
    ///
    /// # Errors
    /// `InvalidMember` naming the first problem.
    pub fn validate(&self) -> Result<(), KvError> {
        if self.name.len() > NAME_BYTES_MAX {
            return Err(KvError::InvalidMember("member name too long"));
        }
        for urls in [&self.peer_urls, &self.client_urls] {
            if urls.len() > PEER_URLS_MAX {
                return Err(KvError::InvalidMember("too many member URLs"));
            }
            if urls.iter().any(|url| url.len() > URL_BYTES_MAX) {
                return Err(KvError::InvalidMember("member URL too long"));
            }
        }
        Ok(())
    }

    /// Layout: version 1, id, flags (1 learner, 2 promote, 4 removed), name,
    /// then the peer URLs and the client URLs, each list a count and the
    /// URLs; strings are u16-length-prefixed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.name.len());
        out.push(1u8);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.push(
            u8::from(self.is_learner) | (u8::from(self.promote_when_caught_up) << 1) | (u8::from(self.removed) << 2),
        );
        put_string(&mut out, &self.name);
        put_urls(&mut out, &self.peer_urls);
        put_urls(&mut out, &self.client_urls);
        out
    }

    /// # Errors
    /// `BadCommand` when the bytes are not an encoded member.
    pub fn decode(bytes: &[u8]) -> Result<Member, KvError> {
        let mut reader = Reader { bytes };
        if reader.take(1)? != [1] {
            return Err(KvError::BadCommand("unknown member encoding"));
        }
        let id = u64::from_le_bytes(reader.take(8)?.try_into().expect("8 bytes"));
        let flags = reader.take(1)?[0];
        if flags > 7 {
            return Err(KvError::BadCommand("unknown member flags"));
        }
        let name = reader.string(NAME_BYTES_MAX)?;
        let peer_urls = reader.urls()?;
        let client_urls = reader.urls()?;
        if !reader.bytes.is_empty() {
            return Err(KvError::BadCommand("trailing bytes after a member"));
        }
        Ok(Member {
            id,
            name,
            peer_urls,
            client_urls,
            is_learner: flags & 1 != 0,
            promote_when_caught_up: flags & 2 != 0,
            removed: flags & 4 != 0,
        })
    }
}

fn put_urls(out: &mut Vec<u8>, urls: &[String]) {
    out.push(urls.len().min(PEER_URLS_MAX) as u8);
    for url in urls.iter().take(PEER_URLS_MAX) {
        put_string(out, url);
    }
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], KvError> {
        if self.bytes.len() < count {
            return Err(KvError::BadCommand("truncated member"));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn string(&mut self, max: usize) -> Result<String, KvError> {
        let length = usize::from(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")));
        if length > max {
            return Err(KvError::BadCommand("member string too long"));
        }
        String::from_utf8(self.take(length)?.to_vec()).map_err(|_| KvError::BadCommand("member string is not UTF-8"))
    }

    fn urls(&mut self) -> Result<Vec<String>, KvError> {
        let count = usize::from(self.take(1)?[0]);
        if count > PEER_URLS_MAX {
            return Err(KvError::BadCommand("too many peer URLs"));
        }
        (0..count).map(|_| self.string(URL_BYTES_MAX)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_damage_is_an_error() {
        let member = Member {
            id: 0xdead_beef,
            name: "n1".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into(), "http://10.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
            is_learner: true,
            promote_when_caught_up: true,
            removed: true,
        };
        let encoded = member.encode();
        assert_eq!(Member::decode(&encoded), Ok(member));
        for cut in 0..encoded.len() {
            assert!(
                Member::decode(&encoded[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let mut trailing = encoded.clone();
        trailing.push(0);
        assert!(Member::decode(&trailing).is_err());
        let mut flags = encoded;
        flags[9] = 9;
        assert!(Member::decode(&flags).is_err());
    }
}
