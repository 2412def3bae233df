// SPDX-License-Identifier: MIT
/* Counting the real references to every host cluster by walking the
 * header, L1/L2 tables (active and snapshots) and the snapshot table. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "internal.h"

struct counter {
	uq_image *img;
	uint64_t *counts;
	uint64_t n;
};

static int ref(struct counter *k, uint64_t off, uint64_t bytes, const char *what)
{
	uint64_t cb = k->img->g.cluster_bits;

	if (!bytes)
		return 0;
	for (uint64_t c = off >> cb; c <= (off + bytes - 1) >> cb; c++) {
		if (c >= k->n)
			return uq_seterr(-EIO, "%s at 0x%llx lies past the end of the image",
					 what, (unsigned long long)(c << cb));
		k->counts[c]++;
	}
	return 0;
}

static int count_l2(struct counter *k, uint64_t l2_off)
{
	uq_image *img = k->img;
	const struct uq_geom *g = &img->g;
	uint8_t *tab = malloc(g->cluster_size);
	int ret;

	if (!tab)
		return -ENOMEM;
	ret = io_pread_full(img->file, tab, g->cluster_size, l2_off);
	for (uint64_t i = 0; ret == 0 && i < g->l2_entries; i++) {
		const uint8_t *e = tab + i * g->l2_entry_bytes;
		struct uq_l2map m;

		ret = uq_l2_decode(g, uq_be64(e), g->extended_l2 ? uq_be64(e + 8) : 0, &m);
		if (ret < 0)
			break;
		if (m.type == UQ_C_COMPRESSED) {
			uint64_t start = m.comp_off & ~511ull;

			ret = ref(k, start, ((m.comp_off & 511) + m.comp_len + 511) & ~511ull,
				  "compressed cluster");
		} else if (m.host_off && !g->external_data) {
			ret = ref(k, m.host_off, g->cluster_size, "data cluster");
		}
	}
	free(tab);
	return ret;
}

static int count_l1(struct counter *k, uint64_t l1_off, uint32_t l1_size, const uint64_t *l1)
{
	uq_image *img = k->img;
	uint64_t *own = NULL;
	int ret = ref(k, l1_off, (uint64_t)l1_size * 8, "L1 table");

	if (ret == 0 && !l1 && l1_size) {
		uint8_t *raw = malloc((size_t)l1_size * 8);

		own = malloc((size_t)l1_size * 8);
		if (!raw || !own) {
			free(raw);
			free(own);
			return -ENOMEM;
		}
		ret = io_pread_full(img->file, raw, (size_t)l1_size * 8, l1_off);
		for (uint32_t i = 0; i < l1_size; i++)
			own[i] = uq_be64(raw + (size_t)i * 8);
		free(raw);
		l1 = own;
	}
	for (uint32_t i = 0; ret == 0 && i < l1_size; i++) {
		uint64_t l2;
		bool copied;

		ret = uq_l1_decode(&img->g, l1[i], &l2, &copied);
		if (ret == 0 && l2) {
			ret = ref(k, l2, img->g.cluster_size, "L2 table");
			if (ret == 0)
				ret = count_l2(k, l2);
		}
	}
	free(own);
	return ret;
}

int uq_count_refs(uq_image *img, uint64_t **counts, uint64_t *nclusters)
{
	struct counter k = { .img = img };
	uint64_t end = img->host_end > img->file_size ? img->host_end : img->file_size;
	int ret;

	k.n = (end + img->g.cluster_size - 1) >> img->g.cluster_bits;
	k.counts = calloc(k.n ? k.n : 1, sizeof(uint64_t));
	if (!k.counts)
		return -ENOMEM;
	ret = ref(&k, 0, img->g.cluster_size, "header");
	if (ret == 0)
		ret = count_l1(&k, img->h.l1_table_offset, img->h.l1_size, img->l1);
	for (uint32_t i = 0; ret == 0 && i < img->nb_snaps; i++)
		ret = count_l1(&k, img->snaps[i].raw.l1_table_offset,
			       img->snaps[i].raw.l1_size, NULL);
	if (ret == 0 && img->nb_snaps) {
		uint64_t bytes = 0;

		for (uint32_t i = 0; i < img->nb_snaps; i++)
			bytes += img->snaps[i].raw.entry_len;
		ret = ref(&k, img->h.snapshots_offset, bytes, "snapshot table");
	}
	if (ret == 0 && img->exts->has_bitmaps)
		ret = ref(&k, img->exts->bitmap_directory_offset,
			  img->exts->bitmap_directory_size, "bitmap directory");
	if (ret < 0) {
		free(k.counts);
		return ret;
	}
	*counts = k.counts;
	*nclusters = k.n;
	return 0;
}
