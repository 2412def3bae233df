// SPDX-License-Identifier: MIT
/* Write path test: seeded random writes, write-zeroes, discards and
 * compressed writes against a raw mirror, for every refcount width and
 * several geometries; the result must read back and pass uq_check and
 * (where it is installed) qemu-img check. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "uqcow.h"

static uint64_t rng;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int have_qemu_img;

static void print_line(void *arg, const char *line)
{
	fprintf(stderr, "  %s: %s\n", (const char *)arg, line);
}

/* The metadata must be clean: the engine's own check (no corruption, no
 * leak, nothing it could not look at), and qemu-img check where qemu-img
 * is installed. Without qemu-img the first still checks every image. */
static void check_metadata(const char *path)
{
	struct uq_open_opts o = { .struct_size = sizeof(o) };
	struct uq_check_result res = { .struct_size = sizeof(res), .report = print_line,
				       .arg = (void *)path };
	char cmd[512];
	uq_image *img;

	CHECK(uq_open(path, &o, &img) == 0);
	CHECK(uq_check(img, 0, &res) == 0);
	uq_close(img);
	if (res.corruptions || res.leaks || res.check_errors) {
		fprintf(stderr, "uq_check failed on %s: %llu corruptions, %llu leaks, %llu check "
			"errors\n", path, (unsigned long long)res.corruptions,
			(unsigned long long)res.leaks, (unsigned long long)res.check_errors);
		exit(1);
	}
	if (!have_qemu_img)
		return;
	snprintf(cmd, sizeof(cmd), "qemu-img check -q %s", path);
	if (system(cmd) != 0) {
		fprintf(stderr, "qemu-img check failed on %s\n", path);
		snprintf(cmd, sizeof(cmd), "qemu-img check %s >&2", path);
		(void)!system(cmd);
		exit(1);
	}
}

static void verify(const char *path, const uint8_t *mirror, uint64_t size)
{
	struct uq_open_opts o = { .struct_size = sizeof(o) };
	uint8_t *buf = malloc(size);
	uq_image *img;

	CHECK(uq_open(path, &o, &img) == 0);
	CHECK(uq_pread(img, buf, size, 0) == (ssize_t)size);
	for (uint64_t i = 0; i < size; i++)
		if (buf[i] != mirror[i]) {
			fprintf(stderr, "%s: mismatch at 0x%llx: %02x != %02x\n", path,
				(unsigned long long)i, buf[i], mirror[i]);
			exit(1);
		}
	uq_close(img);
	free(buf);
}

struct cfg {
	uint32_t cs, bits, version;
	int extl2, lazy, ctype, backing;
	uint64_t size;
};

static void run(const struct cfg *c, uint64_t seed)
{
	char path[] = "/tmp/uq_test_writeXXXXXX", bpath[64];
	int fd = mkstemp(path);
	uint8_t *mirror = calloc(1, c->size), *base = NULL, *buf;
	uint64_t bsize = c->size * 3 / 4 + 512;
	struct uq_create_opts co = { .struct_size = sizeof(co), .size = c->size,
				     .cluster_size = c->cs, .refcount_bits = c->bits,
				     .version = c->version, .lazy_refcounts = c->lazy,
				     .extended_l2 = c->extl2, .compression_type = c->ctype };
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR };
	uq_image *img;

	rng = seed * 0x9e3779b97f4a7c15ull + 1;
	CHECK(fd >= 0);
	close(fd);
	printf("cs %u bits %u v%u extl2 %d lazy %d %s backing %d size %llu\n", c->cs,
	       c->bits, c->version, c->extl2, c->lazy, c->ctype ? "zstd" : "zlib",
	       c->backing, (unsigned long long)c->size);
	if (c->backing) {
		FILE *f;

		base = malloc(bsize);
		for (uint64_t i = 0; i < bsize; i++)
			base[i] = (uint8_t)(i * 7 + 3);
		snprintf(bpath, sizeof(bpath), "%s.base", path);
		f = fopen(bpath, "wb");
		CHECK(f && fwrite(base, 1, bsize, f) == bsize && fclose(f) == 0);
		memcpy(mirror, base, bsize);
		co.backing_file = bpath;
		co.backing_format = "raw";
	}
	CHECK(uq_create(path, &co) == 0);
	CHECK(uq_open(path, &o, &img) == 0);
	buf = malloc(4 * c->cs + 65536);
	for (int i = 0; i < 300; i++) {
		int op = (int)(rnd() % 10);
		uint64_t off = rnd() % c->size;
		uint64_t len = 1 + rnd() % (3 * c->cs + 4096);

		if (op >= 6 && op <= 8) {        /* cluster-aligned ops */
			off &= ~(uint64_t)(c->cs - 1);
			len = ((len + c->cs - 1) & ~(uint64_t)(c->cs - 1));
		}
		if (len > c->size - off)
			len = c->size - off;
		if (op <= 4) {                   /* data */
			uint8_t v = (uint8_t)rnd();

			memset(buf, v, len);
			for (uint64_t j = 0; j < len; j += 97)
				buf[j] = (uint8_t)(v ^ j);
			CHECK(uq_pwrite(img, buf, len, off, 0) == (ssize_t)len);
			memcpy(mirror + off, buf, len);
		} else if (op == 5 || op == 6) { /* zeroes, sometimes unmapping */
			CHECK(uq_write_zeroes(img, off, len, rnd() % 2 ? UQ_ZERO_UNMAP : 0) == 0);
			memset(mirror + off, 0, len);
		} else if (op == 7) {            /* discard whole clusters */
			CHECK(uq_discard(img, off, len) == 0);
			/* v3 keeps zeros over a backing file; v2 over one
			 * leaves the data (as qemu does: no zero flag) */
			if (!(c->version == 2 && base))
				memset(mirror + off, 0, len);
		} else if (op == 8 && c->version == 3) { /* compressed */
			memset(buf, (int)(rnd() & 0xff), len);
			CHECK(uq_pwrite(img, buf, len, off, UQ_WRITE_COMPRESSED) == (ssize_t)len);
			memcpy(mirror + off, buf, len);
		} else {
			CHECK(uq_flush(img) == 0);
		}
	}
	CHECK(uq_close(img) == 0);
	verify(path, mirror, c->size);
	check_metadata(path);
	/* amend to another width and check again */
	if (c->version == 3) {
		uint32_t nb = c->bits == 16 ? 1 : 16;

		CHECK(uq_open(path, &o, &img) == 0);
		int r = uq_amend_refcount_bits(img, nb);

		/* 1 bit can't count compressed clusters sharing a host cluster */
		CHECK(r == 0 || (r == -ERANGE && nb == 1));
		CHECK(uq_close(img) == 0);
		verify(path, mirror, c->size);
		check_metadata(path);
	}
	unlink(path);
	if (c->backing)
		unlink(bpath);
	free(mirror);
	free(base);
	free(buf);
}

int main(void)
{
	static const uint32_t widths[] = { 1, 2, 4, 8, 16, 32, 64 };
	uint64_t seed = 1;

	have_qemu_img = system("qemu-img --version >/dev/null 2>&1") == 0;
	for (size_t i = 0; i < sizeof(widths) / sizeof(widths[0]); i++) {
		struct cfg c = { .cs = 65536, .bits = widths[i], .version = 3,
				 .size = 16u << 20 };

		run(&c, seed++);
		c.cs = 512;
		c.size = 2u << 20;
		run(&c, seed++);
	}
	run(&(struct cfg){ .cs = 65536, .bits = 16, .version = 2, .size = 8u << 20 }, seed++);
	run(&(struct cfg){ .cs = 4096, .bits = 16, .version = 2, .size = 4u << 20,
			   .backing = 1 }, seed++);
	run(&(struct cfg){ .cs = 65536, .bits = 16, .version = 3, .size = 8u << 20,
			   .backing = 1 }, seed++);
	run(&(struct cfg){ .cs = 65536, .bits = 16, .version = 3, .size = 8u << 20,
			   .extl2 = 1 }, seed++);
	run(&(struct cfg){ .cs = 32768, .bits = 4, .version = 3, .size = 6u << 20,
			   .extl2 = 1, .backing = 1, .ctype = 1 }, seed++);
	run(&(struct cfg){ .cs = 65536, .bits = 16, .version = 3, .size = 8u << 20,
			   .lazy = 1 }, seed++);
	run(&(struct cfg){ .cs = 2u << 20, .bits = 8, .version = 3, .size = 24u << 20 }, seed++);
	printf("test_write: ok (metadata checked by uq_check%s)\n",
	       have_qemu_img ? " and qemu-img check" : "; qemu-img missing");
	return 0;
}
