// SPDX-License-Identifier: MIT
/* What the check knows before it counts (each cluster's use, bitmaps, the
 * refcount table), batched table reads, problem lines and progress. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"

/* ---- messages, progress, batched table reads ---- */

void ck_msg(struct ck *ck, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!ck->res->report)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	ck->res->report(ck->res->arg, line);
}

void ck_work(struct ck *ck, uint64_t n)
{
	ck->work_done += n;
	if (ck->work_done > ck->work_total)
		ck->work_total = ck->work_done;
	if (ck->res->progress)
		ck->res->progress(ck->res->arg, ck->work_done, ck->work_total);
}

/* Tables in flight at once: 8 MiB of buffers, 2..64 tables. */
#define READ_AHEAD_BYTES (8u << 20)
#define READ_AHEAD_MAX 64u

static void rslot_done(struct io_req *io, ssize_t res)
{
	struct ck_rslot *s = (struct ck_rslot *)io;

	s->res = res;
	s->state = 2;
}

int ck_reader_init(struct ck_reader *r, uq_image *img, const uint64_t *off, size_t n)
{
	size_t depth = READ_AHEAD_BYTES / img->g.cluster_size;

	memset(r, 0, sizeof(*r));
	r->img = img;
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

/* The next table of the list; its buffer stays valid until the next call. */
int ck_reader_next(struct ck_reader *r, uint8_t **buf)
{
	struct io_queue *q = r->img->ctx->q;
	struct ck_rslot *s;

	if (r->got >= r->n)
		return -EINVAL;
	while (r->sub < r->n && r->sub - r->got < r->depth) {
		s = &r->s[r->sub % r->depth];
		s->io = (struct io_req){ .op = IO_READ, .file = r->img->file, .buf = s->buf,
					 .len = r->len, .off = r->off[r->sub],
					 .done = rslot_done };
		s->state = 1;
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

void ck_reader_free(struct ck_reader *r)
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

/* ---- counts and the metadata map ---- */

const char *ck_kind_name(unsigned k)
{
	static const char *const names[] = {
		[K_NONE] = "nothing",
		[K_HEADER] = "the image header",
		[K_L1] = "an L1 table",
		[K_REFTABLE] = "the refcount table",
		[K_REFBLOCK] = "a refcount block",
		[K_SNAPTABLE] = "the snapshot table",
		[K_BITMAP_DIR] = "the bitmap directory",
		[K_BITMAP_TABLE] = "a bitmap table",
		[K_L2] = "an L2 table",
		[K_BITMAP_DATA] = "bitmap data",
		[K_DATA] = "guest data",
		[K_COMPRESSED] = "compressed data",
	};

	return k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

/* Make counts and kind cover n clusters. */
int ck_grow(struct ck *ck, uint64_t n)
{
	uint64_t cap = ck->cap;
	uint64_t *c;
	uint8_t *k;

	if (n <= cap)
		return 0;
	while (cap < n)
		cap = cap ? cap * 2 : 1024;
	c = realloc(ck->counts, cap * sizeof(*c));
	if (!c)
		return -ENOMEM;
	ck->counts = c;
	k = realloc(ck->kind, cap);
	if (!k)
		return -ENOMEM;
	ck->kind = k;
	memset(c + ck->cap, 0, (cap - ck->cap) * sizeof(*c));
	memset(k + ck->cap, 0, cap - ck->cap);
	ck->cap = cap;
	return 0;
}

/* Record what the clusters of [off, off+size) hold; a second, different
 * use of a cluster is remembered and judged after the compare. */
int ck_mark(struct ck *ck, uint64_t off, uint64_t size, unsigned k)
{
	uint32_t cb = ck->img->g.cluster_bits;
	uint64_t first, last;

	if (!size || off >= ck->nb << cb)
		return 0;
	first = off >> cb;
	last = size - 1 > UINT64_MAX - off ? UINT64_MAX : (off + size - 1) >> cb;
	if (last >= ck->nb)
		last = ck->nb - 1;
	for (uint64_t c = first; c <= last; c++) {
		uint8_t cur = ck->kind[c], ck0 = cur & K_MASK;

		if (!ck0) {
			ck->kind[c] = (uint8_t)(cur | k);
			continue;
		}
		if (ck0 == k)
			continue;
		if (ck_kind_in_place(k) || ck_kind_in_place(ck0))
			cur |= K_INPLACE;
		if (!(cur & K_SHARED)) {
			if (ck->nov == ck->ov_cap) {
				size_t ncap = ck->ov_cap ? ck->ov_cap * 2 : 16;
				struct ck_overlap *o = realloc(ck->ov, ncap * sizeof(*o));

				if (!o)
					return -ENOMEM;
				ck->ov = o;
				ck->ov_cap = ncap;
			}
			ck->ov[ck->nov++] = (struct ck_overlap){ c, ck0, (uint8_t)k };
		}
		ck->kind[c] = cur | K_SHARED;
	}
	return 0;
}

bool ck_conflicts(const struct ck *ck, uint64_t off, uint64_t len)
{
	uint32_t cb = ck->img->g.cluster_bits;

	for (uint64_t c = off >> cb; len && c <= (off + len - 1) >> cb && c < ck->nb; c++)
		if (ck->kind[c] & K_INPLACE)
			return true;
	return false;
}

int ck_read_table(uq_image *img, uint64_t off, uint32_t n, uint64_t **out)
{
	uint8_t *raw = malloc((size_t)n * 8);
	uint64_t *l1 = malloc((size_t)n * 8);
	int ret;

	*out = NULL;
	if (!raw || !l1) {
		free(raw);
		free(l1);
		return -ENOMEM;
	}
	ret = io_pread_full(img->file, raw, (size_t)n * 8, off);
	for (uint32_t i = 0; i < n; i++)
		l1[i] = uq_be64(raw + (size_t)i * 8);
	free(raw);
	if (ret < 0) {
		free(l1);
		return ret;
	}
	*out = l1;
	return 0;
}

uint64_t ck_snaptable_bytes(const uq_image *img)
{
	uint64_t bytes = 0;

	for (uint32_t i = 0; i < img->nb_snaps; i++)
		bytes += img->snaps[i].raw.entry_len;
	return bytes;
}

static int load_reftable(struct ck *ck)
{
	uq_image *img = ck->img;
	uint64_t n = (uint64_t)img->h.refcount_table_clusters * ck->cs / 8;

	free(ck->rt);
	ck->rt_n = 0;
	ck->far_off = 0;          /* blocks move in a rebuild */
	/* the header decoder bounded the table to 8 MiB inside the file */
	if (ck_read_table(img, img->h.refcount_table_offset, (uint32_t)n, &ck->rt) < 0) {
		ck->res->check_errors++;
		return uq_seterr(-EIO, "%s: reading the refcount table failed", img->path);
	}
	ck->rt_n = n;
	return 0;
}

/* A refcount table entry that names a block the compare can read. */
bool ck_rt_usable(const struct ck *ck, uint64_t raw, uint64_t *off)
{
	*off = raw & QCOW_REFT_OFFSET_MASK;
	return *off && !(*off & (ck->cs - 1));
}

static int add_region(struct ck *ck, uint64_t off, uint64_t len)
{
	if (ck->nbm == ck->bm_cap) {
		size_t ncap = ck->bm_cap ? ck->bm_cap * 2 : 16;
		struct ck_region *r = realloc(ck->bm, ncap * sizeof(*r));

		if (!r)
			return -ENOMEM;
		ck->bm = r;
		ck->bm_cap = ncap;
	}
	ck->bm[ck->nbm++] = (struct ck_region){ off, len };
	return 0;
}

#define BME_RESERVED    0xff000000000001feull
#define BME_OFFSET_MASK 0x00fffffffffffe00ull
#define BME_ALL_ONES    1ull
#define BMD_FIXED       24u

/* One bitmap's table and the data clusters it names. */
static int map_bitmap_table(struct ck *ck, uint64_t off, uint32_t size)
{
	uq_image *img = ck->img;
	uint64_t bytes = (uint64_t)size * 8, *t;
	int ret;

	if ((off & (ck->cs - 1)) || bytes > ck->file_size || off > ck->file_size - bytes) {
		ck->bm_bad++;
		return 0;
	}
	ret = add_region(ck, off, bytes);
	if (ret == 0)
		ret = ck_mark(ck, off, bytes, K_BITMAP_TABLE);
	if (ret == 0 && size && ck_read_table(img, off, size, &t) == 0) {
		for (uint32_t i = 0; i < size && ret == 0; i++) {
			uint64_t d = t[i] & BME_OFFSET_MASK;

			if ((t[i] & BME_RESERVED) || (d && ((t[i] & BME_ALL_ONES) ||
							    (d & (ck->cs - 1))))) {
				ck->bm_bad++;
				continue;
			}
			if (d)
				ret = add_region(ck, d, ck->cs);
			if (d && ret == 0)
				ret = ck_mark(ck, d, ck->cs, K_BITMAP_DATA);
		}
		free(t);
	}
	return ret;
}

/* Bitmaps count only while the autoclear bit says they are valid: a
 * program without bitmap support has otherwise left them stale, and qemu
 * then ignores the directory too. */
static int map_bitmaps(struct ck *ck)
{
	uq_image *img = ck->img;
	const struct uq_exts *e = img->exts;
	uint64_t dsize = e->bitmap_directory_size, pos = 0;
	uint8_t *dir;
	int ret;

	if (!e->has_bitmaps || !(img->h.autoclear_features & QCOW_AUTOCLEAR_BITMAPS))
		return 0;
	ret = add_region(ck, e->bitmap_directory_offset, dsize);
	if (ret == 0)
		ret = ck_mark(ck, e->bitmap_directory_offset, dsize, K_BITMAP_DIR);
	/* open checked the directory lies inside the file; format.c bounds it */
	dir = malloc(dsize ? (size_t)dsize : 1);
	if (ret < 0 || !dir) {
		free(dir);
		return -ENOMEM;
	}
	if (io_pread_full(img->file, dir, (size_t)dsize, e->bitmap_directory_offset) < 0) {
		ck->bm_bad++;
		free(dir);
		return 0;
	}
	for (uint32_t i = 0; i < e->nb_bitmaps && ret == 0; i++) {
		const uint8_t *p = dir + pos;
		uint64_t len;

		if (dsize - pos < BMD_FIXED) {
			ck->bm_bad++;
			break;
		}
		len = (BMD_FIXED + (uint64_t)uq_be32(p + 20) + uq_be16(p + 18) + 7) & ~7ull;
		if (len > dsize - pos) {
			ck->bm_bad++;
			break;
		}
		ret = map_bitmap_table(ck, uq_be64(p), uq_be32(p + 8));
		pos += len;
	}
	free(dir);
	return ret;
}

/* Every L2 table an L1 table names, and the L1 table itself. */
static int map_l1(struct ck *ck, uint64_t l1_off, uint32_t l1_size, const uint64_t *mem,
		  uint64_t *nl2)
{
	uint64_t *own = NULL;
	int ret;

	if (!l1_size)
		return 0;
	ret = ck_mark(ck, l1_off, (uint64_t)l1_size * 8, K_L1);
	if (ret == 0 && !mem) {
		if (ck_read_table(ck->img, l1_off, l1_size, &own) < 0)
			return 0;   /* the walk reports it */
		mem = own;
	}
	for (uint32_t i = 0; ret == 0 && i < l1_size; i++) {
		if (!mem[i])
			continue;
		ret = ck_mark(ck, mem[i] & QCOW_L1E_OFFSET_MASK, ck->cs, K_L2);
		(*nl2)++;
	}
	free(own);
	return ret;
}

/* What each cluster holds apart from guest data, before anything is
 * counted: repairs refuse to write where two uses meet. */
static int meta_map(struct ck *ck, uint64_t *nl2_active, uint64_t *nl2_all)
{
	uq_image *img = ck->img;
	uint64_t off;
	int ret;

	memset(ck->kind, 0, ck->cap);
	ck->nov = ck->nbm = 0;
	ck->bm_bad = 0;
	*nl2_active = *nl2_all = 0;
	ret = ck_mark(ck, 0, ck->cs, K_HEADER);
	if (ret == 0)
		ret = map_l1(ck, img->h.l1_table_offset, img->h.l1_size, img->l1, nl2_active);
	*nl2_all = *nl2_active;
	for (uint32_t i = 0; ret == 0 && i < img->nb_snaps; i++)
		ret = map_l1(ck, img->snaps[i].raw.l1_table_offset, img->snaps[i].raw.l1_size,
			     NULL, nl2_all);
	if (ret == 0)
		ret = ck_mark(ck, img->h.snapshots_offset, ck_snaptable_bytes(img), K_SNAPTABLE);
	if (ret == 0)
		ret = ck_mark(ck, img->h.refcount_table_offset, ck->rt_n * 8, K_REFTABLE);
	for (uint64_t i = 0; ret == 0 && i < ck->rt_n; i++)
		if (!(ck->rt[i] & QCOW_REFT_RESERVED) && ck_rt_usable(ck, ck->rt[i], &off))
			ret = ck_mark(ck, off, ck->cs, K_REFBLOCK);
	if (ret == 0)
		ret = map_bitmaps(ck);
	if (ret < 0) {
		ck->res->check_errors++;
		return uq_seterr(ret, "out of memory mapping metadata");
	}
	return 0;
}

/* ---- setting up ---- */

void ck_free(struct ck *ck)
{
	free(ck->counts);
	free(ck->kind);
	free(ck->rt);
	free(ck->diff);
	free(ck->ov);
	free(ck->bm);
	free(ck->far);
}

/* Counts, map and reftable for the image as it is on disk now. */
int ck_load(struct ck *ck, uint64_t *nl2_active)
{
	uq_image *img = ck->img;
	uint64_t nl2_all, size;
	int ret = io_file_size(img->file, &size);

	if (ret < 0) {
		ck->res->check_errors++;
		return uq_seterr(ret, "%s: can't get the file size", img->path);
	}
	ck->file_size = size;
	ck->nb = (size + ck->cs - 1) / ck->cs;
	/* qemu's bound too; it keeps every array below 16 GiB */
	if (ck->nb > INT32_MAX) {
		ck->res->check_errors++;
		return uq_seterr(-EFBIG, "%s: the file has too many clusters to check",
				 img->path);
	}
	if (ck_grow(ck, ck->nb ? ck->nb : 1) < 0) {
		ck->res->check_errors++;
		return -ENOMEM;
	}
	ret = load_reftable(ck);
	if (ret == 0)
		ret = meta_map(ck, nl2_active, &nl2_all);
	if (ret == 0) {
		uint64_t per = 1ull << img->g.rb_bits;

		ck->work_total = ck->work_done + nl2_all + (ck->nb + per - 1) / per + *nl2_active;
	}
	return ret;
}

