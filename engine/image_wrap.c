// SPDX-License-Identifier: MIT
/* Putting a wrapper file (fault injection, accounting) under an image that
 * is already open: tests open an image, then watch what it does. */
#include <errno.h>

#include "internal.h"

int uq_image_wrap_file(uq_image *img,
		       int (*wrap)(struct io_file *inner, void *arg, struct io_file **outer),
		       void *arg)
{
	struct io_file *outer;
	bool same = img->data == img->file;
	int ret;

	/* requests in flight name the old file; let them finish first */
	if (io_pending(img->ctx->q))
		return -EBUSY;
	ret = wrap(img->file, arg, &outer);
	if (ret < 0)
		return ret;
	img->file = outer;
	if (same)
		img->data = outer;
	return 0;
}
