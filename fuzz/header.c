// SPDX-License-Identifier: MIT
/* Fuzz target: qcow2 header decoding. Checks that every accepted header
 * keeps the promises of format.h and survives an encode/decode round trip. */
#include <stdbool.h>
#include <string.h>

#include "format.h"
#include "fuzz.h"

/* [off, off + bytes) is cluster aligned and ends inside the file. */
static void check_table(uint64_t off, uint64_t bytes, uint64_t csize,
			uint64_t file_size)
{
	FUZZ_CHECK(off != 0);
	FUZZ_CHECK((off & (csize - 1)) == 0);
	FUZZ_CHECK(off <= file_size && bytes <= file_size - off);
}

/* What format.h promises about a header uq_header_decode accepted. */
static void check_accepted(const struct uq_header *h, size_t len,
			   uint64_t file_size)
{
	uint64_t csize, entries;
	struct uq_geom g;
	bool ext;

	FUZZ_CHECK(h->magic == QCOW_MAGIC);
	FUZZ_CHECK(h->version == 2 || h->version == 3);
	FUZZ_CHECK(h->cluster_bits >= QCOW_MIN_CLUSTER_BITS &&
		   h->cluster_bits <= QCOW_MAX_CLUSTER_BITS);
	csize = 1ull << h->cluster_bits;
	ext = h->incompatible_features & QCOW_INCOMPAT_EXTL2;

	if (h->version == 2) {
		FUZZ_CHECK(h->refcount_order == 4);
		FUZZ_CHECK(h->header_length == QCOW_V2_HEADER_LEN);
		FUZZ_CHECK(!h->incompatible_features &&
			   !h->compatible_features && !h->autoclear_features);
		FUZZ_CHECK(h->compression_type == QCOW_COMPRESS_ZLIB);
	} else {
		FUZZ_CHECK(h->header_length >= QCOW_V3_HEADER_LEN);
		FUZZ_CHECK(h->header_length % 8 == 0);
		FUZZ_CHECK(h->header_length <= csize);
		FUZZ_CHECK(h->header_length <= len);
		FUZZ_CHECK(h->refcount_order <= 6);
	}
	if (h->incompatible_features & QCOW_INCOMPAT_COMPRESSION)
		FUZZ_CHECK(h->compression_type == QCOW_COMPRESS_ZSTD);
	else
		FUZZ_CHECK(h->compression_type == QCOW_COMPRESS_ZLIB);
	if (ext)
		FUZZ_CHECK(h->cluster_bits >= 14);
	FUZZ_CHECK(h->crypt_method <= 2);

	/* L1 table: covers the virtual size, within the cap and the file. */
	FUZZ_CHECK(h->size <= (1ull << 63) - csize);
	FUZZ_CHECK(uq_l1_entries_for(h->size, h->cluster_bits, ext,
				     &entries) == 0);
	FUZZ_CHECK(entries <= h->l1_size);
	FUZZ_CHECK((uint64_t)h->l1_size * 8 <= QCOW_MAX_L1_BYTES);
	if (h->l1_size)
		check_table(h->l1_table_offset, (uint64_t)h->l1_size * 8,
			    csize, file_size);

	/* Refcount table. */
	FUZZ_CHECK(h->refcount_table_clusters > 0);
	FUZZ_CHECK((uint64_t)h->refcount_table_clusters * csize <=
		   QCOW_MAX_REFTABLE_BYTES);
	check_table(h->refcount_table_offset,
		    (uint64_t)h->refcount_table_clusters * csize, csize,
		    file_size);

	/* Snapshot table: at least the fixed 40 bytes per entry. */
	FUZZ_CHECK(h->nb_snapshots <= QCOW_MAX_SNAPSHOTS);
	if (h->nb_snapshots)
		check_table(h->snapshots_offset, (uint64_t)h->nb_snapshots * 40,
			    csize, file_size);

	/* Backing file name: inside the header cluster and the buffer. */
	if (h->backing_file_offset) {
		FUZZ_CHECK(h->backing_file_size >= 1 &&
			   h->backing_file_size <= QCOW_MAX_BACKING_NAME);
		FUZZ_CHECK(h->backing_file_offset >= h->header_length);
		FUZZ_CHECK(h->backing_file_offset <= csize &&
			   h->backing_file_size <= csize - h->backing_file_offset);
		FUZZ_CHECK(h->backing_file_offset + h->backing_file_size <= len);
	}

	/* Geometry derived from it is self-consistent. */
	uq_geom_init(h, &g);
	FUZZ_CHECK(g.cluster_size == csize);
	FUZZ_CHECK(g.l2_entries * g.l2_entry_bytes == csize);
	FUZZ_CHECK(g.l2_entry_bytes == (ext ? 16u : 8u));
	FUZZ_CHECK(g.rb_bits == h->cluster_bits + 3 - h->refcount_order);
	FUZZ_CHECK(g.subcluster_bits >= QCOW_MIN_CLUSTER_BITS);
	FUZZ_CHECK(g.csize_shift + (h->cluster_bits - 8) == 62);
	FUZZ_CHECK(g.v3 == (h->version == 3));
}

/* Encode an accepted header over a copy of the input and decode it again:
 * the result must be the same header. */
static void round_trip(const uint8_t *data, size_t size, uint64_t file_size,
		       const struct uq_header *h)
{
	struct uq_header h2;
	uint8_t *buf = malloc(size);

	FUZZ_CHECK(buf);
	memcpy(buf, data, size);
	FUZZ_CHECK(uq_header_encode(h, buf, size) == 0);
	FUZZ_CHECK(uq_header_decode(buf, size, file_size, &h2) == 0);
	FUZZ_CHECK(uq_header_equal(h, &h2));
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t huge[] = { UINT64_MAX, 1ull << 62, 1ull << 56 };
	struct uq_header h, hbig;
	bool fits;

	/* file_size = the input: every table must lie inside it. */
	fits = uq_header_decode(data, size, size, &h) == 0;
	if (fits) {
		check_accepted(&h, size, size);
		round_trip(data, size, size, &h);
	}

	/* Huge files: only the tables' own limits apply. A header that fits
	 * a small file must fit a bigger one, unchanged. */
	for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
		if (uq_header_decode(data, size, huge[i], &hbig) == 0) {
			check_accepted(&hbig, size, huge[i]);
			round_trip(data, size, huge[i], &hbig);
			if (fits)
				FUZZ_CHECK(uq_header_equal(&h, &hbig));
		} else {
			FUZZ_CHECK(!fits);
		}
	}
	return 0;
}
