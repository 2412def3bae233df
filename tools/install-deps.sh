#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages uqcow needs, only those that are missing.
set -euo pipefail

pkgs=(meson ninja-build pkg-config gcc g++ clang llvm liburing-dev zlib1g-dev
      libzstd-dev qemu-utils python3 libbenchmark-dev libbenchmark-tools
      python3-scipy gnuplot-nox zip valgrind)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q "${missing[@]}"
