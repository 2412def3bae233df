#!/bin/sh
# SPDX-License-Identifier: MIT
# The engine's shape: libuqcow.so exports exactly what uqcow.h declares
# (no fault-injection or other internal symbol), and the file-level
# dependency graph of the engine has no cycle.
# usage: check_layers.sh SRCDIR LIBUQCOW.so LIBUQCOW_INTERNAL.a
set -eu
src=$1 so=$2 internal=$3
exported=$(nm -D --defined-only "$so" | awk '$3 ~ /^uq_/ {sub(/@.*/, "", $3); print $3}' | sort)
declared=$(sed 's,/\*.*\*/,,' "$src/engine/include/uqcow.h" |
	grep -oE '\buq_[a-z0-9_]+\(' | tr -d '(' | sort -u)
if [ "$exported" != "$declared" ]; then
	echo "libuqcow.so exports other functions than uqcow.h declares:" >&2
	printf '%s\n' "$exported" > /tmp/uq-exported.$$
	printf '%s\n' "$declared" | diff /tmp/uq-exported.$$ - >&2 || true
	rm -f /tmp/uq-exported.$$
	exit 1
fi
others=$(nm -D --defined-only "$so" | awk '$2 ~ /[TDB]/ && $3 !~ /^uq_/ {print $3}')
if [ -n "$others" ]; then
	echo "libuqcow.so exports non-API symbols: $others" >&2
	exit 1
fi
echo "libuqcow.so exports exactly the $(echo "$declared" | wc -l) functions of uqcow.h"
python3 "$src/tools/engine-deps" "$internal"
