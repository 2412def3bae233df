// SPDX-License-Identifier: MIT
/* The metadata walker, the big-endian table reader and the batched table
 * reader (see walk.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "stats.h"
#include "walk.h"

const char *uq_mkind_name(enum uq_mkind k)
{
	static const char *const names[] = {
		[UQ_MK_NONE] = "nothing",
		[UQ_MK_HEADER] = "the image header",
		[UQ_MK_L1] = "an L1 table",
		[UQ_MK_REFTABLE] = "the refcount table",
		[UQ_MK_REFBLOCK] = "a refcount block",
		[UQ_MK_SNAPTABLE] = "the snapshot table",
		[UQ_MK_BITMAP_DIR] = "the bitmap directory",
		[UQ_MK_BITMAP_TABLE] = "a bitmap table",
		[UQ_MK_L2] = "an L2 table",
		[UQ_MK_BITMAP_DATA] = "bitmap data",
		[UQ_MK_DATA] = "guest data",
		[UQ_MK_COMPRESSED] = "compressed data",
	};

	return (unsigned)k < UQ_MK_COUNT ? names[k] : "?";
}

/* ---- table readers ---- */

int uq_read_table64(uq_image *img, enum uq_mkind k, uint64_t off, uint64_t n,
		    uint64_t **out)
{
	uint8_t *raw;
	uint64_t *t;
	int ret;

	*out = NULL;
	if (n > SIZE_MAX / 8)
		return -ENOMEM;
	raw = malloc(n ? n * 8 : 1);
	t = malloc(n ? n * 8 : 1);
	if (!raw || !t) {
		free(raw);
		free(t);
		return -ENOMEM;
	}
	ret = uq_meta_pread(img, k, raw, n * 8, off);
	for (uint64_t i = 0; ret == 0 && i < n; i++)
		t[i] = uq_be64(raw + i * 8);
	free(raw);
	if (ret < 0)
		free(t);
	else
		*out = t;
	return ret;
}

int uq_table64_encode(const uint64_t *t, uint64_t n, uint64_t bytes, uint8_t **out)
{
	uint8_t *raw;

	*out = NULL;
	if (bytes < n * 8 || bytes > SIZE_MAX)
		return -EINVAL;
	if (!bytes)
		return 0;
	raw = calloc(1, (size_t)bytes);
	if (!raw)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++)
		uq_put_be64(raw + i * 8, t[i]);
	*out = raw;
	return 0;
}

int uq_write_table64(uq_image *img, enum uq_mkind k, uint64_t off, const uint64_t *t,
		     uint64_t n, uint64_t bytes)
{
	uint8_t *raw;
	int ret = uq_table64_encode(t, n, bytes, &raw);

	if (ret == 0 && raw)
		ret = uq_meta_pwrite(img, k, raw, (size_t)bytes, off);
	free(raw);
	return ret;
}

/* Tables in flight at once: 8 MiB of buffers, 2..64 tables. */
#define READ_AHEAD_BYTES (8u << 20)
#define READ_AHEAD_MAX 64u

struct uq_tslot {
	struct io_req io;         /* first: the completion gets a struct uq_tslot */
	uint8_t *buf;
	int state;                /* 0 idle, 1 in flight, 2 done */
	ssize_t res;
};

static void tslot_done(struct io_req *io, ssize_t res)
{
	struct uq_tslot *s = (struct uq_tslot *)io;

	s->res = res;
	s->state = 2;
}

int uq_treader_init(struct uq_treader *r, uq_image *img, enum uq_mkind kind,
		    const uint64_t *off, size_t n)
{
	size_t depth = READ_AHEAD_BYTES / img->g.cluster_size;

	memset(r, 0, sizeof(*r));
	r->img = img;
	r->kind = kind;
	r->len = (size_t)img->g.cluster_size;
	r->off = off;
	r->n = n;
	if (depth > READ_AHEAD_MAX)
		depth = READ_AHEAD_MAX;
	if (depth < 2)
		depth = 2;
	if (depth > n)
		depth = n;
	if (!depth)
		return 0;
	r->s = calloc(depth, sizeof(*r->s));
	if (!r->s)
		return -ENOMEM;
	r->depth = (unsigned)depth;
	for (unsigned i = 0; i < r->depth; i++) {
		void *p;

		if (posix_memalign(&p, img->align, r->len))
			return -ENOMEM;
		r->s[i].buf = p;
	}
	return 0;
}

int uq_treader_next(struct uq_treader *r, uint8_t **buf)
{
	struct io_queue *q = r->img->ctx->q;
	struct uq_tslot *s;

	if (r->got >= r->n)
		return -EINVAL;
	while (r->sub < r->n && r->sub - r->got < r->depth) {
		s = &r->s[r->sub % r->depth];
		s->io = (struct io_req){ .op = IO_READ, .file = r->img->file, .buf = s->buf,
					 .len = r->len, .off = r->off[r->sub],
					 .done = tslot_done };
		s->state = 1;
		uq_count_meta(r->img->ctx, r->kind, false, r->len);
		io_queue_req(q, &s->io);
		r->sub++;
	}
	s = &r->s[r->got % r->depth];
	while (s->state != 2) {
		int ret = io_reap(q, 1);

		if (ret < 0)
			return ret;
		if (ret == 0 && s->state != 2)
			return -EIO;      /* nothing in flight: a lost request */
	}
	s->state = 0;
	r->got++;
	*buf = s->buf;
	if (s->res < 0)
		return (int)s->res;
	return (size_t)s->res == r->len ? 0 : -EIO;
}

void uq_treader_free(struct uq_treader *r)
{
	for (unsigned i = 0; i < r->depth; i++)
		/* nothing may complete into freed memory */
		while (r->s[i].state == 1)
			if (io_reap(r->img->ctx->q, 1) <= 0)
				break;
	for (unsigned i = 0; i < r->depth; i++)
		free(r->s[i].buf);
	free(r->s);
	r->s = NULL;
	r->depth = 0;
}

/* ---- the walk ---- */

uint64_t uq_snaptable_bytes(const uq_image *img)
{
	uint64_t bytes = 0;

	for (uint32_t i = 0; i < img->snap.n; i++)
		bytes += img->snap.list[i].raw.entry_len;
	return bytes;
}

static int region(struct uq_walk *w, enum uq_mkind k, uint64_t off, uint64_t len)
{
	return len && w->region ? w->region(w, k, off, len) : 0;
}

static int bad(struct uq_walk *w, enum uq_mkind k, uint64_t off, int err)
{
	if (w->bad)
		return w->bad(w, k, off, err);
	return uq_seterr(err, "%s: reading %s at 0x%llx failed: %s", w->img->path,
			 uq_mkind_name(k), (unsigned long long)off, strerror(-err));
}

bool uq_walk_want_decoded(struct uq_walk *w, uint32_t idx, uint64_t raw)
{
	uint64_t l2;
	bool copied;

	(void)idx;
	return uq_l1_decode(&w->img->g, raw, &l2, &copied) == 0 && l2;
}

int uq_walk_skip_bad(struct uq_walk *w, enum uq_mkind k, uint64_t off, int err)
{
	(void)w, (void)k, (void)off, (void)err;
	return 0;
}

/* The data one L2 table's entries name. */
static int l2_data(struct uq_walk *w, uint64_t l2_off, const uint8_t *tab)
{
	const struct uq_geom *g = &w->img->g;
	int ret = 0;

	for (uint64_t i = 0; ret == 0 && i < g->l2_entries; i++) {
		const uint8_t *p = tab + i * g->l2_entry_bytes;
		uint64_t off, len;
		struct uq_l2map m;

		w->l2_idx = i;
		ret = uq_l2_decode(g, uq_be64(p), g->extended_l2 ? uq_be64(p + 8) : 0, &m);
		if (ret < 0)
			return uq_seterr(ret, "%s: L2 table at 0x%llx, entry %llu: %s",
					 w->img->path, (unsigned long long)l2_off,
					 (unsigned long long)i, uq_errmsg());
		if (m.type == UQ_C_COMPRESSED) {
			uq_comp_span(&m, &off, &len);
			ret = region(w, UQ_MK_COMPRESSED, off, len);
		} else if (m.host_off && !g->external_data) {
			/* clusters of an external data file aren't refcounted */
			ret = region(w, UQ_MK_DATA, m.host_off, g->cluster_size);
		}
	}
	return ret;
}

/* The L2 tables of an L1 table, with their data when asked: read ahead
 * through the queue, handed out in L1 order. */
static int l1_tables(struct uq_walk *w, const uint64_t *l1, uint32_t n)
{
	uint64_t cs = w->img->g.cluster_size, *offs;
	uint32_t *idx;
	struct uq_treader rd = { 0 };
	size_t nt = 0;
	int ret = 0;

	offs = malloc((size_t)n * sizeof(*offs));
	idx = malloc((size_t)n * sizeof(*idx));
	if (!offs || !idx) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (!l1[i] || (w->want_l2 && !w->want_l2(w, i, l1[i])))
			continue;
		offs[nt] = l1[i] & QCOW_L1E_OFFSET_MASK;
		idx[nt++] = i;
	}
	if (w->what & UQ_WALK_DATA)
		ret = uq_treader_init(&rd, w->img, UQ_MK_L2, offs, nt);
	for (size_t k = 0; ret == 0 && k < nt; k++) {
		uint8_t *tab;

		w->l1_idx = idx[k];
		if (w->l1_entry)
			ret = w->l1_entry(w, idx[k], l1[idx[k]]);
		if (ret == 0)
			ret = region(w, UQ_MK_L2, offs[k], cs);
		if (ret != 0 || !(w->what & UQ_WALK_DATA))
			continue;
		ret = uq_treader_next(&rd, &tab);
		if (ret < 0) {
			ret = bad(w, UQ_MK_L2, offs[k], ret);
			/* the reader is past this table: go on with the next */
			continue;
		}
		ret = w->l2_table ? w->l2_table(w, offs[k], tab) : l2_data(w, offs[k], tab);
	}
out:
	uq_treader_free(&rd);
	free(offs);
	free(idx);
	return ret;
}

int uq_walk_l1(struct uq_walk *w, uint64_t l1_off, uint32_t l1_size, const uint64_t *mem)
{
	uint64_t *own = NULL;
	int ret;

	if (!l1_size)
		return 0;
	ret = region(w, UQ_MK_L1, l1_off, (uint64_t)l1_size * 8);
	if (ret == 0 && !mem) {
		ret = uq_read_table64(w->img, UQ_MK_L1, l1_off, l1_size, &own);
		if (ret < 0)
			return bad(w, UQ_MK_L1, l1_off, ret);   /* 0: skip this table */
		mem = own;
	}
	if (ret == 0)
		ret = l1_tables(w, mem, l1_size);
	free(own);
	return ret;
}

/* One bitmap's table and the data clusters it names. */
static int bitmap_table(struct uq_walk *w, uint64_t off, uint32_t size)
{
	uint64_t cs = w->img->g.cluster_size, *t;
	int ret = region(w, UQ_MK_BITMAP_TABLE, off, (uint64_t)size * 8);

	if (ret != 0)
		return ret;
	ret = uq_read_table64(w->img, UQ_MK_BITMAP_TABLE, off, size, &t);
	if (ret < 0)
		return bad(w, UQ_MK_BITMAP_TABLE, off, ret);
	for (uint32_t i = 0; i < size && ret == 0; i++) {
		uint64_t d;

		if (uq_bmtable_entry_decode(t[i], cs, &d) < 0)
			ret = bad(w, UQ_MK_BITMAP_DATA, t[i] & QCOW_BME_OFFSET_MASK, -EINVAL);
		else if (d)
			ret = region(w, UQ_MK_BITMAP_DATA, d, cs);
	}
	free(t);
	return ret;
}

/* Bitmaps count only while the autoclear bit says they are valid: a
 * program without bitmap support has otherwise left them stale, and qemu
 * ignores the directory too. A directory that doesn't decode (qemu's
 * check can't load it either) counts as itself alone. */
static int bitmaps(struct uq_walk *w)
{
	uq_image *img = w->img;
	const struct uq_exts *e = img->exts;
	uint64_t dsize = e->bitmap_directory_size, pos = 0, file_size;
	struct uq_bmentry *ent = NULL;
	uint8_t *dir = NULL;
	uint32_t n = 0;
	int ret;

	if (img->h.version < 3 || !e->has_bitmaps ||
	    !(img->h.autoclear_features & QCOW_AUTOCLEAR_BITMAPS))
		return 0;
	ret = region(w, UQ_MK_BITMAP_DIR, e->bitmap_directory_offset, dsize);
	if (ret == 0)
		ret = io_file_size(img->file, &file_size);
	if (ret != 0)
		return ret;
	/* open checked the directory lies inside the file; format.c bounds it */
	dir = malloc(dsize ? (size_t)dsize : 1);
	ent = calloc(e->nb_bitmaps, sizeof(*ent));
	if (!dir || !ent) {
		ret = -ENOMEM;
		goto out;
	}
	ret = uq_meta_pread(img, UQ_MK_BITMAP_DIR, dir, (size_t)dsize,
			    e->bitmap_directory_offset);
	if (ret < 0) {
		ret = bad(w, UQ_MK_BITMAP_DIR, e->bitmap_directory_offset, ret);
		goto out;
	}
	for (n = 0; n < e->nb_bitmaps; n++) {
		if (uq_bmentry_decode(dir + pos, (size_t)(dsize - pos), img->g.cluster_size,
				      img->size, file_size, &ent[n]) < 0) {
			uq_errclear();   /* the walk's users report it their way */
			break;
		}
		pos += ent[n].entry_len;
	}
	if (n < e->nb_bitmaps || pos != dsize) {
		ret = bad(w, UQ_MK_BITMAP_DIR, e->bitmap_directory_offset, -EINVAL);
		goto out;
	}
	for (uint32_t i = 0; i < n && ret == 0; i++)
		ret = bitmap_table(w, ent[i].table_off, ent[i].table_size);
out:
	free(dir);
	free(ent);
	return ret;
}

static int refblocks(struct uq_walk *w)
{
	uq_image *img = w->img;
	uint64_t cs = img->g.cluster_size, n = w->reftable_n, *own = NULL;
	const uint64_t *rt = w->reftable;
	int ret = 0;

	if (!rt) {
		n = (uint64_t)img->h.refcount_table_clusters * cs / 8;
		ret = uq_read_table64(img, UQ_MK_REFTABLE, img->h.refcount_table_offset, n, &own);
		if (ret < 0)
			return bad(w, UQ_MK_REFTABLE, img->h.refcount_table_offset, ret);
		rt = own;
	}
	for (uint64_t i = 0; ret == 0 && i < n; i++) {
		uint64_t off = rt[i] & QCOW_REFT_OFFSET_MASK;

		if (w->refblock)
			ret = w->refblock(w, i, rt[i]);
		else if (off && !(rt[i] & QCOW_REFT_RESERVED) && !(off & (cs - 1)))
			ret = region(w, UQ_MK_REFBLOCK, off, cs);
	}
	free(own);
	return ret;
}

int uq_walk(struct uq_walk *w)
{
	uq_image *img = w->img;
	const struct uq_header *h = &img->h;
	int ret;

	w->snap = -1;
	ret = region(w, UQ_MK_HEADER, 0, img->g.cluster_size);
	if (ret == 0 && w->stage)
		ret = w->stage(w, UQ_MK_L1);
	if (ret == 0)
		ret = uq_walk_l1(w, h->l1_table_offset, h->l1_size, img->l1);
	for (uint32_t i = 0; ret == 0 && (w->what & UQ_WALK_SNAPSHOTS) && i < img->snap.n; i++) {
		w->snap = (int)i;
		if (w->stage)
			ret = w->stage(w, UQ_MK_L1);
		if (ret == 0)
			ret = uq_walk_l1(w, img->snap.list[i].raw.l1_table_offset,
					 img->snap.list[i].raw.l1_size, NULL);
	}
	w->snap = -1;
	if (ret == 0 && (w->what & UQ_WALK_SNAPSHOTS))
		ret = region(w, UQ_MK_SNAPTABLE, h->snapshots_offset, uq_snaptable_bytes(img));
	if (ret == 0 && (w->what & UQ_WALK_REFCOUNTS))
		ret = region(w, UQ_MK_REFTABLE, h->refcount_table_offset,
			     (uint64_t)h->refcount_table_clusters * img->g.cluster_size);
	if (ret == 0 && (w->what & UQ_WALK_BITMAPS))
		ret = bitmaps(w);
	if (ret == 0 && (w->what & UQ_WALK_REFCOUNTS)) {
		if (w->stage)
			ret = w->stage(w, UQ_MK_REFBLOCK);
		if (ret == 0)
			ret = refblocks(w);
	}
	return ret;
}
