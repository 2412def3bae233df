// SPDX-License-Identifier: MIT
/* Fuzz target: refcount blocks of every width and refcount table entries.
 * Byte 0 picks refcount_order 0..6, byte 1 the cluster size; the rest is a
 * refcount block (and, read as 8-byte words, a refcount table). */
#include <stdbool.h>
#include <string.h>

#include "format.h"
#include "fuzz.h"

/* A new value for entry i that differs from v in as many bits as possible
 * and covers 0 and the maximum along the way. */
static uint64_t new_value(uint64_t v, uint64_t i, uint64_t max)
{
	switch (i % 4) {
	case 0:
		return ~v & max;
	case 1:
		return max;
	case 2:
		return 0;
	default:
		return (v * 0x9e3779b97f4a7c15ull + i) & max;
	}
}

static void check_block(const uint8_t *data, size_t size, uint32_t order)
{
	uint64_t max = uq_refcount_max(order);
	uint64_t n = ((uint64_t)size * 8) >> order;
	uint8_t *copy;

	FUZZ_CHECK(max == (order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1));
	for (uint64_t i = 0; i < n; i++)
		FUZZ_CHECK(uq_refcount_get(data, order, i) <= max);
	if (!n)
		return;

	copy = malloc(size);
	FUZZ_CHECK(copy);
	memcpy(copy, data, size);

	/* Writing one entry leaves its neighbours alone and truncates. */
	for (uint64_t i = 0; i < n && i < 64; i++) {
		uint64_t before = i ? uq_refcount_get(copy, order, i - 1) : 0;
		uint64_t after = i + 1 < n ? uq_refcount_get(copy, order, i + 1) : 0;
		uint64_t old = uq_refcount_get(copy, order, i);

		uq_refcount_set(copy, order, i, UINT64_MAX);
		FUZZ_CHECK(uq_refcount_get(copy, order, i) == max);
		if (i)
			FUZZ_CHECK(uq_refcount_get(copy, order, i - 1) == before);
		if (i + 1 < n)
			FUZZ_CHECK(uq_refcount_get(copy, order, i + 1) == after);
		uq_refcount_set(copy, order, i, old);
	}
	FUZZ_CHECK(memcmp(copy, data, size) == 0);

	/* Rewrite every entry, read all back, then restore the original. */
	for (uint64_t i = 0; i < n; i++)
		uq_refcount_set(copy, order, i,
				new_value(uq_refcount_get(data, order, i), i, max));
	for (uint64_t i = 0; i < n; i++)
		FUZZ_CHECK(uq_refcount_get(copy, order, i) ==
			   new_value(uq_refcount_get(data, order, i), i, max));
	for (uint64_t i = 0; i < n; i++)
		uq_refcount_set(copy, order, i, uq_refcount_get(data, order, i));
	FUZZ_CHECK(memcmp(copy, data, size) == 0);
	free(copy);
}

static void check_reftable(const uint8_t *data, size_t size,
			   uint32_t cluster_bits)
{
	struct uq_header h;
	struct uq_geom g;

	memset(&h, 0, sizeof(h));
	h.version = 3;
	h.cluster_bits = cluster_bits;
	h.refcount_order = 4;
	h.header_length = QCOW_V3_HEADER_LEN;
	uq_geom_init(&h, &g);

	for (size_t i = 0; i + 8 <= size; i += 8) {
		uint64_t entry = uq_be64(data + i), off;

		if (uq_reftable_decode(&g, entry, &off) < 0)
			continue;
		FUZZ_CHECK(!(entry & QCOW_REFT_RESERVED));
		FUZZ_CHECK(off == (entry & QCOW_REFT_OFFSET_MASK));
		FUZZ_CHECK((off & (g.cluster_size - 1)) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t order, cluster_bits;

	if (size < 2)
		return 0;
	order = data[0] % 7;
	cluster_bits = QCOW_MIN_CLUSTER_BITS +
		       data[1] % (QCOW_MAX_CLUSTER_BITS - QCOW_MIN_CLUSTER_BITS + 1);
	check_block(data + 2, size - 2, order);
	check_reftable(data + 2, size - 2, cluster_bits);
	return 0;
}
