// SPDX-License-Identifier: MIT
/* Fuzz target: uq_create with options the input picks (size, cluster
 * size, refcount width, version, lazy refcounts, extended L2, zstd,
 * preallocation, a raw backing file, an external data file). Creation
 * writes a real file (in a private temporary folder, replaced by every
 * input). Invariants for every image it creates: it opens, says what
 * was asked (size, cluster size, refcount width, version), uq_check
 * finds nothing at all, and the first and last bytes read as zeros
 * (without a backing file). Refusals must name a reason.
 *
 * Input: 16 bytes, the rest ignored:
 *   0..3  size in 512-byte units (capped at 16 MiB, 4 MiB preallocated)
 *   4     cluster size 512 << (b % 13)
 *   5     refcount width 1 << (b % 7)
 *   6     bit 0 version 2, 1 lazy refcounts, 2 extended L2, 3 zstd,
 *         4 data_file_raw
 *   7     preallocation (b % 4)
 *   8     bit 0 raw backing file, bit 1 external data file */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "uqcow.h"

#define MAX_SIZE (16u << 20)
#define MAX_PREALLOC (4u << 20)

static char dir[64], img_path[96], data_path[96], base_path[96];

/* One folder for the process: the image, its data file, a backing file. */
static void setup(void)
{
	const char *t = getenv("TMPDIR");
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/uqcow-create-XXXXXX", t && *t ? t : "/tmp");
	FUZZ_CHECK(mkdtemp(dir) != NULL);
	snprintf(img_path, sizeof(img_path), "%s/img.qcow2", dir);
	snprintf(data_path, sizeof(data_path), "%s/data.raw", dir);
	snprintf(base_path, sizeof(base_path), "%s/base.raw", dir);
	f = fopen(base_path, "wb");
	FUZZ_CHECK(f != NULL);
	FUZZ_CHECK(fputc(0, f) == 0 && fclose(f) == 0);
	FUZZ_CHECK(truncate(base_path, 1 << 20) == 0);
}

static void cleanup(void)
{
	unlink(img_path);
	unlink(data_path);
	unlink(base_path);
	rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct uq_create_opts o;
	struct uq_open_opts oo;
	struct uq_check_result res;
	struct uq_info info;
	uint8_t p[16] = { 0 }, buf[512];
	bool backed, external;
	uq_image *img;
	int ret;

	if (!dir[0]) {
		setup();
		atexit(cleanup);
	}
	memcpy(p, data, size < sizeof(p) ? size : sizeof(p));
	memset(&o, 0, sizeof(o));
	o.struct_size = sizeof(o);
	o.size = ((uint64_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]) * 512ull % (MAX_SIZE + 512ull);
	o.cluster_size = 512u << (p[4] % 13);
	o.refcount_bits = 1u << (p[5] % 7);
	o.version = p[6] & 1 ? 2 : 3;
	o.lazy_refcounts = p[6] >> 1 & 1;
	o.extended_l2 = p[6] >> 2 & 1;
	o.compression_type = p[6] >> 3 & 1;
	o.prealloc = (enum uq_prealloc)(p[7] % 4);
	backed = p[8] & 1;
	external = p[8] & 2;
	if (o.prealloc != 0 && o.size > MAX_PREALLOC)
		o.size %= MAX_PREALLOC + 512ull;
	if (backed) {
		o.backing_file = "base.raw";   /* relative to the image */
		o.backing_format = "raw";
	}
	if (external) {
		o.data_file = data_path;
		o.data_file_raw = p[6] >> 4 & 1;
	}
	unlink(data_path);
	ret = uq_create(img_path, &o);
	if (ret < 0) {
		FUZZ_CHECK(uq_errmsg()[0] != '\0');   /* a refusal says why */
		return 0;
	}

	memset(&oo, 0, sizeof(oo));
	oo.struct_size = sizeof(oo);
	oo.format = UQ_FMT_QCOW2;
	oo.backend = UQ_IO_AUTO;
	ret = uq_open(img_path, &oo, &img);
	if (ret < 0) {
		fprintf(stderr, "image_create: a created image does not open: %s\n",
			uq_errmsg());
		abort();
	}
	info.struct_size = sizeof(info);
	FUZZ_CHECK(uq_get_info(img, &info) == 0);
	FUZZ_CHECK(info.cluster_size == o.cluster_size);
	FUZZ_CHECK(info.version == o.version);
	FUZZ_CHECK(info.virtual_size == (o.size ? o.size : (backed ? 1u << 20 : 0)));
	FUZZ_CHECK(info.refcount_bits == (o.version == 2 ? 16 : o.refcount_bits));

	memset(&res, 0, sizeof(res));
	res.struct_size = sizeof(res);
	ret = uq_check(img, 0, &res);
	if (ret < 0 || res.corruptions || res.leaks || res.check_errors) {
		fprintf(stderr, "image_create: check of a new image: ret %d, %llu "
			"corruptions, %llu leaks, %llu check errors\n", ret,
			(unsigned long long)res.corruptions,
			(unsigned long long)res.leaks,
			(unsigned long long)res.check_errors);
		abort();
	}
	/* a new image reads as zeros, or as its (zero) backing file */
	if (info.virtual_size) {
		size_t n = info.virtual_size < sizeof(buf) ? (size_t)info.virtual_size : sizeof(buf);
		uint64_t offs[2] = { 0, info.virtual_size - n };

		for (int i = 0; i < 2; i++) {
			FUZZ_CHECK(uq_pread(img, buf, n, offs[i]) == (ssize_t)n);
			for (size_t k = 0; k < n; k++)
				FUZZ_CHECK(buf[k] == 0);
		}
	}
	uq_close(img);
	return 0;
}
