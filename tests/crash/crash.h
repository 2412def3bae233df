/* SPDX-License-Identifier: MIT */
/* The crash-test harness: a live image under the fault layer, a model of
 * what the guest may read after a crash, and the checks run on each state. */
#ifndef UQ_CRASH_H
#define UQ_CRASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fault.h"
#include "internal.h"

#define SECTOR 512u

/* The geometry and features one run uses. */
struct cfg {
	uint32_t cs;           /* cluster size */
	uint32_t bits;         /* refcount width */
	int lazy;              /* lazy_refcounts */
	int backing;           /* a raw backing file under the image */
	uint64_t size;         /* virtual size at creation */
	uint64_t seed;
	uint64_t rc_cache;     /* refcount_cache_size; 0: the engine's default */
	uint64_t l2_cache;     /* l2_cache_size; 0: the engine's default */
	unsigned open_flags;   /* UQ_OPEN_* added to the writable open */
	uint32_t bitmap_gran;  /* nonzero: an enabled bitmap "b" of this
				* granularity is added before the run */
};

/* A guest operation, in issue order. Its effect on the guest is what the
 * live image read back over [off, off + len) right after it returned. */
struct gop {
	const char *what;
	size_t start;          /* fault record position when it was issued */
	uint64_t off, len;
	uint8_t *data;         /* NULL: it failed, so the range may read anything */
	bool resize;
	uint64_t new_size;     /* the virtual size it set (resize, snapshot apply) */
	bool snapshot;         /* a snapshot create, apply or delete */
};

/* A snapshot the workload took: what it reads while it exists. */
struct msnap {
	char name[16];
	size_t created;        /* index of its create among the guest operations */
	size_t deleted;        /* index of the delete that removed it; SIZE_MAX: none */
	bool uncertain;        /* its create or delete failed: it may or may not exist */
	uint64_t size;
	uint8_t *data;
	uint8_t *unknown;      /* per sector: a failed operation touched it */
};

/* The guest as of a completed uq_flush: all of it must survive a crash. */
struct snap {
	size_t pos;            /* fault record position when the flush returned */
	size_t ngops;          /* guest operations issued before it */
	uint64_t size;
	uint8_t *data;
	uint8_t *unknown;      /* per sector: a failed operation touched it */
};

struct run {
	const char *name;      /* workload */
	struct cfg c;
	char dir[64];          /* scratch directory (backing file, states) */
	char top[96];          /* the live image (created on disk) */
	char state[96];        /* crash states written out for qemu-img / backing */
	uq_image *img;
	struct io_fault *fl;
	uint64_t rng;
	bool may_fail;         /* ENOSPC/EIO runs: operations may fail */
	uint64_t reftable_at_start;

	uint64_t size;         /* the live virtual size */
	uint8_t *cur, *unknown;
	struct gop *gops;
	size_t ngops, gcap;
	struct snap *snaps;
	size_t nsnaps, scap;
	struct msnap *ms;      /* internal snapshots, in the order taken */
	size_t nms, mscap;

	/* results */
	unsigned long points, samples, qemu_checks, uq_checks, snap_checks, failures;
	unsigned long bm_in_use, bm_exact;  /* states: bitmap in use, written back */
	bool reftable_grew;
	unsigned samples_per_interval;
	unsigned qemu_budget;  /* qemu-img checks this run may still do */
	bool verbose;
	uint64_t evictions;    /* refcount blocks the workload evicted */
};

uint64_t rnd(struct run *R);
uint64_t rnd_below(struct run *R, uint64_t n);

/* Live image: create (and its backing file), open under the fault layer. */
int run_start(struct run *R, const char *name, const struct cfg *c);
/* Close the live image (its close is recorded too) and check nothing. */
int run_close(struct run *R);
void run_free(struct run *R);

/* Guest operations: they keep the model and report what fails. Each
 * returns the engine's result. */
int g_write(struct run *R, uint64_t off, uint64_t len, unsigned flags);
int g_zero(struct run *R, uint64_t off, uint64_t len, unsigned flags);
int g_discard(struct run *R, uint64_t off, uint64_t len);
int g_flush(struct run *R);
/* uq_aio_write (or discard) of range 1, uq_aio_flush, and a uq_aio_write
 * of range 2 submitted while the flush is in flight, then uq_poll until
 * all three completed: the flush covers range 1, and range 2 goes out
 * only after it. The ranges must not overlap. */
int g_aflush(struct run *R, uint64_t off1, uint64_t len1, bool discard1, uint64_t off2,
	     uint64_t len2);
int g_resize(struct run *R, uint64_t size);
int g_amend(struct run *R, uint32_t bits);
/* Internal snapshots: kind 'c' create, 'a' apply, 'd' delete NAME. They
 * return once durable, so a successful one counts as a flush. A create
 * refused for the refcount width (-ENOTSUP at 1 bit, -ERANGE where a count
 * would overflow) or an apply refused for overflow must change nothing. */
int g_snapshot(struct run *R, char kind, const char *name);
/* Does the model's snapshot still exist, for certain? */
bool msnap_live(const struct msnap *m);
/* The model's live snapshot named name, or NULL. */
struct msnap *find_msnap(struct run *R, const char *name);

/* Fill buf with data of the kind a workload wants: random, or (for
 * compressed writes) runs that deflate well. */
void fill_random(struct run *R, uint8_t *buf, size_t len);
void fill_compressible(struct run *R, uint8_t *buf, size_t len);

/* Every persistence point, and samples of reordered and torn states
 * between them: rebuild, open, check. Returns the failures found. */
unsigned long check_crash_states(struct run *R);

/* Check one file image: opens it read-write (repairing a dirty image),
 * checks refcounts and data against snapshot `level` and the guest
 * operations [gop_lo, gop_hi) that may or may not have landed. */
int check_image(struct run *R, const struct io_fault_image *st, size_t level,
		size_t gop_lo, size_t gop_hi, bool qemu, const char *label);

/* Snapshot in force for a crash just before record position j. */
size_t level_before(const struct run *R, size_t j);
size_t gops_before(const struct run *R, size_t j);

/* Guest operations, flushes and recorded changes in order (debugging). */
void dump_timeline(const struct run *R);

void fail(struct run *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
