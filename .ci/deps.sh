#!/usr/bin/env bash
# Installs what pp needs to build, test and benchmark, from Debian 12's own
# packages only.  Safe to run again; uses sudo when not root.
set -euo pipefail
pkgs=(meson ninja-build pkg-config gcc g++ binutils
      liburing-dev libjemalloc-dev libgtest-dev
      libsodium-dev libopenmpi-dev openmpi-bin libzmq3-dev python3 gnuplot-nox
      clang libclang-rt-14-dev
      slurm-wlm munge)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
