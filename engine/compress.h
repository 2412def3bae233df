/* SPDX-License-Identifier: MIT */
/* Cluster compression as qcow2 stores it: raw deflate (window 2^12) for
 * zlib, a zstd frame for zstd. */
#ifndef UQ_COMPRESS_H
#define UQ_COMPRESS_H

#include <stddef.h>
#include <sys/types.h>

/* Codec state reused across clusters; one per queue (struct uq_ctx),
 * used only by the thread that polls it. */
struct uq_codec;
void uq_codec_free(struct uq_codec *f);

/* Inflate src into exactly dlen bytes of dst, with the state in *fp
 * (created on first use). Trailing bytes after the stream are ignored
 * (the last sector is shared with the next cluster). Returns 0, or -EIO
 * if the data is corrupt or too short. */
int uq_decompress(struct uq_codec **fp, int type, const void *src, size_t slen,
		  void *dst, size_t dlen);

/* Compress src into dst (capacity dcap) with the state in *fp (created
 * on first use). Returns the compressed length, -ENOSPC if it doesn't
 * fit in dcap (store uncompressed), -errno else. */
ssize_t uq_compress(struct uq_codec **fp, int type, const void *src, size_t slen, void *dst,
		    size_t dcap);

#endif
