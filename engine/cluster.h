/* SPDX-License-Identifier: MIT */
/* Guest-to-host mapping changes for the write path (cluster.c). */
#ifndef UQ_CLUSTER_H
#define UQ_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

/* Set the L2 entry (and, with extended L2, its bitmap) of guest offset
 * off, creating the L2 table or copying it from a snapshot first. */
int uq_l2_set(uq_image *img, uint64_t off, uint64_t entry, uint64_t bitmap);

/* Drop the references the old mapping m held, except to host cluster
 * keep; they drop once the new L2 entry is on disk. */
int uq_mapping_release(uq_image *img, const struct uq_l2map *m, uint64_t keep);

/* A host cluster for the guest cluster at guest_cluster_off; *fresh if
 * it lies past everything ever written (it reads as zeros). */
int uq_alloc_data(uq_image *img, uint64_t guest_cluster_off, uint64_t *host, bool *fresh);

/* n bytes for a compressed cluster, packed after the previous one. */
int uq_alloc_compressed(uq_image *img, uint64_t n, uint64_t *off);

/* Subclusters first..last, and those inside the image from cstart. */
uint32_t uq_sc_mask(unsigned first, unsigned last);
uint32_t uq_sc_in_image(const uq_image *img, uint64_t cstart);

/* Does the guest cluster read as zeros (zero flag, or unallocated with
 * no backing file)? */
bool uq_reads_zero(const uq_image *img, const struct uq_l2map *m);

#endif
