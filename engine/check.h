/* SPDX-License-Identifier: MIT */
/* State shared by the check's files: checkmap.c (metadata map, messages),
 * checkcount.c (references and compare), checkrepair.c (repairs) and
 * check.c (the sequence, uq_check). */
#ifndef UQ_CHECK_H
#define UQ_CHECK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "internal.h"
#include "walk.h"

/* What a host cluster holds (enum uq_mkind, walk.h) in the low bits of
 * ck->kind, with these flags above: */
#define K_MASK     0x0f
#define K_OVERFLOW 0x20   /* more references than the refcount width holds */
#define K_SHARED   0x40   /* a second kind was seen */
#define K_INPLACE  0x80   /* ... and one of them is written in place */

static inline bool ck_kind_in_place(unsigned k)
{
	return k != UQ_MK_NONE && k < UQ_MK_L2;
}

/* Real references per cluster are 16 bits: with the kind byte, 3 bytes a
 * cluster of the file (a 16 TiB file of 64 KiB clusters: 768 MiB, where
 * 64-bit counts took 2.25 GiB). A count from CK_BIG up (65535 references
 * take that many snapshots) lives in a small hash map instead. */
#define CK_BIG 0xffffu

struct ck_big {
	uint64_t cluster;         /* + 1: 0 marks a free slot */
	uint64_t count;
};

/* A stored refcount that differs from the real count (or can't be read). */
struct ck_diff {
	uint64_t cluster;
	uint64_t stored;
	bool unknown;        /* its refcount block can't be read */
};

/* Two uses of one cluster, reported once the refcounts are compared. */
struct ck_overlap {
	uint64_t cluster;
	uint8_t a, b;
};

struct ck {
	uq_image *img;
	struct uq_check_result *res;
	uint64_t cs;              /* cluster size */
	uint64_t file_size;
	uint64_t nb;              /* clusters compared: the file, plus refs just past it */
	uint64_t cap;             /* entries allocated in counts and kind */
	uint16_t *counts;         /* real references per cluster, CK_BIG: in big */
	struct ck_big *big;       /* open addressing, big_cap a power of two */
	size_t nbig, big_cap;
	uint8_t *kind;            /* enum ck_kind | K_SHARED | K_INPLACE */
	uint64_t *rt;             /* refcount table as stored (raw entries) */
	uint64_t rt_n;
	bool rebuild;             /* only rebuilt refcount structures can be right */
	bool outside;             /* a refcount block lies past the end of the file */
	struct ck_diff *diff;     /* sorted by cluster */
	size_t ndiff, diff_cap;
	struct ck_overlap *ov;
	size_t nov, ov_cap;
	uint64_t bm_bad;          /* bitmap entries found corrupt */
	uint8_t *far;             /* the last refcount block read for a cluster */
	uint64_t far_off;         /* past the compared range, and its offset */
	bool repair_handle;       /* opened with UQ_OPEN_REPAIR */
	int state_err;            /* setting up the write state failed */
	uint64_t work_done, work_total;
};

/* An L2 entry as qemu classifies it (the zero flag means nothing with
 * extended L2 entries). */
enum ck_ctype { CT_UNALLOC, CT_ZERO_PLAIN, CT_ZERO_ALLOC, CT_NORMAL, CT_COMPRESSED };

/* checkmap.c */
void ck_msg(struct ck *ck, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ck_work(struct ck *ck, uint64_t n);
uint64_t ck_big_get(const struct ck *ck, uint64_t c);
/* Set cluster c's real count (c < cap). -ENOMEM if the map can't grow. */
int ck_count_set(struct ck *ck, uint64_t c, uint64_t v);
/* Forget every count (the arrays stay). */
void ck_counts_clear(struct ck *ck);
/* Bytes the check's own structures take for this file (uq_check_result
 * memory_need), from the sizes ck_load found. */
uint64_t ck_memory_need(const struct ck *ck);

/* Real references to cluster c (c < cap). */
static inline uint64_t ck_count(const struct ck *ck, uint64_t c)
{
	return ck->counts[c] < CK_BIG ? ck->counts[c] : ck_big_get(ck, c);
}
int ck_grow(struct ck *ck, uint64_t n);
int ck_mark(struct ck *ck, uint64_t off, uint64_t size, unsigned k);
/* Does [off, off+len) touch a cluster that has an in-place kind besides
 * another use (writing there would change other metadata)? */
bool ck_conflicts(const struct ck *ck, uint64_t off, uint64_t len);
bool ck_rt_usable(const struct ck *ck, uint64_t raw, uint64_t *off);
/* File size, arrays, refcount table and metadata map for the image as it
 * is on disk now; *nl2_active: L2 tables of the active L1. */
int ck_load(struct ck *ck, uint64_t *nl2_active);
void ck_free(struct ck *ck);

/* checkcount.c */
int ck_ref(struct ck *ck, uint64_t off, uint64_t size);
enum ck_ctype ck_classify(const struct uq_geom *g, uint64_t e);
/* Real references to every cluster, in qemu's order. */
int ck_calculate(struct ck *ck, unsigned fix);
/* Stored against real refcounts; fix: what may be patched in place. */
int ck_compare(struct ck *ck, unsigned fix, uint64_t *highest);
/* Stored refcount of a cluster, as the compare step found it. -EIO if its
 * refcount block can't be read. */
int ck_stored(struct ck *ck, uint64_t cluster, uint64_t *val);
void ck_report_overlaps(struct ck *ck);

/* checkrepair.c */
int ck_sync(struct ck *ck);
int ck_l1_on_disk(struct ck *ck, unsigned flags);
int ck_write_state(struct ck *ck);
int ck_fix_refcount(struct ck *ck, uint64_t cluster, uint64_t stored, uint64_t want);
int ck_write_refcounts(struct ck *ck);
int ck_write_l2_entry(struct ck *ck, uint64_t l2_off, uint64_t idx, const uint8_t *entry);
int ck_write_l2(struct ck *ck, uint64_t l2_off, const uint8_t *tab);
int ck_write_l1_entry(struct ck *ck, uint32_t idx, uint64_t val);
int ck_rebuild(struct ck *ck);
int ck_mark_clean(struct ck *ck);
int ck_finish(struct ck *ck);

#endif
