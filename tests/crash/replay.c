// SPDX-License-Identifier: MIT
/* Replays the guest operations a crash test traced (UQ_CRASH_TRACE=1) on a
 * fresh image, without the fault layer: for minimizing engine failures. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uqcow.h"

/* One traced line, "trace: OP ARGS"; returns the engine's result. */
static int run_line(const char *l, const char *path, uq_image **img, unsigned n)
{
	unsigned long long a = 0, b = 0;
	unsigned flags = 0, cs, bits;
	int lazy, backing, ret = 0;
	char kind, name[64];

	if (sscanf(l, "create cs=%u bits=%u lazy=%d backing=%d size=%llx", &cs, &bits, &lazy,
		   &backing, &a) == 5) {
		struct uq_create_opts co = { .struct_size = sizeof(co), .size = a,
					     .cluster_size = cs, .refcount_bits = bits,
					     .lazy_refcounts = lazy };
		struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR,
					  .backend = UQ_IO_PSYNC };

		if (backing) {
			fprintf(stderr, "traces of runs over a backing file aren't replayable\n");
			exit(2);
		}
		ret = uq_create(path, &co);
		return ret ? ret : uq_open(path, &o, img);
	}
	if (!*img)
		return 0;
	if (sscanf(l, "write %llx %llx %u", &a, &b, &flags) == 3) {
		uint8_t *buf = malloc(b ? b : 1);

		if (!buf)
			exit(2);
		memset(buf, (int)(n & 0xff) | 1, b);   /* never zeros: visible when lost */
		ssize_t r = uq_pwrite(*img, buf, b, a, flags);

		free(buf);
		ret = r < 0 ? (int)r : 0;
	} else if (sscanf(l, "zero %llx %llx %u", &a, &b, &flags) == 3) {
		ret = uq_write_zeroes(*img, a, b, flags);
	} else if (sscanf(l, "discard %llx %llx", &a, &b) == 2) {
		ret = uq_discard(*img, a, b);
	} else if (!strncmp(l, "flush", 5)) {
		ret = uq_flush(*img);
	} else if (sscanf(l, "resize %llx", &a) == 1) {
		ret = uq_resize(*img, a);
	} else if (sscanf(l, "amend %llu", &a) == 1) {
		ret = uq_amend_refcount_bits(*img, (uint32_t)a);
	} else if (sscanf(l, "snapshot %c %63s", &kind, name) == 2) {
		ret = kind == 'c' ? uq_snapshot_create(*img, name) :
		      kind == 'a' ? uq_snapshot_apply(*img, name) : uq_snapshot_delete(*img, name);
		/* the crash test expects refusals for the refcount width */
		if (ret == -ERANGE || (ret == -ENOTSUP && kind == 'c'))
			ret = 0;
	}
	return ret;
}

int main(int argc, char **argv)
{
	char line[256];
	uq_image *img = NULL;
	unsigned n = 0;
	FILE *f;
	int ret = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: crash_replay TRACE IMAGE\n"
			"  TRACE: stderr of UQ_CRASH_TRACE=1 test_crash ...; lines \"trace: ...\"\n"
			"  exit 1 and the line when an operation fails\n");
		return 2;
	}
	f = fopen(argv[1], "r");
	if (!f) {
		perror(argv[1]);
		return 2;
	}
	while (ret == 0 && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "trace: ", 7))
			continue;
		n++;
		ret = run_line(line + 7, argv[2], &img, n);
		if (ret < 0)
			printf("operation %u: %s  failed: %s\n", n, line + 7, uq_errmsg());
	}
	fclose(f);
	if (img && uq_close(img) < 0 && ret == 0) {
		printf("close failed: %s\n", uq_errmsg());
		ret = -1;
	}
	return ret < 0 ? 1 : 0;
}
