// SPDX-License-Identifier: MIT
/* Creating images: header and extensions, the first refcount structures
 * and an empty L1 table, laid out as qemu-img does; then preallocation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "cluster.h"
#include "internal.h"
#include "stats.h"

/* Names for the features this implementation knows, so that older tools
 * can say what they don't support. */
static const struct { uint8_t type, bit; const char *name; } features[] = {
	{ 0, 0, "dirty bit" },
	{ 0, 1, "corrupt bit" },
	{ 0, 2, "external data file" },
	{ 0, 3, "compression type" },
	{ 0, 4, "extended L2 entries" },
	{ 1, 0, "lazy refcounts" },
	{ 2, 0, "bitmaps" },
	{ 2, 1, "raw external data" },
};

static size_t put_ext(uint8_t *p, uint32_t type, const void *data, uint32_t len)
{
	uq_put_be32(p, type);
	uq_put_be32(p + 4, len);
	memcpy(p + 8, data, len);
	memset(p + 8 + len, 0, (8 - len % 8) % 8);
	return 8 + ((len + 7) & ~7u);
}

size_t uq_feature_table_ext(uint8_t *p)
{
	enum { N = sizeof(features) / sizeof(features[0]) };
	uint8_t t[N * 48] = { 0 };

	if (!p)
		return 8 + sizeof(t);
	for (size_t i = 0; i < N; i++) {
		t[i * 48] = features[i].type;
		t[i * 48 + 1] = features[i].bit;
		memcpy(t + i * 48 + 2, features[i].name, strlen(features[i].name));
	}
	return put_ext(p, QCOW_EXT_FEATURES, t, (uint32_t)sizeof(t));
}

static int validate(struct uq_create_opts *o)
{
	uint32_t cs = o->cluster_size;

	if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
		return uq_seterr(-EINVAL, "cluster_size %u must be a power of two "
				 "between 512 and 2M", cs);
	if (!o->refcount_bits || o->refcount_bits > 64 ||
	    (o->refcount_bits & (o->refcount_bits - 1)))
		return uq_seterr(-EINVAL, "refcount_bits %u must be a power of two "
				 "between 1 and 64", o->refcount_bits);
	if (o->version != 2 && o->version != 3)
		return uq_seterr(-EINVAL, "compat must be 0.10 or 1.1");
	if (o->version == 2 && (o->refcount_bits != 16 || o->lazy_refcounts ||
				o->extended_l2 || o->compression_type || o->data_file))
		return uq_seterr(-EINVAL, "compat=0.10 supports none of refcount_bits "
				 "other than 16, lazy_refcounts, extended_l2, "
				 "compression_type=zstd, data_file");
	if (o->extended_l2 && cs < 16384)
		return uq_seterr(-EINVAL, "extended_l2 needs cluster_size >= 16k");
	if (o->compression_type != 0 && o->compression_type != 1)
		return uq_seterr(-EINVAL, "compression_type must be zlib or zstd");
	if (o->data_file_raw && !o->data_file)
		return uq_seterr(-EINVAL, "data_file_raw needs data_file");
	if (o->data_file_raw && o->backing_file)
		return uq_seterr(-EINVAL, "data_file_raw can't be used with a backing file");
	if (o->backing_file && strlen(o->backing_file) > QCOW_MAX_BACKING_NAME)
		return uq_seterr(-EINVAL, "backing file name is longer than 1023 bytes");
	if (o->data_file && strlen(o->data_file) > 1023)
		return uq_seterr(-EINVAL, "data file name is longer than 1023 bytes");
	if (o->backing_format && strcmp(o->backing_format, "qcow2") &&
	    strcmp(o->backing_format, "raw"))
		return uq_seterr(-EINVAL, "backing format '%s' is not qcow2 or raw",
				 o->backing_format);
	return 0;
}

/* Fill in size and format from the backing file, as qemu-img create does. */
static int probe_backing(const char *path, struct uq_create_opts *o, char *fmt, size_t fmtlen)
{
	char *dir = uq_dirname(path), *full = NULL;
	/* force-share, as qemu-img create: the backing file may be in use,
	 * by a VM that writes it, and it is only looked at */
	struct uq_open_opts oo = { .struct_size = sizeof(oo),
				   .flags = UQ_OPEN_NO_BACKING | UQ_OPEN_FORCE_SHARE };
	struct uq_info info;
	uq_image *b;
	int ret;

	if (!dir)
		return -ENOMEM;
	if (o->backing_file[0] == '/')
		full = strdup(o->backing_file);
	else if (asprintf(&full, "%s/%s", dir, o->backing_file) < 0)
		full = NULL;
	free(dir);
	if (!full)
		return -ENOMEM;
	if (o->backing_format)
		oo.format = strcmp(o->backing_format, "raw") ? UQ_FMT_QCOW2 : UQ_FMT_RAW;
	ret = uq_open_impl(full, &oo, &b);
	free(full);
	if (ret < 0) {
		if (o->size && o->backing_format) {
			snprintf(fmt, fmtlen, "%s", o->backing_format);
			return 0;   /* like qemu-img: a missing backing file is fine then */
		}
		return uq_seterr(ret, "backing file: %s", uq_errmsg());
	}
	uq_get_info_impl(b, &info);
	snprintf(fmt, fmtlen, "%s", info.format == UQ_FMT_QCOW2 ? "qcow2" : "raw");
	if (!o->size)
		o->size = info.virtual_size;
	uq_close_impl(b);
	return 0;
}

static int write_image(const char *path, const struct uq_create_opts *o, const char *bfmt)
{
	struct uq_header h = { 0 };
	struct uq_geom g;
	uint64_t cs = o->cluster_size, l1n, l1c, tc = 1, nb = 1, end;
	uint8_t *buf = NULL;
	struct io_file *f = NULL;
	size_t pos;
	int ret;

	h.magic = QCOW_MAGIC;
	h.version = o->version;
	h.cluster_bits = (uint32_t)__builtin_ctz(o->cluster_size);
	h.size = o->size;
	h.refcount_order = (uint32_t)__builtin_ctz(o->refcount_bits);
	h.header_length = o->version >= 3 ? QCOW_V3_HEADER_LEN_CT : QCOW_V2_HEADER_LEN;
	h.compression_type = (uint8_t)o->compression_type;
	if (o->compression_type)
		h.incompatible_features |= QCOW_INCOMPAT_COMPRESSION;
	if (o->extended_l2)
		h.incompatible_features |= QCOW_INCOMPAT_EXTL2;
	if (o->data_file)
		h.incompatible_features |= QCOW_INCOMPAT_DATA_FILE;
	if (o->lazy_refcounts)
		h.compatible_features |= QCOW_COMPAT_LAZY_REFCOUNTS;
	if (o->data_file_raw)
		h.autoclear_features |= QCOW_AUTOCLEAR_DATA_FILE_RAW;
	ret = uq_l1_entries_for(o->size, h.cluster_bits, o->extended_l2, &l1n);
	if (ret < 0 || l1n * 8 > QCOW_MAX_L1_BYTES)
		return uq_seterr(-EFBIG, "size %llu needs an L1 table over 32 MiB at "
				 "cluster_size %u", (unsigned long long)o->size, o->cluster_size);
	h.l1_size = (uint32_t)l1n;
	uq_geom_init(&h, &g);
	l1c = (l1n * 8 + cs - 1) / cs;
	/* header, refcount table, blocks, L1: the blocks describe all of it */
	for (int i = 0; i < 64; i++) {
		uint64_t n = 1 + tc + nb + l1c;
		uint64_t nb2 = (n + (1ull << g.rb_bits) - 1) >> g.rb_bits;
		uint64_t tc2 = (nb2 * 8 + cs - 1) / cs;

		if (nb2 == nb && tc2 == tc)
			break;
		nb = nb2;
		tc = tc2;
	}
	h.refcount_table_offset = cs;
	h.refcount_table_clusters = (uint32_t)tc;
	h.l1_table_offset = (1 + tc + nb) * cs;
	end = h.l1_table_offset + l1c * cs;

	buf = calloc(1, cs);
	if (!buf)
		return -ENOMEM;
	ret = uq_header_encode(&h, buf, cs);
	if (ret < 0)
		goto out;
	pos = h.header_length;
	size_t room = cs - 8 - (o->backing_file ? strlen(o->backing_file) : 0);

	if (o->backing_file && bfmt[0] && pos + 8 + 32 <= room)
		pos += put_ext(buf + pos, QCOW_EXT_BACKING_FMT, bfmt, (uint32_t)strlen(bfmt));
	if (o->data_file) {
		uint32_t l = (uint32_t)strlen(o->data_file);

		if (pos + 16 + l > room) {
			ret = uq_seterr(-EINVAL, "data file name doesn't fit in the header cluster");
			goto out;
		}
		pos += put_ext(buf + pos, QCOW_EXT_DATA_FILE, o->data_file, l);
	}
	if (o->version >= 3 && pos + uq_feature_table_ext(NULL) <= room)
		pos += uq_feature_table_ext(buf + pos);
	uq_put_be32(buf + pos, QCOW_EXT_END);
	pos += 8;
	if (o->backing_file) {
		size_t l = strlen(o->backing_file);

		if (pos + l > cs) {
			ret = uq_seterr(-EINVAL, "backing file name doesn't fit in the header cluster");
			goto out;
		}
		memcpy(buf + pos, o->backing_file, l);
		h.backing_file_offset = pos;
		h.backing_file_size = (uint32_t)l;
		uint8_t tmp[QCOW_V3_HEADER_LEN_CT];

		ret = uq_header_encode(&h, tmp, sizeof(tmp));
		memcpy(buf, tmp, h.header_length);
		if (ret < 0)
			goto out;
	}
	/* locked before it truncates: refused if someone uses the file */
	ret = io_file_open(path, IO_RDWR | IO_CREATE, &f);
	if (ret < 0)
		goto out;   /* io named the file and why */
	ret = io_pwrite_full(f, buf, cs, 0);
	/* refcount table: block i at cluster 1 + tc + i */
	memset(buf, 0, cs);
	for (uint64_t t = 0; ret == 0 && t < tc; t++) {
		memset(buf, 0, cs);
		for (uint64_t i = t * (cs / 8); i < nb && i < (t + 1) * (cs / 8); i++)
			uq_put_be64(buf + (i % (cs / 8)) * 8, (1 + tc + i) * cs);
		ret = io_pwrite_full(f, buf, cs, (1 + t) * cs);
	}
	uint64_t used = end / cs;

	for (uint64_t b = 0; ret == 0 && b < nb; b++) {
		memset(buf, 0, cs);
		for (uint64_t j = 0; j < (1ull << g.rb_bits); j++)
			if ((b << g.rb_bits) + j < used)
				uq_refcount_set(buf, h.refcount_order, j, 1);
		ret = io_pwrite_full(f, buf, cs, (1 + tc + b) * cs);
	}
	if (ret == 0)
		ret = io_file_truncate(f, end);   /* the L1 table: zeros */
	if (ret == 0)
		ret = io_fsync(f);
	if (ret < 0)
		uq_seterr(ret, "writing the new image failed: %s", strerror(-ret));
out:
	if (f)
		io_file_close(f);
	free(buf);
	return ret;
}

static int create_data_file(const char *path, const struct uq_create_opts *o)
{
	char *dir = uq_dirname(path), *full = NULL;
	struct io_file *f;
	int ret;

	if (!dir)
		return -ENOMEM;
	if (o->data_file[0] == '/')
		full = strdup(o->data_file);
	else if (asprintf(&full, "%s/%s", dir, o->data_file) < 0)
		full = NULL;
	free(dir);
	if (!full)
		return -ENOMEM;
	ret = io_file_open(full, IO_RDWR | IO_CREATE, &f);
	if (ret < 0) {
		uq_errprefix("data file");   /* io named the file and why */
	} else {
		ret = io_file_truncate(f, o->size);
		io_file_close(f);
		if (ret < 0)
			uq_seterr(ret, "data file %s: %s", full, strerror(-ret));
	}
	free(full);
	return ret;
}

int uq_create_impl(const char *path, const struct uq_create_opts *opts)
{
	struct uq_create_opts o = { 0 };
	char bfmt[32] = "";
	int ret;

	uq_errclear();
	if (opts)
		memcpy(&o, opts, opts->struct_size < sizeof(o) ? opts->struct_size : sizeof(o));
	if (!o.cluster_size)
		o.cluster_size = 65536;
	if (!o.refcount_bits)
		o.refcount_bits = 16;
	if (!o.version)
		o.version = 3;
	ret = validate(&o);
	if (ret == 0 && o.backing_file)
		ret = probe_backing(path, &o, bfmt, sizeof(bfmt));
	if (ret == 0 && o.data_file)
		ret = create_data_file(path, &o);
	if (ret == 0)
		ret = write_image(path, &o, bfmt);
	if (ret == 0 && o.prealloc != UQ_PREALLOC_OFF) {
		struct uq_open_opts oo = { .struct_size = sizeof(oo), .flags = UQ_OPEN_RDWR,
					   .backend = o.backend };
		uq_image *img;

		ret = uq_open_impl(path, &oo, &img);
		if (ret == 0) {
			ret = uq_preallocate(img, o.prealloc);
			int r2 = uq_close_impl(img);

			ret = ret ? ret : r2;
		}
	}
	if (ret < 0)
		uq_errname(path);
	return ret;
}

/* Map every guest cluster to a host cluster (L2 tables included); falloc
 * and full also reserve or zero the space. Reads still return zeros: a
 * fresh cluster past the old end of file is a hole. */
int uq_preallocate(uq_image *img, enum uq_prealloc mode)
{
	uint64_t cs = img->g.cluster_size, first = UINT64_MAX;
	struct io_file *f = img->data;
	int ret = 0;

	for (uint64_t off = 0; off < img->size && ret == 0; off += cs) {
		uint64_t host;
		bool fresh;

		ret = uq_alloc_data(img, off, &host, &fresh);
		if (ret == 0)
			ret = uq_l2_set(img, off, host | QCOW_OFLAG_COPIED,
					img->g.extended_l2 ? uq_sc_in_image(img, off) : 0);
		if (host < first)
			first = host;
	}
	if (ret == 0)
		ret = uq_meta_flush(img);
	uint64_t end = img->g.external_data ? img->size : img->alloc.host_end;

	if (ret == 0 && first != UINT64_MAX) {
		uint64_t size;

		ret = io_file_size(f, &size);
		if (ret == 0 && size < end)
			ret = io_file_truncate(f, end);
		if (ret == 0 && mode == UQ_PREALLOC_FALLOC &&
		    io_file_preallocate(f, first, end - first) < 0)
			ret = uq_seterr(-EIO, "%s: fallocate failed", img->path);
		/* zeros into the data clusters only: L2 tables lie among them */
		for (uint64_t off = 0; ret == 0 && mode == UQ_PREALLOC_FULL && off < img->size;
		     off += cs) {
			static const uint8_t zeros[65536];
			struct uq_l2map m;

			ret = uq_map_entry(img, off, &m);
			for (uint64_t o = 0; ret == 0 && m.host_off && o < cs; o += sizeof(zeros)) {
				size_t n = cs - o < sizeof(zeros) ? (size_t)(cs - o) : sizeof(zeros);

				uq_count_data(img->ctx, true, n);
				ret = io_pwrite_full(f, zeros, n, m.host_off + o);
			}
		}
	}
	if (ret == 0)
		img->alloc.written_end = img->alloc.host_end;
	return ret;
}
