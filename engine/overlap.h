/* SPDX-License-Identifier: MIT */
/* The set of host clusters that hold metadata (overlap.c), so that a
 * write that would land on one is refused before it happens. */
#ifndef UQ_OVERLAP_H
#define UQ_OVERLAP_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

/* Fill the set from a walk of the image's metadata. */
int uq_meta_build(uq_image *img);
void uq_meta_release(uq_image *img);
int uq_meta_add(uq_image *img, uint64_t host_off, uint64_t bytes);
void uq_meta_del(uq_image *img, uint64_t host_off, uint64_t bytes);
bool uq_meta_overlaps(const uq_image *img, uint64_t host_off, uint64_t bytes);

#endif
