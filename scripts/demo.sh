#!/usr/bin/env bash
# The demo so far: a lab of two Manatee-shaped shards, an empty third shard
# added as a reshard destination, and the operator's views of them.
set -euo pipefail
BIN="${1:-bin/reshard}"
DIR="$(mktemp -d /tmp/reshard-demo-XXXXXX)"
trap '"$BIN" lab down --dir "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "lab up: embedded etcd, 2 shards x 3 peers (primary, sync, async)"
"$BIN" lab up --dir "$DIR" --shards 2 --peers 3
export RESHARD_ETCD="$(sed -n 's/.*"etcd": "\(.*\)".*/\1/p' "$DIR/lab.json")"

step "lab status: the lab's manatee-adm show"
"$BIN" lab status --dir "$DIR"

step "lab add-shard: an empty 3.moray, the destination of a reshard"
"$BIN" lab add-shard --dir "$DIR" --name 3.moray --peers 3 >/dev/null

step "pnode list: the shard registry in etcd"
"$BIN" pnode list

step "lab down"
"$BIN" lab down --dir "$DIR"
