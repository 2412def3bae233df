/* SPDX-License-Identifier: MIT */
/* uqcow convert: copy an image's guest contents to a new raw file or qcow2
 * image, reads and writes in flight together; sparse: zeros aren't written. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert.h"

/* Output formats by -O name. */
static const struct target_ops *const targets[] = {
	&conv_raw_target,
	&conv_qcow2_target,
};

/* ---- copy loop ---- */

/* Write buf skipping all-zero grain blocks (aligned to the guest offset),
 * so converting a zero-filled but allocated image stays sparse. */
static int write_sparse(struct conv *c, struct slot *s)
{
	const uint8_t *buf = s->buf;
	size_t i = 0, len = s->len, grain = c->grain;
	uint64_t off = s->off;

	if (!c->sparse)
		return c->out->write(c, s, buf, len, off);
	while (i < len) {
		size_t start, g = grain - (size_t)((off + i) % grain);
		int ret;

		if (g > len - i)
			g = len - i;
		if (cli_is_zero(buf + i, g)) {
			i += g;
			continue;
		}
		start = i;
		for (i += g; i < len; i += g) {
			g = len - i < grain ? len - i : grain;
			if (cli_is_zero(buf + i, g))
				break;
		}
		ret = c->out->write(c, s, buf + start, i - start, off + start);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Block status of the source at off, cached per extent. */
static int status_at(struct conv *c, uint64_t off)
{
	struct uq_extent e;
	int ret;

	if (off >= c->st_start && off < c->st_end)
		return 0;
	e.struct_size = sizeof(e);
	ret = uq_block_status(c->img, off, c->size - off, &e);
	if (ret < 0) {
		cli_error_uq(ret, c->src);
		return ret;
	}
	if (e.length == 0 || e.length > c->size - off) {
		cli_error("%s: block status at offset %" PRIu64 " returned a bad "
			  "extent", c->src, off);
		return -EIO;
	}
	c->st_start = off;
	c->st_end = off + e.length;
	/* Where the output can't have holes, zeros must be read and written. */
	c->st_zero = c->sparse && e.zero;
	return 0;
}

/* Does the source read as zeros over all of [off, end)? */
static int range_zero(struct conv *c, uint64_t off, uint64_t end, bool *zero)
{
	int ret;

	for (*zero = true; off < end; off = c->st_end) {
		if ((ret = status_at(c, off)) < 0)
			return ret;
		if (!c->st_zero) {
			*zero = false;
			break;
		}
	}
	return 0;
}

static uint64_t unit_end(const struct conv *c, uint64_t off)
{
	uint64_t end = off - off % c->align + c->align;

	return end < c->size ? end : c->size;
}

/* The next range to read: up to bufsize bytes from pos, in whole align
 * units (the last one may end at the image end), leaving out units that
 * read as zeros (the output already does there). *len = 0 at the end. */
static int next_range(struct conv *c, uint64_t *off, size_t *len)
{
	uint64_t start, limit;
	bool zero;
	int ret;

	*len = 0;
	while (c->pos < c->size) {
		if ((ret = status_at(c, c->pos)) < 0)
			return ret;
		if (c->st_zero) {
			/* skip the whole units inside the zero extent at once */
			uint64_t e = c->st_end == c->size ? c->size :
				     c->st_end - c->st_end % c->align;

			if (e > c->pos) {
				cli_progress_add(&c->prog, e - c->pos);
				c->pos = e;
				continue;
			}
		}
		if ((ret = range_zero(c, c->pos, unit_end(c, c->pos), &zero)) < 0)
			return ret;
		if (!zero)
			break;
		cli_progress_add(&c->prog, unit_end(c, c->pos) - c->pos);
		c->pos = unit_end(c, c->pos);
	}
	if (c->pos >= c->size)
		return 0;
	start = c->pos;
	limit = c->size - start < c->bufsize ? c->size : start + c->bufsize;
	while (c->pos < limit) {
		uint64_t end;

		if ((ret = status_at(c, c->pos)) < 0)
			return ret;
		if (!c->st_zero) {
			/* data: up to the unit boundary after the extent's end */
			end = c->st_end == c->size ? c->size :
			      unit_end(c, c->st_end - 1);
			c->pos = end < limit ? end : limit;
			continue;
		}
		end = unit_end(c, c->pos);
		if ((ret = range_zero(c, c->pos, end, &zero)) < 0)
			return ret;
		if (zero)
			break;
		c->pos = end;
	}
	*off = start;
	*len = (size_t)(c->pos - start);
	return 0;
}

static void read_done(void *arg, ssize_t res)
{
	struct slot *s = arg;

	s->res = res;
	s->read_done = true;
}

void conv_write_done(struct slot *s, ssize_t res)
{
	struct conv *c = s->c;

	s->writes--;
	c->writes--;
	if (res < 0 && !c->write_err) {
		c->write_err = (int)res;
		c->write_err_off = s->off;
	}
}

/* The read into s finished: check it, then write the buffer out. */
static int read_finished(struct conv *c, struct slot *s)
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
	return write_sparse(c, s);
}

static int start_read(struct conv *c, struct slot *s, bool *more)
{
	uint64_t off;
	size_t len;
	int ret = next_range(c, &off, &len);

	if (ret < 0)
		return ret;
	if (!len) {
		*more = false;
		return 0;
	}
	s->off = off;
	s->len = len;
	s->read_done = false;
	ret = uq_aio_read(c->img, s->buf, len, off, read_done, s);
	if (ret < 0) {
		cli_error_uq(ret, c->src);
		return ret;
	}
	s->state = SLOT_READ;
	c->busy++;
	c->reads++;
	return 0;
}

/* Reap completions: queued writes without waiting, then reads, waiting
 * for one only if nothing else finished; writes alone are waited for
 * when no read is in flight. */
static int reap(struct conv *c)
{
	int n = 0, r;

	if (c->writes && c->out->poll && (n = c->out->poll(c, false)) < 0)
		return n;
	if (c->reads) {
		r = uq_poll(c->img, n ? 0 : 1);
		if (r < 0) {
			cli_error_uq(r, c->src);
			return r;
		}
	} else if (!n && c->writes && c->out->poll) {
		r = c->out->poll(c, true);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Keep nslots buffers busy: read, then write each as its read completes
 * (order doesn't matter for positioned writes). On error stop starting
 * reads but reap what is in flight before the buffers can be freed. */
static int copy(struct conv *c)
{
	bool more = true;
	int err = 0, ret;

	while (c->busy || (more && !err)) {
		for (unsigned i = 0; i < c->nslots && more && !err; i++)
			if (c->slots[i].state == SLOT_FREE &&
			    (ret = start_read(c, &c->slots[i], &more)) < 0)
				err = ret;
		if (!c->busy)
			break;
		/* Requests may still be in flight after a failed poll: the
		 * caller must not free their buffers, so return at once. */
		if ((ret = reap(c)) < 0)
			return ret;
		for (unsigned i = 0; i < c->nslots; i++) {
			struct slot *s = &c->slots[i];

			if (s->state == SLOT_READ && s->read_done) {
				c->reads--;
				s->state = SLOT_WRITE;
				if (!err && (ret = read_finished(c, s)) < 0)
					err = ret;
			}
			if (s->state == SLOT_WRITE && !s->writes) {
				s->state = SLOT_FREE;
				c->busy--;
			}
		}
		if (c->write_err && !err) {
			char what[64];

			snprintf(what, sizeof(what), "%s: write at offset %" PRIu64,
				 c->dst, c->write_err_off);
			cli_error_uq(c->write_err, what);
			err = c->write_err;
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

/* -O and -o: the target, its options (qcow2) and -c. Prints why it
 * refuses; -o help is answered here (*help set). */
static int pick_target(struct conv *c, const char *fmt, char **optv, int noptv,
		       bool *help)
{
	c->out = NULL;
	for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]); t++)
		if (!strcmp(targets[t]->format, fmt))
			c->out = targets[t];
	if (!c->out) {
		cli_error("unknown output format '%s' (raw or qcow2)", fmt);
		return -EINVAL;
	}
	if (c->out == &conv_raw_target) {
		if (c->compress) {
			cli_error("Compression not supported for this file format (raw)");
			return -EINVAL;
		}
		if (noptv) {
			cli_error("output format raw takes no -o options (got '%s')",
				  optv[0]);
			return -EINVAL;
		}
		return 0;
	}
	for (int i = 0; i < noptv; i++)
		if (imgopts_parse(&c->opts, optv[i], c->dst ? c->dst : fmt) < 0)
			return -EINVAL;
	if (c->opts.help) {
		imgopts_help(fmt, "Supported");
		*help = true;
		return 0;
	}
	if (imgopts_has(&c->opts, IMGOPT_BACKING_FILE) ||
	    imgopts_has(&c->opts, IMGOPT_BACKING_FMT)) {
		cli_error("convert: backing_file/backing_fmt are not supported; the "
			  "output holds all of the source's contents");
		return -ENOTSUP;
	}
	return 0;
}

static int open_source(struct conv *c, const struct cli_open *o,
		       const char *snapshot)
{
	if (cli_open_image(c->src, o, 0, &c->img) < 0)
		return -EINVAL;
	if (snapshot && cli_snapshot_select(c->img, snapshot) < 0)
		return -ENOENT;
	return cli_image_size(c->img, c->src, &c->size);
}

static int alloc_buffers(struct conv *c)
{
	for (unsigned i = 0; i < c->nslots; i++) {
		c->slots[i].c = c;
		/* Page-aligned for O_DIRECT; 512 more for a -c tail. */
		if (posix_memalign((void **)&c->slots[i].buf, 4096, c->bufsize + 512)) {
			cli_error("out of memory");
			return -ENOMEM;
		}
	}
	return 0;
}

static int run(int argc, char **argv, const struct cli_open *defaults)
{
	static const struct option longopts[] = {
		CLI_OPEN_LONGOPTS,
		{ NULL, 0, NULL, 0 },
	};
	struct cli_open o = *defaults;
	const char *out_fmt = "raw", *snapshot = NULL;
	struct conv c = { .fd = -1, .nslots = CONV_DEPTH };
	bool progress = false, quiet = false, leak = false, sync = true;
	bool help = false;
	char **optv = calloc((size_t)argc + 1, sizeof(*optv));
	int noptv = 0, ch, ret = -EINVAL;

	if (!optv) {
		cli_error("out of memory");
		return CLI_EXIT_FAIL;
	}
	imgopts_init(&c.opts, "qcow2");
	c.dst_open = *defaults;
	/* -U is the source's: the target is written */
	c.dst_open.flags &= ~(UQ_OPEN_DIRECT | UQ_OPEN_FORCE_SHARE);
	while ((ch = getopt_long(argc, argv, ":hf:O:o:pqt:T:l:s:cm:WnU", longopts,
				 NULL)) != -1) {
		int r = cli_open_option(&o, ch, optarg);

		if (r < 0)
			goto out;
		if (r > 0)
			continue;
		switch (ch) {
		case 'h':
			cli_usage(&cmd_convert, stdout);
			ret = 0;
			goto out;
		case 'f':
			if (cli_set_format(&o.format, optarg))
				goto out;
			break;
		case 'O':
			out_fmt = optarg;
			break;
		case 'o':
			optv[noptv++] = optarg;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'T':
			if (cli_set_cache(&o, optarg))
				goto out;
			break;
		case 't':
			/* target cache: none opens qcow2 output with O_DIRECT,
			 * unsafe skips the final flush */
			if (cli_set_cache(&c.dst_open, optarg))
				goto out;
			sync = strcmp(optarg, "unsafe") != 0;
			break;
		case 'l':
		case 's':       /* qemu-img's older spelling of -l NAME_OR_ID */
			snapshot = optarg;
			break;
		case 'c':
			c.compress = true;
			break;
		case 'n':
			cli_error("-n (use an existing target) is not supported");
			goto out;
		case 'm': {
			uint64_t n;

			if (cli_parse_size(optarg, &n) || n < 1 || n > CONV_MAX_DEPTH) {
				cli_error("-m takes a number of requests from 1 to %d",
					  CONV_MAX_DEPTH);
				goto out;
			}
			c.nslots = (unsigned)n;
			break;
		}
		case 'W':
			break;  /* writes are always out of order here */
		default:
			free(optv);
			imgopts_free(&c.opts);
			return cli_opt_error(&cmd_convert, ch, argv);
		}
	}
	if (argc - optind == 2) {
		c.src = argv[optind];
		c.dst = argv[optind + 1];
	}
	if ((ret = pick_target(&c, out_fmt, optv, noptv, &help)) < 0 || help)
		goto out;
	if (argc - optind != 2) {
		free(optv);
		imgopts_free(&c.opts);
		return cli_bad_usage(&cmd_convert, "expecting SRC and DST");
	}
	if (same_file(c.src, c.dst)) {
		cli_error("%s: source and target are the same file", c.dst);
		ret = -EINVAL;
		goto out;
	}
	if ((ret = open_source(&c, &o, snapshot)) < 0 ||
	    (ret = c.out->create(&c)) < 0 || (ret = alloc_buffers(&c)) < 0)
		goto out;
	cli_progress_start(&c.prog, progress && !quiet, c.size);
	ret = copy(&c);
	if (ret < 0 && c.busy)
		leak = true;   /* buffers may still be targets of reads or writes */
	if (!ret)
		cli_progress_end(&c.prog);
out:
	if (c.out && !leak) {
		int r = c.out->close(&c, sync && ret >= 0);

		if (!ret)
			ret = r;
	}
	if (!leak)
		for (unsigned i = 0; i < c.nslots; i++)
			free(c.slots[i].buf);
	if (c.img && !leak)
		uq_close(c.img);
	imgopts_free(&c.opts);
	free(optv);
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_verb cmd_convert = {
	.name = "convert",
	.summary = "copy an image's contents to a new raw or qcow2 image "
		   "(qemu-img convert)",
	.run = run,
	.synopsis = "convert [-f FMT] [-O raw|qcow2] [-o OPTIONS] [-c] [-p] [-q] "
		    "[-T SRC_CACHE] [-t DST_CACHE] [-m N] [-l SNAPSHOT] [-U] SRC DST",
	.help =
	"  -f FMT         source format: qcow2 or raw (default: probe)\n"
	"  -O FMT         output format: raw (default) or qcow2\n"
	"  -o OPTIONS     qcow2 creation options, as for create (-o help lists\n"
	"                 them); the size is the source's\n"
	"  -c             qcow2: write compressed clusters\n"
	"  -p             show progress on stderr\n"
	"  -q             quiet (no progress)\n"
	"  -T MODE        source cache: none (O_DIRECT) or writeback (default)\n"
	"  -t MODE        target cache: none (qcow2: O_DIRECT), unsafe skips the\n"
	"                 final flush\n"
	"  -m N           buffers in flight, 1 to 64 (default 16)\n"
	"  -W             accepted: writes are always out of order\n"
	"  -U, --force-share\n"
	"                 open the source without the image locks that keep\n"
	"                 out writers (qemu-img -U): it may change as it is read\n"
	"  -l SNAPSHOT    copy a snapshot's contents: a name or ID, or\n"
	"                 snapshot.id=ID[,snapshot.name=NAME]; the output has\n"
	"                 the snapshot's own disk size (qemu-img: the current)\n"
	"  --io=io_uring|psync, --l2-cache-size=SIZE, --cache=none (source)\n"
	"\nThe output is sparse: ranges the source reports as zero and all-zero\n"
	"blocks (4 KiB for raw, a cluster for qcow2) are not written. qcow2\n"
	"output is written in whole clusters, several requests in flight.\n",
};
