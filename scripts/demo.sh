#!/usr/bin/env bash
# The demo so far: a lab of two Manatee-shaped shards behind two routers,
# an empty third shard, traffic through the routers with a ledger of every
# acknowledged write, 1.moray split in half onto 3.moray online while the
# traffic runs (and a router is killed), and a verify that nothing was lost.
set -euo pipefail
BIN="${1:-bin/reshard}"
DIR="$(mktemp -d /tmp/reshard-demo-XXXXXX)"
trap '"$BIN" lab down --dir "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "lab up: embedded etcd, 2 shards x 3 peers (primary, sync, async), 2 routers"
"$BIN" lab up --dir "$DIR" --shards 2 --peers 3 --routers 2 --json > "$DIR/lab-up.json"
export RESHARD_ETCD="$(sed -n 's/.*"etcd": "\([^"]*\)".*/\1/p' "$DIR/lab.json")"
ROUTERS=$(grep -o 'http://127.0.0.1:[0-9]*' "$DIR/lab-up.json" | grep -v "$RESHARD_ETCD" | sed 's/^/--router /' | tr '\n' ' ')

step "lab status: the lab's manatee-adm show"
"$BIN" lab status --dir "$DIR"

step "ring: 1024 vnodes over the pnodes, stored in etcd"
"$BIN" ring get-pnodes
"$BIN" ring locate /user/stor/re-shard-canary-dir

step "lab add-shard: an empty 3.moray, the destination of the reshard"
"$BIN" lab add-shard --dir "$DIR" --name 3.moray --peers 3 >/dev/null

step "load: 25s of mixed traffic through both routers (router-1 is killed at 5s)"
( sleep 5; kill -9 "$(cat "$DIR/run/router-1.pid")" && echo ">> killed router-1 (the supervisor restarts it)" >&2 ) &
# shellcheck disable=SC2086
"$BIN" load $ROUTERS --duration 25s --rate 400 --keys 2000 --ledger "$DIR/ledger.jsonl" > "$DIR/load.txt" 2>/dev/null &
LOAD=$!
sleep 8

step "vnode-stats: the RFD's step 1 on 1.moray (top 5)"
"$BIN" vnode-stats --pnode 1.moray --top 5

step "reshard start: split 1.moray in half onto 3.moray while the load runs"
"$BIN" start --from 1.moray --to 3.moray --split-half --dc-mode single --servers 1

wait "$LOAD"
cat "$DIR/load.txt"

step "verify: every acknowledged write is on the shard that owns its key"
"$BIN" verify --ledger "$DIR/ledger.jsonl"
"$BIN" ring get-pnodes

step "lab down"
"$BIN" lab down --dir "$DIR"
