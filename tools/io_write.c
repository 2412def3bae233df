/* SPDX-License-Identifier: MIT */
/* The write side of `uqcow io`: write (pattern, pattern file, zeroes,
 * compressed), discard and flush, with qemu-io's checks and output. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "io_cmd.h"

#define DEFAULT_PATTERN 0xcd   /* qemu-io's */

/* qemu-io -s: the file's bytes, repeated to fill len. */
static int fill_from_file(uint8_t *buf, size_t len, const char *name)
{
	FILE *f = fopen(name, "rb");
	size_t n, have;

	if (!f) {
		cli_error("write: %s: %s", name, strerror(errno));
		return -errno;
	}
	n = fread(buf, 1, len, f);
	if (ferror(f)) {
		cli_error("write: %s: read error", name);
		fclose(f);
		return -EIO;
	}
	fclose(f);
	if (n == 0 && len) {
		cli_error("write: %s: file is empty", name);
		return -EINVAL;
	}
	for (have = n; have < len; have += n) {
		if (n > len - have)
			n = len - have;
		memcpy(buf + have, buf, n);
	}
	return 0;
}

static int write_error(const char *op, int err, uint64_t off)
{
	char what[96];

	snprintf(what, sizeof(what), "%s failed at offset %" PRIu64, op, off);
	cli_error_uq(err, what);
	return err;
}

struct wopts {
	bool compress, parsable, fua, nofallback, quiet, unmap, zero;
	int pattern;
	const char *src;
	int nsrc;   /* how many of -z, -P and -s were given */
};

static int write_options(int argc, char **argv, struct wopts *w)
{
	int c;

	optind = 0;
	while ((c = getopt(argc, argv, ":bcCfnpP:qs:uz")) != -1) {
		switch (c) {
		case 'b':
			cli_error("write: -b (VM state) is not supported");
			return -ENOTSUP;
		case 'c':
			w->compress = true;
			break;
		case 'C':
			w->parsable = true;
			break;
		case 'f':
			w->fua = true;
			break;
		case 'n':
			w->nofallback = true;
			break;
		case 'p':
			break;   /* qemu-io ignores it too */
		case 'P':
			if (io_parse_pattern(optarg, &w->pattern))
				return -EINVAL;
			w->nsrc++;
			break;
		case 'q':
			w->quiet = true;
			break;
		case 's':
			w->src = optarg;
			w->nsrc++;
			break;
		case 'u':
			w->unmap = true;
			break;
		case 'z':
			w->zero = true;
			w->nsrc++;
			break;
		default: {
			char opt[2] = { (char)optopt, '\0' };

			return io_cmd_usage("write", WRITE_ARGS, c == ':' ?
					    "option requires an argument -- '%s'" :
					    "invalid option -- '%s'", opt);
		}
		}
	}
	if (w->nsrc > 1) {
		cli_error("write: Only one of -z, -P, and -s can be specified at "
			  "the same time");
		return -EINVAL;
	}
	if (w->unmap && !w->zero) {
		cli_error("write: -u requires -z to be specified");
		return -EINVAL;
	}
	if (w->nofallback && !w->zero) {
		cli_error("write: -n requires -z to be specified");
		return -EINVAL;
	}
	if (argc - optind != 2)
		return io_cmd_usage("write", WRITE_ARGS,
				    "expected OFFSET and LENGTH%s", "");
	return 0;
}

/* The request itself: zeroes, or a buffer (pattern or file) written
 * plainly or compressed; with -f a flush makes it durable (FUA). */
static int write_request(struct io_ctx *x, const struct wopts *w,
			 uint64_t off, uint64_t count)
{
	uint8_t *buf = NULL;
	ssize_t n;
	int ret = 0;

	if (w->zero) {
		ret = uq_write_zeroes(x->img, off, count,
				      w->unmap ? UQ_ZERO_UNMAP : 0);
		if (ret < 0)
			return write_error("write", ret, off);
	} else {
		/* page-aligned for O_DIRECT */
		if (posix_memalign((void **)&buf, 4096, count ? count : 1)) {
			cli_error("write: out of memory for %" PRIu64 " bytes", count);
			return -ENOMEM;
		}
		if (w->src)
			ret = fill_from_file(buf, count, w->src);
		else
			memset(buf, w->pattern, count);
		if (ret == 0) {
			n = uq_pwrite(x->img, buf, count, off,
				      w->compress ? UQ_WRITE_COMPRESSED : 0);
			if (n < 0)
				ret = write_error("write", (int)n, off);
			else if ((uint64_t)n != count)
				ret = write_error("write", -EIO, off);
		}
		free(buf);
		if (ret < 0)
			return ret;
	}
	if (w->fua && (ret = uq_flush(x->img)) < 0)
		return write_error("write", ret, off);
	return 0;
}

int io_do_write(struct io_ctx *x, int argc, char **argv)
{
	struct wopts w = { .pattern = DEFAULT_PATTERN };
	struct timespec t1, t2, dt;
	uint64_t off, count;
	int ret = write_options(argc, argv, &w);

	if (ret < 0)
		return ret;
	if (io_parse_num("write offset", argv[optind], &off) ||
	    io_parse_num("write length", argv[optind + 1], &count))
		return -EINVAL;
	if (count > MAX_REQUEST && !w.nofallback) {
		cli_error("write: length cannot exceed %llu without -n, given %s",
			  MAX_REQUEST, argv[optind + 1]);
		return -EINVAL;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (count)
		ret = write_request(x, &w, off, count);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	if (ret < 0 || w.quiet)
		return ret;
	io_elapsed(&t1, &t2, &dt);
	io_print_report("wrote", &dt, off, count, count, 1, w.parsable);
	return 0;
}

int io_do_discard(struct io_ctx *x, int argc, char **argv)
{
	struct timespec t1, t2, dt;
	bool parsable = false, quiet = false;
	uint64_t off, count;
	int c, ret = 0;

	optind = 0;
	while ((c = getopt(argc, argv, ":Cq")) != -1) {
		switch (c) {
		case 'C':
			parsable = true;
			break;
		case 'q':
			quiet = true;
			break;
		default: {
			char opt[2] = { (char)optopt, '\0' };

			return io_cmd_usage("discard", DISCARD_ARGS,
					    "invalid option -- '%s'", opt);
		}
		}
	}
	if (argc - optind != 2)
		return io_cmd_usage("discard", DISCARD_ARGS,
				    "expected OFFSET and LENGTH%s", "");
	if (io_parse_num("discard offset", argv[optind], &off) ||
	    io_parse_num("discard length", argv[optind + 1], &count))
		return -EINVAL;
	if (count > MAX_REQUEST) {
		cli_error("discard: length cannot exceed %llu, given %s", MAX_REQUEST,
			  argv[optind + 1]);
		return -EINVAL;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (count)
		ret = uq_discard(x->img, off, count);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	if (ret < 0)
		return write_error("discard", ret, off);
	if (quiet)
		return 0;
	io_elapsed(&t1, &t2, &dt);
	io_print_report("discard", &dt, off, count, count, 1, parsable);
	return 0;
}

int io_do_flush(struct io_ctx *x, int argc, char **argv)
{
	int ret;

	(void)argc;
	(void)argv;
	ret = uq_flush(x->img);
	if (ret < 0)
		cli_error_uq(ret, "flush failed");
	return ret;
}
