#!/bin/sh
# Installs the Debian packages plumb builds and tests with, when missing.
# Run as root (or with sudo available); does nothing when all are present.
set -e
PKGS="build-essential cmake pkg-config libopenblas-openmp-dev libjansson-dev libcmocka-dev libpcre2-dev libhiredis-dev libutf8proc-dev libzmq3-dev libprotobuf-c-dev protobuf-c-compiler libyaml-dev redis-server"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "plumb: installing missing packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
