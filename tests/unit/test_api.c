// SPDX-License-Identifier: MIT
/* The sealed API: every call clears the message and says why it failed;
 * struct_size is honoured both ways. Links only the public library. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

/* The old shape of uq_extent: a caller built against it must get its
 * fields filled and nothing written past them. */
struct extent_v0 {
	size_t struct_size;
	uint64_t start;
	uint64_t length;
};

int main(void)
{
	char path[] = "/tmp/uqcow-test-api-XXXXXX";
	int fd = mkstemp(path);
	struct uq_create_opts co = { .struct_size = sizeof(co), .size = 1 << 20 };
	struct uq_open_opts ro = { .struct_size = sizeof(ro) };
	struct uq_info info = { .struct_size = 0 };
	uq_image *img = NULL;
	uint8_t buf[512];

	CHECK(fd >= 0);
	close(fd);
	CHECK(uq_create(path, &co) == 0);
	CHECK(*uq_errmsg() == '\0');

	/* a failing call leaves a message naming the file */
	CHECK(uq_open("/nonexistent/uqcow-image", &ro, &img) < 0);
	CHECK(strstr(uq_errmsg(), "/nonexistent/uqcow-image") != NULL);

	/* the next call clears it, whether it succeeds ... */
	CHECK(uq_open(path, &ro, &img) == 0);
	CHECK(*uq_errmsg() == '\0');
	CHECK(uq_pread(img, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf));
	CHECK(*uq_errmsg() == '\0');

	/* ... or fails: then the message is its own */
	CHECK(uq_close(img) == 0);
	CHECK(uq_open(path, &ro, &img) == 0);
	CHECK(uq_pwrite(img, buf, sizeof(buf), 0, 0) == -EROFS);
	CHECK(strstr(uq_errmsg(), path) != NULL);
	CHECK(uq_resize(img, 2 << 20) < 0);
	CHECK(strstr(uq_errmsg(), path) != NULL);
	CHECK(strstr(uq_errmsg(), "nonexistent") == NULL);
	CHECK(uq_amend_refcount_bits(img, 8) < 0);
	CHECK(*uq_errmsg() != '\0');
	CHECK(uq_snapshot_view(img, "no-such-snapshot") < 0);
	CHECK(strstr(uq_errmsg(), "no-such-snapshot") != NULL);
	CHECK(uq_pread(img, buf, sizeof(buf), 4 << 20) < 0);
	CHECK(*uq_errmsg() != '\0');
	CHECK(strstr(uq_errmsg(), "no-such-snapshot") == NULL);

	/* struct_size: unset is refused, a smaller struct is filled as far
	 * as it goes and not a byte further */
	CHECK(uq_get_info(img, &info) == -EINVAL);
	CHECK(strstr(uq_errmsg(), "struct_size") != NULL);
	info.struct_size = sizeof(info);
	CHECK(uq_get_info(img, &info) == 0);
	CHECK(info.struct_size == sizeof(info) && info.virtual_size == 1 << 20);
	CHECK(info.cluster_size == 65536 && info.refcount_bits == 16);
	{
		struct {
			struct extent_v0 e;
			uint8_t guard[64];
		} small;

		memset(&small, 0xa5, sizeof(small));
		small.e.struct_size = sizeof(small.e);
		CHECK(uq_block_status(img, 0, 1 << 20, (struct uq_extent *)&small.e) == 0);
		CHECK(small.e.struct_size == sizeof(small.e));
		CHECK(small.e.start == 0 && small.e.length == 1 << 20);
		for (size_t i = 0; i < sizeof(small.guard); i++)
			CHECK(small.guard[i] == 0xa5);
	}
	{
		struct uq_snapshot_info s = { .struct_size = sizeof(s) };

		CHECK(uq_snapshot_get(img, 0, &s) == -ENOENT);
		CHECK(*uq_errmsg() != '\0');
	}
	/* bitmaps: read-only refuses changes; a writable handle adds one,
	 * its writes show in uq_bitmap_status and uq_bitmap_get, and the
	 * bits survive a reopen */
	CHECK(uq_bitmap_add(img, "b", 4096, 1) == -EROFS);
	CHECK(strstr(uq_errmsg(), path) != NULL);
	CHECK(uq_close(img) == 0);
	ro.flags = UQ_OPEN_RDWR;
	CHECK(uq_open(path, &ro, &img) == 0);
	CHECK(uq_bitmap_add(img, "b", 4096, 1) == 0);
	CHECK(uq_bitmap_add(img, "b", 4096, 1) == -EEXIST);
	CHECK(uq_bitmap_add(img, "odd", 3000, 1) == -EINVAL);
	CHECK(uq_pwrite(img, buf, sizeof(buf), 8192 + 100, 0) == (ssize_t)sizeof(buf));
	{
		struct uq_bitmap_info b = { .struct_size = sizeof(b) };
		uint64_t run;
		int dirty;

		CHECK(uq_bitmap_get(img, 0, &b) == 0);
		CHECK(!strcmp(b.name, "b") && b.granularity == 4096);
		CHECK(b.flags == (UQ_BITMAP_AUTO | UQ_BITMAP_IN_USE));
		CHECK(uq_bitmap_status(img, "b", 0, 1 << 20, &run, &dirty) == 0);
		CHECK(!dirty && run == 8192);
		CHECK(uq_bitmap_status(img, "b", 8192, 1 << 20, &run, &dirty) == 0);
		CHECK(dirty && run == 4096);
		CHECK(uq_close(img) == 0);
		ro.flags = 0;
		CHECK(uq_open(path, &ro, &img) == 0);
		CHECK(uq_bitmap_get(img, 0, &b) == 0 && b.flags == UQ_BITMAP_AUTO);
		CHECK(uq_bitmap_status(img, "b", 4096, 1 << 20, &run, &dirty) == 0);
		CHECK(!dirty && run == 4096);
		CHECK(uq_bitmap_status(img, "b", 12288, 1 << 20, &run, &dirty) == 0);
		CHECK(!dirty && run == (1 << 20) - 12288);
		CHECK(uq_bitmap_status(img, "nope", 0, 512, &run, &dirty) == -ENOENT);
		CHECK(uq_bitmap_get(img, 1, &b) == -ENOENT);
	}
	CHECK(uq_close(img) == 0);
	CHECK(*uq_errmsg() == '\0');
	unlink(path);
	return 0;
}
