/* SPDX-License-Identifier: MIT */
/* Private state shared by the engine's layers: the image, its chain and
 * the per-thread context that owns the I/O queue. */
#ifndef UQ_INTERNAL_H
#define UQ_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "format.h"
#include "io.h"
#include "l2cache.h"
#include "uqcow.h"

#define UQ_DEFAULT_L2_CACHE_MAX (32ull << 20) /* maps 256 GiB at 64 KiB clusters */
#define UQ_DEFAULT_QUEUE_DEPTH 128
#define UQ_DEFAULT_REFCOUNT_CACHE (4ull << 20) /* see README, "Refcount cache" */
#define UQ_MIN_REFCOUNT_BLOCKS 2
#define UQ_DIRECT_ALIGN 4096

/* Finished guest requests waiting to be reported by uq_poll. */
struct uq_done {
	struct uq_done *next;
	struct uq_ctx *ctx;
	uq_done_fn cb;
	void *arg;
	ssize_t res;
};

/* One per image chain: the queue all images of the chain submit to. */
struct uq_ctx {
	struct io_queue *q;
	struct uq_done *done_head, **done_tail;
	uint64_t completed;      /* guest requests reported so far */
	/* costs (stats.c): this ctx's counters; the image's ctx also lists
	 * the queues made on it and the values uq_reset_stats started from */
	_Atomic uint64_t cnt[UQ_STAT_COUNT];
	struct uq_ctx *queues, *qnext;   /* under stats.c's lock */
	uint64_t folded[UQ_STAT_COUNT];  /* destroyed queues'; under the lock */
	uint64_t base[UQ_STAT_COUNT];
	/* reused by compressed reads and writes on this queue (compress.c) */
	struct uq_codec *codec;
	uint8_t *scratch;        /* one cluster, for partial compressed reads */
	size_t scratch_len;
};

struct uq_snap {
	struct uq_snapshot_raw raw;   /* id/name pointers are not valid here */
	char *id;
	char *name;
};

/* Refcount table and cached blocks of an image open for writing; owned by
 * refcount.c (uq_rc_load / uq_rc_release). */
struct uq_rc {
	uint64_t *table;          /* block offsets, host order */
	uint64_t entries;
	bool table_dirty;
	uint8_t **blocks;         /* cached refcount blocks by table index */
	uint8_t *block_dirty;
	uint8_t *block_ref;       /* CLOCK reference bits, by table index */
	uint64_t nres, cap;       /* blocks in memory; at most cap (0: no bound) */
	uint64_t hand;            /* CLOCK hand: a table index */
	/* clusters whose refcount drops after L2 is on disk, as runs: pairs
	 * (first cluster, count), in the order they were freed */
	uint64_t *frees;
	size_t nfrees, frees_cap; /* runs */
	uint64_t free_clusters;   /* in those runs: the deferred-free budget */
	bool lazy;                /* lazy refcounts: blocks reach disk on close */
};

/* Where new host clusters come from; refcount.c's allocator moves these,
 * cluster.c packs compressed clusters at comp_next. */
struct uq_alloc {
	uint64_t free_hint;       /* lowest cluster that may be free */
	uint64_t host_end;        /* bytes: past every allocated cluster */
	uint64_t written_end;     /* bytes: nothing at or past this was ever written */
	uint64_t comp_next;       /* next byte to pack a compressed cluster at, 0 none */
};

/* Open-addressing set of metadata cluster indices; owned by overlap.c. */
struct uq_metaset {
	uint64_t *slots;
	size_t cap, n;
};

/* The snapshot table as loaded; owned by snaptable.c. */
struct uq_snaps {
	struct uq_snap *list;
	uint32_t n;
};

/* Persistent bitmaps as loaded; owned by bitmap.c (uq_bm_load_dir /
 * uq_bm_release). */
struct uq_bm;
struct uq_bitmaps {
	struct uq_bm *list;
	uint32_t n;
	uint32_t tracking;        /* bitmaps guest writes mark: 0 costs one test */
	uint64_t mem;             /* bytes of bits loaded */
	bool bad;                 /* malformed: not loaded (read-only opens) */
	char why[256];            /* the reason, for info */
};

struct uq_image {
	char *path;
	char *dir;                /* directory that relative names resolve in */
	enum uq_format fmt;
	unsigned flags;
	struct uq_ctx *ctx;
	bool own_ctx;
	struct io_file *file;
	struct io_file *data;     /* guest data: == file unless external */
	uint64_t file_size;
	uint64_t size;            /* virtual size */
	size_t align;             /* buffer alignment for metadata I/O */

	/* qcow2 only */
	struct uq_header h;
	struct uq_exts *exts;
	struct uq_geom g;
	uint64_t *l1;             /* host byte order; replaced by uq_l1_replace */
	struct l2cache *l2c;
	struct uq_snaps snap;
	struct uq_bitmaps bm;
	char *backing_name;       /* as stored */
	char *backing_path;       /* resolved */
	char *data_file_path;     /* resolved external data file */

	uq_image *backing;
	int depth;                /* 0 for the top image */

	/* write state: qcow2 images opened read-write (rwopen.c) */
	bool writable;            /* cleared only by uq_stop_writes */
	const char *stop_reason;  /* why writes stopped (static text) */
	struct uq_rc rc;
	struct uq_alloc alloc;
	struct uq_metaset meta;
	bool l1_dirty;
	unsigned writes_inflight; /* async data writes not yet completed */
	/* changes (writes, punches, truncations) counted on file and data
	 * at their last fsync: a sync with nothing new to make durable is
	 * skipped (writeback.c) */
	uint64_t synced_file, synced_data;
	/* changes on file right after uq_l2_writeback's table writes: while
	 * it still holds, only L2 tables are unsynced, and the next batch
	 * needs no sync before its own tables */
	uint64_t l2_batch_mark;
	/* a metadata flush in flight (writeback.c); while there is one,
	 * guest writes, zeroes, discards and flushes wait in the deferred
	 * list (request.c), so nothing changes metadata it is writing */
	struct uq_flush *flush;
	struct uq_deferred *deferred, **deferred_tail;
};

static inline uint64_t uq_cluster_of(const uq_image *img, uint64_t off)
{
	return off >> img->g.cluster_bits;
}

/* imgstate.c */
/* Stop all further writes through img: a failed data or metadata write,
 * or metadata that can no longer be trusted. reason is static text that
 * later refusals quote. */
void uq_stop_writes(uq_image *img, const char *reason);
/* Make l1 (malloc'd, host order, size entries at host offset off) the
 * active L1 table; returns the old one, which the caller frees. */
uint64_t *uq_l1_replace(uq_image *img, uint64_t *l1, uint32_t size, uint64_t off);

/* image.c */
/* Directory part of path ("." if none), malloc'd. */
char *uq_dirname(const char *path);

/* read.c */
/* A synchronous wait on one request: uq_sync_done is its callback. */
struct uq_sync {
	bool done;
	ssize_t res;
};
void uq_sync_done(void *arg, ssize_t res);
int uq_read_start(uq_image *img, struct uq_ctx *ctx, void *buf, size_t len,
		  uint64_t off, void (*done)(void *arg, ssize_t res), void *arg);
int uq_ctx_poll(struct uq_ctx *ctx, unsigned min_complete);
void uq_ctx_complete(struct uq_ctx *ctx, struct uq_done *d);
/* Free what compressed reads kept in ctx (the queue is freed apart). */
void uq_ctx_release(struct uq_ctx *ctx);

/* Read guest content without delivering user completions (copy-on-write
 * needs the old bytes while the caller is inside a submission). */
int uq_internal_pread(uq_image *img, void *buf, size_t len, uint64_t off);
/* Synchronously look up the L2 entry covering guest offset off.
 * *m is the decoded mapping, or UQ_C_UNALLOC if no L2 table. */
int uq_map_entry(uq_image *img, uint64_t off, struct uq_l2map *m);
/* fn on every mapping of the L2 table covering guest offset off (a
 * table-aligned offset), in guest order, up to the virtual size. A table
 * not in the cache is read around it (for a table about to be dropped).
 * *table: the table's offset (0: none, so no calls). */
int uq_map_table(uq_image *img, uint64_t off,
		 int (*fn)(uq_image *img, const struct uq_l2map *m, void *arg), void *arg,
		 uint64_t *table);
/* Entry idx of the L2 table at l2_off, read synchronously on a miss. */
int uq_l2_entry_sync(uq_image *img, uint64_t l2_off, uint64_t idx, uint64_t e[2]);

/* refcount.c */
int uq_rc_load(uq_image *img);
void uq_rc_release(uq_image *img);
int uq_rc_get(uq_image *img, uint64_t cluster, uint64_t *val);
int uq_rc_add(uq_image *img, uint64_t cluster, int64_t delta);
int uq_rc_alloc(uq_image *img, uint64_t n, uint64_t *host_off);
int uq_rc_free_later(uq_image *img, uint64_t host_off, uint64_t bytes);
/* Give [off, off + len) of f back to the file system (where it can't
 * punch, the backend writes zeros); on failure "PATH: what failed: why". */
int uq_punch(uq_image *img, struct io_file *f, uint64_t off, uint64_t len, const char *what);
/* Drop the deferred frees' references; what became free is punched, on
 * b's queue when b is given. Call only once the L1 and L2 tables that
 * dropped them are durable. */
struct uq_batch;
int uq_rc_apply_frees(uq_image *img, struct uq_batch *b);
/* Dirty refcount blocks, then (after they are durable) a changed
 * refcount table, onto b's queue. The blocks' memory must stay as it is
 * until b is idle: nothing may load or evict blocks meanwhile. */
int uq_rc_queue_dirty(uq_image *img, struct uq_batch *b);
int uq_rc_queue_table(uq_image *img, struct uq_batch *b);
int uq_rc_write_dirty(uq_image *img);
int uq_rc_rebuild(uq_image *img, const uint64_t *counts, uint64_t nclusters,
		  uint32_t order);

/* rwopen.c */
int uq_write_open(uq_image *img);     /* prepare a read-write qcow2 image */
int uq_write_close(uq_image *img);

/* writeback.c */
int uq_meta_flush(uq_image *img);     /* metadata to disk, in order; waits */
/* The same flush, asynchronously: d completes (uq_ctx_complete) when it
 * is done. Only with no flush in flight. */
int uq_flush_start(uq_image *img, struct uq_done *d);
/* A flush waiting for data writes goes on once none is in flight. */
void uq_flush_kick(uq_image *img);
/* Reap until no flush is in flight (guest completions are kept). */
int uq_flush_settle(uq_image *img);
/* Room in the L2 cache: dirty L2 tables written (after the refcount
 * increases they rely on are durable); L1 and the deferred frees wait
 * for a flush unless the frees are over their budget. */
int uq_l2_writeback(uq_image *img);
/* A full uq_meta_flush when the deferred frees are over their budget
 * (UQ_FREE_BUDGET_BYTES / _RUNS), else nothing. */
int uq_frees_bound(uq_image *img);
/* The deferred frees past which a writeback becomes a flush. */
#define UQ_FREE_BUDGET_BYTES (256ull << 20)
#define UQ_FREE_BUDGET_RUNS 65536


/* request.c */
/* Wait for a flush in flight and send out what waited for it; guest
 * completions stay for uq_poll. Calls that change an image's structure
 * start with it. */
int uq_settle(uq_image *img);

/* create.c */
int uq_preallocate(uq_image *img, enum uq_prealloc mode);
/* The feature name table extension naming the bits uqcow knows, at p
 * (NULL: only its size); returns its size in bytes. */
size_t uq_feature_table_ext(uint8_t *p);

/* snapshot.c: the snapshot table, loaded on open */
int uq_snaps_load(uq_image *img);
void uq_snaps_release(uq_image *img);

/* image_wrap.c: replace an open image's file (and its data file when
 * that is the same file) with what wrap makes of it. wrap takes ownership
 * of inner on success (closing outer closes it); on failure inner stays
 * the image's. Nothing may be in flight (-EBUSY). Not public API: hidden, so
 * never in libuqcow.so's dynamic symbols. */
__attribute__((visibility("hidden")))
int uq_image_wrap_file(uq_image *img,
		       int (*wrap)(struct io_file *inner, void *arg, struct io_file **outer),
		       void *arg);

#endif
