// SPDX-License-Identifier: MIT
/* Read path unit test: builds qcow2 images cluster by cluster with the
 * format encoders (normal, zero, compressed, subclusters, backing), then
 * reads them through every backend and compares with the expected bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compress.h"
#include "format.h"
#include "internal.h"
#include "test.h"
#include "uqcow.h"

static uint64_t rng = 88172645463325252ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

struct build {
	uint8_t *file;
	size_t cap, end;          /* end: next free host offset */
	uint64_t cs;
	struct uq_geom g;
	struct uq_header h;
	uint8_t *expect;          /* guest content */
	uint64_t size;
};

static uint64_t alloc_host(struct build *b, size_t bytes)
{
	uint64_t off = b->end;

	b->end += (bytes + b->cs - 1) & ~(b->cs - 1);
	if (b->end > b->cap) {
		size_t ncap = b->end * 2;

		b->file = realloc(b->file, ncap);
		CHECK(b->file);
		memset(b->file + b->cap, 0, ncap - b->cap);
		b->cap = ncap;
	}
	return off;
}

static void fill_random(uint8_t *p, size_t n, int compressible)
{
	uint8_t v = (uint8_t)rnd();

	for (size_t i = 0; i < n; i++)
		p[i] = compressible ? (uint8_t)(v + (i / 64)) : (uint8_t)rnd();
}

/* backing: guest content below, or NULL for zeros */
static void build_image(struct build *b, unsigned cbits, bool v3, bool extl2,
			int ctype, uint64_t size, const uint8_t *backing, uint64_t bsize,
			const char *backing_name)
{
	memset(b, 0, sizeof(*b));
	b->cs = 1ull << cbits;
	b->size = size;
	b->expect = calloc(1, size);
	CHECK(b->expect);
	if (backing)
		memcpy(b->expect, backing, bsize < size ? bsize : size);

	struct uq_header *h = &b->h;

	h->magic = QCOW_MAGIC;
	h->version = v3 ? 3 : 2;
	h->cluster_bits = cbits;
	h->size = size;
	h->refcount_order = 4;
	h->header_length = v3 ? 112 : 72;
	h->compression_type = (uint8_t)ctype;
	if (ctype)
		h->incompatible_features |= QCOW_INCOMPAT_COMPRESSION;
	if (extl2)
		h->incompatible_features |= QCOW_INCOMPAT_EXTL2;
	uint64_t l1n;

	CHECK(uq_l1_entries_for(size, cbits, extl2, &l1n) == 0);
	h->l1_size = (uint32_t)l1n;
	uq_geom_init(h, &b->g);

	alloc_host(b, b->cs);                                  /* header */
	h->refcount_table_offset = alloc_host(b, b->cs);
	h->refcount_table_clusters = 1;
	h->l1_table_offset = alloc_host(b, l1n * 8);
	if (backing_name) {
		h->backing_file_offset = 0x200 < b->cs ? 0x200 : 0x1c0;
		h->backing_file_size = (uint32_t)strlen(backing_name);
		memcpy(b->file + h->backing_file_offset, backing_name, strlen(backing_name));
	}

	uint64_t nclusters = (size + b->cs - 1) / b->cs;
	uint64_t scs = b->cs >> 5;

	for (uint64_t c = 0; c < nclusters; c++) {
		uint64_t l1i = c >> b->g.l2_bits, idx = c & (b->g.l2_entries - 1);
		uint64_t gofs = c * b->cs;
		uint64_t glen = size - gofs < b->cs ? size - gofs : b->cs;
		uint64_t l1eoff = h->l1_table_offset + l1i * 8;
#define l1e (b->file + l1eoff)
		int kind = (int)(rnd() % 6);   /* 0 unalloc 1 zero 2,3 data 4 compressed 5 sub */

		if (kind == 0)
			continue;
		if (!uq_be64(l1e)) {
			uint64_t l2 = alloc_host(b, b->cs);

			uq_put_be64(l1e, l2 | QCOW_OFLAG_COPIED);
		}
		/* an offset, not a pointer: alloc_host may move b->file */
		uint64_t eoff = (uq_be64(l1e) & QCOW_L1E_OFFSET_MASK) + idx * b->g.l2_entry_bytes;
#define e (b->file + eoff)
		uint8_t *dst = b->expect + gofs;

		if (kind == 1 && (!v3 || extl2))
			kind = 2;
		if (kind == 5 && !extl2)
			kind = 3;
		if (kind == 4 && glen < b->cs)
			kind = 2;            /* a compressed cluster inflates to a whole one */
		if (kind == 1) {
			uq_put_be64(e, QCOW_OFLAG_ZERO);
			memset(dst, 0, glen);
		} else if (kind == 2 || kind == 3) {
			uint64_t host = alloc_host(b, b->cs);

			fill_random(b->file + host, b->cs, 0);
			memcpy(dst, b->file + host, glen);
			uq_put_be64(e, uq_l2_encode_normal(host, true));
			if (extl2)
				uq_put_be64(e + 8, 0xffffffffull);
		} else if (kind == 4) {
			uint8_t *plain = malloc(b->cs), *z = malloc(2 * b->cs);
			struct uq_codec *codec = NULL;
			ssize_t n;

			fill_random(plain, b->cs, 1);
			n = uq_compress(&codec, ctype, plain, b->cs, z, 2 * b->cs);
			uq_codec_free(codec);
			CHECK(n > 0);
			/* pack at a random, unaligned spot of a fresh host area */
			uint64_t host = alloc_host(b, 3 * b->cs) + rnd() % b->cs;

			memcpy(b->file + host, z, (size_t)n);
			memcpy(dst, plain, glen);
			uq_put_be64(e, uq_l2_encode_compressed(&b->g, host, (uint64_t)n));
			free(plain);
			free(z);
		} else {
			uint64_t host = alloc_host(b, b->cs);
			uint32_t alloc = (uint32_t)rnd(), zero = (uint32_t)rnd() & ~alloc;

			fill_random(b->file + host, b->cs, 0);
			for (unsigned i = 0; i < 32; i++) {
				uint64_t o = i * scs;

				if (o >= glen)
					break;
				size_t l = glen - o < scs ? glen - o : scs;

				if (alloc >> i & 1)
					memcpy(dst + o, b->file + host + o, l);
				else if (zero >> i & 1)
					memset(dst + o, 0, l);
			}
			uq_put_be64(e, uq_l2_encode_normal(host, true));
			uq_put_be64(e + 8, ((uint64_t)zero << 32) | alloc);
		}
#undef e
#undef l1e
	}
	/* refcounts are not read by this path; one block keeps it well formed */
	uint64_t rb = alloc_host(b, b->cs);

	uq_put_be64(b->file + h->refcount_table_offset, rb);
	for (uint64_t c = 0; c < b->end / b->cs; c++)
		if (c < (b->cs * 8 / 16))
			uq_refcount_set(b->file + rb, 4, c, 1);
	CHECK(uq_header_encode(h, b->file, b->cs) == 0);
	uq_put_be32(b->file + h->header_length, QCOW_EXT_END);
}

static void write_file(const char *path, const uint8_t *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	CHECK(f && fwrite(p, 1, n, f) == n && fclose(f) == 0);
}

static int nreqs_done;

static void count_done(void *arg, ssize_t res)
{
	CHECK(res >= 0);
	(void)arg;
	nreqs_done++;
}

static void verify(const char *path, struct build *b, enum uq_backend be, uint64_t cache)
{
	struct uq_open_opts o = { .struct_size = sizeof(o), .backend = be,
				  .l2_cache_size = cache };
	uq_image *img;
	uint8_t *buf = malloc(8u << 20);   /* random reads span up to 3 clusters of 2 MiB */
	int ret;

	if (be == UQ_IO_MEM) {
		o.mem_data = b->file;
		o.mem_len = b->end;
	}
	ret = uq_open(path, &o, &img);
	if (ret == -ENOSYS || ret == -EPERM) {
		printf("  backend %d unavailable, skipped\n", be);
		free(buf);
		return;
	}
	CHECK(ret == 0);
	/* whole image, then random pieces */
	CHECK(uq_pread(img, buf, 0, 0) == 0);
	for (uint64_t off = 0; off < b->size; off += 4u << 20) {
		size_t n = b->size - off < (4u << 20) ? (size_t)(b->size - off) : 4u << 20;

		CHECK(uq_pread(img, buf, n, off) == (ssize_t)n);
		CHECK(memcmp(buf, b->expect + off, n) == 0);
	}
	for (int i = 0; i < 300; i++) {
		uint64_t off = rnd() % b->size;
		size_t n = (size_t)(rnd() % (3 * b->cs + 1));

		if (n > b->size - off)
			n = (size_t)(b->size - off);
		CHECK(uq_pread(img, buf, n, off) == (ssize_t)n);
		CHECK(memcmp(buf, b->expect + off, n) == 0);
	}
	/* many requests in flight at once, then one poll loop */
	size_t per = (size_t)b->cs / 2;
	unsigned nq = (unsigned)((4u << 20) / per);

	if (nq > 256)
		nq = 256;
	uint64_t offs[256];

	nreqs_done = 0;
	for (unsigned i = 0; i < nq; i++) {
		offs[i] = rnd() % (b->size - per);
		CHECK(uq_aio_read(img, buf + (size_t)i * per, per, offs[i], count_done, NULL) == 0);
	}
	while (nreqs_done < (int)nq)
		CHECK(uq_poll(img, 1) > 0);
	for (unsigned i = 0; i < nq; i++)
		CHECK(memcmp(buf + (size_t)i * per, b->expect + offs[i], per) == 0);
	CHECK(uq_aio_read(img, buf, 1, b->size, count_done, NULL) < 0);
	uq_close(img);
	free(buf);
}

static void run(unsigned cbits, bool v3, bool extl2, int ctype, uint64_t size,
		bool with_backing)
{
	char path[] = "/tmp/uq_test_readXXXXXX", bpath[64];
	int fd = mkstemp(path);
	struct build b;
	uint8_t *backing = NULL;
	uint64_t bsize = size / 2 + 12345;

	CHECK(fd >= 0);
	close(fd);
	if (with_backing) {
		backing = malloc(bsize);
		fill_random(backing, bsize, 0);
		snprintf(bpath, sizeof(bpath), "%s.base", path);
		write_file(bpath, backing, bsize);
	}
	build_image(&b, cbits, v3, extl2, ctype, size, backing, bsize,
		    with_backing ? strrchr(bpath, '/') + 1 : NULL);
	write_file(path, b.file, b.end);
	printf("cluster %u v%d extl2 %d %s size %llu backing %d\n", 1u << cbits, v3 ? 3 : 2,
	       extl2, ctype ? "zstd" : "zlib", (unsigned long long)size, with_backing);
	verify(path, &b, UQ_IO_URING, 0);
	verify(path, &b, UQ_IO_PSYNC, 0);
	verify(path, &b, UQ_IO_PSYNC, 2 * b.cs);   /* a tiny cache: eviction */
	if (!with_backing)
		verify(path, &b, UQ_IO_MEM, 0);
	unlink(path);
	if (with_backing)
		unlink(bpath);
	free(backing);
	free(b.file);
	free(b.expect);
}

int main(void)
{
	run(9, true, false, 0, (1u << 20) + 3 * 512, false);
	run(12, true, false, 1, 3u << 20, false);
	run(12, false, false, 0, 2u << 20, true);
	run(16, true, false, 0, 8u << 20, true);
	run(14, true, true, 0, (2u << 20) + 512, false);
	run(16, true, true, 1, 6u << 20, true);
	run(21, true, false, 1, 9u << 20, false);
	printf("test_read: ok\n");
	return 0;
}
