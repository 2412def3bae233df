/* SPDX-License-Identifier: MIT */
/* Private state shared by the engine's layers: the image, its chain and
 * the per-thread context that owns the I/O queue. */
#ifndef UQ_INTERNAL_H
#define UQ_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "format.h"
#include "io.h"
#include "l2cache.h"
#include "uqcow.h"

#define UQ_DEFAULT_L2_CACHE_MAX (32ull << 20) /* maps 256 GiB at 64 KiB clusters */
#define UQ_DEFAULT_QUEUE_DEPTH 128
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
};

struct uq_snap {
	struct uq_snapshot_raw raw;   /* id/name pointers are not valid here */
	char *id;
	char *name;
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
	uint64_t *l1;             /* host byte order, validated on use */
	struct l2cache *l2c;
	struct uq_snap *snaps;
	uint32_t nb_snaps;
	char *backing_name;       /* as stored */
	char *backing_path;       /* resolved */
	char *data_file_path;     /* resolved external data file */

	uq_image *backing;
	int depth;                /* 0 for the top image */
};

static inline uint64_t uq_cluster_of(const uq_image *img, uint64_t off)
{
	return off >> img->g.cluster_bits;
}

/* read.c */
int uq_read_start(uq_image *img, void *buf, size_t len, uint64_t off,
		  void (*done)(void *arg, ssize_t res), void *arg);
void uq_ctx_complete(struct uq_ctx *ctx, struct uq_done *d);

/* Synchronously look up the L2 entry covering guest offset off.
 * *m is the decoded mapping, or UQ_C_UNALLOC if no L2 table. */
int uq_map_entry(uq_image *img, uint64_t off, struct uq_l2map *m);

/* Directory part of path ("." if none), malloc'd. */
char *uq_dirname(const char *path);

#endif
