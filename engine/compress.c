// SPDX-License-Identifier: MIT
/* zlib and zstd codecs for compressed clusters, matching what QEMU writes:
 * zlib as raw deflate with a 4 KiB window, zstd as one frame. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "compress.h"
#include "error.h"
#include "format.h"

/* Codec state kept from one cluster to the next: setting up a zstd
 * context (and its window buffers) or a zlib stream costs more than
 * inflating a small cluster, and a deflate stream's init clears some
 * 256 KiB of tables. */
struct uq_codec {
	z_stream z;
	bool z_ready;
	ZSTD_DCtx *zd;
	z_stream zc;              /* deflate */
	bool zc_ready;
	ZSTD_CCtx *zcc;
};

void uq_codec_free(struct uq_codec *f)
{
	if (!f)
		return;
	if (f->z_ready)
		inflateEnd(&f->z);
	ZSTD_freeDCtx(f->zd);
	if (f->zc_ready)
		deflateEnd(&f->zc);
	ZSTD_freeCCtx(f->zcc);
	free(f);
}

static int codec_get(struct uq_codec **fp)
{
	if (!*fp && !(*fp = calloc(1, sizeof(**fp))))
		return -ENOMEM;
	return 0;
}

static int zlib_inflate(struct uq_codec *f, const void *src, size_t slen,
			void *dst, size_t dlen)
{
	z_stream *s = &f->z;
	int ret;

	if (slen > UINT32_MAX || dlen > UINT32_MAX)
		return -EINVAL;
	/* negative window bits: raw deflate, no zlib header */
	if (!f->z_ready) {
		memset(s, 0, sizeof(*s));
		if (inflateInit2(s, -12) != Z_OK)
			return -ENOMEM;
		f->z_ready = true;
	} else if (inflateReset(s) != Z_OK) {
		return -EIO;
	}
	s->next_in = (Bytef *)src;
	s->avail_in = (uInt)slen;
	s->next_out = dst;
	s->avail_out = (uInt)dlen;
	ret = inflate(s, Z_FINISH);
	/* Z_BUF_ERROR with a full output is fine: the stream may go on into
	 * bytes that belong to the next compressed cluster. */
	if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && s->avail_out == 0)
		return 0;
	return -EIO;
}

static int zstd_inflate(struct uq_codec *f, const void *src, size_t slen,
			void *dst, size_t dlen)
{
	ZSTD_inBuffer in = { src, slen, 0 };
	ZSTD_outBuffer out = { dst, dlen, 0 };

	if (!f->zd && !(f->zd = ZSTD_createDCtx()))
		return -ENOMEM;
	/* a new frame; the buffers stay allocated for the next one */
	if (ZSTD_isError(ZSTD_DCtx_reset(f->zd, ZSTD_reset_session_only)))
		return -EIO;
	/* Stream until the cluster is full; what follows is another cluster's
	 * data or padding, so the frame need not end exactly at slen. */
	while (out.pos < out.size && in.pos < in.size) {
		size_t r = ZSTD_decompressStream(f->zd, &out, &in);

		if (ZSTD_isError(r))
			return -EIO;
		if (r == 0 && out.pos < out.size)
			return -EIO;   /* frame ended short of a cluster */
	}
	return out.pos == out.size ? 0 : -EIO;
}

int uq_decompress(struct uq_codec **fp, int type, const void *src, size_t slen,
		  void *dst, size_t dlen)
{
	int ret;

	if (type != QCOW_COMPRESS_ZLIB && type != QCOW_COMPRESS_ZSTD)
		return uq_seterr(-EINVAL, "compression_type %d is unknown", type);
	if (codec_get(fp) < 0)
		return -ENOMEM;
	if (type == QCOW_COMPRESS_ZLIB)
		ret = zlib_inflate(*fp, src, slen, dst, dlen);
	else
		ret = zstd_inflate(*fp, src, slen, dst, dlen);
	if (ret == -EIO)
		uq_seterr(ret, "compressed cluster data is corrupt (%s)",
			  type == QCOW_COMPRESS_ZLIB ? "zlib" : "zstd");
	return ret;
}

static ssize_t zlib_deflate(struct uq_codec *f, const void *src, size_t slen, void *dst,
			    size_t dcap)
{
	z_stream *s = &f->zc;
	int zr;

	if (slen > UINT32_MAX || dcap > UINT32_MAX)
		return -EINVAL;
	if (!f->zc_ready) {
		memset(s, 0, sizeof(*s));
		if (deflateInit2(s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
				 Z_DEFAULT_STRATEGY) != Z_OK)
			return -ENOMEM;
		f->zc_ready = true;
	} else if (deflateReset(s) != Z_OK) {
		return -EIO;
	}
	s->next_in = (Bytef *)src;
	s->avail_in = (uInt)slen;
	s->next_out = dst;
	s->avail_out = (uInt)dcap;
	zr = deflate(s, Z_FINISH);
	if (zr == Z_STREAM_END)
		return (ssize_t)(dcap - s->avail_out);
	return zr == Z_OK || zr == Z_BUF_ERROR ? -ENOSPC : -EIO;
}

static ssize_t zstd_deflate(struct uq_codec *f, const void *src, size_t slen, void *dst,
			    size_t dcap)
{
	size_t r;

	if (!f->zcc && !(f->zcc = ZSTD_createCCtx()))
		return -ENOMEM;
	r = ZSTD_compressCCtx(f->zcc, dst, dcap, src, slen, ZSTD_CLEVEL_DEFAULT);
	if (ZSTD_isError(r))
		return ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall ? -ENOSPC : -EIO;
	return (ssize_t)r;
}

ssize_t uq_compress(struct uq_codec **fp, int type, const void *src, size_t slen, void *dst,
		    size_t dcap)
{
	if (type != QCOW_COMPRESS_ZLIB && type != QCOW_COMPRESS_ZSTD)
		return uq_seterr(-EINVAL, "compression_type %d is unknown", type);
	if (codec_get(fp) < 0)
		return -ENOMEM;
	return type == QCOW_COMPRESS_ZLIB ? zlib_deflate(*fp, src, slen, dst, dcap)
					  : zstd_deflate(*fp, src, slen, dst, dcap);
}
