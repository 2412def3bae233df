/* SPDX-License-Identifier: MIT */
/* The one walk over an image's metadata: every structure that lives in a
 * host cluster (header, L1 and L2 tables of the active state and of each
 * snapshot, refcount table and blocks, snapshot table, bitmap directory,
 * tables and data) and, on request, the guest data the L2 entries name.
 * Check, the overlap set, the reference count of a dirty image and the
 * snapshot refcount updates all see the image through it, so they agree
 * on what metadata is. Also the one big-endian table reader and the
 * batched table reader. */
#ifndef UQ_WALK_H
#define UQ_WALK_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

/* What a host region holds. Kinds before UQ_MK_L2 are written in place;
 * from UQ_MK_L2 on, copy-on-write protects them, so they may be shared. */
enum uq_mkind {
	UQ_MK_NONE,
	UQ_MK_HEADER,
	UQ_MK_L1,
	UQ_MK_REFTABLE,
	UQ_MK_REFBLOCK,
	UQ_MK_SNAPTABLE,
	UQ_MK_BITMAP_DIR,
	UQ_MK_BITMAP_TABLE,
	UQ_MK_L2,
	UQ_MK_BITMAP_DATA,
	UQ_MK_DATA,
	UQ_MK_COMPRESSED,
	UQ_MK_COUNT,
};

const char *uq_mkind_name(enum uq_mkind k);

#define UQ_WALK_SNAPSHOTS (1u << 0) /* snapshot L1 tables and the snapshot table */
#define UQ_WALK_DATA      (1u << 1) /* read L2 tables: the data their entries name */
#define UQ_WALK_REFCOUNTS (1u << 2) /* the refcount table and its blocks */
#define UQ_WALK_BITMAPS   (1u << 3) /* bitmaps, while the autoclear bit says valid */
#define UQ_WALK_ALL       0xfu

/*
 * One walk. Callbacks return 0 to go on, < 0 to stop the walk with that
 * error, > 0 to stop it without one (uq_walk returns that value). Any
 * callback may be NULL.
 *
 * Order (qemu-img check's, so the check's messages come out as qemu's):
 * header; active L1 table, then each of its L2 tables followed by their
 * data; each snapshot's L1 table the same way; the snapshot table; the
 * refcount table; bitmaps (directory, then each table and its data);
 * refcount blocks.
 */
struct uq_walk {
	uq_image *img;
	unsigned what;                 /* UQ_WALK_* */
	/* Refcount table entries as stored (raw); NULL: the image's own,
	 * read from the file. */
	const uint64_t *reftable;
	uint64_t reftable_n;

	int (*region)(struct uq_walk *w, enum uq_mkind k, uint64_t off, uint64_t len);
	/* Before each L1 table (k == UQ_MK_L1; w->snap says whose) and before
	 * the refcount blocks (k == UQ_MK_REFBLOCK). */
	int (*stage)(struct uq_walk *w, enum uq_mkind k);
	/* Which non-zero L1 entries lead to an L2 table worth visiting
	 * (decided up front: the tables are read ahead); NULL: all of them,
	 * at the entry's offset bits, as qemu-img check does. */
	bool (*want_l2)(struct uq_walk *w, uint32_t idx, uint64_t raw);
	/* A visited L1 entry, before its L2 table's region. */
	int (*l1_entry)(struct uq_walk *w, uint32_t idx, uint64_t raw);
	/* With UQ_WALK_DATA: an L2 table as read. Without it set, each entry
	 * is decoded and its data reported as a region (a decode error stops
	 * the walk). */
	int (*l2_table)(struct uq_walk *w, uint64_t l2_off, uint8_t *tab);
	/* A refcount table entry; without it, usable blocks (aligned, no
	 * reserved bits) are reported as regions. */
	int (*refblock)(struct uq_walk *w, uint64_t idx, uint64_t raw);
	/* A structure that can't be read or makes no sense (an L1 or L2
	 * table that won't read, a malformed bitmap entry). The walk goes on
	 * past it unless this returns < 0; without it, it stops with err. */
	int (*bad)(struct uq_walk *w, enum uq_mkind k, uint64_t off, int err);
	void *arg;

	/* Where the walk is, for the callbacks. */
	int snap;                      /* -1: the active L1 table */
	uint32_t l1_idx;
	uint64_t l2_idx;               /* entry being reported as data */
};

int uq_walk(struct uq_walk *w);

/* Shared callbacks. want_l2: entries that decode and name a table.
 * bad: go on past what can't be read (another pass reports it). */
bool uq_walk_want_decoded(struct uq_walk *w, uint32_t idx, uint64_t raw);
int uq_walk_skip_bad(struct uq_walk *w, enum uq_mkind k, uint64_t off, int err);

/* The L2 tables (and with UQ_WALK_DATA their data) of one L1 table: mem
 * is the table in host order, or NULL to read it from l1_off. */
int uq_walk_l1(struct uq_walk *w, uint64_t l1_off, uint32_t l1_size, const uint64_t *mem);

/* The host bytes a compressed mapping occupies, whole sectors: every
 * cluster they touch holds a reference. */
static inline void uq_comp_span(const struct uq_l2map *m, uint64_t *off, uint64_t *len)
{
	*off = m->comp_off & ~511ull;
	*len = ((m->comp_off & 511) + m->comp_len + 511) & ~511ull;
}

/* Bytes of the snapshot table the image's entries use. */
uint64_t uq_snaptable_bytes(const uq_image *img);

/* n big-endian 64-bit entries at off into a malloc'd host-order array
 * (L1 tables, refcount tables, bitmap tables). */
int uq_read_table64(uq_image *img, enum uq_mkind k, uint64_t off, uint64_t n,
		    uint64_t **out);

/* n host-order entries as big-endian bytes, zero-padded to bytes >=
 * n * 8: *out is malloc'd (NULL when bytes is 0). */
int uq_table64_encode(const uint64_t *t, uint64_t n, uint64_t bytes, uint8_t **out);
/* Write n host-order entries big-endian at off, zero-padded to bytes
 * (>= n * 8; a new table's tail must read as zeros). */
int uq_write_table64(uq_image *img, enum uq_mkind k, uint64_t off, const uint64_t *t,
		     uint64_t n, uint64_t bytes);

/* Reads a list of tables (one cluster each) through the image's queue,
 * several in flight, and hands them out in list order. */
struct uq_tslot;
struct uq_treader {
	uq_image *img;
	enum uq_mkind kind;   /* what the tables are, for the counters */
	size_t len;
	const uint64_t *off;
	size_t n, sub, got;
	unsigned depth;
	struct uq_tslot *s;
};

int uq_treader_init(struct uq_treader *r, uq_image *img, enum uq_mkind kind,
		    const uint64_t *off, size_t n);
/* The next table of the list; its buffer stays valid until the next call. */
int uq_treader_next(struct uq_treader *r, uint8_t **buf);
void uq_treader_free(struct uq_treader *r);

#endif
