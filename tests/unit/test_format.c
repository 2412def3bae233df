// SPDX-License-Identifier: MIT
/* Unit tests for the pure qcow2 codecs in engine/format.c: round trips,
 * one rejection per validation rule, refcounts against a bit-level model. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "test.h"
#include "uqcow.h"

/* A call must fail and its message must name the field. */
#define CHECK_ERR(call, field)                                             \
	do {                                                               \
		int ret_ = (call);                                         \
		CHECK(ret_ < 0);                                           \
		CHECK(strstr(uq_errmsg(), (field)) != NULL);               \
	} while (0)

/* A call must succeed. */
#define CHECK_OK(call) CHECK((call) >= 0)

/* Deterministic xorshift so failures reproduce. */
static uint8_t buf[2u << 20];   /* one cluster of the largest size */

#define BIG_FILE (1ull << 40)

/* A valid header: reftable in cluster 1, L1 from cluster 2 on. */
static void make_header(struct uq_header *h, uint32_t version, uint32_t cb,
			uint32_t order)
{
	uint64_t csize = 1ull << cb, entries;

	memset(h, 0, sizeof(*h));
	h->magic = QCOW_MAGIC;
	h->version = version;
	h->cluster_bits = cb;
	h->size = 1ull << 30;
	if (uq_l1_entries_for(h->size, cb, false, &entries) < 0)
		abort();
	h->l1_size = (uint32_t)entries;
	h->l1_table_offset = 2 * csize;
	h->refcount_table_offset = csize;
	h->refcount_table_clusters = 1;
	h->refcount_order = version == 2 ? 4 : order;
	h->header_length = version == 2 ? QCOW_V2_HEADER_LEN : QCOW_V3_HEADER_LEN_CT;
}

static void test_header_roundtrip(void)
{
	struct uq_header h, d;
	uint32_t cb, order;

	for (cb = 9; cb <= 21; cb++) {
		size_t csize = (size_t)1 << cb;

		make_header(&h, 2, cb, 4);
		memset(buf, 0xaa, csize);
		CHECK_OK(uq_header_encode(&h, buf, csize));
		CHECK(buf[72] == 0xaa);         /* v2 writes 72 bytes only */
		CHECK_OK(uq_header_decode(buf, csize, BIG_FILE, &d));
		CHECK(uq_header_equal(&h, &d));

		for (order = 0; order <= 6; order++) {
			make_header(&h, 3, cb, order);
			h.compatible_features = QCOW_COMPAT_LAZY_REFCOUNTS;
			h.autoclear_features = QCOW_AUTOCLEAR_BITMAPS;
			if (order & 1) {
				h.incompatible_features =
					QCOW_INCOMPAT_COMPRESSION;
				h.compression_type = QCOW_COMPRESS_ZSTD;
			}
			if (cb >= 14 && order == 2) {
				uint64_t n;

				h.incompatible_features |= QCOW_INCOMPAT_EXTL2;
				CHECK_OK(uq_l1_entries_for(h.size, cb, true, &n));
				h.l1_size = (uint32_t)n;
			}
			if (order == 6) {
				h.nb_snapshots = 3;
				h.snapshots_offset = 40 * csize;
				h.backing_file_offset = 512 - 16;
				h.backing_file_size = 16;
			}
			memset(buf, 0xaa, csize);
			CHECK_OK(uq_header_encode(&h, buf, csize));
			CHECK(buf[105] == 0 && buf[111] == 0);   /* padding */
			CHECK_OK(uq_header_decode(buf, csize, BIG_FILE, &d));
			CHECK(uq_header_equal(&h, &d));
		}
		/* 104-byte v3 header: compression_type absent, reads 0. */
		make_header(&h, 3, cb, 4);
		h.header_length = QCOW_V3_HEADER_LEN;
		memset(buf, 0xaa, csize);
		CHECK_OK(uq_header_encode(&h, buf, csize));
		CHECK(buf[104] == 0xaa);
		CHECK_OK(uq_header_decode(buf, csize, BIG_FILE, &d));
		CHECK(uq_header_equal(&h, &d));
	}

	/* Longer header_length is tolerated and padded with zeros. */
	make_header(&h, 3, 16, 4);
	h.header_length = 4096;
	memset(buf, 0xaa, 65536);
	CHECK_OK(uq_header_encode(&h, buf, 65536));
	CHECK(buf[4095] == 0 && buf[4096] == 0xaa);
	CHECK_OK(uq_header_decode(buf, 65536, BIG_FILE, &d));
	CHECK(uq_header_equal(&h, &d));

	/* Unknown incompatible bits are the caller's business. */
	make_header(&h, 3, 16, 4);
	h.incompatible_features = 1ull << 40;
	CHECK_OK(uq_header_encode(&h, buf, 65536));
	CHECK_OK(uq_header_decode(buf, 65536, BIG_FILE, &d));
	CHECK(d.incompatible_features == 1ull << 40);

	/* Encoder refusals. */
	make_header(&h, 2, 16, 4);
	h.refcount_order = 3;
	CHECK_ERR(uq_header_encode(&h, buf, 65536), "refcount_order");
	make_header(&h, 3, 16, 4);
	h.header_length = 100;
	CHECK_ERR(uq_header_encode(&h, buf, 65536), "header_length");
	make_header(&h, 3, 16, 4);
	h.header_length = QCOW_V3_HEADER_LEN;
	h.compression_type = 1;
	CHECK_ERR(uq_header_encode(&h, buf, 65536), "compression_type");
	make_header(&h, 3, 16, 4);
	CHECK_ERR(uq_header_encode(&h, buf, 100), "buffer");
	make_header(&h, 4, 16, 4);
	CHECK_ERR(uq_header_encode(&h, buf, 65536), "version");
}

/* One rejection: patch a field of a valid v3 (64 KiB cluster) header. */
struct hcase {
	unsigned off, width;
	uint64_t value;
	const char *field;
};

static void put_field(unsigned off, unsigned width, uint64_t v)
{
	if (width == 1)
		buf[off] = (uint8_t)v;
	else if (width == 4)
		uq_put_be32(buf + off, (uint32_t)v);
	else
		uq_put_be64(buf + off, v);
}

static void base_v3(void)
{
	struct uq_header h;

	make_header(&h, 3, 16, 4);
	memset(buf, 0, 65536);
	if (uq_header_encode(&h, buf, 65536) < 0)
		abort();
}

static void test_header_reject(void)
{
	static const struct hcase cases[] = {
		{ 0, 4, 0x514649fa, "magic" },
		{ 4, 4, 1, "version" },
		{ 4, 4, 4, "version" },
		{ 20, 4, 8, "cluster_bits" },
		{ 20, 4, 22, "cluster_bits" },
		{ 20, 4, 0xffffffff, "cluster_bits" },
		{ 100, 4, 96, "header_length" },
		{ 100, 4, 108, "header_length" },
		{ 100, 4, 65544, "header_length" },
		{ 96, 4, 7, "refcount_order" },
		{ 104, 1, 1, "compression_type" },      /* without the bit */
		{ 32, 4, 3, "crypt_method" },
		{ 36, 4, 0, "l1_size" },                /* too few for size */
		{ 36, 4, (32u << 20) / 8 + 1, "l1_size" },
		{ 40, 8, 0x21234, "l1_table_offset" },
		{ 40, 8, 0, "l1_table_offset" },
		{ 40, 8, BIG_FILE, "l1 table" },
		{ 40, 8, UINT64_MAX - 65535, "l1 table" },
		{ 48, 8, 0x10200, "refcount_table_offset" },
		{ 48, 8, 0, "refcount_table_offset" },
		{ 48, 8, BIG_FILE, "refcount table" },
		{ 56, 4, 0, "refcount_table_clusters" },
		{ 56, 4, 129, "refcount_table_clusters" },   /* 8 MiB + 64 KiB */
		{ 56, 4, 0xffffffff, "refcount_table_clusters" },
		{ 60, 4, 65537, "nb_snapshots" },
		{ 24, 8, UINT64_MAX, "size" },
		{ 24, 8, (1ull << 63) - 65535, "size" },
		{ 24, 8, 1ull << 62, "size" },          /* needs a larger L1 */
		{ 88, 8, QCOW_AUTOCLEAR_DATA_FILE_RAW, "data-file-raw" },
	};
	struct uq_header h;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		base_v3();
		put_field(cases[i].off, cases[i].width, cases[i].value);
		if (cases[i].off == 104)
			CHECK(uq_be32(buf + 100) == 112);
		CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
			  cases[i].field);
	}

	/* Compression bit: type must be present, nonzero and known. */
	base_v3();
	put_field(72, 8, QCOW_INCOMPAT_COMPRESSION);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "compression_type");
	buf[104] = 2;
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "compression_type 2");
	buf[104] = 1;
	CHECK_OK(uq_header_decode(buf, 65536, BIG_FILE, &h));
	put_field(100, 4, 104);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "compression_type");

	/* Extended L2 needs 16 KiB clusters; the L1 stays big enough. */
	base_v3();
	put_field(72, 8, QCOW_INCOMPAT_EXTL2);
	put_field(36, 4, 1u << 20);
	CHECK_OK(uq_header_decode(buf, 65536, BIG_FILE, &h));
	put_field(20, 4, 13);
	put_field(40, 8, 2 << 13);
	put_field(48, 8, 1 << 13);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h), "cluster_bits");

	/* Snapshot table placement. */
	base_v3();
	put_field(60, 4, 2);
	put_field(64, 8, 0x30000);
	CHECK_OK(uq_header_decode(buf, 65536, BIG_FILE, &h));
	put_field(64, 8, 0x30200);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "snapshots_offset");
	put_field(64, 8, 0);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "snapshots_offset");
	put_field(64, 8, BIG_FILE);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "snapshot table");
	put_field(60, 4, 0);    /* no snapshots: the offset is ignored */
	CHECK_OK(uq_header_decode(buf, 65536, BIG_FILE, &h));

	/* Backing file name. */
	base_v3();
	put_field(8, 8, 0x200);
	put_field(16, 4, 0);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "backing_file_size");
	put_field(16, 4, 1024);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "backing_file_size 1024");
	put_field(16, 4, 1023);
	CHECK_OK(uq_header_decode(buf, 65536, BIG_FILE, &h));
	put_field(8, 8, 65536 - 1023);
	CHECK_OK(uq_header_decode(buf, 65536, BIG_FILE, &h));
	put_field(8, 8, 65536 - 1022);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "backing_file_offset");
	put_field(8, 8, UINT64_MAX - 10);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "backing_file_offset");
	put_field(8, 8, 64);
	CHECK_ERR(uq_header_decode(buf, 65536, BIG_FILE, &h),
		  "backing_file_offset");
	put_field(8, 8, 0x200);
	CHECK_ERR(uq_header_decode(buf, 1000, BIG_FILE, &h), "backing file");

	/* Short inputs: fields past len do not exist. */
	base_v3();
	CHECK_ERR(uq_header_decode(buf, 0, 0, &h), "header");
	CHECK_ERR(uq_header_decode(buf, 3, 3, &h), "header");
	CHECK_ERR(uq_header_decode(buf, 71, 71, &h), "header");
	CHECK_ERR(uq_header_decode(buf, 103, BIG_FILE, &h), "v3 header");
	CHECK_ERR(uq_header_decode(buf, 111, BIG_FILE, &h), "header_length");
	/* A tiny file cannot hold its tables. */
	CHECK_ERR(uq_header_decode(buf, 112, 112, &h), "extends past end");

	/* v2 reads 72 bytes and implies the rest. */
	{
		struct uq_header v;

		make_header(&v, 2, 16, 4);
		memset(buf, 0xff, 65536);
		CHECK_OK(uq_header_encode(&v, buf, 65536));
		CHECK_OK(uq_header_decode(buf, 72, BIG_FILE, &h));
		CHECK(h.refcount_order == 4 && h.header_length == 72 &&
		      h.incompatible_features == 0 &&
		      h.compression_type == 0);
	}

	/* Exact fit at the end of the file is fine. */
	base_v3();
	CHECK_OK(uq_header_decode(buf, 65536, 2 * 65536 + 2 * 8, &h));
	CHECK_ERR(uq_header_decode(buf, 65536, 2 * 65536 + 2 * 8 - 1, &h),
		  "l1 table");
}

static void test_l1_entries(void)
{
	uint64_t n;

	CHECK_OK(uq_l1_entries_for(0, 16, false, &n));
	CHECK(n == 0);
	CHECK_OK(uq_l1_entries_for(1, 16, false, &n));
	CHECK(n == 1);
	CHECK_OK(uq_l1_entries_for(512ull << 20, 16, false, &n));
	CHECK(n == 1);
	CHECK_OK(uq_l1_entries_for((512ull << 20) + 1, 16, false, &n));
	CHECK(n == 2);
	CHECK_OK(uq_l1_entries_for(256ull << 20, 16, true, &n));
	CHECK(n == 1);
	CHECK_OK(uq_l1_entries_for(UINT64_MAX, 21, false, &n));
	CHECK(n == 1ull << 25);
	CHECK_ERR(uq_l1_entries_for(UINT64_MAX, 9, false, &n), "size");
	CHECK_ERR(uq_l1_entries_for(1, 8, false, &n), "cluster_bits");
}

/* ---- extensions ---- */

static size_t add_ext(size_t off, uint32_t type, const void *data,
		      uint32_t len)
{
	uq_put_be32(buf + off, type);
	uq_put_be32(buf + off + 4, len);
	memcpy(buf + off + 8, data, len);
	memset(buf + off + 8 + len, 0, (8 - len % 8) % 8);
	return off + 8 + ((len + 7) & ~7u);
}

static void feature_entry(uint8_t *p, uint8_t type, uint8_t bit,
			  const char *name)
{
	memset(p, 0, 48);
	p[0] = type;
	p[1] = bit;
	memcpy(p + 2, name, strlen(name) > 46 ? 46 : strlen(name));
}

static void exts_header(struct uq_header *h, uint32_t version)
{
	make_header(h, version, 16, 4);
	memset(buf, 0, 65536);
	if (uq_header_encode(h, buf, 65536) < 0)
		abort();
}

static void test_exts(void)
{
	static struct uq_exts e;
	struct uq_header h;
	uint8_t feat[48 * 4], bm[24], cr[16], junk[13];
	char name[64];
	size_t off, end;
	static const char full[] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ";

	_Static_assert(sizeof(full) == 47, "46-char name");
	exts_header(&h, 3);
	off = add_ext(112, QCOW_EXT_BACKING_FMT, "qcow2", 5);
	feature_entry(feat, 0, 0, "dirty bit");
	feature_entry(feat + 48, 1, 0, "lazy refcounts");
	feature_entry(feat + 96, 2, 63, full);
	feature_entry(feat + 144, 0, 40, "ctl\x01x");
	off = add_ext(off, QCOW_EXT_FEATURES, feat, sizeof(feat));
	uq_put_be32(bm, 3);
	uq_put_be32(bm + 4, 0);
	uq_put_be64(bm + 8, 4096);
	uq_put_be64(bm + 16, 0x50000);
	off = add_ext(off, QCOW_EXT_BITMAPS, bm, 24);
	uq_put_be64(cr, 0x60000);
	uq_put_be64(cr + 8, 2 << 20);
	off = add_ext(off, QCOW_EXT_CRYPTO, cr, 16);
	off = add_ext(off, QCOW_EXT_DATA_FILE, "disk.raw", 8);
	memset(junk, 0x5a, sizeof(junk));
	off = add_ext(off, 0x12345678, junk, sizeof(junk));
	off = add_ext(off, 0x12345678, junk, 0);
	end = add_ext(off, QCOW_EXT_END, "", 0);

	CHECK_OK(uq_exts_decode(buf, 65536, &h, &e));
	CHECK(e.has_backing_fmt && !strcmp(e.backing_fmt, "qcow2"));
	CHECK(e.has_data_file && !strcmp(e.data_file, "disk.raw"));
	CHECK(e.has_bitmaps && e.nb_bitmaps == 3 &&
	      e.bitmap_directory_size == 4096 &&
	      e.bitmap_directory_offset == 0x50000);
	CHECK(e.has_crypto && e.crypto_offset == 0x60000 &&
	      e.crypto_length == 2 << 20);
	CHECK(e.unknown_count == 2);
	CHECK(e.end == end);
	CHECK(!strcmp(e.feature_names[0][0], "dirty bit"));
	CHECK(!strcmp(e.feature_names[1][0], "lazy refcounts"));
	CHECK(!strcmp(e.feature_names[2][63], full));
	CHECK(!strcmp(e.feature_names[0][40], "ctl?x"));
	uq_feature_name(&e, 1, 0, name, sizeof(name));
	CHECK(!strcmp(name, "lazy refcounts"));
	uq_feature_name(&e, 0, 5, name, sizeof(name));
	CHECK(!strcmp(name, "bit 5"));
	uq_feature_name(&e, 7, 1, name, sizeof(name));
	CHECK(!strcmp(name, "bit 1"));
	uq_feature_name(&e, 2, 63, name, sizeof(name));
	CHECK(!strcmp(name, full));

	/* The backing name right after the end marker is fine. */
	h.backing_file_offset = end;
	h.backing_file_size = 10;
	CHECK_OK(uq_exts_decode(buf, 65536, &h, &e));
	/* ... but an extension running into it is not. */
	h.backing_file_offset = end - 20;
	CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "backing file name");
	h.backing_file_offset = 0;

	/* Empty extension area, end marker first. */
	exts_header(&h, 3);
	CHECK_OK(uq_exts_decode(buf, 65536, &h, &e));
	CHECK(e.end == 120 && e.unknown_count == 0 && !e.has_backing_fmt);

	/* Tiny file: the area ends with the file, no marker needed. */
	CHECK_OK(uq_exts_decode(buf, 112, &h, &e));
	CHECK(e.end == 112);
	CHECK_ERR(uq_exts_decode(buf, 116, &h, &e), "no room");

	/* Old v2 images put the backing name right after the header. */
	exts_header(&h, 2);
	memcpy(buf + 72, "base.img", 8);
	h.backing_file_offset = 72;
	h.backing_file_size = 8;
	CHECK_OK(uq_exts_decode(buf, 65536, &h, &e));
	CHECK(e.end == 72);
	/* v2 with an extension after 72 bytes. */
	exts_header(&h, 2);
	off = add_ext(72, QCOW_EXT_BACKING_FMT, "raw", 3);
	add_ext(off, QCOW_EXT_END, "", 0);
	CHECK_OK(uq_exts_decode(buf, 65536, &h, &e));
	CHECK(e.has_backing_fmt && !strcmp(e.backing_fmt, "raw"));
	CHECK(e.end == off + 8);

	/* Overrun of the cluster. */
	exts_header(&h, 3);
	uq_put_be32(buf + 112, QCOW_EXT_FEATURES);
	uq_put_be32(buf + 116, 10000);
	CHECK_ERR(uq_exts_decode(buf, 4096, &h, &e), "length 10000");
	CHECK_ERR(uq_exts_decode(buf, 4096, &h, &e), "header cluster");
	uq_put_be32(buf + 116, 0xffffffff);
	CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "0x6803f857");
	/* Exactly filling the available bytes is fine. */
	exts_header(&h, 3);
	uq_put_be32(buf + 112, 0x77777777);
	uq_put_be32(buf + 116, 4096 - 120);
	CHECK_OK(uq_exts_decode(buf, 4096, &h, &e));
	CHECK(e.unknown_count == 1 && e.end == 4096);
	uq_put_be32(buf + 116, 4096 - 119);
	CHECK_ERR(uq_exts_decode(buf, 4096, &h, &e), "runs past");

	/* Duplicates of every known type. */
	{
		static const uint32_t types[] = {
			QCOW_EXT_BACKING_FMT, QCOW_EXT_FEATURES,
			QCOW_EXT_BITMAPS, QCOW_EXT_CRYPTO, QCOW_EXT_DATA_FILE,
		};
		const void *data[] = { "qcow2", feat, bm, cr, "x" };
		const uint32_t lens[] = { 5, 48, 24, 16, 1 };
		size_t i;

		for (i = 0; i < 5; i++) {
			exts_header(&h, 3);
			off = add_ext(112, types[i], data[i], lens[i]);
			off = add_ext(off, types[i], data[i], lens[i]);
			add_ext(off, QCOW_EXT_END, "", 0);
			CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "twice");
		}
		/* Unknown duplicates are tolerated. */
		exts_header(&h, 3);
		off = add_ext(112, 0xabcdef01, "a", 1);
		off = add_ext(off, 0xabcdef01, "b", 1);
		add_ext(off, QCOW_EXT_END, "", 0);
		CHECK_OK(uq_exts_decode(buf, 65536, &h, &e));
		CHECK(e.unknown_count == 2);
	}

	/* Per-type validation. */
	{
		char longname[1100];
		uint8_t f[48];

		memset(longname, 'a', sizeof(longname));
		exts_header(&h, 3);
		add_ext(112, QCOW_EXT_BACKING_FMT, longname, 31);
		CHECK_OK(uq_exts_decode(buf, 65536, &h, &e));
		CHECK(strlen(e.backing_fmt) == 31);
		add_ext(112, QCOW_EXT_BACKING_FMT, longname, 32);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e),
			  "backing format");
		add_ext(112, QCOW_EXT_BACKING_FMT, "q\0w", 3);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "NUL");

		exts_header(&h, 3);
		add_ext(112, QCOW_EXT_DATA_FILE, longname, 1023);
		CHECK_OK(uq_exts_decode(buf, 65536, &h, &e));
		CHECK(strlen(e.data_file) == 1023);
		exts_header(&h, 3);
		add_ext(112, QCOW_EXT_DATA_FILE, longname, 1024);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "data file");

		exts_header(&h, 3);
		add_ext(112, QCOW_EXT_FEATURES, feat, 50);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e),
			  "feature name table length 50");
		feature_entry(f, 3, 0, "x");
		add_ext(112, QCOW_EXT_FEATURES, f, 48);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "type 3");
		feature_entry(f, 0, 64, "x");
		add_ext(112, QCOW_EXT_FEATURES, f, 48);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "bit 64");
		add_ext(112, QCOW_EXT_FEATURES, f, 0);   /* empty table */
		CHECK_OK(uq_exts_decode(buf, 65536, &h, &e));

		exts_header(&h, 3);
		add_ext(112, QCOW_EXT_BITMAPS, bm, 16);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e),
			  "bitmaps extension length");
		uq_put_be32(bm, 0);
		add_ext(112, QCOW_EXT_BITMAPS, bm, 24);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "nb_bitmaps");
		uq_put_be32(bm, 1);
		uq_put_be32(bm + 4, 1);
		add_ext(112, QCOW_EXT_BITMAPS, bm, 24);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "reserved");
		uq_put_be32(bm + 4, 0);
		uq_put_be64(bm + 16, 0x50200);
		add_ext(112, QCOW_EXT_BITMAPS, bm, 24);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e),
			  "bitmap_directory_offset");
		uq_put_be64(bm + 16, 0x50000);
		uq_put_be64(bm + 8, UINT64_MAX);
		add_ext(112, QCOW_EXT_BITMAPS, bm, 24);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e),
			  "bitmap_directory_size");

		exts_header(&h, 3);
		add_ext(112, QCOW_EXT_CRYPTO, cr, 8);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "crypto");
		uq_put_be64(cr, 0x60001);
		add_ext(112, QCOW_EXT_CRYPTO, cr, 16);
		CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "crypto");
	}

	/* header_length past the area (backing name inside the header). */
	exts_header(&h, 3);
	h.backing_file_offset = 100;
	CHECK_ERR(uq_exts_decode(buf, 65536, &h, &e), "header_length");
}

/* Hostile bytes: decoders must fail cleanly, never crash (ASan/UBSan).
 * Each input is copied to a heap buffer of exactly len bytes, so any read
 * past len is caught. */
static void test_random_headers(void)
{
	static struct uq_exts e;
	struct uq_header h;
	int i, k, ok = 0;

	for (i = 0; i < 20000; i++) {
		size_t len = 4096;
		uint64_t fsize = test_rand() % 2 ? BIG_FILE : test_rand();
		uint8_t *copy;

		base_v3();
		add_ext(112, QCOW_EXT_FEATURES, buf + 200, 48);
		for (k = 0; k < 1 + (int)(test_rand() % 4); k++)
			buf[test_rand() % 200] = (uint8_t)test_rand();
		if (test_rand() % 8 == 0)
			len = test_rand() % 4096;
		copy = malloc(len ? len : 1);
		if (!copy)
			abort();
		memcpy(copy, buf, len);
		if (uq_header_decode(copy, len, fsize, &h) == 0) {
			ok++;
			(void)uq_exts_decode(copy, len, &h, &e);
		}
		free(copy);
	}
	CHECK(ok > 0);
}

/* ---- geometry, L1, L2 ---- */

static void geom(struct uq_geom *g, uint32_t version, uint32_t cb,
		 uint64_t incompat)
{
	struct uq_header h;

	make_header(&h, version, cb, 4);
	h.incompatible_features = incompat;
	uq_geom_init(&h, g);
}

static void test_geom(void)
{
	struct uq_geom g;
	struct uq_header h;

	geom(&g, 3, 16, 0);
	CHECK(g.cluster_size == 65536 && g.l2_bits == 13 &&
	      g.l2_entries == 8192 && g.l2_entry_bytes == 8 &&
	      g.subcluster_bits == 16 && g.rb_bits == 15 &&
	      g.csize_shift == 54 && g.csize_mask == 255 &&
	      g.coffset_mask == (1ull << 54) - 1 && g.v3 &&
	      !g.extended_l2 && !g.external_data);
	geom(&g, 3, 16, QCOW_INCOMPAT_EXTL2 | QCOW_INCOMPAT_DATA_FILE);
	CHECK(g.extended_l2 && g.l2_entry_bytes == 16 && g.l2_bits == 12 &&
	      g.subcluster_bits == 11 && g.external_data);
	geom(&g, 2, 9, 0);
	CHECK(!g.v3 && g.csize_shift == 61 && g.csize_mask == 1 &&
	      g.rb_bits == 8);
	make_header(&h, 3, 21, 0);
	uq_geom_init(&h, &g);
	CHECK(g.rb_bits == 24 && g.csize_shift == 49 &&
	      g.csize_mask == 8191);
	make_header(&h, 3, 12, 6);
	uq_geom_init(&h, &g);
	CHECK(g.rb_bits == 9 && g.refcount_order == 6);
}

static void test_l1(void)
{
	struct uq_geom g;
	uint64_t off;
	bool copied;

	geom(&g, 3, 16, 0);
	CHECK_OK(uq_l1_decode(&g, 0, &off, &copied));
	CHECK(off == 0 && !copied);
	CHECK_OK(uq_l1_decode(&g, QCOW_OFLAG_COPIED | 0x50000, &off, &copied));
	CHECK(off == 0x50000 && copied);
	CHECK_OK(uq_l1_decode(&g, QCOW_MAX_HOST_OFFSET - 65536, &off, &copied));
	CHECK(off == QCOW_MAX_HOST_OFFSET - 65536);
	CHECK_ERR(uq_l1_decode(&g, 0x50200, &off, &copied), "aligned");
	CHECK_ERR(uq_l1_decode(&g, 0x50001, &off, &copied), "reserved");
	CHECK_ERR(uq_l1_decode(&g, QCOW_MAX_HOST_OFFSET, &off, &copied),
		  "reserved");
	CHECK_ERR(uq_l1_decode(&g, QCOW_OFLAG_COMPRESSED | 0x50000, &off,
			       &copied), "reserved");
	geom(&g, 3, 9, 0);
	CHECK_OK(uq_l1_decode(&g, 0x50200, &off, &copied));
}

static void test_l2_standard(void)
{
	struct uq_geom g;
	struct uq_l2map m;
	uint64_t top = QCOW_MAX_HOST_OFFSET - 65536;

	geom(&g, 3, 16, 0);
	CHECK_OK(uq_l2_decode(&g, 0, 0, &m));
	CHECK(m.type == UQ_C_UNALLOC && m.host_off == 0);
	CHECK_OK(uq_l2_decode(&g, uq_l2_encode_normal(0x50000, true), 0, &m));
	CHECK(m.type == UQ_C_NORMAL && m.host_off == 0x50000 && m.copied);
	CHECK_OK(uq_l2_decode(&g, uq_l2_encode_normal(top, false), 0, &m));
	CHECK(m.type == UQ_C_NORMAL && m.host_off == top && !m.copied);
	/* Zero flag, plain and preallocated. */
	CHECK_OK(uq_l2_decode(&g, QCOW_OFLAG_ZERO, 0, &m));
	CHECK(m.type == UQ_C_ZERO && m.host_off == 0);
	CHECK_OK(uq_l2_decode(&g, QCOW_OFLAG_COPIED | 0x70000 | 1, 0, &m));
	CHECK(m.type == UQ_C_ZERO && m.host_off == 0x70000 && m.copied);
	/* COPIED without an offset is not a mapping here. */
	CHECK_OK(uq_l2_decode(&g, QCOW_OFLAG_COPIED, 0, &m));
	CHECK(m.type == UQ_C_UNALLOC);
	/* The bitmap word is ignored without extended L2. */
	CHECK_OK(uq_l2_decode(&g, 0x50000, UINT64_MAX, &m));
	CHECK(m.type == UQ_C_NORMAL && m.alloc_mask == 0);
	/* Reserved bits 1-8 and 56-61, misalignment. */
	CHECK_ERR(uq_l2_decode(&g, 0x50002, 0, &m), "reserved");
	CHECK_ERR(uq_l2_decode(&g, 0x50100, 0, &m), "reserved");
	CHECK_ERR(uq_l2_decode(&g, QCOW_MAX_HOST_OFFSET, 0, &m), "reserved");
	CHECK_ERR(uq_l2_decode(&g, 1ull << 61, 0, &m), "reserved");
	CHECK_ERR(uq_l2_decode(&g, 0x50200, 0, &m), "aligned");
	CHECK_ERR(uq_l2_decode(&g, 0x58000, 0, &m), "aligned");

	/* v2: no zero flag. */
	geom(&g, 2, 16, 0);
	CHECK_ERR(uq_l2_decode(&g, 1, 0, &m), "zero flag");
	CHECK_ERR(uq_l2_decode(&g, 0x50001, 0, &m), "zero flag");
	CHECK_OK(uq_l2_decode(&g, 0x50000, 0, &m));

	/* External data file: offset 0 with COPIED maps host 0. */
	geom(&g, 3, 16, QCOW_INCOMPAT_DATA_FILE);
	CHECK_OK(uq_l2_decode(&g, QCOW_OFLAG_COPIED, 0, &m));
	CHECK(m.type == UQ_C_NORMAL && m.host_off == 0 && m.copied);
	CHECK_OK(uq_l2_decode(&g, 0, 0, &m));
	CHECK(m.type == UQ_C_UNALLOC);
	CHECK_ERR(uq_l2_decode(&g, QCOW_OFLAG_COMPRESSED | 0x1000, 0, &m),
		  "external data");
}

static void test_l2_compressed(void)
{
	struct uq_geom g;
	struct uq_l2map m;
	uint32_t cb;

	for (cb = 9; cb <= 21; cb++) {
		uint64_t csize = 1ull << cb, e, maxoff, i;

		geom(&g, 3, cb, 0);
		maxoff = g.coffset_mask < QCOW_MAX_HOST_OFFSET - 1 ?
			 g.coffset_mask : QCOW_MAX_HOST_OFFSET - 1;
		for (i = 0; i < 64; i++) {
			uint64_t off = test_rand() & maxoff;
			uint64_t len = 1 + test_rand() % csize;
			uint64_t sectors = ((off & 511) + len + 511) / 512;

			if (i == 0)
				off = maxoff;
			if (i == 1)
				off = 0x1ff;
			if (sectors > g.csize_mask + 1)
				continue;
			e = uq_l2_encode_compressed(&g, off, len);
			CHECK_OK(uq_l2_decode(&g, e, 0, &m));
			CHECK(m.type == UQ_C_COMPRESSED && m.comp_off == off &&
			      m.comp_len >= len && m.comp_len < len + 512 &&
			      (m.comp_len + (off & 511)) % 512 == 0 &&
			      m.host_off == 0 && !m.copied);
		}
		/* Largest size field: csize_mask + 1 sectors. */
		e = QCOW_OFLAG_COMPRESSED | (g.csize_mask << g.csize_shift) |
		    0x1234;
		CHECK_OK(uq_l2_decode(&g, e, 0, &m));
		CHECK(m.comp_off == 0x1234 &&
		      m.comp_len == (g.csize_mask + 1) * 512 - 0x34);
		/* One sector at an aligned offset. */
		CHECK_OK(uq_l2_decode(&g, QCOW_OFLAG_COMPRESSED | 0x4000, 0,
				      &m));
		CHECK(m.comp_off == 0x4000 && m.comp_len == 512);
		CHECK_ERR(uq_l2_decode(&g, e | QCOW_OFLAG_COPIED, 0, &m),
			  "COPIED");
		/* Offset bits above 55 exist only for cluster_bits < 14. */
		if (g.csize_shift > 56) {
			CHECK_ERR(uq_l2_decode(&g, QCOW_OFLAG_COMPRESSED |
					       QCOW_MAX_HOST_OFFSET, 0, &m),
				  "2^56");
			CHECK_ERR(uq_l2_decode(&g, QCOW_OFLAG_COMPRESSED |
					       (1ull << (g.csize_shift - 1)),
					       0, &m), "2^56");
		}
	}
}

static void test_l2_extended(void)
{
	struct uq_geom g;
	struct uq_l2map m;
	uint64_t e;

	geom(&g, 3, 16, QCOW_INCOMPAT_EXTL2);
	e = uq_l2_encode_normal(0x50000, true);
	CHECK_OK(uq_l2_decode(&g, e, 0xffff00000000ffffull, &m));
	CHECK(m.type == UQ_C_SUBCLUSTERS && m.host_off == 0x50000 &&
	      m.copied && m.alloc_mask == 0xffff && m.zero_mask == 0xffff0000);
	CHECK_OK(uq_l2_decode(&g, e, 0xffffffffull, &m));
	CHECK(m.alloc_mask == 0xffffffff && m.zero_mask == 0);
	/* Offset without allocated subclusters: preallocated. */
	CHECK_OK(uq_l2_decode(&g, e, 0, &m));
	CHECK(m.type == UQ_C_SUBCLUSTERS && m.host_off == 0x50000 &&
	      m.alloc_mask == 0);
	/* Fully unallocated and all-zero entries. */
	CHECK_OK(uq_l2_decode(&g, 0, 0, &m));
	CHECK(m.type == UQ_C_SUBCLUSTERS && m.host_off == 0);
	CHECK_OK(uq_l2_decode(&g, 0, 0xffffffff00000000ull, &m));
	CHECK(m.type == UQ_C_SUBCLUSTERS && m.zero_mask == 0xffffffff);
	CHECK_ERR(uq_l2_decode(&g, e, 0x0000000100000001ull, &m),
		  "both allocated and zero");
	CHECK_ERR(uq_l2_decode(&g, 0, 1, &m), "without a host offset");
	CHECK_ERR(uq_l2_decode(&g, QCOW_OFLAG_COPIED, 1, &m),
		  "without a host offset");
	CHECK_ERR(uq_l2_decode(&g, e | 1, 0, &m), "zero flag");
	CHECK_ERR(uq_l2_decode(&g, e | 2, 0, &m), "reserved");
	CHECK_ERR(uq_l2_decode(&g, 0x50200, 0, &m), "aligned");
	/* Compressed clusters ignore the bitmap. */
	e = uq_l2_encode_compressed(&g, 0x12345, 3000);
	CHECK_OK(uq_l2_decode(&g, e, 0x0000000100000001ull, &m));
	CHECK(m.type == UQ_C_COMPRESSED && m.comp_off == 0x12345 &&
	      m.alloc_mask == 0 && m.zero_mask == 0);

	geom(&g, 3, 16, QCOW_INCOMPAT_EXTL2 | QCOW_INCOMPAT_DATA_FILE);
	CHECK_OK(uq_l2_decode(&g, QCOW_OFLAG_COPIED, 1, &m));
	CHECK(m.type == UQ_C_SUBCLUSTERS && m.host_off == 0 &&
	      m.alloc_mask == 1);
	CHECK_ERR(uq_l2_decode(&g, 0, 1, &m), "without a host offset");
}

static void test_reftable(void)
{
	struct uq_geom g;
	uint64_t off;

	geom(&g, 3, 16, 0);
	CHECK_OK(uq_reftable_decode(&g, 0, &off));
	CHECK(off == 0);
	CHECK_OK(uq_reftable_decode(&g, 0x30000, &off));
	CHECK(off == 0x30000);
	/* Refcount blocks may lie above 2^56. */
	CHECK_OK(uq_reftable_decode(&g, 0xffffffffffff0000ull, &off));
	CHECK(off == 0xffffffffffff0000ull);
	CHECK_ERR(uq_reftable_decode(&g, 0x30001, &off), "reserved");
	CHECK_ERR(uq_reftable_decode(&g, 0x30100, &off), "reserved");
	CHECK_ERR(uq_reftable_decode(&g, 0x30200, &off), "aligned");
}

/* ---- refcounts against a bit-level model ---- */

/* Byte and bit holding bit b (0 = least significant) of entry i. */
static void locate(uint32_t order, uint64_t i, unsigned b, uint64_t *byte,
		   unsigned *pos)
{
	unsigned w = 1u << order;

	if (w < 8) {
		*byte = (i * w + b) / 8;
		*pos = (unsigned)((i * w + b) % 8);
	} else {
		*byte = i * (w / 8) + (w / 8 - 1 - b / 8);
		*pos = b % 8;
	}
}

static uint64_t naive_get(const uint8_t *blk, uint32_t order, uint64_t i)
{
	uint64_t v = 0, byte;
	unsigned b, pos;

	for (b = 0; b < (1u << order); b++) {
		locate(order, i, b, &byte, &pos);
		v |= (uint64_t)((blk[byte] >> pos) & 1) << b;
	}
	return v;
}

static void naive_set(uint8_t *blk, uint32_t order, uint64_t i, uint64_t v)
{
	uint64_t byte;
	unsigned b, pos;

	for (b = 0; b < (1u << order); b++) {
		locate(order, i, b, &byte, &pos);
		blk[byte] = (uint8_t)((blk[byte] & ~(1u << pos)) |
				      (((v >> b) & 1) << pos));
	}
}

static void test_refcounts(void)
{
	enum { BLK = 4096 };
	static uint8_t a[BLK], b[BLK];
	uint32_t order;
	uint64_t i, k;

	CHECK(uq_refcount_max(0) == 1 && uq_refcount_max(3) == 255 &&
	      uq_refcount_max(4) == 65535 && uq_refcount_max(5) == UINT32_MAX &&
	      uq_refcount_max(6) == UINT64_MAX);

	/* Spec examples: order 0 entry i is bit i%8 of byte i/8; order 1
	 * entry i is bits 2*(i%4) of byte i/4; wider is big-endian. */
	memset(a, 0, BLK);
	a[1] = 0x04;
	CHECK(uq_refcount_get(a, 0, 10) == 1 && uq_refcount_get(a, 0, 9) == 0);
	CHECK(uq_refcount_get(a, 1, 5) == 1);
	CHECK(uq_refcount_get(a, 2, 2) == 4);
	CHECK(uq_refcount_get(a, 3, 1) == 4);
	CHECK(uq_refcount_get(a, 4, 0) == 4);
	memset(a, 0, BLK);
	uq_refcount_set(a, 4, 1, 0x1234);
	CHECK(a[2] == 0x12 && a[3] == 0x34);
	uq_refcount_set(a, 6, 1, 0x0102030405060708ull);
	CHECK(a[8] == 1 && a[15] == 8);

	for (order = 0; order <= 6; order++) {
		uint64_t n = (uint64_t)BLK * 8 >> order;
		uint64_t max = uq_refcount_max(order);

		for (i = 0; i < BLK; i++)
			a[i] = (uint8_t)test_rand();
		for (i = 0; i < n; i++)
			if (uq_refcount_get(a, order, i) !=
			    naive_get(a, order, i)) {
				CHECK(!"refcount get differs from model");
				break;
			}
		memcpy(b, a, BLK);
		for (k = 0; k < 20000; k++) {
			uint64_t v = test_rand();

			i = test_rand() % n;
			if (k % 3 == 0)
				v = max;
			else if (k % 3 == 1)
				v &= 3;
			v &= max;
			uq_refcount_set(a, order, i, v);
			naive_set(b, order, i, v);
			if (uq_refcount_get(a, order, i) != v) {
				CHECK(!"refcount set/get mismatch");
				break;
			}
		}
		CHECK(memcmp(a, b, BLK) == 0);
		/* Edges: first and last entry, neighbours untouched. */
		memset(a, 0, BLK);
		uq_refcount_set(a, order, n - 1, max);
		CHECK(uq_refcount_get(a, order, n - 1) == max);
		CHECK(uq_refcount_get(a, order, n - 2) == 0);
		uq_refcount_set(a, order, 0, 1);
		CHECK(uq_refcount_get(a, order, 0) == 1 &&
		      uq_refcount_get(a, order, 1) == 0);
	}
}

/* ---- snapshots ---- */

static size_t make_snap(uint8_t *p, uint64_t l1off, uint32_t l1size,
			const char *id, const char *name, uint32_t extra_size,
			uint32_t vm32, uint64_t vm64, uint64_t disk,
			uint64_t icount)
{
	size_t n = 40 + extra_size + strlen(id) + strlen(name);
	size_t padded = (n + 7) & ~(size_t)7;

	memset(p, 0, padded);
	uq_put_be64(p, l1off);
	uq_put_be32(p + 8, l1size);
	uq_put_be16(p + 12, (uint16_t)strlen(id));
	uq_put_be16(p + 14, (uint16_t)strlen(name));
	uq_put_be32(p + 16, 1700000000);
	uq_put_be32(p + 20, 123456789);
	uq_put_be64(p + 24, 987654321012ull);
	uq_put_be32(p + 32, vm32);
	uq_put_be32(p + 36, extra_size);
	if (extra_size >= 8)
		uq_put_be64(p + 40, vm64);
	if (extra_size >= 16)
		uq_put_be64(p + 48, disk);
	if (extra_size >= 24)
		uq_put_be64(p + 56, icount);
	memcpy(p + 40 + extra_size, id, strlen(id));
	memcpy(p + 40 + extra_size + strlen(id), name, strlen(name));
	return padded;
}

static void test_snapshots(void)
{
	struct uq_geom g3, g2;
	struct uq_snapshot_raw s;
	size_t n1, n2, n;

	geom(&g3, 3, 16, 0);
	geom(&g2, 2, 16, 0);

	/* Two v3 entries walked back to back. */
	n1 = make_snap(buf, 0x40000, 16, "1", "first", 16, 7, 5ull << 32,
		       1ull << 30, 0);
	n2 = make_snap(buf + n1, 0x50000, 3, "22", "second one", 24, 0, 9,
		       2ull << 30, 42);
	CHECK_OK(uq_snapshot_decode(&g3, buf, n1 + n2, BIG_FILE, &s));
	CHECK(s.l1_table_offset == 0x40000 && s.l1_size == 16 &&
	      s.id_len == 1 && s.name_len == 5 && s.date_sec == 1700000000 &&
	      s.date_nsec == 123456789 && s.vm_clock_nsec == 987654321012ull &&
	      s.vm_state_size == 5ull << 32 && s.extra_size == 16 &&
	      s.has_disk_size && s.disk_size == 1ull << 30 && !s.has_icount &&
	      !memcmp(s.id, "1", 1) && !memcmp(s.name, "first", 5) &&
	      s.entry_len == n1 && n1 == 64);
	CHECK_OK(uq_snapshot_decode(&g3, buf + n1, n2, BIG_FILE, &s));
	CHECK(s.has_icount && s.icount == 42 && s.vm_state_size == 9 &&
	      s.disk_size == 2ull << 30 && s.entry_len == n2 &&
	      !memcmp(s.id, "22", 2) && !memcmp(s.name, "second one", 10));

	/* v2 without extra data: 32-bit VM state size. */
	n = make_snap(buf, 0x40000, 16, "1", "old", 0, 0x12345678, 0, 0, 0);
	CHECK_OK(uq_snapshot_decode(&g2, buf, n, BIG_FILE, &s));
	CHECK(s.vm_state_size == 0x12345678 && !s.has_disk_size &&
	      s.entry_len == 48 && !memcmp(s.name, "old", 3));
	/* ... and with 8 bytes of extra data, the 64-bit one wins. */
	n = make_snap(buf, 0x40000, 16, "1", "old", 8, 0x12345678,
		      1ull << 40, 0, 0);
	CHECK_OK(uq_snapshot_decode(&g2, buf, n, BIG_FILE, &s));
	CHECK(s.vm_state_size == 1ull << 40 && !s.has_disk_size);
	/* Odd extra size: unknown bytes are skipped. */
	n = make_snap(buf, 0x40000, 16, "7", "x", 1024, 0, 1, 2, 3);
	CHECK_OK(uq_snapshot_decode(&g3, buf, n, BIG_FILE, &s));
	CHECK(s.icount == 3 && s.id == buf + 40 + 1024 && s.entry_len == n);

	/* v3 needs extra data through the disk size. */
	n = make_snap(buf, 0x40000, 16, "1", "a", 8, 0, 0, 0, 0);
	CHECK_ERR(uq_snapshot_decode(&g3, buf, n, BIG_FILE, &s), "extra_size");
	n = make_snap(buf, 0x40000, 16, "1", "a", 1025, 0, 0, 0, 0);
	CHECK_ERR(uq_snapshot_decode(&g3, buf, n, BIG_FILE, &s),
		  "extra_size 1025");

	/* Truncation: fixed part, extra, id, name. */
	n = make_snap(buf, 0x40000, 16, "123", "name", 16, 0, 0, 0, 0);
	CHECK(n == 64);    /* 40 + 16 + 3 + 4 = 63, padded */
	CHECK_ERR(uq_snapshot_decode(&g3, buf, 39, BIG_FILE, &s), "fixed part");
	CHECK_ERR(uq_snapshot_decode(&g3, buf, 0, BIG_FILE, &s), "fixed part");
	CHECK_ERR(uq_snapshot_decode(&g3, buf, 50, BIG_FILE, &s), "runs past");
	CHECK_ERR(uq_snapshot_decode(&g3, buf, 62, BIG_FILE, &s), "runs past");
	/* Entry end equal to len, with or without the padding byte. */
	CHECK_OK(uq_snapshot_decode(&g3, buf, 64, BIG_FILE, &s));
	CHECK(s.entry_len == 64);
	CHECK_OK(uq_snapshot_decode(&g3, buf, 63, BIG_FILE, &s));
	CHECK(s.entry_len == 63);
	uq_put_be16(buf + 12, 0xffff);
	uq_put_be16(buf + 14, 0xffff);
	CHECK_ERR(uq_snapshot_decode(&g3, buf, 64, BIG_FILE, &s), "runs past");

	/* L1 table of the snapshot. */
	n = make_snap(buf, 0x40200, 16, "1", "a", 16, 0, 0, 0, 0);
	CHECK_ERR(uq_snapshot_decode(&g3, buf, n, BIG_FILE, &s),
		  "l1_table_offset");
	n = make_snap(buf, 0x40000, 16, "1", "a", 16, 0, 0, 0, 0);
	CHECK_ERR(uq_snapshot_decode(&g3, buf, n, 0x40000 + 127, &s),
		  "l1 table");
	CHECK_OK(uq_snapshot_decode(&g3, buf, n, 0x40000 + 128, &s));
	n = make_snap(buf, UINT64_MAX - 65535, 16, "1", "a", 16, 0, 0, 0, 0);
	CHECK_ERR(uq_snapshot_decode(&g3, buf, n, BIG_FILE, &s), "l1 table");
	n = make_snap(buf, 0x40000, (32u << 20) / 8 + 1, "1", "a", 16, 0, 0,
		      0, 0);
	CHECK_ERR(uq_snapshot_decode(&g3, buf, n, BIG_FILE, &s), "l1_size");
}

int main(void)
{
	test_header_roundtrip();
	test_header_reject();
	test_l1_entries();
	test_exts();
	test_random_headers();
	test_geom();
	test_l1();
	test_l2_standard();
	test_l2_compressed();
	test_l2_extended();
	test_reftable();
	test_refcounts();
	test_snapshots();
	printf("test_format: all passed\n");
	return 0;
}
