/* SPDX-License-Identifier: MIT */
/* uqcow convert: copy an image's guest contents to a new file, reading
 * through the async API with many requests in flight; raw output is sparse. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define CONV_BUF     (1u << 20)  /* bytes per read request */
#define CONV_DEPTH   16          /* requests in flight by default */
#define CONV_MAX_DEPTH 64
#define SPARSE_GRAIN 4096        /* qemu-img convert's default -S 4k */

struct conv;

/* An output format. Raw is the only one until the write path lands; qcow2
 * output will create with uq_create and write with uq_aio_write here. */
struct target_ops {
	const char *format;
	int (*create)(struct conv *c, const char *path, const char *opts);
	int (*write)(struct conv *c, const void *buf, size_t len, uint64_t off);
	int (*close)(struct conv *c, bool sync);
};

struct slot {
	uint8_t *buf;
	uint64_t off;
	size_t len;
	ssize_t res;
	bool busy, done;
};

struct conv {
	uq_image *img;
	const char *src, *dst;
	uint64_t size, pos;
	uint64_t st_end;      /* block status known for [pos, st_end) */
	bool st_zero;
	bool sparse;          /* output can have holes: skip zero ranges */
	int fd;               /* raw output */
	const struct target_ops *out;
	struct slot slots[CONV_MAX_DEPTH];
	unsigned nslots, inflight;
	struct cli_progress prog;
};

/* ---- raw output ---- */

static int raw_create(struct conv *c, const char *path, const char *opts)
{
	struct stat st;

	if (opts && *opts) {
		cli_error("output format raw takes no -o options (got '%s')", opts);
		return -EINVAL;
	}
	c->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (c->fd < 0) {
		int err = -errno;

		cli_error("%s: cannot create: %s", path, strerror(-err));
		return err;
	}
	if (fstat(c->fd, &st) < 0) {
		int err = -errno;

		cli_error("%s: %s", path, strerror(-err));
		return err;
	}
	/* A regular file can hold holes: size it, then write only data. A
	 * device can't promise zeros where we skip, so it gets every byte. */
	c->sparse = S_ISREG(st.st_mode);
	if (c->sparse && ftruncate(c->fd, (off_t)c->size) < 0) {
		int err = -errno;

		cli_error("%s: cannot set size to %" PRIu64 ": %s", path, c->size,
			  strerror(-err));
		return err;
	}
	return 0;
}

static int raw_write(struct conv *c, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(c->fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;

			cli_error("%s: write at offset %" PRIu64 ": %s", c->dst, off,
				  strerror(-err));
			return err;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int raw_close(struct conv *c, bool sync)
{
	int ret = 0;

	if (c->fd < 0)
		return 0;
	/* EINVAL: a special file (/dev/null) that has nothing to sync. */
	if (sync && fsync(c->fd) < 0 && errno != EINVAL) {
		ret = -errno;
		cli_error("%s: flush: %s", c->dst, strerror(-ret));
	}
	if (close(c->fd) < 0 && !ret) {
		ret = -errno;
		cli_error("%s: close: %s", c->dst, strerror(-ret));
	}
	c->fd = -1;
	return ret;
}

static const struct target_ops raw_target = {
	.format = "raw",
	.create = raw_create,
	.write = raw_write,
	.close = raw_close,
};

/* Output formats by -O name; NULL entries are known but not writable yet. */
static const struct {
	const char *name;
	const struct target_ops *ops;
	const char *missing;
} targets[] = {
	{ "raw", &raw_target, NULL },
	{ "qcow2", NULL, "output format qcow2 needs the write path" },
};

/* ---- copy loop ---- */

/* Write buf skipping all-zero SPARSE_GRAIN blocks (aligned to the guest
 * offset), so converting a zero-filled but allocated image stays sparse. */
static int write_sparse(struct conv *c, const uint8_t *buf, size_t len,
			uint64_t off)
{
	size_t i = 0;

	if (!c->sparse)
		return c->out->write(c, buf, len, off);
	while (i < len) {
		size_t start, g = SPARSE_GRAIN - (size_t)((off + i) % SPARSE_GRAIN);
		int ret;

		if (g > len - i)
			g = len - i;
		if (cli_is_zero(buf + i, g)) {
			i += g;
			continue;
		}
		start = i;
		for (i += g; i < len; i += g) {
			g = len - i < SPARSE_GRAIN ? len - i : SPARSE_GRAIN;
			if (cli_is_zero(buf + i, g))
				break;
		}
		ret = c->out->write(c, buf + start, i - start, off + start);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int refresh_status(struct conv *c)
{
	struct uq_extent e;
	int ret = uq_block_status(c->img, c->pos, c->size - c->pos, &e);

	if (ret < 0) {
		cli_error_uq(ret, c->src);
		return ret;
	}
	if (e.length == 0 || e.length > c->size - c->pos) {
		cli_error("%s: block status at offset %" PRIu64 " returned a bad "
			  "extent", c->src, c->pos);
		return -EIO;
	}
	c->st_end = c->pos + e.length;
	/* Where the output can't have holes, zeros must be read and written. */
	c->st_zero = c->sparse && e.zero;
	return 0;
}

/* The next range to read: up to CONV_BUF bytes from pos over extents that
 * aren't known zeros; zero extents are skipped (the output already reads
 * zeros there). *len = 0 at the end. */
static int next_range(struct conv *c, uint64_t *off, size_t *len)
{
	uint64_t start, limit;
	int ret;

	*len = 0;
	while (c->pos < c->size) {
		if (c->pos >= c->st_end && (ret = refresh_status(c)) < 0)
			return ret;
		if (!c->st_zero)
			break;
		cli_progress_add(&c->prog, c->st_end - c->pos);
		c->pos = c->st_end;
	}
	if (c->pos >= c->size)
		return 0;
	start = c->pos;
	limit = c->size - start < CONV_BUF ? c->size : start + CONV_BUF;
	while (c->pos < limit) {
		if (c->pos >= c->st_end && (ret = refresh_status(c)) < 0)
			return ret;
		if (c->st_zero)
			break;
		c->pos = c->st_end < limit ? c->st_end : limit;
	}
	*off = start;
	*len = (size_t)(c->pos - start);
	return 0;
}

static void read_done(void *arg, ssize_t res)
{
	struct slot *s = arg;

	s->res = res;
	s->done = true;
}

static int finish_slot(struct conv *c, struct slot *s)
{
	if (s->res < 0) {
		char what[64 + 4096];

		snprintf(what, sizeof(what), "%s: read at offset %" PRIu64, c->src,
			 s->off);
		cli_error_uq((int)s->res, what);
		return (int)s->res;
	}
	if ((size_t)s->res != s->len) {
		cli_error("%s: short read at offset %" PRIu64 " (%zd of %zu bytes)",
			  c->src, s->off, s->res, s->len);
		return -EIO;
	}
	cli_progress_add(&c->prog, s->len);
	return write_sparse(c, s->buf, s->len, s->off);
}

/* Keep nslots reads in flight; write each buffer as it completes (order
 * doesn't matter for a positioned write). On error stop submitting but
 * reap what is in flight before the buffers can be freed. */
static int copy(struct conv *c)
{
	bool more = true;
	int err = 0;

	while (c->inflight || (more && !err)) {
		for (unsigned i = 0; i < c->nslots && more && !err; i++) {
			struct slot *s = &c->slots[i];
			uint64_t off;
			size_t len;
			int ret;

			if (s->busy)
				continue;
			ret = next_range(c, &off, &len);
			if (ret < 0) {
				err = ret;
				break;
			}
			if (!len) {
				more = false;
				break;
			}
			s->off = off;
			s->len = len;
			s->done = false;
			ret = uq_aio_read(c->img, s->buf, len, off, read_done, s);
			if (ret < 0) {
				cli_error_uq(ret, c->src);
				err = ret;
				break;
			}
			s->busy = true;
			c->inflight++;
		}
		if (!c->inflight)
			break;
		int n = uq_poll(c->img, 1);

		if (n < 0) {
			/* Requests may still be in flight; the caller must not free
			 * their buffers, so report and let the process exit. */
			cli_error_uq(n, c->src);
			return n;
		}
		for (unsigned i = 0; i < c->nslots; i++) {
			struct slot *s = &c->slots[i];

			if (!s->busy || !s->done)
				continue;
			s->busy = false;
			c->inflight--;
			if (!err) {
				int ret = finish_slot(c, s);

				if (ret < 0)
					err = ret;
			}
		}
	}
	return err;
}

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	const char *out_fmt = "raw", *out_opts = NULL, *dst_cache = "writeback";
	struct conv c = { .fd = -1, .nslots = CONV_DEPTH };
	bool progress = false, quiet = false, leak = false;
	const char *snapshot = NULL;
	struct uq_info *in = NULL;
	size_t t;
	int ch, ret;

	while ((ch = getopt_long(argc, argv, ":hf:O:o:pqt:T:l:s:cm:WnU", longopts,
				 NULL)) != -1) {
		int r = cli_open_option(&o, ch, optarg);

		if (r < 0)
			return CLI_EXIT_FAIL;
		if (r > 0)
			continue;
		switch (ch) {
		case 'h':
			cli_usage(&cmd_convert, stdout);
			return CLI_EXIT_OK;
		case 'f':
			if (cli_set_format(&o.format, optarg))
				return CLI_EXIT_FAIL;
			break;
		case 'O':
			out_fmt = optarg;
			break;
		case 'o':
			out_opts = optarg;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'T':
			if (cli_set_cache(&o, optarg))
				return CLI_EXIT_FAIL;
			break;
		case 't': {
			/* Target cache: only whether to flush at the end matters
			 * for a raw file written with pwrite. */
			struct cli_open tmp = o;

			if (cli_set_cache(&tmp, optarg))
				return CLI_EXIT_FAIL;
			dst_cache = optarg;
			break;
		}
		case 'l':
		case 's':       /* qemu-img's older spelling of -l NAME_OR_ID */
			snapshot = optarg;
			break;
		case 'c':
			cli_error("compressed output (-c) needs output format qcow2, "
				  "which needs the write path");
			return CLI_EXIT_FAIL;
		case 'n':
			cli_error("-n (use an existing target) is not supported");
			return CLI_EXIT_FAIL;
		case 'm': {
			uint64_t n;

			if (cli_parse_size(optarg, &n) || n < 1 || n > CONV_MAX_DEPTH) {
				cli_error("-m takes a number of requests from 1 to %d",
					  CONV_MAX_DEPTH);
				return CLI_EXIT_FAIL;
			}
			c.nslots = (unsigned)n;
			break;
		}
		case 'W':
			break;  /* writes are always out of order here */
		default:
			return cli_opt_error(&cmd_convert, ch, argv);
		}
	}
	if (argc - optind != 2)
		return cli_bad_usage(&cmd_convert, "expecting SRC and DST");
	c.src = argv[optind];
	c.dst = argv[optind + 1];
	for (t = 0; t < sizeof(targets) / sizeof(targets[0]); t++)
		if (!strcmp(targets[t].name, out_fmt))
			break;
	if (t == sizeof(targets) / sizeof(targets[0])) {
		cli_error("unknown output format '%s' (raw or qcow2)", out_fmt);
		return CLI_EXIT_FAIL;
	}
	if (!targets[t].ops) {
		cli_error("%s", targets[t].missing);
		return CLI_EXIT_FAIL;
	}
	c.out = targets[t].ops;
	if (same_file(c.src, c.dst)) {
		cli_error("%s: source and target are the same file", c.dst);
		return CLI_EXIT_FAIL;
	}

	if (cli_open_image(c.src, &o, 0, &c.img) < 0)
		return CLI_EXIT_FAIL;
	if (snapshot && cli_snapshot_select(c.img, snapshot) < 0) {
		ret = -ENOENT;
		goto out;
	}
	in = malloc(sizeof(*in));
	if (!in) {
		cli_error("out of memory");
		ret = -ENOMEM;
		goto out;
	}
	ret = uq_get_info(c.img, in);
	if (ret < 0) {
		cli_error_uq(ret, c.src);
		goto out;
	}
	c.size = in->virtual_size;
	for (unsigned i = 0; i < c.nslots; i++) {
		/* Page-aligned so the source may use O_DIRECT (-T none). */
		if (posix_memalign((void **)&c.slots[i].buf, 4096, CONV_BUF)) {
			cli_error("out of memory");
			ret = -ENOMEM;
			goto out;
		}
	}
	ret = c.out->create(&c, c.dst, out_opts);
	if (ret < 0)
		goto out;
	cli_progress_start(&c.prog, progress && !quiet, c.size);
	ret = copy(&c);
	if (ret < 0 && c.inflight)
		leak = true;   /* buffers may still be targets of reads */
	if (!ret)
		cli_progress_end(&c.prog);
	{
		int r = c.out->close(&c, strcmp(dst_cache, "unsafe") != 0);

		if (!ret)
			ret = r;
	}
out:
	if (c.fd >= 0)
		close(c.fd);
	if (!leak)
		for (unsigned i = 0; i < c.nslots; i++)
			free(c.slots[i].buf);
	free(in);
	if (c.img && !leak)
		uq_close(c.img);
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_convert = {
	.name = "convert",
	.summary = "copy an image's contents to a new file (qemu-img convert)",
	.run = run,
	.synopsis = "convert [-f FMT] [-O raw] [-p] [-q] [-T SRC_CACHE] "
		    "[-t DST_CACHE] [-m N] [-l SNAPSHOT] SRC DST",
	.help =
	"  -f FMT         source format: qcow2 or raw (default: probe)\n"
	"  -O FMT         output format: raw (default); qcow2 needs the write path\n"
	"  -p             show progress on stderr\n"
	"  -q             quiet (no progress)\n"
	"  -T MODE        source cache: none (O_DIRECT) or writeback (default)\n"
	"  -t MODE        target cache: unsafe skips the final flush\n"
	"  -m N           read requests in flight, 1 to 64 (default 16)\n"
	"  -W             accepted: writes are always out of order\n"
	"  -l SNAPSHOT    copy a snapshot's contents: a name or ID, or\n"
	"                 snapshot.id=ID[,snapshot.name=NAME]; the output has\n"
	"                 the snapshot's own disk size (qemu-img: the current)\n"
	"  --io=io_uring|psync, --l2-cache-size=SIZE, --cache=none (source)\n"
	"\nRaw output is sparse: ranges the source reports as zero and all-zero\n"
	"4 KiB blocks are not written.\n",
};
