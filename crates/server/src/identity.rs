//! Who a node is, fixed at its first start and kept in the data directory's
//! `member` file: its cluster and member ids, its name, and the cluster's
//! first members (every node's log starts from their configuration, so a
//! node that joins later needs them too), and for a joining node the
//! members it was told of. Later starts take the identity from the file and
//! ignore the `--initial-cluster*` flags (as etcd); a different `--name` is
//! refused, and so is a member that was removed from its cluster
//! (RELIABILITY #6: no rejoining under an old identity).

use std::path::Path;

use raftwerk_kv::Member;

/// A node's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: u64,
    pub member_id: u64,
    pub name: String,
    /// The cluster's first members (voters), sorted by id.
    pub bootstrap: Vec<Member>,
    /// For a node that joined: the members when it joined, and the log
    /// index they were as of (it reaches them at these URLs until its own
    /// member list has caught up).
    pub seed: Vec<Member>,
    pub seed_index: u64,
    /// Whether this member was removed from the cluster.
    pub removed: bool,
}

const FILE: &str = "member";

impl Identity {
    fn encode(&self) -> String {
        let mut text = format!(
            "cluster_id={:016x}\nmember_id={:016x}\nname={}\n",
            self.cluster_id, self.member_id, self.name
        );
        for member in &self.bootstrap {
            text.push_str(&format!(
                "bootstrap={:016x} {} {}\n",
                member.id,
                member.peer_urls.join(","),
                member.name
            ));
        }
        for member in &self.seed {
            text.push_str(&format!("seed={:016x} {}\n", member.id, member.peer_urls.join(",")));
        }
        if self.seed_index > 0 {
            text.push_str(&format!("seed_index={}\n", self.seed_index));
        }
        if self.removed {
            text.push_str("removed=true\n");
        }
        text
    }

    fn parse(text: &str) -> Result<Identity, String> {
        let mut identity = Identity {
            cluster_id: 0,
            member_id: 0,
            name: String::new(),
            bootstrap: Vec::new(),
            seed: Vec::new(),
            seed_index: 0,
            removed: false,
        };
        let hex = |value: &str| u64::from_str_radix(value, 16).map_err(|error| format!("{value:?}: {error}"));
        for line in text.lines() {
            let Some((field, value)) = line.split_once('=') else {
                return Err(format!("line {line:?} is not field=value"));
            };
            match field {
                "cluster_id" => identity.cluster_id = hex(value)?,
                "member_id" => identity.member_id = hex(value)?,
                "name" => identity.name = value.to_string(),
                "removed" => identity.removed = value == "true",
                "seed_index" => {
                    identity.seed_index = value
                        .parse()
                        .map_err(|error| format!("seed_index {value:?}: {error}"))?;
                }
                "seed" => {
                    let Some((id, urls)) = value.split_once(' ') else {
                        return Err(format!("seed member {value:?} is not 'id urls'"));
                    };
                    identity.seed.push(Member {
                        id: hex(id)?,
                        peer_urls: urls.split(',').map(str::to_string).collect(),
                        ..Member::default()
                    });
                }
                "bootstrap" => {
                    let mut parts = value.splitn(3, ' ');
                    let (Some(id), Some(urls), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                        return Err(format!("bootstrap member {value:?} is not 'id urls name'"));
                    };
                    identity.bootstrap.push(Member {
                        id: hex(id)?,
                        name: name.to_string(),
                        peer_urls: urls.split(',').map(str::to_string).collect(),
                        ..Member::default()
                    });
                }
                other => return Err(format!("unknown field {other:?}")),
            }
        }
        if identity.cluster_id == 0 || identity.member_id == 0 || identity.bootstrap.is_empty() {
            return Err("cluster_id, member_id or the first members are missing".to_string());
        }
        Ok(identity)
    }

    /// The identity stored in `dir`, if any.
    ///
    /// # Errors
    /// An unreadable or damaged file.
    pub fn load(dir: &Path) -> Result<Option<Identity>, String> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Identity::parse(&text)
                .map(Some)
                .map_err(|error| format!("{} is damaged: {error}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(format!("cannot read {}: {error}", path.display())),
        }
    }

    /// Writes the identity durably (temporary file, sync, rename, sync the
    /// directory).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn store(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(FILE);
        let temporary = dir.join("member.tmp");
        std::fs::write(&temporary, self.encode())
            .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
            .and_then(|()| std::fs::rename(&temporary, &path))
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .map_err(|error| format!("cannot write {}: {error}", path.display()))
    }

    /// Checks a stored identity against the `--name` a node was started
    /// with.
    ///
    /// # Errors
    /// A removed member, or a data directory of another member.
    pub fn check(&self, dir: &Path, name: &str) -> Result<(), String> {
        if self.removed {
            return Err(format!(
                "member {:x} ({}) was removed from cluster {:x}; its data directory {} cannot rejoin (start with an empty one after `etcdctl member add`)",
                self.member_id,
                self.name,
                self.cluster_id,
                dir.display()
            ));
        }
        if self.name != name {
            return Err(format!(
                "data directory {} belongs to another cluster or member ({:?} of cluster {:x}); this node is {name:?}",
                dir.display(),
                self.name,
                self.cluster_id
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_damage_is_reported() {
        let identity = Identity {
            cluster_id: 0xabc,
            member_id: 0x12,
            name: "node one".into(),
            bootstrap: vec![Member {
                id: 0x12,
                name: "node one".into(),
                peer_urls: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
                ..Member::default()
            }],
            seed: vec![Member {
                id: 0x13,
                peer_urls: vec!["http://127.0.0.1:3".into()],
                ..Member::default()
            }],
            seed_index: 77,
            removed: true,
        };
        assert_eq!(Identity::parse(&identity.encode()), Ok(identity.clone()));
        assert!(Identity::parse("cluster_id=zz\n").is_err());
        assert!(
            Identity::parse("cluster_id=1\nmember_id=2\nname=x\n").is_err(),
            "no first members"
        );
        assert!(Identity::parse("what\n").is_err());
    }
}
