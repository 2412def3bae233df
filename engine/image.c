// SPDX-License-Identifier: MIT
/* Opening and closing images: header and feature checks, the L1 table,
 * the backing chain and the external data file. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bitmap.h"
#include "error.h"
#include "internal.h"
#include "overlap.h"
#include "walk.h"
#include "stats.h"

#define PROBE_BYTES (2u << 20) /* one maximal cluster holds header + extensions */
#define PROBE_FIRST 65536u     /* read first: the header cluster of most images */

/* Files already open further up the chain, to refuse loops. */
struct chain_id {
	const struct chain_id *up;
	dev_t dev;
	ino_t ino;
};

struct open_args {
	const struct uq_open_opts *o;
	struct uq_ctx *ctx;
	int depth;
	const struct chain_id *up;
};


/* Every file an image opens gets the accounting layer (uq_get_stats). */
static int counted(struct io_file **f)
{
	struct io_file *outer;
	int ret = io_count_wrap(*f, &outer);

	if (ret < 0) {
		io_file_close(*f);
		*f = NULL;
		return ret;
	}
	*f = outer;
	return 0;
}

static int open_one(const char *path, enum uq_format fmt, const struct open_args *a,
		    uq_image **out);

char *uq_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/* Backing and data-file names must be plain paths: a protocol prefix or a
 * json: spec could make us open something the image author chose
 * (the CVE-2024-4467 class). Like QEMU, a ':' before any '/' is a prefix. */
static int check_plain_path(const char *what, const char *name, size_t len)
{
	if (len == 0)
		return uq_seterr(-EINVAL, "%s name is empty", what);
	if (memchr(name, '\0', len))
		return uq_seterr(-EINVAL, "%s name contains a NUL byte", what);
	const char *colon = memchr(name, ':', len);
	const char *slash = memchr(name, '/', len);

	if (colon && (!slash || colon < slash))
		return uq_seterr(-EINVAL, "%s name '%.*s' is a protocol or json: "
				 "spec, not a plain path", what, (int)len, name);
	return 0;
}

static char *resolve(const char *dir, const char *name)
{
	char *p;

	/* an image named without a directory keeps names as given, like qemu */
	if (name[0] == '/' || !strcmp(dir, "."))
		return strdup(name);
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

static int check_features(uq_image *img)
{
	const struct uq_header *h = &img->h;
	uint64_t unknown = h->incompatible_features & ~QCOW_INCOMPAT_KNOWN;
	char name[64];

	if (unknown) {
		unsigned bit = (unsigned)__builtin_ctzll(unknown);

		uq_feature_name(img->exts, 0, bit, name, sizeof(name));
		return uq_seterr(-ENOTSUP, "incompatible_features: unknown incompatible "
				 "feature: %s", name);
	}
	if (h->crypt_method)
		return uq_seterr(-ENOTSUP, "crypt_method: encrypted images (%s) are "
				 "not supported", h->crypt_method == 1 ? "AES" : "LUKS");
	if (img->exts->has_bitmaps &&
	    (img->exts->bitmap_directory_offset > img->file_size ||
	     img->file_size - img->exts->bitmap_directory_offset <
	     img->exts->bitmap_directory_size))
		return uq_seterr(-EINVAL, "bitmaps extension: bitmap directory (offset "
				 "0x%llx, %llu bytes) lies past the end of the file",
				 (unsigned long long)img->exts->bitmap_directory_offset,
				 (unsigned long long)img->exts->bitmap_directory_size);
	if (img->exts->has_crypto)
		return uq_seterr(-ENOTSUP, "header extension: full disk encryption "
				 "header present: encrypted images are not supported");
	if ((img->flags & UQ_OPEN_DISCARD_NO_UNREF) && h->version < 3)
		return uq_seterr(-EINVAL, "version: discard-no-unref needs a version 3 "
				 "image (compat=1.1); this one is version 2");
	/* check -r opens corrupt images read-write to repair them */
	if ((img->flags & UQ_OPEN_RDWR) && !(img->flags & UQ_OPEN_REPAIR) &&
	    (h->incompatible_features & QCOW_INCOMPAT_CORRUPT))
		return uq_seterr(-EROFS, "incompatible_features: image is marked "
				 "corrupt; open it read-only or repair it with check -r all");
	if ((h->autoclear_features & QCOW_AUTOCLEAR_DATA_FILE_RAW) &&
	    !(h->incompatible_features & QCOW_INCOMPAT_DATA_FILE))
		return uq_seterr(-EINVAL, "autoclear_features: data-file-raw is set "
				 "without an external data file");
	if ((h->incompatible_features & QCOW_INCOMPAT_DATA_FILE) && h->backing_file_offset &&
	    (h->autoclear_features & QCOW_AUTOCLEAR_DATA_FILE_RAW))
		return uq_seterr(-EINVAL, "backing_file_offset: a raw external data "
				 "file can't have a backing file");
	return 0;
}

static int load_l1(uq_image *img)
{
	int ret;

	if (!img->h.l1_size)
		return 0;
	ret = uq_read_table64(img, UQ_MK_L1, img->h.l1_table_offset, img->h.l1_size, &img->l1);
	if (ret < 0)
		uq_seterr(ret, "l1 table: read failed: %s", strerror(-ret));
	return ret;
}

static uint64_t default_cache_bytes(const uq_image *img)
{
	uint64_t clusters = (img->size + img->g.cluster_size - 1) >> img->g.cluster_bits;
	uint64_t bytes = clusters * img->g.l2_entry_bytes;

	bytes = (bytes + img->g.cluster_size - 1) & ~(img->g.cluster_size - 1);
	/* writers keep at most half the slots dirty (cluster.c): twice the
	 * tables lets every table of the image be dirty at once, so spread
	 * writes and discards don't write tables back between flushes (two
	 * slots for a 1 GiB image of 64 KiB clusters wrote a table per
	 * three random discards) */
	if (img->flags & UQ_OPEN_RDWR)
		bytes *= 2;
	return bytes > UQ_DEFAULT_L2_CACHE_MAX ? UQ_DEFAULT_L2_CACHE_MAX : bytes;
}

static int open_backing(uq_image *img, const struct open_args *a)
{
	const struct uq_header *h = &img->h;
	struct open_args ba = *a;
	enum uq_format fmt = UQ_FMT_PROBE;
	uint8_t namebuf[QCOW_MAX_BACKING_NAME + 1];
	int ret;

	if (!h->backing_file_offset)
		return 0;
	ret = uq_meta_pread(img, UQ_MK_HEADER, namebuf, h->backing_file_size,
			    h->backing_file_offset);
	if (ret < 0)
		return uq_seterr(ret, "backing file name: read failed");
	ret = check_plain_path("backing file", (const char *)namebuf, h->backing_file_size);
	if (ret < 0)
		return ret;
	namebuf[h->backing_file_size] = '\0';
	img->backing_name = strdup((const char *)namebuf);
	img->backing_path = resolve(img->dir, img->backing_name);
	if (!img->backing_name || !img->backing_path)
		return -ENOMEM;
	if (img->exts->has_backing_fmt) {
		if (!strcmp(img->exts->backing_fmt, "qcow2"))
			fmt = UQ_FMT_QCOW2;
		else if (!strcmp(img->exts->backing_fmt, "raw"))
			fmt = UQ_FMT_RAW;
		else
			return uq_seterr(-ENOTSUP, "backing format '%s' is not supported "
					 "(qcow2 or raw)", img->exts->backing_fmt);
	}
	if ((img->flags & UQ_OPEN_NO_BACKING) || a->o->backend == UQ_IO_MEM)
		return 0;
	if (a->depth + 1 >= QCOW_MAX_CHAIN_DEPTH)
		return uq_seterr(-ELOOP, "backing chain is deeper than %d images",
				 QCOW_MAX_CHAIN_DEPTH);
	ba.depth = a->depth + 1;
	ret = open_one(img->backing_path, fmt, &ba, &img->backing);
	if (ret < 0) {
		/* one "backing file:" however deep: top: backing file: deep: why */
		if (strncmp(uq_errmsg(), "backing file: ", 14))
			uq_errprefix("backing file");
		return ret;
	}
	img->backing->depth = img->depth + 1;
	return 0;
}

/* How the image's files are opened, and so locked (io/lock.c). */
static unsigned io_flags(const uq_image *img)
{
	return (img->flags & UQ_OPEN_RDWR ? IO_RDWR : 0) |
	       (img->flags & UQ_OPEN_DIRECT ? IO_DIRECT : 0) |
	       (img->flags & UQ_OPEN_FORCE_SHARE ? IO_SHARE : 0);
}

static int open_data_file(uq_image *img, const struct open_args *a)
{
	const char *name = img->exts->data_file;
	int ret;

	if (!(img->h.incompatible_features & QCOW_INCOMPAT_DATA_FILE)) {
		if (img->exts->has_data_file)
			return uq_seterr(-EINVAL, "header extension: data file name "
					 "without the external data file feature bit");
		return 0;
	}
	if (!img->exts->has_data_file)
		return uq_seterr(-EINVAL, "incompatible_features: external data file "
				 "is set but the image names no data file");
	ret = check_plain_path("data file", name, strlen(name));
	if (ret < 0)
		return ret;
	img->data_file_path = resolve(img->dir, name);
	if (!img->data_file_path)
		return -ENOMEM;
	if (a->o->backend == UQ_IO_MEM)
		return uq_seterr(-ENOTSUP, "data file: external data files can't be "
				 "opened from memory");
	ret = io_file_open(img->data_file_path, io_flags(img), &img->data);
	if (ret == 0)
		ret = counted(&img->data);
	if (ret < 0)
		uq_errprefix("data file");   /* io named the file and why */
	return ret;
}

/* The header cluster: header and extensions live in it. Read 64 KiB, and
 * the rest of a larger cluster only when the header says there is one, so
 * opening reads what it needs (the decoder checks cluster_bits itself). */
static int read_head(uq_image *img, uint8_t **out, size_t *outlen)
{
	size_t len = img->file_size < PROBE_FIRST ? (size_t)img->file_size : PROBE_FIRST;
	uint8_t *head = malloc(PROBE_FIRST), *more;
	int ret;

	*out = NULL;
	if (!head)
		return -ENOMEM;
	ret = uq_meta_pread(img, UQ_MK_HEADER, head, len, 0);
	if (ret == 0 && len == PROBE_FIRST && uq_be32(head) == QCOW_MAGIC) {
		uint32_t bits = uq_be32(head + 20);   /* cluster_bits */
		uint64_t want = bits < 32 ? 1ull << bits : PROBE_BYTES;

		if (want > PROBE_BYTES)
			want = PROBE_BYTES;
		if (want > img->file_size)
			want = img->file_size;
		if (want > len) {
			more = realloc(head, (size_t)want);
			if (!more) {
				free(head);
				return -ENOMEM;
			}
			head = more;
			ret = uq_meta_pread(img, UQ_MK_HEADER, head + len, (size_t)want - len, len);
			len = (size_t)want;
		}
	}
	if (ret < 0) {
		free(head);
		return uq_seterr(ret, "reading the header: %s", strerror(-ret));
	}
	*out = head;
	*outlen = len;
	return 0;
}

static int open_qcow2(uq_image *img, const uint8_t *head, size_t headlen,
		      const struct open_args *a)
{
	uint64_t cache;
	int ret;

	ret = uq_header_decode(head, headlen, img->file_size, &img->h);
	if (ret < 0)
		return ret;
	img->exts = calloc(1, sizeof(*img->exts));
	if (!img->exts)
		return -ENOMEM;
	size_t clen = headlen < (1ull << img->h.cluster_bits) ?
		      headlen : (size_t)1 << img->h.cluster_bits;

	ret = uq_exts_decode(head, clen, &img->h, img->exts);
	if (ret < 0)
		return ret;
	ret = check_features(img);
	if (ret < 0)
		return ret;
	uq_geom_init(&img->h, &img->g);
	img->size = img->h.size;
	ret = uq_bm_load_dir(img);
	if (ret < 0)
		return ret;
	ret = load_l1(img);
	if (ret < 0)
		return ret;
	ret = uq_snaps_load(img);
	if (ret < 0)
		return ret;
	ret = open_data_file(img, a);
	if (ret < 0)
		return ret;
	if (!img->data)
		img->data = img->file;
	ret = open_backing(img, a);
	if (ret < 0)
		return ret;
	cache = a->o->l2_cache_size ? a->o->l2_cache_size : default_cache_bytes(img);
	ret = l2c_create(cache, img->g.cluster_size, img->align, &img->l2c);
	if (ret < 0)
		return uq_seterr(ret, "l2-cache-size %llu is out of range",
				 (unsigned long long)cache);
	/* refcount blocks kept in memory: a bound, whatever the image size */
	cache = a->o->refcount_cache_size ? a->o->refcount_cache_size
					  : UQ_DEFAULT_REFCOUNT_CACHE;
	img->rc.cap = cache / img->g.cluster_size;
	if (img->rc.cap < UQ_MIN_REFCOUNT_BLOCKS)
		img->rc.cap = UQ_MIN_REFCOUNT_BLOCKS;
	/* a repair handle gets its write state from uq_check, after the
	 * check: the refcount structures may be too broken to load */
	if ((img->flags & UQ_OPEN_RDWR) && !(img->flags & UQ_OPEN_REPAIR))
		return uq_write_open(img);
	return 0;
}

static int chain_check(const uq_image *img, const struct open_args *a,
		       struct chain_id *me)
{
	uint64_t dev, ino;

	if (io_file_identity(img->file, &dev, &ino) < 0)
		return 0;
	me->dev = dev;
	me->ino = ino;
	me->up = a->up;
	for (const struct chain_id *c = a->up; c; c = c->up)
		if (c->dev == dev && c->ino == ino)
			return uq_seterr(-ELOOP, "backing chain loops back to this file");
	return 0;
}

static int open_one(const char *path, enum uq_format fmt, const struct open_args *a,
		    uq_image **out)
{
	const struct uq_open_opts *o = a->o;
	struct open_args mine = *a;
	struct chain_id me = { 0 };
	uq_image *img;
	uint8_t *head = NULL;
	size_t headlen = 0;
	int ret;

	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->path = strdup(path);
	img->dir = uq_dirname(path);
	img->ctx = a->ctx;
	img->depth = a->depth;
	/* Backing files are only ever read. */
	img->flags = a->depth ? (o->flags & ~UQ_OPEN_RDWR) : o->flags;
	img->align = img->flags & UQ_OPEN_DIRECT ? UQ_DIRECT_ALIGN : 64;
	if (!img->path || !img->dir) {
		ret = -ENOMEM;
		goto fail;
	}
	if (o->backend == UQ_IO_MEM && a->depth == 0) {
		ret = io_file_open_mem(o->mem_data, o->mem_len, io_flags(img), &img->file);
		if (ret < 0)
			uq_seterr(ret, "%s", strerror(-ret));
	} else {
		/* locked from here on; a refusal names the file already */
		ret = io_file_open(path, io_flags(img), &img->file);
	}
	if (ret == 0)
		ret = counted(&img->file);
	if (ret < 0)
		goto fail;
	ret = chain_check(img, a, &me);
	if (ret < 0)
		goto fail;
	mine.up = &me;
	ret = io_file_size(img->file, &img->file_size);
	if (ret < 0)
		goto fail;
	ret = read_head(img, &head, &headlen);
	if (ret < 0)
		goto fail;
	bool magic = headlen >= 4 && uq_be32(head) == QCOW_MAGIC;

	if (fmt == UQ_FMT_QCOW2 || (fmt == UQ_FMT_PROBE && magic)) {
		if (!magic) {
			ret = uq_seterr(-EINVAL, "magic: not a qcow2 image");
			goto fail;
		}
		img->fmt = UQ_FMT_QCOW2;
		ret = open_qcow2(img, head, headlen, &mine);
	} else {
		img->fmt = UQ_FMT_RAW;
		img->size = img->file_size;
		img->data = img->file;
	}
	if (ret < 0)
		goto fail;
	free(head);
	*out = img;
	return 0;
fail:
	free(head);
	/* the top image names itself; inner links already named theirs */
	if (a->depth == 0 || strncmp(uq_errmsg(), "backing file: ", 14))
		uq_errname(path);
	uq_close_impl(img);
	return ret;
}

int uq_open_impl(const char *path, const struct uq_open_opts *opts, uq_image **out)
{
	struct uq_open_opts o = { 0 };
	struct uq_ctx *ctx;
	struct open_args a = { 0 };
	const char *force = NULL;
	uq_image *img;
	int ret;

	uq_errclear();
	if (opts)
		memcpy(&o, opts, opts->struct_size < sizeof(o) ? opts->struct_size : sizeof(o));
	/* sharing the write permission with others and writing: never */
	if ((o.flags & UQ_OPEN_FORCE_SHARE) && (o.flags & UQ_OPEN_RDWR))
		return uq_seterr(-EINVAL, "%s: force-share can only be used with "
				 "read-only images", path);
	if (o.backend == UQ_IO_URING)
		force = "io_uring";
	else if (o.backend == UQ_IO_PSYNC || o.backend == UQ_IO_MEM)
		force = "psync";
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->done_tail = &ctx->done_head;
	ret = io_queue_create(force, o.queue_depth ? o.queue_depth : UQ_DEFAULT_QUEUE_DEPTH,
			      &ctx->q);
	if (ret < 0) {
		free(ctx);
		return uq_seterr(ret, "%s: can't set up the %s I/O queue: %s", path,
				 force ? force : "default", strerror(-ret));
	}
	a.o = &o;
	a.ctx = ctx;
	ret = open_one(path, o.format, &a, &img);
	if (ret < 0) {
		io_queue_free(ctx->q);
		free(ctx);
		return ret;
	}
	img->own_ctx = true;
	*out = img;
	return 0;
}

int uq_close_impl(uq_image *img)
{
	int ret = 0;

	if (!img)
		return 0;
	/* Nothing may complete into freed memory: drain what is in flight. */
	if (img->own_ctx)
		while (io_pending(img->ctx->q) && io_reap(img->ctx->q, 1) > 0)
			;
	if (img->fmt == UQ_FMT_QCOW2 && img->l2c)
		ret = uq_write_close(img);
	else if (img->fmt == UQ_FMT_RAW && (img->flags & UQ_OPEN_RDWR) && img->file)
		ret = io_fsync(img->file);
	if (img->own_ctx)
		while (io_pending(img->ctx->q) && io_reap(img->ctx->q, 1) > 0)
			;
	uq_rc_release(img);
	uq_meta_release(img);
	uq_close_impl(img->backing);
	l2c_destroy(img->l2c);
	if (img->data && img->data != img->file)
		io_file_close(img->data);
	if (img->file)
		io_file_close(img->file);
	uq_snaps_release(img);
	uq_bm_release(img);
	free(img->l1);
	free(img->exts);
	free(img->backing_name);
	free(img->backing_path);
	free(img->data_file_path);
	if (img->own_ctx) {
		/* completions nobody polled for */
		while (img->ctx->done_head) {
			struct uq_done *d = img->ctx->done_head;

			img->ctx->done_head = d->next;
			free(d);
		}
		uq_ctx_release(img->ctx);
		io_queue_free(img->ctx->q);
		free(img->ctx);
	}
	free(img->path);
	free(img->dir);
	free(img);
	return ret;
}

uq_image *uq_backing_impl(uq_image *img)
{
	return img->backing;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

int uq_get_info_impl(uq_image *img, struct uq_info *out)
{
	memset(out, 0, sizeof(*out));
	out->format = img->fmt;
	out->virtual_size = img->size;
	out->file_length = img->file_size;
	if (io_file_allocated(img->file, &out->actual_size) < 0)
		out->actual_size = img->file_size;
	copy_str(out->filename, sizeof(out->filename), img->path);
	out->backend = io_backend_name(img->ctx->q);
	out->locked = img->file->locked && (!img->data || img->data->locked);
	out->lock_error = img->file->lock_err ? img->file->lock_err :
			  img->data ? img->data->lock_err : 0;
	if (img->fmt != UQ_FMT_QCOW2)
		return 0;
	out->version = img->h.version;
	out->cluster_size = (uint32_t)img->g.cluster_size;
	out->refcount_bits = 1u << img->h.refcount_order;
	out->incompatible_features = img->h.incompatible_features;
	out->compatible_features = img->h.compatible_features;
	out->autoclear_features = img->h.autoclear_features;
	out->compression_type = img->h.compression_type;
	out->extended_l2 = img->g.extended_l2;
	out->lazy_refcounts = !!(img->h.compatible_features & QCOW_COMPAT_LAZY_REFCOUNTS);
	out->corrupt = !!(img->h.incompatible_features & QCOW_INCOMPAT_CORRUPT);
	out->dirty = !!(img->h.incompatible_features & QCOW_INCOMPAT_DIRTY);
	out->data_file_raw = !!(img->h.autoclear_features & QCOW_AUTOCLEAR_DATA_FILE_RAW);
	out->has_bitmaps = img->exts->has_bitmaps;
	out->nb_snapshots = img->snap.n;
	out->nb_bitmaps = img->bm.n;
	copy_str(out->bitmaps_problem, sizeof(out->bitmaps_problem),
		 img->bm.bad ? img->bm.why : "");
	copy_str(out->backing_file, sizeof(out->backing_file), img->backing_name);
	copy_str(out->backing_full, sizeof(out->backing_full), img->backing_path);
	if (img->exts->has_backing_fmt)
		copy_str(out->backing_format, sizeof(out->backing_format), img->exts->backing_fmt);
	if (img->exts->has_data_file)
		copy_str(out->data_file, sizeof(out->data_file), img->exts->data_file);
	return 0;
}

int uq_snapshot_get_impl(uq_image *img, uint32_t idx, struct uq_snapshot_info *out)
{
	const struct uq_snap *s;

	if (idx >= img->snap.n)
		return -ENOENT;
	s = &img->snap.list[idx];
	memset(out, 0, sizeof(*out));
	copy_str(out->id, sizeof(out->id), s->id);
	copy_str(out->name, sizeof(out->name), s->name);
	out->vm_state_size = s->raw.vm_state_size;
	out->date_sec = s->raw.date_sec;
	out->date_nsec = s->raw.date_nsec;
	out->vm_clock_nsec = s->raw.vm_clock_nsec;
	out->disk_size = s->raw.has_disk_size ? s->raw.disk_size : img->size;
	out->icount = s->raw.has_icount ? s->raw.icount : UINT64_MAX;
	out->l1_size = s->raw.l1_size;
	return 0;
}
