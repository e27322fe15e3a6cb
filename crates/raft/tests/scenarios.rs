//! Scenario tests as text scripts: each file under `crates/raft/testdata/`
//! is a list of commands with the output the core must produce, so a
//! behaviour change shows up as a readable diff.
//!
//! Format: blocks of
//!
//! ```text
//! command arg key=value
//! ----
//! expected output (no blank lines)
//! ```
//!
//! separated by blank lines; `#` starts a comment line outside blocks.
//! Run with `RAFTWERK_REWRITE=1` to rewrite the expected outputs from the
//! current behaviour, then review the diff.
//!
//! Commands:
//! - `cluster voters=N [pre-vote=off] [check-quorum=off] [lease=MARGIN]`
//! - `tick ID [N]`, `campaign ID` (tick until it leaves the follower role)
//! - `ready ID` (one Ready, persisted at once), `stabilize` (readies and
//!   deliveries until nothing moves)
//! - `deliver [from=ID] [to=ID]`, `drop [from=ID] [to=ID]`
//! - `propose ID DATA`, `read-index ID REQUEST`, `transfer ID TARGET`
//! - `conf ID [voter:N] [learner:N] [remove:N]...` (no operation: leave joint)
//! - `status [ID]`

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use raftwerk_raft::{
    ConfChange, ConfChangeOp, Config, Entry, EntryKind, MemStorage, Message, MessageBody, NodeId, Raft, ReadMode,
    Ready, Role, Storage,
};

/// Bound on the rounds of one `stabilize` and the ticks of one `campaign`.
const ROUNDS_MAX: usize = 1000;

struct Env {
    nodes: BTreeMap<NodeId, Raft<MemStorage>>,
    queue: Vec<Message>,
}

fn entry_text(entry: &Entry) -> String {
    match entry.kind {
        EntryKind::Empty => format!("{}@{} empty", entry.index, entry.term),
        EntryKind::Normal => format!(
            "{}@{} {:?}",
            entry.index,
            entry.term,
            String::from_utf8_lossy(&entry.data)
        ),
        EntryKind::ConfChange => match ConfChange::decode(&entry.data) {
            Ok(change) if change.ops.is_empty() => format!("{}@{} conf leave-joint", entry.index, entry.term),
            Ok(change) => format!("{}@{} conf {:?}", entry.index, entry.term, change.ops),
            Err(error) => format!("{}@{} conf <{error}>", entry.index, entry.term),
        },
    }
}

fn entries_text(entries: &[Entry]) -> String {
    entries.iter().map(entry_text).collect::<Vec<_>>().join(", ")
}

fn message_text(message: &Message) -> String {
    let body = match &message.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => format!(
            "Append prev=({prev_index},{prev_term}) commit={commit} entries=[{}]",
            entries_text(entries)
        ),
        MessageBody::AppendResponse {
            reject: false, index, ..
        } => format!("AppendResponse accept index={index}"),
        MessageBody::AppendResponse {
            reject: true,
            index,
            hint_index,
            hint_term,
        } => format!("AppendResponse reject index={index} hint=({hint_index},{hint_term})"),
        MessageBody::Heartbeat { commit, read_seq } => format!("Heartbeat commit={commit} read_seq={read_seq}"),
        MessageBody::HeartbeatResponse { read_seq } => format!("HeartbeatResponse read_seq={read_seq}"),
        MessageBody::Vote {
            last_log_index,
            last_log_term,
            transfer,
        } => format!(
            "Vote last=({last_log_index},{last_log_term}){}",
            if *transfer { " transfer" } else { "" }
        ),
        MessageBody::VoteResponse { granted } => format!("VoteResponse granted={granted}"),
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => format!("PreVote last=({last_log_index},{last_log_term})"),
        MessageBody::PreVoteResponse { granted } => format!("PreVoteResponse granted={granted}"),
        MessageBody::TimeoutNow => "TimeoutNow".to_string(),
        MessageBody::ReadIndex { request_id } => format!("ReadIndex request={request_id}"),
        MessageBody::ReadIndexResponse { request_id, index } => {
            format!("ReadIndexResponse request={request_id} index={index}")
        }
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            last,
        } => format!(
            "InstallSnapshot snapshot=({},{}) voters={:?} offset={offset} bytes={}{}",
            meta.index,
            meta.term,
            meta.configuration.voters,
            data.len(),
            if *last { " last" } else { "" }
        ),
        MessageBody::SnapshotResponse { index, offset } => format!("SnapshotResponse snapshot={index} offset={offset}"),
    };
    format!("{}->{} term={} {body}", message.from, message.to, message.term)
}

fn ready_text(id: NodeId, ready: &Ready) -> String {
    let mut out = format!("node {id} ready seq={}", ready.seq);
    if let Some(soft) = ready.soft_state {
        let _ = write!(
            out,
            "\n  soft: {:?} leader={} term={}",
            soft.role, soft.leader, soft.term
        );
    }
    if let Some(hard) = ready.hard_state {
        let _ = write!(
            out,
            "\n  hard: term={} vote={} commit={}",
            hard.term, hard.vote, hard.commit
        );
    }
    if !ready.entries.is_empty() {
        let _ = write!(out, "\n  persist: {}", entries_text(&ready.entries));
    }
    for message in &ready.messages {
        let _ = write!(out, "\n  send: {}", message_text(message));
    }
    if !ready.committed_entries.is_empty() {
        let _ = write!(out, "\n  apply: {}", entries_text(&ready.committed_entries));
    }
    for read in &ready.read_states {
        let _ = write!(out, "\n  read: request={} index={}", read.request_id, read.index);
    }
    out
}

fn status_text(raft: &Raft<MemStorage>) -> String {
    let status = raft.status();
    let mut out = format!(
        "node {}: {:?} term={} vote={} leader={} commit={} applied={} last={} persisted={}",
        status.id,
        status.role,
        status.term,
        status.vote,
        status.leader,
        status.commit,
        status.applied,
        status.last_index,
        status.persisted_index
    );
    for (id, match_index, next_index) in status.progress {
        let _ = write!(out, "\n  progress {id}: match={match_index} next={next_index}");
    }
    out
}

impl Env {
    fn node(&mut self, id: NodeId) -> Result<&mut Raft<MemStorage>, String> {
        self.nodes.get_mut(&id).ok_or(format!("no node {id}"))
    }

    fn ready(&mut self, id: NodeId) -> Result<Option<String>, String> {
        let raft = self.node(id)?;
        if !raft.has_ready() {
            return Ok(None);
        }
        let ready = raft.ready();
        if ready.must_persist() {
            raft.storage_mut().persist(&ready);
            raft.on_persisted(ready.seq);
        }
        let text = ready_text(id, &ready);
        self.queue.extend(ready.messages);
        Ok(Some(text))
    }

    fn deliver(&mut self, from: Option<NodeId>, to: Option<NodeId>, drop: bool) -> Vec<String> {
        let matches = |message: &Message| from.is_none_or(|f| f == message.from) && to.is_none_or(|t| t == message.to);
        let (picked, kept): (Vec<Message>, Vec<Message>) = self.queue.drain(..).partition(matches);
        self.queue = kept;
        let mut out = Vec::new();
        for message in picked {
            let text = message_text(&message);
            if drop {
                out.push(format!("dropped {text}"));
                continue;
            }
            out.push(text);
            if let Some(raft) = self.nodes.get_mut(&message.to) {
                if let Err(reason) = raft.step(message) {
                    out.push(format!("  rejected: {reason}"));
                }
            }
        }
        out
    }

    fn stabilize(&mut self) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for _ in 0..ROUNDS_MAX {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut moved = false;
            for id in ids {
                if let Some(text) = self.ready(id)? {
                    out.push(text);
                    moved = true;
                }
            }
            if !self.queue.is_empty() {
                out.extend(self.deliver(None, None, false));
                moved = true;
            }
            if !moved {
                return Ok(out);
            }
        }
        Err(format!("not stable after {ROUNDS_MAX} rounds"))
    }

    fn run(&mut self, line: &str) -> Result<String, String> {
        let mut words = line.split_whitespace();
        let command = words.next().ok_or("empty command")?;
        let mut positional = Vec::new();
        let mut named = BTreeMap::new();
        for word in words {
            match word.split_once('=') {
                Some((key, value)) => {
                    named.insert(key.to_string(), value.to_string());
                }
                None => positional.push(word.to_string()),
            }
        }
        let number = |text: &str| text.parse::<u64>().map_err(|_| format!("not a number: {text:?}"));
        let arg = |at: usize| {
            positional
                .get(at)
                .cloned()
                .ok_or(format!("{command}: missing argument {at}"))
        };
        let named_id = |key: &str| named.get(key).map(|text| number(text)).transpose();
        match command {
            "cluster" => {
                let voters: Vec<NodeId> = (1..=number(named.get("voters").ok_or("voters=N needed")?)?).collect();
                // `spares=K` adds nodes outside the bootstrap configuration.
                let spares = named.get("spares").map(|text| number(text)).transpose()?.unwrap_or(0);
                let last = voters.len() as NodeId + spares;
                for id in 1..=last {
                    let mut config = Config::new(id, voters.clone());
                    config.election_ticks = 10;
                    config.heartbeat_ticks = 1;
                    config.seed = id;
                    config.pre_vote = named.get("pre-vote").is_none_or(|value| value != "off");
                    config.check_quorum = named.get("check-quorum").is_none_or(|value| value != "off");
                    if let Some(margin) = named.get("lease") {
                        config.read_mode = ReadMode::Lease {
                            drift_margin_ticks: number(margin)?,
                        };
                    }
                    let raft = Raft::new(config, MemStorage::new()).map_err(|error| error.to_string())?;
                    self.nodes.insert(id, raft);
                }
                Ok("ok".to_string())
            }
            "tick" => {
                let id = number(&arg(0)?)?;
                let count = positional.get(1).map(|text| number(text)).transpose()?.unwrap_or(1);
                let raft = self.node(id)?;
                for _ in 0..count {
                    raft.tick();
                }
                Ok(format!("node {id}: {:?} term={}", raft.role(), raft.term()))
            }
            "campaign" => {
                let id = number(&arg(0)?)?;
                let raft = self.node(id)?;
                for _ in 0..ROUNDS_MAX {
                    if raft.role() != Role::Follower {
                        return Ok(format!("node {id}: {:?} term={}", raft.role(), raft.term()));
                    }
                    raft.tick();
                }
                Err(format!("node {id} never campaigned"))
            }
            "ready" => Ok(self.ready(number(&arg(0)?)?)?.unwrap_or_else(|| "no ready".to_string())),
            "stabilize" => Ok(self.stabilize()?.join("\n")),
            "deliver" | "drop" => {
                let out = self.deliver(named_id("from")?, named_id("to")?, command == "drop");
                Ok(if out.is_empty() {
                    "nothing".to_string()
                } else {
                    out.join("\n")
                })
            }
            "propose" => {
                let id = number(&arg(0)?)?;
                let data = Bytes::from(arg(1)?);
                Ok(match self.node(id)?.propose(data) {
                    Ok(index) => format!("index {index}"),
                    Err(error) => format!("error: {error}"),
                })
            }
            "conf" => {
                let id = number(&arg(0)?)?;
                let mut ops = Vec::new();
                for word in positional.iter().skip(1) {
                    let (kind, node) = word
                        .split_once(':')
                        .ok_or(format!("conf takes KIND:ID, got {word:?}"))?;
                    let node = number(node)?;
                    ops.push(match kind {
                        "voter" => ConfChangeOp::AddVoter(node),
                        "learner" => ConfChangeOp::AddLearner(node),
                        "remove" => ConfChangeOp::Remove(node),
                        other => return Err(format!("unknown change {other:?}")),
                    });
                }
                Ok(match self.node(id)?.propose_conf_change(ConfChange::new(ops)) {
                    Ok(index) => format!("index {index}"),
                    Err(error) => format!("error: {error}"),
                })
            }
            "read-index" => {
                let id = number(&arg(0)?)?;
                let request = number(&arg(1)?)?;
                Ok(match self.node(id)?.read_index(request) {
                    Ok(()) => "ok".to_string(),
                    Err(error) => format!("error: {error}"),
                })
            }
            "transfer" => {
                let id = number(&arg(0)?)?;
                let target = number(&arg(1)?)?;
                Ok(match self.node(id)?.transfer_leadership(target) {
                    Ok(()) => "ok".to_string(),
                    Err(error) => format!("error: {error}"),
                })
            }
            "status" => {
                let ids: Vec<NodeId> = match positional.first() {
                    Some(text) => vec![number(text)?],
                    None => self.nodes.keys().copied().collect(),
                };
                let mut out = Vec::new();
                for id in ids {
                    out.push(status_text(self.node(id)?));
                }
                Ok(out.join("\n"))
            }
            "log" => {
                let id = number(&arg(0)?)?;
                let raft = self.node(id)?;
                let entries = raft
                    .log_entries(1, raft.last_index() + 1)
                    .map_err(|error| error.to_string())?;
                let stored = raft.storage().last_index();
                Ok(format!("node {id}: [{}] stored={stored}", entries_text(&entries)))
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }
}

/// Runs one script; returns the rewritten text and whether it matched.
fn run_script(text: &str) -> (String, Vec<String>) {
    let mut env = Env {
        nodes: BTreeMap::new(),
        queue: Vec::new(),
    };
    let mut rewritten = String::new();
    let mut mismatches = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        let command = line;
        let mut expected = Vec::new();
        if lines.peek().is_some_and(|(_, next)| *next == "----") {
            lines.next();
            while let Some((_, next)) = lines.peek() {
                if next.trim().is_empty() {
                    break;
                }
                expected.push(next.to_string());
                lines.next();
            }
        }
        let actual = env.run(command).unwrap_or_else(|error| format!("error: {error}"));
        if actual != expected.join("\n") {
            mismatches.push(format!(
                "line {}: {command}\n--- expected\n{}\n--- actual\n{actual}",
                number + 1,
                expected.join("\n")
            ));
        }
        rewritten.push_str(command);
        rewritten.push_str("\n----\n");
        rewritten.push_str(&actual);
        rewritten.push('\n');
    }
    (rewritten, mismatches)
}

#[test]
fn scenario_scripts_match_expected_output() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let rewrite = std::env::var_os("RAFTWERK_REWRITE").is_some();
    let mut paths: Vec<_> = std::fs::read_dir(&directory)
        .expect("testdata directory exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "txt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scenario scripts in {}", directory.display());
    let mut failures = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("readable script");
        let (rewritten, mismatches) = run_script(&text);
        if rewrite {
            std::fs::write(&path, rewritten).expect("writable script");
        } else if !mismatches.is_empty() {
            failures.push(format!("{}:\n{}", path.display(), mismatches.join("\n\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "scenario output changed (RAFTWERK_REWRITE=1 rewrites; review the diff):\n{}",
        failures.join("\n\n")
    );
}
