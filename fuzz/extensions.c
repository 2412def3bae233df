// SPDX-License-Identifier: MIT
/* Fuzz target: header extensions and the feature name table. The input is
 * a header cluster; it is decoded as a header, then its extension area. */
#include <string.h>

#include "format.h"
#include "fuzz.h"

static struct uq_exts exts;   /* ~10 KiB: keep it off the stack */

static void check_string(const char *s, size_t cap)
{
	FUZZ_CHECK(memchr(s, '\0', cap) != NULL);
}

static void check_exts(const struct uq_header *h, const struct uq_exts *e,
		       size_t len)
{
	uint64_t csize = 1ull << h->cluster_bits;
	uint64_t limit = len < csize ? len : csize;
	uint64_t start = h->version == 2 ? QCOW_V2_HEADER_LEN : h->header_length;

	if (h->backing_file_offset && h->backing_file_offset < limit)
		limit = h->backing_file_offset;
	FUZZ_CHECK(e->end >= start && e->end <= limit);
	check_string(e->backing_fmt, sizeof(e->backing_fmt));
	check_string(e->data_file, sizeof(e->data_file));
	FUZZ_CHECK(e->has_backing_fmt || !e->backing_fmt[0]);
	FUZZ_CHECK(e->has_data_file || !e->data_file[0]);
	for (int t = 0; t < 3; t++)
		for (int b = 0; b < 64; b++) {
			const char *n = e->feature_names[t][b];

			check_string(n, sizeof(e->feature_names[t][b]));
			for (; *n; n++)   /* printable: names go into messages */
				FUZZ_CHECK(*n >= 0x20 && *n < 0x7f);
		}
	if (e->has_bitmaps) {
		FUZZ_CHECK(e->nb_bitmaps >= 1 && e->nb_bitmaps <= 65535);
		FUZZ_CHECK(e->bitmap_directory_offset != 0);
		FUZZ_CHECK((e->bitmap_directory_offset & (csize - 1)) == 0);
	}
	if (e->has_crypto)
		FUZZ_CHECK((e->crypto_offset & (csize - 1)) == 0);
}

/* uq_feature_name always terminates inside outlen and never writes when
 * outlen is 0, whatever the type and bit. */
static void name_one(const struct uq_exts *e, int type, unsigned bit,
		     size_t outlen)
{
	char out[80];

	memset(out, 0x5a, sizeof(out));
	uq_feature_name(e, type, bit, out, outlen);
	if (outlen == 0) {
		FUZZ_CHECK(out[0] == 0x5a);
		return;
	}
	FUZZ_CHECK(memchr(out, '\0', outlen) != NULL);
	FUZZ_CHECK((unsigned char)out[outlen] == 0x5a);
}

static void drive_feature_names(const struct uq_exts *e)
{
	static const size_t lens[] = { 0, 1, 2, 7, 8, 48 };

	/* every named bit, full length */
	for (int type = 0; type < 3; type++)
		for (unsigned bit = 0; bit < 64; bit++)
			if ((e && e->feature_names[type][bit][0]) || bit < 2)
				name_one(e, type, bit, 64);
	/* short buffers, out-of-range types and bits */
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		for (int type = -1; type <= 3; type++) {
			name_one(e, type, 0, lens[i]);
			name_one(e, type, 63, lens[i]);
			name_one(e, type, 64, lens[i]);
			name_one(e, type, 1000, lens[i]);
		}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct uq_header h;
	size_t clen;

	/* The input is the header cluster only: tables lie past its end, so
	 * decode against a huge file to reach the extension area. */
	if (uq_header_decode(data, size, UINT64_MAX, &h) < 0)
		return 0;
	clen = size < (1ull << h.cluster_bits) ? size
					       : (size_t)1 << h.cluster_bits;
	if (uq_exts_decode(data, clen, &h, &exts) == 0)
		check_exts(&h, &exts, clen);
	/* Partial results after a failure are still safe to name from. */
	drive_feature_names(&exts);
	drive_feature_names(NULL);

	/* More bytes than a cluster must not move the extension area. */
	if (size > clen && uq_exts_decode(data, size, &h, &exts) == 0)
		check_exts(&h, &exts, clen);
	return 0;
}
