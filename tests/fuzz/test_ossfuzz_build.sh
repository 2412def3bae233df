#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Checks the OSS-Fuzz build contract locally: runs fuzz/oss-fuzz/build.sh
# the way the builder image does (clang, ASan+UBSan, libFuzzer, SRC/WORK/
# OUT in temp dirs), checks every target's binary, seed zip, dict and
# options landed in $OUT (binaries without shared liburing/zstd/zlib),
# then fuzzes each target for 3000 runs from its seeds.
# Exit 0 pass, 1 fail, 77 skip (no clang/libFuzzer, zip or unzip).
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${UQ_OSSFUZZ_RUNS:-3000}

for tool in clang clang++ zip unzip; do
	if ! command -v "$tool" >/dev/null; then
		echo "SKIP: $tool not found"
		exit 77
	fi
done

tmp=$(mktemp -d /tmp/uqcow-ossfuzz.XXXXXX)
cleanup() { if [ "${keep:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi; }
trap cleanup EXIT

# libFuzzer present? A trivial target must link.
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' > "$tmp/probe.c"
if ! clang -fsanitize=fuzzer "$tmp/probe.c" -o "$tmp/probe" 2>/dev/null; then
	echo "SKIP: clang cannot link -fsanitize=fuzzer (libFuzzer missing)"
	exit 77
fi

mkdir -p "$tmp/src" "$tmp/work" "$tmp/out"
flags="-O1 -fno-omit-frame-pointer -gline-tables-only -fsanitize=address,undefined -fsanitize=fuzzer-no-link"
export CC=clang CXX=clang++ CFLAGS="$flags" CXXFLAGS="$flags"
export LIB_FUZZING_ENGINE=-fsanitize=fuzzer
export SRC="$tmp/src" WORK="$tmp/work" OUT="$tmp/out"

echo "== build.sh"
if ! (cd "$root" && bash fuzz/oss-fuzz/build.sh) > "$tmp/build.log" 2>&1; then
	cat "$tmp/build.log"
	echo "FAIL: fuzz/oss-fuzz/build.sh"
	keep=1
	exit 1
fi

status=0
targets=$(cd "$root/fuzz" && ls *.options | sed 's/\.options$//')
for t in $targets; do
	for f in "$t" "${t}_seed_corpus.zip" "$t.dict" "$t.options"; do
		if [ ! -s "$OUT/$f" ]; then
			echo "FAIL: $OUT/$f missing"
			status=1
		fi
	done
	[ -x "$OUT/$t" ] || { echo "FAIL: $OUT/$t not executable"; status=1; continue; }
	# the runner image has none of these: they must be linked in
	if command -v ldd >/dev/null && ldd "$OUT/$t" | grep -E 'liburing|libzstd|libz\.so'; then
		echo "FAIL: $t needs shared libraries the OSS-Fuzz runner lacks"
		status=1
	fi
	seeds="$tmp/seeds/$t"
	mkdir -p "$seeds"
	unzip -q -o "$OUT/${t}_seed_corpus.zip" -d "$seeds" || { echo "FAIL: $t seed zip"; status=1; continue; }
	# the options file's max_len, as OSS-Fuzz would pass it
	max_len=$(sed -n 's/^max_len *= *//p' "$OUT/$t.options")
	echo "== $t: $(ls "$seeds" | wc -l) seeds, $runs runs"
	if ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
	   UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	   "$OUT/$t" -runs="$runs" -seed=1 -rss_limit_mb=2560 -timeout=60 \
		${max_len:+-max_len=$max_len} -dict="$OUT/$t.dict" \
		-artifact_prefix="$tmp/" "$seeds" > "$tmp/$t.log" 2>&1; then
		grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$tmp/$t.log" | tail -2
	else
		tail -60 "$tmp/$t.log"
		echo "FAIL: $t crashed (log and artifacts in $tmp)"
		keep=1
		status=1
	fi
done
exit $status
