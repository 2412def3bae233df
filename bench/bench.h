/* SPDX-License-Identifier: MIT */
/* The C side of the benchmark harness: what a body gets (its arguments and
 * a handle on the harness) and the few calls it makes back into it. */
#ifndef UQ_BENCH_H
#define UQ_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uqcow.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BENCH_MAX_ARGS 8

/* One run of one benchmark, as shim.cc hands it to a body. The arguments
 * are those of the benchmark's name, in order ("alloc_write/refcount_bits:16
 * /cluster:65536/io:4096" gives arg[0] = 16, arg[1] = 65536, arg[2] = 4096).
 * With threads > 1 the body runs once per thread, concurrently. */
struct bench_run {
	int64_t arg[BENCH_MAX_ARGS];
	unsigned nargs;
	int thread;              /* 0 .. threads - 1 */
	int threads;
	void *gb;                /* the harness's own state: for the calls below */
};

/* ---- calls into the harness (implemented in shim.cc) ---- */

/* Loop control: true while the harness wants one more iteration. Every
 * body loops `while (bench_next(r)) { ... }`; the first and the last call
 * are where the threads of a multi-threaded run meet. */
bool bench_next(struct bench_run *r);

/* Manual time: the seconds this iteration took (bodies of benchmarks
 * registered with manual time call it once per iteration). */
void bench_iteration_time(struct bench_run *r, double seconds);

/* Stop the clock around untimed work (automatic-time benchmarks only). */
void bench_pause(struct bench_run *r);
void bench_resume(struct bench_run *r);

/* Counter flags, mapped onto benchmark::Counter's. */
#define BENCH_RATE        (1u << 0)  /* divided by the run's time: per second */
#define BENCH_AVG_THREADS (1u << 1)  /* averaged over threads */
#define BENCH_PER_ITER    (1u << 2)  /* divided by the iteration count */
#define BENCH_1024        (1u << 3)  /* shown with binary prefixes */

/* Set a counter at the end of a run (the last value set wins). Rates are
 * totals over the run: the harness divides them by the time. */
void bench_counter(struct bench_run *r, const char *name, double value,
		   unsigned flags);

/* Items (requests, lookups, clusters) and bytes done in the whole run:
 * items_per_second and bytes_per_second in the output. */
void bench_items(struct bench_run *r, int64_t items);
void bench_bytes(struct bench_run *r, int64_t bytes);

/* The operations the run did, when they aren't its items (instructions
 * and costs are divided by them). */
void bench_ops(struct bench_run *r, uint64_t ops);

/* Bracket the measured work of a run (not its setup): tools/bench-instr
 * counts instructions only between these, under callgrind. Outside
 * valgrind they cost a few instructions. Never nest. */
void bench_measure_begin(struct bench_run *r);
void bench_measure_end(struct bench_run *r);

/* Give up on this run: it is reported as an error with msg, the others
 * go on, and uqcow-bench exits 1 at the end. Call before the loop or
 * leave the loop right after. */
void bench_skip(struct bench_run *r, const char *msg);

/* The same for what this machine or build lacks (O_DIRECT refused,
 * io_uring blocked, a feature not built): reported, not a failure. */
void bench_unavailable(struct bench_run *r, const char *msg);

/* ---- helpers for bodies (util.c) ---- */

/* BENCH_HUGE registers only the scale families (bench_scale.c). */
enum bench_scale { BENCH_SMALL, BENCH_DEFAULT, BENCH_LARGE, BENCH_HUGE };

/* UQCOW_BENCH_SCALE=small|default|large|huge: the image and range sizes
 * that are registered. CI runs small. */
enum bench_scale bench_scale(void);

struct bench_costs;

/* Monotonic clock in seconds. */
double bench_now(void);

/* End a timed step begun at t0 whose work returned ret: flush (the
 * metadata is part of the cost), stop the clock, close the image, and
 * record the time; on failure skip the run with the engine's message.
 * Returns ret or the flush's error. */
int bench_finish(struct bench_run *r, uq_image *img, int ret, double t0);
/* The same, adding the step's costs (ops operations) to c first. */
int bench_finish_costs(struct bench_run *r, uq_image *img, int ret, double t0,
		       struct bench_costs *c, uint64_t ops);

/* A private directory under UQCOW_BENCH_DIR (default /tmp), made on first
 * use and removed, with everything in it, by bench_cleanup(). */
const char *bench_dir(void);
/* Path of a file in it: buf gets "<dir>/<name>". */
void bench_path(char *buf, size_t len, const char *name);
void bench_cleanup(void);
/* Just the files (from a signal handler: nothing is closed). */
void bench_remove_files(void);
/* Run fn first thing in bench_cleanup() (to close what a body kept open
 * across runs). At most 16. */
void bench_on_cleanup(void (*fn)(void));

/* A file that a benchmark keeps across runs (built once per process):
 * make(path, arg) is called only if it isn't there yet. Returns 0 with
 * the path in buf, or -errno. */
int bench_fixture(char *buf, size_t len, const char *name,
		  int (*make)(const char *path, void *arg), void *arg);

/* Create a qcow2 image: version 2 or 3, refcount_bits, cluster size,
 * preallocated (untimed setup, through a cache that maps it all). */
int bench_create(const char *path, uint64_t size, uint32_t cluster,
		 uint32_t refcount_bits, uint32_t version, enum uq_prealloc prealloc,
		 const char *backing);

/* l2-cache-size that maps all of an image of size bytes (for setup). */
uint64_t bench_full_cache(uint64_t size, uint32_t cluster);

/* Open read-write (RDWR) or read-only; direct adds O_DIRECT; l2_cache
 * bytes (0: the default). On failure the message goes to bench_skip. */
int bench_open(struct bench_run *r, const char *path, bool rdwr, bool direct,
	       uint64_t l2_cache, uq_image **img);
/* The same with UQ_OPEN_* flags (UQ_OPEN_RDWR, UQ_OPEN_DIRECT, ...). */
int bench_open_flags(struct bench_run *r, const char *path, unsigned flags,
		     uint64_t l2_cache, uq_image **img);

/* Fill [0, len) of an image with data written in 1 MiB requests (every
 * cluster allocated, in guest order). */
int bench_fill(uq_image *img, uint64_t len);

/* The fixture the I/O families share: a 64 KiB-cluster v3 image of span
 * bytes, every cluster allocated and written (make function for
 * bench_fixture, arg points at the span; name from bench_full_name). */
int bench_make_full(const char *path, void *arg);
void bench_full_name(char *buf, size_t len, uint64_t span);

/* An aligned buffer (4 KiB, for O_DIRECT) filled with a pattern. */
void *bench_buf(size_t len, int pattern);

/* Results folded in here can't be optimised away. */
extern volatile uint64_t bench_sink;

/* xorshift64*: the same seed gives the same offsets on every target. */
static inline uint64_t bench_rand(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* What an image costs in metadata, from the file after close. */
struct bench_meta {
	uint64_t file_length;      /* end of file */
	uint64_t disk_bytes;       /* blocks the file occupies (st_blocks) */
	uint64_t refcount_blocks;  /* refcount table entries in use */
	uint64_t l2_tables;        /* L1 entries in use */
	uint64_t data_clusters;    /* L2 entries with a host cluster */
	uint64_t meta_bytes;       /* file_length - data_clusters * cluster */
};

int bench_meta(const char *path, struct bench_meta *m);

/* Keep qd requests in flight on an image until n have finished: reads,
 * or writes of io bytes each. Offsets: random io-aligned in [0, span)
 * from seed, or (first + i) * step (step 0: io) wrapping at span.
 * Returns the seconds taken, or a negative errno. */
struct bench_io {
	unsigned qd;
	size_t io;
	uint64_t step;
	uint64_t first;
	uint64_t span;
	uint64_t n;
	bool write;
	bool random;
	uint64_t seed;
};

double bench_qd_image(uq_image *img, const struct bench_io *w);

/* The same workload on a raw file through a plain io_uring (the ceiling);
 * fd opened by the caller (O_DIRECT or not). -ENOSYS if io_uring can't be
 * set up here. */
double bench_qd_raw(int fd, const struct bench_io *w);

/* ---- exact costs ---- */

/* What the measured steps of a run cost (uq_get_stats), and how many
 * operations (requests, clusters) they did. */
struct bench_costs {
	uint64_t v[UQ_STAT_COUNT];
	uint64_t ops;
};

/* Add the image's counters since open (bench_open resets them) or the
 * last uq_reset_stats to c, with ops operations, and reset them. Call
 * after the step's flush, before closing. */
void bench_costs_add(struct bench_costs *c, uq_image *img, uint64_t ops);
/* Report c per operation as counters: meta_reads_per_op,
 * meta_writes_per_op, meta_bytes_per_op, syncs_per_op, punch_ops_per_op,
 * ... (bench/README.md lists them). Nothing if c counted no operation. */
void bench_costs_report(struct bench_run *r, const struct bench_costs *c);

/* Set the message of the last bench_ helper failure. */
const char *bench_errmsg(void);

/* ---- bodies (one file per family) ---- */

void bench_alloc_write(struct bench_run *r);    /* bits, cluster, io, qd */
void bench_discard(struct bench_run *r);        /* bits, version, size, no_unref */
void bench_discard_random(struct bench_run *r); /* bits, no_unref, size, count */
void bench_write_zeroes(struct bench_run *r);   /* bits, version, unmap, size */
void bench_snap_write(struct bench_run *r);     /* bits, snapshots, size */
void bench_snap_discard(struct bench_run *r);   /* bits, snapshots, size */
void bench_read_kind(struct bench_run *r);      /* kind, io, qd */
void bench_iops(struct bench_run *r);           /* write, random, io, qd */
void bench_cache_hit(struct bench_run *r);      /* tables; threads */
void bench_cache_mutex(struct bench_run *r);    /* tables; threads */
void bench_cache_sweep(struct bench_run *r);    /* l2 cache bytes, image GiB */
void bench_mq_read(struct bench_run *r);        /* qd; threads */
void bench_parse_header(struct bench_run *r);
void bench_parse_l2(struct bench_run *r);       /* cluster, extended */
void bench_parse_refcount(struct bench_run *r); /* refcount order */
/* op, bits, cluster, size, snapshots, full rc cache, prealloc, ops */
void bench_scale_op(struct bench_run *r);

/* scale workloads (bench_scale_op arg 0) */
enum {
	SCALE_WRITE,        /* allocating writes spread over the image */
	SCALE_COW,          /* random rewrites of them, after the snapshots */
	SCALE_DISCARD_ALL,  /* one discard of the whole image */
	SCALE_DISCARD,      /* one-cluster discards at random spots */
	SCALE_ZERO,         /* one-cluster write-zeroes, allocation kept */
	SCALE_ZERO_UNMAP,   /* ... and with unmap */
	SCALE_SNAPSHOT,     /* snapshots created, then deleted */
	SCALE_AMEND,        /* 16 bits amended to the width */
};

/* read kinds (bench_read_kind arg 0) */
enum { READ_ZERO = 0, READ_UNALLOC = 1, READ_BACKING = 2, READ_DATA = 3 };

#ifdef __cplusplus
}
#endif
#endif
