/* SPDX-License-Identifier: MIT */
/* A reference count of a qcow2 file held in memory, by a walk of its raw
 * bytes that shares no code with the engine, against its stored refcounts. */
#ifndef UQ_REFWALK_H
#define UQ_REFWALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A cluster whose stored refcount is not the number of references found. */
struct rw_diff {
	uint64_t cluster;     /* index: host offset / cluster size */
	uint64_t refs;        /* references the walk found */
	uint64_t stored;      /* the refcount the file stores (0 if unknown) */
	bool unknown;         /* its refcount block can't be read */
};

struct rw_result {
	uint32_t cluster_bits;
	uint32_t refcount_bits;
	bool dirty;           /* incompatible bit 0: refcounts may be stale */
	uint64_t nclusters;   /* clusters compared: [0, nclusters) */
	struct rw_diff *diff; /* every cluster where the two differ, ascending */
	size_t ndiff;
	/* Structures the walk could not follow (outside the file, misaligned,
	 * reserved bits set): their references are not counted. */
	unsigned nproblems;
	char problem[256];    /* the first of them */
};

/* Walk file[0, len): the header and its extensions, the active and every
 * snapshot's L1 table, their L2 tables (standard or extended entries) and
 * data, zero-allocated and compressed clusters, the snapshot table, the
 * refcount table and blocks, the bitmap directory, tables and data (when
 * the bitmaps autoclear bit says they are valid), counted as qemu-img
 * check counts them; then read every stored refcount (1..64 bits).
 * Returns 0 when the walk ran (see out->nproblems), -EINVAL when the
 * header isn't a qcow2 header it can walk (out->problem says why), or
 * -ENOMEM. Free out with refwalk_free(). */
int refwalk(const uint8_t *file, uint64_t len, struct rw_result *out);
void refwalk_free(struct rw_result *r);

#endif
