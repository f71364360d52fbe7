#!/bin/sh
# Installs the Debian packages plumb builds and tests with, when missing.
# Run as root (or with sudo available); does nothing when all are present.
# Prints one line per package it installs; apt's own output goes to
# $DEPS_LOG (default build/deps.log), whose end is shown when apt fails.
set -e
PKGS="build-essential cmake pkg-config libopenblas-openmp-dev libjansson-dev libcmocka-dev libpcre2-dev libhiredis-dev libutf8proc-dev libzmq3-dev libprotobuf-c-dev protobuf-c-compiler libyaml-dev libmicrohttpd-dev libcurl4-openssl-dev libjs-chart.js redis-server chromium chromium-driver python3-selenium"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
LOG=${DEPS_LOG:-build/deps.log}
mkdir -p "$(dirname "$LOG")"
: > "$LOG"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
for p in $missing; do echo "plumb: installing $p"; done
echo "plumb: (apt-get's output: $LOG)"
if ! { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends $missing; } >> "$LOG" 2>&1; then
    echo "plumb: apt-get failed; the end of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
fi
