// SPDX-License-Identifier: MIT
/* The only C++ of the suite: registers C benchmark bodies with Google
 * Benchmark (1.7.1), names carrying every parameter, and runs them. Built
 * twice: uqcow-bench (the public API) and, with UQCOW_BENCH_PARTS,
 * uqcow-bench-parts (engine components, linking internals). */
#include <benchmark/benchmark.h>
#include <valgrind/callgrind.h>

#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <atomic>
#include <thread>
#include <vector>

#include "bench.h"

namespace {

/* What a body's bench_run points back to. */
struct Run {
	bench_run c;
	benchmark::State *st;
	bool finished;           /* bench_next() returned false */
	uint64_t ops, items;     /* bench_ops, bench_items */
};

Run *of(bench_run *r)
{
	return reinterpret_cast<Run *>(r);
}

typedef void (*Body)(bench_run *);

std::atomic<unsigned> failures;

void run_body(benchmark::State &st, Body body, const std::vector<int64_t> &args,
	      const std::string &name)
{
	Run run = {};

	run.st = &st;
	run.c.gb = &run;
	run.c.nargs = static_cast<unsigned>(args.size());
	for (size_t i = 0; i < args.size() && i < BENCH_MAX_ARGS; i++)
		run.c.arg[i] = args[i];
	run.c.thread = st.thread_index();
	run.c.threads = st.threads();
	/* under callgrind (tools/bench-instr): count only this run's measured
	 * sections (bench_measure_*), one dump per run, named after it */
	CALLGRIND_ZERO_STATS;
	body(&run.c);
	bench_measure_end(&run.c);   /* bodies that measure to their end */
	if (st.thread_index() == 0)
		CALLGRIND_DUMP_STATS_AT(name.c_str());
	/* A body that gave up before its loop still owes the harness a
	 * finished loop (threads meet at its start and end). */
	if (!run.finished) {
		if (!st.error_occurred()) {
			failures++;
			st.SkipWithError("the body returned before its loop finished");
		}
		while (st.KeepRunning())
			;
	}
	/* what instructions are divided by: the body's operations, else
	 * its items, else iterations */
	if (st.thread_index() == 0)
		st.counters["ops"] = static_cast<double>(
			run.ops ? run.ops : run.items ? run.items : st.iterations());
}

/* (uqcow-bench-parts registers nothing with a size) */
[[maybe_unused]] std::string sz(uint64_t v)
{
	static const char units[] = "kMGT";
	char buf[32];
	int u = -1;

	while (v && v % 1024 == 0 && u < 3) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
	else
		snprintf(buf, sizeof(buf), "%llu%c", (unsigned long long)v, units[u]);
	return buf;
}

enum How : unsigned {
	MANUAL = 1u << 0,        /* async I/O: the body times each iteration */
	THREADS = 1u << 1,       /* 1 .. N threads, wall-clock time */
	MS = 1u << 2,            /* report milliseconds */
	US = 1u << 3,            /* report microseconds */
};

int max_threads()
{
	unsigned n = std::thread::hardware_concurrency();

	return n < 2 ? 2 : static_cast<int>(n);
}

void add(const std::string &name, Body body, std::vector<int64_t> args, unsigned how)
{
	benchmark::internal::Benchmark *b = benchmark::RegisterBenchmark(
		name.c_str(), [body, args, name](benchmark::State &st) { run_body(st, body, args, name); });

	if (how & MANUAL)
		b->UseManualTime();
	if (how & THREADS)
		b->ThreadRange(1, max_threads())->UseRealTime();
	/* UQCOW_BENCH_ITERS=N: exactly N iterations, one body call per
	 * repetition (tools/bench-instr: counts that don't depend on timing) */
	if (const char *it = getenv("UQCOW_BENCH_ITERS"))
		if (atoi(it) > 0)
			b->Iterations(atoi(it));
	b->Unit(how & MS ? benchmark::kMillisecond :
		how & US ? benchmark::kMicrosecond : benchmark::kNanosecond);
}

std::string fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

std::string fmt(const char *f, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, f);
	vsnprintf(buf, sizeof(buf), f, ap);
	va_end(ap);
	return buf;
}

#ifdef UQCOW_BENCH_PARTS
#define BENCH_NAME "uqcow-bench-parts"
#else
#define BENCH_NAME "uqcow-bench"
#endif

const unsigned widths[] = { 1, 2, 4, 8, 16, 32, 64 };
/* (uqcow-bench-parts uses only K) */
[[maybe_unused]] const uint64_t K = 1024, M = K * K, G = K * M;

#ifdef UQCOW_BENCH_PARTS

/* Components measured on their own, through engine internals: the L2
 * cache's hit path and the codecs. The scale changes nothing here. */
void register_all(enum bench_scale)
{
	/* 5. L2 cache: hit-path lookups against the mutex baseline; 8
	 * tables stay in the CPU's caches (the cost is synchronisation),
	 * 256 (16 MiB) do not (the cost is memory) */
	for (unsigned tables : { 8u, 256u }) {
		add(fmt("l2cache_hit/tables:%u/cluster:64k", tables), bench_cache_hit,
		    { tables }, THREADS);
		add(fmt("l2cache_mutex/tables:%u/cluster:64k", tables), bench_cache_mutex,
		    { tables }, THREADS);
	}

	/* 6. parse costs */
	for (unsigned v : { 2u, 3u })
		add(fmt("parse_header/version:%u", v), bench_parse_header, { v }, US);
	for (unsigned ext : { 0u, 1u })
		add(fmt("parse_l2/cluster:64k/extended:%u", ext), bench_parse_l2,
		    { 64 * K, ext }, US);
	for (unsigned bits : widths)
		add(fmt("parse_refcount/refcount_bits:%u/cluster:64k", bits),
		    bench_parse_refcount, { bits, 64 * K }, US);
}

#else

/* Refcount widths at scale (UQCOW_BENCH_SCALE=huge, nothing else is
 * registered then): sparse images of 1 GiB .. 1 TiB at 4 KiB, 64 KiB and
 * 2 MiB clusters, every width, OPS operations spread over the whole size.
 * Trimmed by rule: snapshot counts a width can't hold (1 + S references
 * above 2^B - 1) are not registered; metadata-preallocated images (every
 * cluster allocated, so refcount blocks span the whole size) only where
 * their L2 tables and refcount blocks fit in 64 MiB, and without
 * snapshots (a snapshot of one raises every cluster's refcount); a
 * full-coverage refcount cache only where it is larger than the default
 * 4 MiB (elsewhere the default already covers every block). */
const uint64_t SCALE_OPS = 128;

/* Clusters of refcount blocks covering a file of len bytes (as
 * bench_scale.c's full-coverage cache counts them). */
uint64_t scale_rc_bytes(uint64_t len, uint64_t cluster, unsigned bits)
{
	uint64_t per = cluster * 8 / bits, clusters = (len + cluster - 1) / cluster + 2 * SCALE_OPS + 64;
	uint64_t blocks = (clusters + per - 1) / per + 2;

	return (blocks + blocks / per + 1) * cluster;
}

void register_scale()
{
	static const char *const opname[] = { "write", "cow", "discard_all", "discard",
					      "zero", "zero_unmap", "snapshot", "amend" };
	const uint64_t T = 1024 * G;

	for (uint64_t cluster : { 4 * K, 64 * K, 2 * M })
		for (uint64_t size : { 1 * G, 16 * G, 256 * G, 1 * T })
			for (unsigned bits : widths) {
				uint64_t maxref = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
				uint64_t l2 = size / cluster * 8;
				/* a sparse file: header, L1, tables and what the run writes */
				uint64_t sparse = (4 + l2 / cluster / cluster * 8 + 2 * SCALE_OPS) * cluster;
				uint64_t pre = size + l2 + (size / cluster) * bits / 8;

				for (int prealloc : { 0, 1 }) {
					uint64_t len = prealloc ? pre : sparse;

					if (prealloc && l2 + (size / cluster) * bits / 8 > 64 * M)
						continue;
					for (int full : { 0, 1 }) {
						if (full && scale_rc_bytes(len, cluster, bits) <= 4 * M)
							continue;
						auto reg = [&](int op, unsigned snaps) {
							add(fmt("scale/op:%s/refcount_bits:%u/cluster:%s/image:%s/"
								"snapshots:%u/prealloc:%d/rc_cache:%s/ops:%llu",
								opname[op], bits, sz(cluster).c_str(),
								sz(size).c_str(), snaps, prealloc,
								full ? "full" : "default",
								(unsigned long long)SCALE_OPS),
							    bench_scale_op,
							    { op, bits, (int64_t)cluster, (int64_t)size, snaps,
							      full, prealloc, (int64_t)SCALE_OPS },
							    MANUAL | MS);
						};
						if (prealloc) {
							reg(SCALE_DISCARD_ALL, 0);
							reg(SCALE_DISCARD, 0);
							reg(SCALE_ZERO_UNMAP, 0);
							continue;
						}
						reg(SCALE_WRITE, 0);
						for (unsigned snaps : { 0u, 1u, 8u })
							if (1 + snaps <= maxref)
								reg(SCALE_COW, snaps);
						reg(SCALE_DISCARD_ALL, 0);
						reg(SCALE_DISCARD, 0);
						reg(SCALE_ZERO, 0);
						reg(SCALE_ZERO_UNMAP, 0);
						for (unsigned snaps : { 1u, 8u })
							if (1 + snaps <= maxref)
								reg(SCALE_SNAPSHOT, snaps);
						if (bits != 16)
							reg(SCALE_AMEND, 0);
					}
				}
			}
}

/* The engine as its users see it: uqcow.h only. */
void register_all(enum bench_scale scale)
{
	if (scale == BENCH_HUGE) {
		register_scale();
		return;
	}
	bool small = scale == BENCH_SMALL, large = scale == BENCH_LARGE;
	/* the image the I/O families share (fully allocated, filled once) */
	uint64_t span = small ? 64 * M : large ? 4 * G : 1 * G;

	/* 1. allocating writes: one request per cluster, 4 KiB or whole */
	for (unsigned bits : widths) {
		for (uint64_t io : { 4 * K, 64 * K }) {
			uint64_t n = io == 4 * K ? (small ? 512 : large ? 65536 : 16384)
						 : (small ? 128 : large ? 8192 : 2048);

			add(fmt("alloc_write/refcount_bits:%u/cluster:64k/io:%s/qd:32/clusters:%llu",
				bits, sz(io).c_str(), (unsigned long long)n),
			    bench_alloc_write, { bits, 64 * K, (int64_t)io, 32, (int64_t)n },
			    MANUAL | MS);
		}
		/* 4 KiB clusters: a refcount block covers 32768 / bits clusters,
		 * so the widths differ in metadata even on small images */
		uint64_t n = small ? 2048 : large ? 65536 : 16384;

		add(fmt("alloc_write/refcount_bits:%u/cluster:4k/io:4k/qd:32/clusters:%llu", bits,
			(unsigned long long)n),
		    bench_alloc_write, { bits, 4 * K, 4 * K, 32, (int64_t)n }, MANUAL | MS);
	}

	/* 2. discard and write-zeroes of an allocated range; v2 only has
	 * 16-bit refcounts, so the v2 / v3 comparison is at 16. The small
	 * scale (CI) stays below the 256 MiB .. 4 GiB range to be quick. */
	std::vector<uint64_t> dsizes = { small ? 32 * M : 256 * M };
	if (large) {
		dsizes.push_back(1 * G);
		dsizes.push_back(4 * G);
	}
	for (uint64_t size : dsizes) {
		for (unsigned bits : widths)
			add(fmt("discard/refcount_bits:%u/version:3/size:%s", bits, sz(size).c_str()),
			    bench_discard, { bits, 3, (int64_t)size, 0 }, MANUAL | MS);
		add(fmt("discard/refcount_bits:16/version:2/size:%s", sz(size).c_str()),
		    bench_discard, { 16, 2, (int64_t)size, 0 }, MANUAL | MS);
		/* discard-no-unref: the clusters stay, marked zero, and punched */
		for (unsigned bits : { 1u, 16u, 64u })
			add(fmt("discard/refcount_bits:%u/version:3/no_unref:1/size:%s", bits,
				sz(size).c_str()),
			    bench_discard, { bits, 3, (int64_t)size, 1 }, MANUAL | MS);
	}
	/* 2a. many small random discards, freeing or keeping the clusters */
	uint64_t rsize = small ? 64 * M : 1 * G, rcount = small ? 1024 : 16384;
	for (unsigned no_unref : { 0u, 1u })
		for (unsigned bits : widths)
			add(fmt("discard_random/refcount_bits:%u/no_unref:%u/size:%s/count:%llu", bits,
				no_unref, sz(rsize).c_str(), (unsigned long long)rcount),
			    bench_discard_random, { bits, no_unref, (int64_t)rsize, (int64_t)rcount },
			    MANUAL | MS);
	/* 2b. the same after 0, 1 and 8 internal snapshots: rewrites copy
	 * shared clusters, discards drop one reference of many. 1-bit
	 * refcounts can't hold a snapshot, narrow ones only a few. */
	uint64_t ssize = small ? 8 * M : 64 * M;
	for (unsigned snaps : { 0u, 1u, 8u })
		for (unsigned bits : widths) {
			add(fmt("snap_write/refcount_bits:%u/snapshots:%u/io:4k/size:%s", bits, snaps,
				sz(ssize).c_str()),
			    bench_snap_write, { bits, snaps, (int64_t)ssize }, MANUAL | MS);
			add(fmt("snap_discard/refcount_bits:%u/snapshots:%u/size:%s", bits, snaps,
				sz(ssize).c_str()),
			    bench_snap_discard, { bits, snaps, (int64_t)ssize }, MANUAL | MS);
		}
	uint64_t zsize = small ? 32 * M : large ? 1 * G : 256 * M;
	for (unsigned unmap : { 0u, 1u }) {
		for (unsigned bits : widths)
			add(fmt("write_zeroes/refcount_bits:%u/version:3/unmap:%u/size:%s", bits,
				unmap, sz(zsize).c_str()),
			    bench_write_zeroes, { bits, 3, unmap, (int64_t)zsize }, MANUAL | MS);
		add(fmt("write_zeroes/refcount_bits:16/version:2/unmap:%u/size:%s", unmap,
			sz(zsize).c_str()),
		    bench_write_zeroes, { 16, 2, unmap, (int64_t)zsize }, MANUAL | MS);
	}

	/* 3. reads that touch no data cluster of the image, and plain data */
	static const char *const kinds[] = { "read_zero", "read_unalloc", "read_backing",
					     "read_data" };
	for (int kind : { READ_ZERO, READ_UNALLOC, READ_BACKING, READ_DATA })
		for (uint64_t io : { 4 * K, 64 * K })
			for (unsigned qd : { 1u, 32u })
				add(fmt("%s/io:%s/qd:%u/image:%s/direct:0", kinds[kind],
					sz(io).c_str(), qd, sz(span).c_str()),
				    bench_read_kind, { kind, (int64_t)io, qd, (int64_t)span },
				    MANUAL | US);

	/* 4. IOPS against the raw file, queue depth 1 .. 128 */
	static const struct {
		const char *op;
		bool write, random;
		uint64_t io;
	} ops[] = {
		{ "randread", false, true, 4 * K },
		{ "seqread", false, false, 64 * K },
		{ "randwrite", true, true, 4 * K },
		{ "seqwrite", true, false, 64 * K },
	};
	for (const auto &o : ops)
		for (unsigned qd = 1; qd <= 128; qd *= 2)
			add(fmt("iops/op:%s/io:%s/qd:%u/image:%s/direct:1", o.op, sz(o.io).c_str(),
				qd, sz(span).c_str()),
			    bench_iops, { o.write, o.random, (int64_t)o.io, qd, (int64_t)span },
			    MANUAL | US);

	/* 5. L2 cache: the size sweep across full coverage (1 MiB maps
	 * 8 GiB at 64 KiB clusters), and reads from one queue per thread
	 * (the hit path against the mutex baseline: uqcow-bench-parts) */
	for (uint64_t c : { 256 * K, 512 * K, 896 * K, 960 * K, 1 * M, 2 * M })
		add(fmt("l2cache_sweep/image:8G/cluster:64k/l2_cache:%s/io:4k/qd:32/direct:1",
			sz(c).c_str()),
		    bench_cache_sweep, { (int64_t)c, (int64_t)(8 * G), 32 }, MANUAL | US);
	add(fmt("mq_read/io:4k/qd:32/image:%s/direct:0", sz(span).c_str()), bench_mq_read,
	    { 32, (int64_t)span }, THREADS | US);
	/* 6. parse costs: uqcow-bench-parts */
}

#endif

/* Which I/O backend ran and whether O_DIRECT works here: in the JSON
 * context, so that runs from different machines are told apart. */
void add_context(enum bench_scale scale)
{
	static const char *const scales[] = { "small", "default", "large", "huge" };
	char path[4200];
	struct uq_info info;
	uq_image *img;

	benchmark::AddCustomContext("uqcow_binary", BENCH_NAME);
	benchmark::AddCustomContext("uqcow_scale", scales[scale]);
	benchmark::AddCustomContext("uqcow_dir", bench_dir());
	bench_path(path, sizeof(path), "context.qcow2");
	if (bench_create(path, 64 * M, 64 * K, 16, 3, UQ_PREALLOC_OFF, nullptr) < 0)
		return;
	if (bench_open(nullptr, path, false, false, 0, &img) == 0) {
		info.struct_size = sizeof(info);
		if (uq_get_info(img, &info) == 0)
			benchmark::AddCustomContext("uqcow_backend", info.backend);
		uq_close(img);
	}
	benchmark::AddCustomContext("uqcow_direct",
				    bench_open(nullptr, path, false, true, 0, &img) == 0 ?
				    (uq_close(img), "yes") : "refused");
	std::remove(path);
}

void on_signal(int sig)
{
	bench_remove_files();
	std::signal(sig, SIG_DFL);
	std::raise(sig);
}

bool has_flag(int argc, char **argv, const char *flag)
{
	for (int i = 1; i < argc; i++)
		if (!strncmp(argv[i], flag, strlen(flag)))
			return true;
	return false;
}

} // namespace

/* ---- the C interface (bench.h) ---- */

extern "C" {

bool bench_next(bench_run *r)
{
	Run *run = of(r);
	bool more = run->st->KeepRunning();

	if (!more)
		run->finished = true;
	return more;
}

void bench_iteration_time(bench_run *r, double seconds)
{
	of(r)->st->SetIterationTime(seconds);
}

void bench_pause(bench_run *r)
{
	of(r)->st->PauseTiming();
}

void bench_resume(bench_run *r)
{
	of(r)->st->ResumeTiming();
}

void bench_counter(bench_run *r, const char *name, double value, unsigned flags)
{
	int f = benchmark::Counter::kDefaults;

	if (flags & BENCH_RATE)
		f |= benchmark::Counter::kIsRate;
	if (flags & BENCH_AVG_THREADS)
		f |= benchmark::Counter::kAvgThreads;
	if (flags & BENCH_PER_ITER)
		f |= benchmark::Counter::kAvgIterations;
	of(r)->st->counters[name] = benchmark::Counter(
		value, static_cast<benchmark::Counter::Flags>(f),
		flags & BENCH_1024 ? benchmark::Counter::kIs1024 : benchmark::Counter::kIs1000);
}

void bench_items(bench_run *r, int64_t items)
{
	of(r)->items = static_cast<uint64_t>(items);
	of(r)->st->SetItemsProcessed(items);
}

void bench_ops(bench_run *r, uint64_t ops)
{
	of(r)->ops = ops;
}

/* callgrind only toggles: track the state so that an end without a begin
 * (a step that failed before it) changes nothing */
static thread_local bool measuring;

void bench_measure_begin(bench_run *)
{
	if (!measuring)
		CALLGRIND_TOGGLE_COLLECT;
	measuring = true;
}

void bench_measure_end(bench_run *)
{
	if (measuring)
		CALLGRIND_TOGGLE_COLLECT;
	measuring = false;
}

void bench_bytes(bench_run *r, int64_t bytes)
{
	of(r)->st->SetBytesProcessed(bytes);
}

void bench_skip(bench_run *r, const char *msg)
{
	failures++;
	of(r)->st->SkipWithError(msg && *msg ? msg : "failed");
}

void bench_unavailable(bench_run *r, const char *msg)
{
	std::string m = std::string("unavailable here: ") + (msg ? msg : "");

	of(r)->st->SkipWithError(m.c_str());
}

} // extern "C"

int main(int argc, char **argv)
{
	enum bench_scale scale = bench_scale();
	std::vector<char *> args(argv, argv + argc);
	std::string reps = "--benchmark_repetitions=3";
	std::string aggr = "--benchmark_display_aggregates_only=true";

	/* Stable numbers by default: three repetitions, the console showing
	 * mean, median, stddev and cv, the JSON file keeping every
	 * repetition for compare.py's U test. Flags given win. */
	if (!has_flag(argc, argv, "--benchmark_repetitions"))
		args.insert(args.begin() + 1, &reps[0]);
	if (!has_flag(argc, argv, "--benchmark_display_aggregates_only") &&
	    !has_flag(argc, argv, "--benchmark_report_aggregates_only"))
		args.insert(args.begin() + 1, &aggr[0]);
	int n = static_cast<int>(args.size());
	args.push_back(nullptr);

	benchmark::Initialize(&n, args.data());
	if (benchmark::ReportUnrecognizedArguments(n, args.data()))
		return 1;
	std::signal(SIGINT, on_signal);
	std::signal(SIGTERM, on_signal);
	register_all(scale);
	add_context(scale);
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	bench_cleanup();
	if (failures) {
		fprintf(stderr, BENCH_NAME ": %u benchmark run(s) failed\n", failures.load());
		return 1;
	}
	return 0;
}
