/* SPDX-License-Identifier: MIT */
/* uqcow convert's outputs: a raw file written with pwrite, or a new qcow2
 * image (uq_create with the -o options) written through uq_aio_write. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert.h"

/* ---- raw ---- */

static int raw_create(struct conv *c)
{
	struct stat st;

	int ret;

	/* no O_TRUNC: the file may be an image someone uses; the locks say */
	c->fd = open(c->dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (c->fd < 0) {
		int err = -errno;

		cli_error("%s: cannot create: %s", c->dst, strerror(-err));
		return err;
	}
	ret = cli_lock_output(c->dst, &c->out_img);
	if (ret < 0)
		return ret;
	if (fstat(c->fd, &st) < 0) {
		int err = -errno;

		cli_error("%s: %s", c->dst, strerror(-err));
		return err;
	}
	if (S_ISREG(st.st_mode) && st.st_size && ftruncate(c->fd, 0) < 0) {
		int err = -errno;

		cli_error("%s: cannot truncate: %s", c->dst, strerror(-err));
		return err;
	}
	/* A regular file can hold holes: size it, then write only data. A
	 * device can't promise zeros where we skip, so it gets every byte. */
	c->sparse = S_ISREG(st.st_mode);
	c->align = 1;
	c->grain = SPARSE_GRAIN;
	c->bufsize = CONV_BUF;
	if (c->sparse && ftruncate(c->fd, (off_t)c->size) < 0) {
		int err = -errno;

		cli_error("%s: cannot set size to %" PRIu64 ": %s", c->dst, c->size,
			  strerror(-err));
		return err;
	}
	return 0;
}

static int raw_write(struct conv *c, struct slot *s, const uint8_t *buf,
		     size_t len, uint64_t off)
{
	(void)s;
	while (len) {
		ssize_t n = pwrite(c->fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;

			cli_error("%s: write at offset %" PRIu64 ": %s", c->dst, off,
				  strerror(-err));
			return err;
		}
		buf += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int raw_close(struct conv *c, bool sync)
{
	int ret = 0;

	if (c->out_img) {
		uq_close(c->out_img);   /* its locks; our fd did the writing */
		c->out_img = NULL;
	}
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

const struct target_ops conv_raw_target = {
	.format = "raw",
	.create = raw_create,
	.write = raw_write,
	.close = raw_close,
};

/* ---- qcow2 ---- */

static int qcow2_create(struct conv *c)
{
	struct uq_create_opts co = { .struct_size = sizeof(co) };
	struct uq_info *in;
	int ret;

	if (c->size > UINT64_MAX - 511) {
		cli_error("%s: source size %" PRIu64 " is too large", c->src, c->size);
		return -EFBIG;
	}
	/* the source's size, in whole sectors as qemu-img creates them */
	c->out_size = (c->size + 511) & ~(uint64_t)511;
	imgopts_set_size(&c->opts, c->out_size);
	ret = imgopts_to_create(&c->opts, &co, c->dst);
	if (ret < 0)
		return ret;
	co.backend = c->dst_open.backend;
	ret = uq_create(c->dst, &co);
	if (ret < 0) {
		cli_error_uq(ret, c->dst);
		return ret;
	}
	c->dst_open.format = UQ_FMT_QCOW2;
	ret = cli_open_image(c->dst, &c->dst_open, UQ_OPEN_RDWR, &c->out_img);
	if (ret < 0)
		return ret;
	in = malloc(sizeof(*in));
	if (!in) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	in->struct_size = sizeof(*in);
	ret = uq_get_info(c->out_img, in);
	if (ret < 0) {
		cli_error_uq(ret, c->dst);
	} else {
		/* Whole clusters: -c needs them, and two buffers never write
		 * into the same cluster at once. */
		c->align = in->cluster_size;
		c->grain = in->cluster_size;
		/* with subclusters, a zero one stays unallocated: as sparse
		 * as qemu-img's 4 KiB (but -c still needs whole clusters) */
		if (in->extended_l2 && !c->compress)
			c->grain = in->cluster_size / 32;
		c->bufsize = in->cluster_size > CONV_BUF ? in->cluster_size : CONV_BUF;
		c->sparse = true;   /* a new image reads zeros where unwritten */
	}
	free(in);
	return ret;
}

static void qcow2_write_done(void *arg, ssize_t res)
{
	struct slot *s = arg;

	conv_write_done(s, res);
}

static int qcow2_write(struct conv *c, struct slot *s, const uint8_t *buf,
		       size_t len, uint64_t off)
{
	int ret;

	/* The last cluster of a source whose size isn't a sector multiple:
	 * the image is a little larger, and -c must cover up to its end
	 * (the buffer has the room, zero-filled). */
	if (c->compress && off + len == c->size && c->out_size > c->size) {
		memset((uint8_t *)buf + len, 0, (size_t)(c->out_size - c->size));
		len += (size_t)(c->out_size - c->size);
	}
	ret = uq_aio_write(c->out_img, buf, len, off,
			   c->compress ? UQ_WRITE_COMPRESSED : 0, qcow2_write_done, s);
	if (ret < 0) {
		char what[64];

		snprintf(what, sizeof(what), "write at offset %" PRIu64, off);
		cli_error_uq(ret, what);
		return ret;
	}
	s->writes++;
	c->writes++;
	return 0;
}

static int qcow2_poll(struct conv *c, bool wait)
{
	int n = uq_poll(c->out_img, wait ? 1 : 0);

	if (n < 0)
		cli_error_uq(n, c->dst);
	return n;
}

static int qcow2_close(struct conv *c, bool sync)
{
	int ret = 0, r;

	if (!c->out_img)
		return 0;
	if (sync && (ret = uq_flush(c->out_img)) < 0)
		cli_error_uq(ret, c->dst);
	/* metadata still in memory is written here */
	r = uq_close(c->out_img);
	c->out_img = NULL;
	if (r < 0 && !ret) {
		cli_error_uq(r, c->dst);
		ret = r;
	}
	return ret;
}

const struct target_ops conv_qcow2_target = {
	.format = "qcow2",
	.create = qcow2_create,
	.write = qcow2_write,
	.poll = qcow2_poll,
	.close = qcow2_close,
};
