/* SPDX-License-Identifier: MIT */
/* uqcow compare: are two images' guest contents the same? qemu-img
 * compare's rules, messages and exit codes (0 same, 1 different, 2 error). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CMP_BUF   (2u << 20)  /* qemu-img's IO_BUF_SIZE */
#define SECTOR    512u        /* mismatches are reported per sector */

#define EXIT_SAME  0
#define EXIT_DIFF  1
#define EXIT_ERROR 2

struct side {
	uq_image *img;
	const char *name;
	uint64_t size;
	uint64_t st_start, st_end;  /* cached block status */
	struct uq_extent st;
	uint8_t *buf;
	ssize_t res;
	bool done;
};

static int side_status(struct side *s, uint64_t off, uint64_t end)
{
	int ret;

	if (off >= s->st_start && off < s->st_end)
		return 0;
	s->st.struct_size = sizeof(s->st);
	ret = uq_block_status(s->img, off, end - off, &s->st);
	if (ret < 0) {
		cli_error_uq(ret, s->name);
		return ret;
	}
	if (s->st.length == 0 || s->st.length > end - off) {
		cli_error("%s: block status at offset %" PRIu64 " returned a bad "
			  "extent", s->name, off);
		return -EIO;
	}
	s->st_start = off;
	s->st_end = off + s->st.length;
	return 0;
}

static void read_done(void *arg, ssize_t res)
{
	struct side *s = arg;

	s->res = res;
	s->done = true;
}

static int read_finish(struct side *s, uint64_t off, size_t len)
{
	while (!s->done) {
		int n = uq_poll(s->img, 1);

		if (n < 0) {
			cli_error_uq(n, s->name);
			return n;
		}
	}
	if (s->res < 0) {
		cli_error_uq((int)s->res, s->name);
		return (int)s->res;
	}
	if ((size_t)s->res != len) {
		cli_error("%s: short read at offset %" PRIu64, s->name, off);
		return -EIO;
	}
	return 0;
}

/* Read [off, off+len) from one or both sides, both in flight at once. */
static int read_sides(struct side **v, int n, uint64_t off, size_t len)
{
	int ret = 0, i;

	for (i = 0; i < n; i++) {
		v[i]->done = false;
		ret = uq_aio_read(v[i]->img, v[i]->buf, len, off, read_done, v[i]);
		if (ret < 0) {
			cli_error_uq(ret, v[i]->name);
			break;
		}
	}
	/* Reap whatever was queued, even after an error, before reusing. */
	for (int k = 0; k < i; k++) {
		int r = read_finish(v[k], off, len);

		if (r < 0 && !ret)
			ret = r;
	}
	return ret;
}

/* First differing (or non-zero, b == NULL) byte, reported at its sector
 * as qemu-img does, but never before the chunk start. */
static int64_t first_diff(const uint8_t *a, const uint8_t *b, size_t len,
			  uint64_t off)
{
	size_t i;
	uint64_t at;

	for (i = 0; i < len; i++)
		if (b ? a[i] != b[i] : a[i] != 0)
			break;
	if (i == len)
		return -1;
	at = (off + i) / SECTOR * SECTOR;
	return (int64_t)(at < off ? off : at);
}

/* Fast path for the common case: whole-buffer comparisons first. */
static int64_t find_mismatch(const uint8_t *a, const uint8_t *b, size_t len,
			     uint64_t off)
{
	if (b ? !memcmp(a, b, len) : cli_is_zero(a, len))
		return -1;
	return first_diff(a, b, len, off);
}

struct cmp {
	struct side a, b;
	bool strict, quiet;
	struct cli_progress prog;
};

/* Compare [0, min size). Returns EXIT_SAME/EXIT_DIFF or -errno. */
static int compare_common(struct cmp *c, uint64_t end)
{
	uint64_t off = 0;
	int ret;

	while (off < end) {
		struct side *v[2] = { &c->a, &c->b };
		uint64_t chunk;
		int64_t bad = -1;
		int n = 0;

		if ((ret = side_status(&c->a, off, end)) < 0 ||
		    (ret = side_status(&c->b, off, end)) < 0)
			return ret;
		chunk = (c->a.st_end < c->b.st_end ? c->a.st_end : c->b.st_end) - off;
		if (c->strict && (c->a.st.present != c->b.st.present ||
				  c->a.st.zero != c->b.st.zero ||
				  c->a.st.data != c->b.st.data)) {
			if (!c->quiet)
				printf("Strict mode: Offset %" PRIu64
				       " block status mismatch!\n", off);
			return EXIT_DIFF;
		}
		if (c->a.st.zero && c->b.st.zero) {
			/* both read as zeros */
		} else if (c->a.st.present == c->b.st.present) {
			if (c->a.st.present)
				n = 2;
		} else {
			/* Only one allocates it: the other reads zeros there. */
			v[0] = c->a.st.present ? &c->a : &c->b;
			n = 1;
		}
		if (n) {
			if (chunk > CMP_BUF)
				chunk = CMP_BUF;
			ret = read_sides(v, n, off, (size_t)chunk);
			if (ret < 0)
				return ret;
			bad = find_mismatch(v[0]->buf, n == 2 ? v[1]->buf : NULL,
					    (size_t)chunk, off);
		}
		if (bad >= 0) {
			if (!c->quiet)
				printf("Content mismatch at offset %" PRId64 "!\n", bad);
			return EXIT_DIFF;
		}
		off += chunk;
		cli_progress_add(&c->prog, chunk);
	}
	return EXIT_SAME;
}

/* The part of the larger image past the smaller one must read as zeros. */
static int compare_tail(struct cmp *c, struct side *s, uint64_t off)
{
	struct side *v[1] = { s };
	int ret;

	while (off < s->size) {
		uint64_t chunk;

		if ((ret = side_status(s, off, s->size)) < 0)
			return ret;
		chunk = s->st_end - off;
		if (s->st.present && !s->st.zero) {
			int64_t bad;

			if (chunk > CMP_BUF)
				chunk = CMP_BUF;
			ret = read_sides(v, 1, off, (size_t)chunk);
			if (ret < 0)
				return ret;
			bad = find_mismatch(s->buf, NULL, (size_t)chunk, off);
			if (bad >= 0) {
				if (!c->quiet)
					printf("Content mismatch at offset %" PRId64
					       "!\n", bad);
				return EXIT_DIFF;
			}
		}
		off += chunk;
		cli_progress_add(&c->prog, chunk);
	}
	return EXIT_SAME;
}

static int open_side(struct side *s, const char *path, struct cli_open *o,
		     const char *snapshot)
{
	int ret;

	s->name = path;
	if (cli_open_image(path, o, 0, &s->img) < 0)
		return -EINVAL;
	if (snapshot && cli_snapshot_select(s->img, snapshot) < 0)
		return -ENOENT;
	ret = cli_image_size(s->img, path, &s->size);
	if (ret < 0)
		return ret;
	/* Page-aligned so either image may use O_DIRECT. */
	if (posix_memalign((void **)&s->buf, 4096, CMP_BUF)) {
		s->buf = NULL;
		cli_error("out of memory");
		return -ENOMEM;
	}
	return 0;
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open oa = *defaults, ob = *defaults;
	struct cmp c;
	bool progress = false;
	uint64_t common, total;
	const char *snap_a = NULL, *snap_b = NULL;
	int ch, ret;

	memset(&c, 0, sizeof(c));
	while ((ch = getopt_long(argc, argv, ":hf:F:T:t:pqsl:L:U", longopts,
				 NULL)) != -1) {
		int r = cli_open_option(&oa, ch, optarg);

		if (r < 0 || (r > 0 && cli_open_option(&ob, ch, optarg) < 0))
			return EXIT_ERROR;
		if (r > 0)
			continue;
		switch (ch) {
		case 'h':
			cli_usage(&cmd_compare, stdout);
			return EXIT_SAME;
		case 'f':
			if (cli_set_format(&oa.format, optarg))
				return EXIT_ERROR;
			break;
		case 'F':
			if (cli_set_format(&ob.format, optarg))
				return EXIT_ERROR;
			break;
		case 'T':
		case 't':
			if (cli_set_cache(&oa, optarg) || cli_set_cache(&ob, optarg))
				return EXIT_ERROR;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			c.quiet = true;
			break;
		case 's':
			c.strict = true;
			break;
		case 'l':
			snap_a = optarg;
			break;
		case 'L':
			snap_b = optarg;
			break;
		default:
			cli_opt_error(&cmd_compare, ch, argv);
			return EXIT_ERROR;
		}
	}
	if (argc - optind != 2) {
		cli_bad_usage(&cmd_compare, "expecting two image file names");
		return EXIT_ERROR;
	}
	if ((ret = open_side(&c.a, argv[optind], &oa, snap_a)) < 0 ||
	    (ret = open_side(&c.b, argv[optind + 1], &ob, snap_b)) < 0)
		goto out;
	if (c.strict && c.a.size != c.b.size) {
		if (!c.quiet)
			printf("Strict mode: Image size mismatch!\n");
		ret = EXIT_DIFF;
		goto out;
	}
	common = c.a.size < c.b.size ? c.a.size : c.b.size;
	total = c.a.size > c.b.size ? c.a.size : c.b.size;
	cli_progress_start(&c.prog, progress && !c.quiet, total);
	ret = compare_common(&c, common);
	if (ret == EXIT_SAME && c.a.size != c.b.size) {
		if (!c.quiet)
			printf("Warning: Image size mismatch!\n");
		ret = compare_tail(&c, c.a.size > c.b.size ? &c.a : &c.b, common);
	}
	if (ret >= 0)
		cli_progress_end(&c.prog);
	if (ret == EXIT_SAME && !c.quiet)
		printf("Images are identical.\n");
out:
	free(c.a.buf);
	free(c.b.buf);
	if (c.a.img)
		uq_close(c.a.img);
	if (c.b.img)
		uq_close(c.b.img);
	return ret < 0 ? EXIT_ERROR : ret;
}

const struct cli_verb cmd_compare = {
	.name = "compare",
	.summary = "compare two images' contents (qemu-img compare)",
	.run = run,
	.synopsis = "compare [-f FMT] [-F FMT] [-T CACHE] [-p] [-q] [-s] "
		    "[-l SNAPSHOT] [-L SNAPSHOT] [-U] A B",
	.help =
	"  -f FMT         format of A: qcow2 or raw (default: probe)\n"
	"  -F FMT         format of B (default: probe)\n"
	"  -T, -t MODE    cache for both: none (O_DIRECT) or writeback\n"
	"  -p             show progress on stderr\n"
	"  -q             quiet: only the exit status\n"
	"  -s             strict: sizes and allocation must match too\n"
	"  -l SNAPSHOT    compare internal snapshot SNAPSHOT of A (name or ID,\n"
	"                 or snapshot.id=ID[,snapshot.name=NAME])\n"
	"  -L SNAPSHOT    the same for B\n"
	"  -U, --force-share\n"
	"                 open both without the image locks that keep out\n"
	"                 writers (qemu-img -U): they may change as they are read\n"
	"\nWithout -s, images of different sizes are identical when the larger\n"
	"one reads as zeros past the end of the smaller.\n"
	"Exit status: 0 identical, 1 different, 2 error.\n",
};
