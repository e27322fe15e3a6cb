#!/bin/bash
# Loads a local 3-node cluster until it takes three large snapshots, then
# reports throughput, failures, each node's snapshot timings and how often
# the leader changed (3 lines = the first election only).
# Usage: scripts/snapshot-under-load.sh [BINARY] [DIR]
set -u
BIN=${1:-target/release/raftwerk}
DIR=${2:-/tmp/raftwerk-snapshot-load}
BIN=$(realpath "$BIN")
rm -rf "$DIR" && mkdir -p "$DIR" && cd "$DIR" || exit 1
CLUSTER="a=http://127.0.0.1:24801,b=http://127.0.0.1:24802,c=http://127.0.0.1:24803"
for i in 1 2 3; do
  name=$(echo abc | cut -c$i)
  "$BIN" --name "$name" --data-dir "$name" \
    --listen-client-urls "http://127.0.0.1:2470$i" --advertise-client-urls "http://127.0.0.1:2470$i" \
    --listen-peer-urls "http://127.0.0.1:2480$i" --initial-advertise-peer-urls "http://127.0.0.1:2480$i" \
    --initial-cluster "$CLUSTER" --snapshot-count 60000 --log-level info > "$name.log" 2>&1 &
done
trap 'kill $(jobs -p) 2>/dev/null' EXIT
sleep 2
"$BIN" bench --endpoints 127.0.0.1:24701,127.0.0.1:24702,127.0.0.1:24703 \
  --clients 64 --kind put --requests 200000 --value-bytes 2048 2>&1 | tail -1
du -sh a/kv.redb
grep -h "snapshot taken" ./*.log
echo "leader changes (3 = the first election only): $(grep -h 'leader changed' ./*.log | wc -l)"
