/* SPDX-License-Identifier: MIT */
/* Shared by the fuzz targets: the libFuzzer entry points and FUZZ_CHECK,
 * which turns a broken invariant into an abort the fuzzer records. */
#ifndef UQ_FUZZ_H
#define UQ_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
			       unsigned int seed);

/* An invariant the engine promises; failing it is a bug, not bad input. */
#define FUZZ_CHECK(cond)                                                    \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "%s:%d: invariant failed: %s\n",    \
				__FILE__, __LINE__, #cond);                 \
			abort();                                            \
		}                                                           \
	} while (0)

/* The geometry a valid header with these choices would give: cluster
 * size from cluster_sel; extended L2 only with 16 KiB clusters or more;
 * extended L2 and an external data file imply v3. */
static inline void fuzz_geometry(uint8_t cluster_sel, bool v3, bool extl2, bool datafile,
				 struct uq_geom *g)
{
	struct uq_header h;

	memset(&h, 0, sizeof(h));
	h.magic = QCOW_MAGIC;
	h.cluster_bits = QCOW_MIN_CLUSTER_BITS +
			 cluster_sel % (QCOW_MAX_CLUSTER_BITS - QCOW_MIN_CLUSTER_BITS + 1);
	extl2 = extl2 && h.cluster_bits >= 14;
	v3 = v3 || extl2 || datafile;
	h.version = v3 ? 3 : 2;
	h.header_length = v3 ? QCOW_V3_HEADER_LEN : QCOW_V2_HEADER_LEN;
	h.refcount_order = 4;
	if (extl2)
		h.incompatible_features |= QCOW_INCOMPAT_EXTL2;
	if (datafile)
		h.incompatible_features |= QCOW_INCOMPAT_DATA_FILE;
	uq_geom_init(&h, g);
}

#endif
