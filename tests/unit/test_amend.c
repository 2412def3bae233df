// SPDX-License-Identifier: MIT
/* compat=0.10 with every change failing in turn (the disk gone from that
 * change on): the image left behind opens, reads as before (active state
 * and snapshot), and has no corruption; it is v3, or v2 once the header
 * write went through. Then compat=1.1 back, the same way. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "internal.h"
#include "test.h"

#define SIZE (256u << 10)
#define CS 4096u

static char path[] = "/tmp/uqcow-amend-XXXXXX";
static uint8_t want[SIZE], want_snap[SIZE], got[SIZE];

static void read_all(const char *snap, uint8_t *out, uint32_t *version)
{
	struct uq_open_opts o = { .struct_size = sizeof(o) };
	struct uq_info in = { .struct_size = sizeof(in) };
	uq_image *img;

	CHECK(uq_open(path, &o, &img) == 0);
	CHECK(uq_get_info(img, &in) == 0);
	*version = in.version;
	if (snap)
		CHECK(uq_snapshot_view(img, snap) == 0);
	CHECK(uq_pread(img, out, SIZE, 0) == SIZE);
	CHECK(uq_close(img) == 0);
}

static void make_image(void)
{
	struct uq_create_opts co = { .struct_size = sizeof(co), .size = SIZE,
				     .cluster_size = CS, .refcount_bits = 16, .version = 3 };
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR };
	uint8_t buf[4 * CS];
	uq_image *img;

	unlink(path);
	CHECK(uq_create(path, &co) == 0);
	CHECK(uq_open(path, &o, &img) == 0);
	for (unsigned i = 0; i < 16; i++) {
		memset(buf, 'a' + i, sizeof(buf));
		CHECK(uq_pwrite(img, buf, sizeof(buf), (uint64_t)i * sizeof(buf), 0) == sizeof(buf));
	}
	CHECK(uq_write_zeroes(img, 2 * CS, 2 * CS, 0) == 0);
	CHECK(uq_snapshot_create(img, "s1") == 0);
	/* allocated zero clusters shared with the snapshot, plain ones, holes */
	CHECK(uq_write_zeroes(img, 8 * CS, 3 * CS, 0) == 0);
	CHECK(uq_write_zeroes(img, 20 * CS, 2 * CS, UQ_ZERO_UNMAP) == 0);
	CHECK(uq_write_zeroes(img, 60 * CS, 2 * CS, 0) == 0);
	CHECK(uq_close(img) == 0);
}

/* The crash suite's rule (tests/crash/crash.c, copied_lag_line): in a
 * crash window of an operation that drops references to shared clusters,
 * COPIED may still be clear on a cluster whose refcount is already 1.
 * Harmless (the next write copies it needlessly) and repaired by check -r;
 * anything else is a corruption. */
struct problems {
	unsigned long lag, other;
};

static void count_problem(void *arg, const char *line)
{
	struct problems *p = arg;
	size_t n = strlen(line);

	if (strncmp(line, "ERROR", 5))
		return;   /* leaks are allowed */
	if (!strncmp(line, "ERROR OFLAG_COPIED ", 19) && n >= 11 &&
	    !strcmp(line + n - 11, " refcount=1"))
		p->lag++;
	else
		p->other++;
}

static void expect_intact(uint32_t from, uint32_t to, uint64_t n)
{
	struct problems pr = { 0, 0 };
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR };
	struct uq_check_result r = { .struct_size = sizeof(r), .report = count_problem,
				     .arg = &pr };
	uint32_t v;
	uq_image *img;

	read_all(NULL, got, &v);
	CHECK(v == from || v == to);
	if (memcmp(got, want, SIZE))
		fprintf(stderr, "change %llu: active state differs\n", (unsigned long long)n);
	CHECK(memcmp(got, want, SIZE) == 0);
	read_all("s1", got, &v);
	CHECK(memcmp(got, want_snap, SIZE) == 0);
	CHECK(uq_open(path, &o, &img) == 0);
	CHECK(uq_check(img, 0, &r) == 0);
	if (pr.other || r.check_errors)
		fprintf(stderr, "change %llu of the amend to v%u failed: %llu corruptions "
			"(%lu COPIED lag)\n", (unsigned long long)n, to,
			(unsigned long long)r.corruptions, pr.lag);
	CHECK(uq_close(img) == 0);
	CHECK(pr.other == 0 && r.check_errors == 0);
	/* a finished amend leaves no lag at all */
	CHECK(n != 0 || r.corruptions == 0);
}

/* Amend to version with change n failing (0: none); returns how many
 * changes the amend made. */
static uint64_t amend_failing(int version, uint64_t n, int *ret)
{
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR };
	struct uq_amend_opts ao = { .struct_size = sizeof(ao), .version = version };
	struct io_fault *fl = NULL;
	uq_image *img;
	uint64_t changes;

	CHECK(uq_open(path, &o, &img) == 0);
	CHECK(uq_image_wrap_file(img, io_fault_wrap_fn, &fl) == 0);
	if (n)
		io_fault_fail_at(fl, n, -EIO, true);
	*ret = uq_amend(img, &ao);
	changes = io_fault_changes(fl);
	uq_close(img);   /* may fail: the disk is gone */
	io_fault_free(fl);
	return changes;
}

int main(void)
{
	uint32_t v;
	int fd = mkstemp(path), ret;
	uint64_t total;

	CHECK(fd >= 0);
	close(fd);
	make_image();
	read_all(NULL, want, &v);
	read_all("s1", want_snap, &v);
	CHECK(v == 3);
	total = amend_failing(2, 0, &ret);
	CHECK(ret == 0);
	expect_intact(2, 2, 0);
	for (uint64_t n = 1; n <= total; n++) {
		make_image();
		amend_failing(2, n, &ret);
		CHECK(ret < 0);
		expect_intact(3, 2, n);
	}
	/* and back: v2 -> v3 */
	make_image();
	amend_failing(2, 0, &ret);
	CHECK(ret == 0);
	total = amend_failing(3, 0, &ret);
	CHECK(ret == 0);
	expect_intact(3, 3, 0);
	for (uint64_t n = 1; n <= total; n++) {
		make_image();
		amend_failing(2, 0, &ret);
		amend_failing(3, n, &ret);
		CHECK(ret < 0);
		expect_intact(2, 3, n);
	}
	printf("amend: compat=0.10 and 1.1 survive a failure at every change\n");
	unlink(path);
	return 0;
}
