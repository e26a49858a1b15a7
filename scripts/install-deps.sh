#!/usr/bin/env bash
# Installs what reshard's lab needs on Debian: PostgreSQL's server binaries.
set -euo pipefail

have_pg() {
	[ -n "${RESHARD_PG_BIN:-}" ] && [ -x "$RESHARD_PG_BIN/initdb" ] && return 0
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && return 0
	command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

if ! have_pg; then
	echo "installing PostgreSQL (Debian package 'postgresql')..."
	SUDO=""
	[ "$(id -u)" -ne 0 ] && SUDO="sudo"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	$SUDO apt-get install -y -qq postgresql >/dev/null
	# The package starts its own cluster on 5432; the lab does not use it.
	$SUDO pg_ctlcluster --force 15 main stop 2>/dev/null || true
fi
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
	echo "running as root needs a 'postgres' user (it comes with Debian's postgresql package)" >&2
	exit 1
fi
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
"$GO" mod download
