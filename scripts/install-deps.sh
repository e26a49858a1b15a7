#!/usr/bin/env bash
# Installs what reshard's lab needs on Debian: PostgreSQL's server binaries,
# ZooKeeper's for the tests of the dump lock znode, Chromium for the
# dashboard's, Node.js for the Moray client's.
set -euo pipefail

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
apt_updated=""
apt_update() {
	[ -n "$apt_updated" ] && return 0
	$SUDO apt-get update -qq
	apt_updated=1
}

have_pg() {
	[ -n "${RESHARD_PG_BIN:-}" ] && [ -x "$RESHARD_PG_BIN/initdb" ] && return 0
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && return 0
	command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

if ! have_pg; then
	echo "installing PostgreSQL (Debian package 'postgresql')..."
	apt_update
	$SUDO apt-get install -y -qq postgresql >/dev/null
	# The package starts its own cluster on 5432; the lab does not use it.
	$SUDO pg_ctlcluster --force 15 main stop 2>/dev/null || true
fi
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
	echo "running as root needs a 'postgres' user (it comes with Debian's postgresql package)" >&2
	exit 1
fi

# The dump lock znode tests start their own ZooKeeper server from Debian's
# package (it brings Java). Without it they skip, and say so.
have_zk() {
	command -v java >/dev/null 2>&1 && [ -f /usr/share/java/zookeeper.jar ]
}
if ! have_zk; then
	echo "installing ZooKeeper (Debian package 'zookeeper') for the dump lock znode tests..."
	if apt_update && $SUDO apt-get install -y -qq zookeeper >/dev/null; then
		# The tests run their own server; a system one would only hold a port.
		if [ -x /etc/init.d/zookeeper ]; then
			$SUDO /etc/init.d/zookeeper stop >/dev/null 2>&1 || true
		fi
		if command -v systemctl >/dev/null 2>&1; then
			$SUDO systemctl disable --now zookeeper >/dev/null 2>&1 || true
		fi
	else
		echo "warning: could not install zookeeper; the dump lock znode tests will be skipped" >&2
	fi
fi

# A lab of hosts (`lab up --hosts`) puts each server in a network namespace
# (iproute2, util-linux's nsenter) and cuts links with iptables.
if [ "$(id -u)" -eq 0 ]; then
	for tool in ip:iproute2 nsenter:util-linux iptables:iptables; do
		if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
			echo "installing ${tool#*:} for the lab's hosts..."
			apt_update
			$SUDO apt-get install -y -qq "${tool#*:}" >/dev/null
		fi
	done
fi

# The dashboard's tests drive the page in a real browser: Debian's
# Chromium, headless (ui/uitest).
if [ -z "${RESHARD_BROWSER:-}" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
	echo "installing Chromium (Debian package 'chromium') for the dashboard's browser tests..."
	apt_update
	if ! $SUDO apt-get install -y -qq chromium >/dev/null; then
		echo "warning: could not install chromium; the dashboard's browser tests will be skipped" >&2
	fi
fi

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
"$GO" mod download

# The Moray client tests drive the router with the real npm moray client
# and Manta's libmanta, and the differential tests run the reference Moray:
# they need Node.js and npm, installed from Debian's packages when missing
# so that they never skip on a fresh machine.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "installing Node.js and npm (Debian packages 'nodejs' and 'npm') for the Moray protocol tests..."
	apt_update
	$SUDO apt-get install -y -qq nodejs npm >/dev/null || true
fi
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
	if [ ! -f test/moray/node_modules/libmanta/package.json ] || [ test/moray/package-lock.json -nt test/moray/node_modules/.package-lock.json ]; then
		echo "installing the npm moray client and libmanta for the Moray protocol tests (test/moray)..."
		# No install scripts: native parts load prebuilt binaries or, for
		# libuuid, a stand-in (test/moray/stubs), so nothing needs a compiler.
		if ! (cd test/moray && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error); then
			echo "warning: npm could not install test/moray; the Moray client tests will be skipped" >&2
		fi
	fi
else
	echo "warning: Node.js and npm could not be installed, so the tests that drive the router with the npm moray client will be skipped" >&2
fi
