#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The issue's performance targets, measured side by side in one run: uqcow
# against the raw file, qemu-img bench and qemu-io on the same images.
#
#   bench/targets.sh [BUILD_DIR]      (default: build)
#
# Needs qemu-img and qemu-io, and a scratch file system with O_DIRECT
# (UQCOW_BENCH_DIR, default /tmp). Uses about 4 GiB of scratch space.
set -euo pipefail

build=${1:-build}
uqcow=$build/tools/uqcow
ubench=$build/bench/uqcow-bench
parts=$build/bench/uqcow-bench-parts      # the L2 cache hit path needs internals
for t in "$uqcow" "$ubench" "$parts"; do
	[ -x "$t" ] || { echo "targets.sh: $t not built" >&2; exit 2; }
done
command -v qemu-img >/dev/null || { echo "targets.sh: qemu-img missing" >&2; exit 77; }

dir=$(mktemp -d "${UQCOW_BENCH_DIR:-/tmp}/uqcow-targets.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"

secs() { sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'; }
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print('%.2f' % (a / b) if b else '-')" "$1" "$2"; }
best() {  # fastest of three runs of a command printing "Run completed"
	local b=""
	for _ in 1 2 3; do
		local s
		s=$("$@" | secs)
		if [ -z "$b" ] || python3 -c "import sys; sys.exit(not float(sys.argv[1]) < float(sys.argv[2]))" "$s" "$b"; then
			b=$s
		fi
	done
	echo "$b"
}

echo "== setup: a fully written 1 GiB image (qemu-io), its raw twin"
qemu-img create -q -f qcow2 full.qcow2 1G
qemu-io -c "write -P 0x55 0 1G" full.qcow2 >/dev/null
qemu-img convert -O raw full.qcow2 full.raw
sync

echo
echo "== 1. 4 KiB random reads, QD32, O_DIRECT, 1 GiB fully allocated"
"$ubench" --benchmark_filter='^iops/op:randread/io:4k/qd:32/image:1G/' \
	--benchmark_repetitions=5 --benchmark_out=iops.json >/dev/null 2>&1
python3 - iops.json <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
agg = {b['aggregate_name']: b for b in d['benchmarks'] if b.get('aggregate_name')}
m, cv = agg['median'], agg['cv']
print('uqcow-bench median: iops %.0f (cv %.1f%%)  raw_iops %.0f (cv %.1f%%)  vs_raw %.3f' % (
    m['iops'], cv['iops'] * 100, m['raw_iops'], cv['raw_iops'] * 100, m['vs_raw']))
EOF
# qemu-img bench has no random offsets: a large prime step scatters
# the requests over the image the same way on both tools
for step in 4k 32436224; do
	q=$(best qemu-img bench -c 50000 -d 32 -s 4k -S $step -t none -i io_uring full.qcow2)
	u=$(best "$uqcow" bench -c 50000 -d 32 -s 4k -S $step -t none -i io_uring full.qcow2)
	r=$(best qemu-img bench -f raw -c 50000 -d 32 -s 4k -S $step -t none -i io_uring full.raw)
	echo "bench -c 50000 -d 32 -s 4k -S $step -t none: qemu-img ${q}s  uqcow ${u}s" \
	     "(uqcow/qemu speed $(ratio "$q" "$u")x)  qemu-img on raw ${r}s"
done
u=$(best "$uqcow" bench --random -c 50000 -d 32 -s 4k -t none full.qcow2)
echo "uqcow bench --random -c 50000 -d 32 -s 4k -t none: ${u}s"

echo
echo "== 2. allocating writes on a fresh image (one 4 KiB write per cluster)"
for cache in none writeback; do
	qemu-img create -q -f qcow2 wq.qcow2 1G
	qemu-img create -q -f qcow2 wu.qcow2 1G
	q=$(qemu-img bench -w -c 16384 -d 32 -s 4k -S 64k -t $cache wq.qcow2 | secs)
	u=$("$uqcow" bench -w -c 16384 -d 32 -s 4k -S 64k -t $cache wu.qcow2 | secs)
	echo "bench -w -c 16384 -d 32 -s 4k -S 64k -t $cache: qemu-img ${q}s  uqcow ${u}s" \
	     "(uqcow/qemu speed $(ratio "$q" "$u")x)"
done

echo
echo "== 3. discard of 1 GiB allocated (open, discard, flush, close)"
cp full.qcow2 dq.qcow2
cp full.qcow2 du.qcow2
sync
t0=$(date +%s.%N); qemu-io -c "discard 0 1G" dq.qcow2 >/dev/null; t1=$(date +%s.%N)
q=$(python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$t1")
t0=$(date +%s.%N)
if "$uqcow" io -c "discard 0 1G" -c flush du.qcow2 >/dev/null 2>err.txt; then
	t1=$(date +%s.%N)
	u=$(python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$t1")
	echo "qemu-io -c 'discard 0 1G': ${q}s  uqcow io: ${u}s (uqcow/qemu speed $(ratio "$q" "$u")x)"
	echo "file blocks after: qemu $(du -h dq.qcow2 | cut -f1)  uqcow $(du -h du.qcow2 | cut -f1)"
else
	echo "qemu-io -c 'discard 0 1G': ${q}s  uqcow io: $(cat err.txt)"
fi

echo
echo "== 4. L2 cache hits, 1 and 2 threads, against the mutex baseline"
"$parts" --benchmark_filter='^l2cache_(hit|mutex)/' --benchmark_repetitions=5 \
	--benchmark_out=cache.json >/dev/null 2>&1
python3 - cache.json <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
med = {b['run_name']: b['items_per_second'] for b in d['benchmarks']
       if b.get('aggregate_name') == 'median'}
for name, v in sorted(med.items()):
    print('%-60s %8.1f M lookups/s' % (name, v / 1e6))
for tables in ('8', '256'):
    for t in ('1', '2'):
        h = med.get('l2cache_hit/tables:%s/cluster:64k/real_time/threads:%s' % (tables, t))
        m = med.get('l2cache_mutex/tables:%s/cluster:64k/real_time/threads:%s' % (tables, t))
        if h and m:
            print('tables:%s threads:%s  lock-free / mutex = %.2fx' % (tables, t, h / m))
EOF
echo
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
