/* Tests for gr_sparse: the sparse delta layout (bitmask + values), its
 * reader on dense and sparse tensors, and corrupt files. */
#include "gr_test.h"
#include "test_surgery_util.h"

#include <omp.h>

static char *tmp;

static void test_compress_roundtrip(void)
{
    static const uint64_t lens[] = {0, 1, 7, 8, 9, 63, 64, 65, 4095, 4096, 4097, 10001};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        uint64_t n = lens[li];
        float *x = malloc((n + 1) * sizeof *x), *v = malloc((n + 1) * sizeof *v),
              *y = malloc((n + 1) * sizeof *y);
        uint8_t *m = malloc(gr_sparse_mask_bytes(n) + 1);
        uint64_t expect = 0;
        for (uint64_t i = 0; i < n; i++) {
            float u = gr_rng_uniform(gr_rng_key(7, "compress", n), i);
            x[i] = u < 0.3f ? (float)i - 2.5f : 0.0f;
            if (i % 97 == 5) x[i] = -0.0f; /* negative zero counts as zero */
            expect += x[i] != 0.0f;
        }
        uint64_t nnz = gr_sparse_compress(x, n, m, v);
        CHECK_EQ_INT(nnz, expect);
        gr_sparse_expand(m, v, n, y);
        int same = 1;
        for (uint64_t i = 0; i < n; i++) same &= y[i] == x[i];
        CHECK_MSG(same, "round trip of %llu elements", (unsigned long long)n);
        /* compressing in place (vals aliasing x) gives the same values */
        uint64_t nnz2 = gr_sparse_compress(x, n, m, x);
        CHECK_EQ_INT(nnz2, nnz);
        CHECK(nnz == 0 || !memcmp(x, v, nnz * sizeof *x));
        free(x), free(v), free(y), free(m);
    }
}

/* Writes a file with a dense tensor, two sparse ones (f32 and bf16) and a
 * sparse scalar; returns the dense expectations. */
typedef struct sfix {
    float *a, *b, *c; /* dense view of "a.dense", "b.sparse", "c.bf16" */
    uint64_t na, nb, nc;
    float scalar;
} sfix;

static void write_sparse_file(const char *path, sfix *f)
{
    f->na = 33;
    f->nb = 3 * 4099; /* crosses the 4096-element blocks, odd length */
    f->nc = 17 * 5;
    f->a = malloc(f->na * 4), f->b = malloc(f->nb * 4), f->c = malloc(f->nc * 4);
    ts_gauss(f->a, f->na, 1, "a", 0, 1);
    ts_gauss(f->b, f->nb, 2, "b", 0, 1);
    ts_gauss(f->c, f->nc, 3, "c", 0, 1);
    for (uint64_t i = 0; i < f->nb; i++)
        if (gr_rng_uniform(gr_rng_key(9, "b", 0), i) < 0.9f) f->b[i] = 0;
    for (uint64_t i = 0; i < f->nc; i++)
        if (i % 3) f->c[i] = 0;
    ts_round(GR_DT_BF16, f->c, f->nc);
    f->scalar = 2.5f;

    uint8_t *mb = malloc(gr_sparse_mask_bytes(f->nb)), *mc = malloc(gr_sparse_mask_bytes(f->nc));
    float *vb = malloc(f->nb * 4), *vc = malloc(f->nc * 4);
    uint64_t kb = gr_sparse_compress(f->b, f->nb, mb, vb);
    uint64_t kc = gr_sparse_compress(f->c, f->nc, mc, vc);
    int64_t sa[1] = {33}, sb[2] = {3, 4099}, sc[2] = {17, 5};
    uint8_t ms = 1;
    gr_stw *w = gr_stw_new(path, 0);
    CHECK(w != NULL);
    CHECK(!gr_stw_add(w, "a.dense", GR_DT_F32, 1, sa));
    CHECK(!gr_sparse_declare(w, "b.sparse", GR_DT_F32, 2, sb, kb));
    CHECK(!gr_sparse_declare(w, "c.bf16", GR_DT_BF16, 2, sc, kc));
    CHECK(!gr_sparse_declare(w, "d.scalar", GR_DT_F32, 0, NULL, 1));
    CHECK(gr_sparse_declare(w, "bad::name", GR_DT_F32, 1, sa, 1) == GR_EINVAL);
    CHECK(!gr_stw_meta(w, GR_SPARSE_META_KIND, GR_SPARSE_KIND_SPARSE));
    CHECK(!gr_stw_begin(w));
    CHECK(!gr_stw_write_f32(w, f->a, f->na));
    CHECK(!gr_sparse_write_shape(w, 2, sb));
    CHECK(!gr_stw_write(w, mb, gr_sparse_mask_bytes(f->nb)));
    CHECK(!gr_stw_write_f32(w, vb, kb));
    CHECK(!gr_sparse_write_shape(w, 2, sc));
    CHECK(!gr_stw_write(w, mc, gr_sparse_mask_bytes(f->nc)));
    CHECK(!gr_stw_write_f32(w, vc, kc));
    CHECK(!gr_sparse_write_shape(w, 0, NULL));
    CHECK(!gr_stw_write(w, &ms, 1));
    CHECK(!gr_stw_write_f32(w, &f->scalar, 1));
    CHECK(!gr_stw_finish(w));
    gr_stw_destroy(&w);
    free(mb), free(mc), free(vb), free(vc);
}

static void test_reader(void)
{
    const char *path = ts_path(tmp, "sp.safetensors");
    sfix f;
    write_sparse_file(path, &f);
    gr_sparse *s = gr_sparse_open(path);
    CHECK_MSG(s != NULL, "%s", gr_errmsg());
    if (!s) return;
    CHECK_EQ_INT(gr_sparse_count(s), 4);
    CHECK(gr_sparse_has_sparse(s));
    CHECK(gr_sparse_is_delta(s));
    const gr_sparse_tensor *a = gr_sparse_find(s, "a.dense"), *b = gr_sparse_find(s, "b.sparse"),
                           *c = gr_sparse_find(s, "c.bf16"), *d = gr_sparse_find(s, "d.scalar");
    CHECK(a && b && c && d);
    CHECK(gr_sparse_find(s, "b.sparse::mask") == NULL);
    if (!a || !b || !c || !d) goto out;
    CHECK(!a->is_sparse && b->is_sparse && c->is_sparse && d->is_sparse);
    CHECK_EQ_INT(b->ndim, 2);
    CHECK_EQ_INT(b->shape[0], 3);
    CHECK_EQ_INT(b->shape[1], 4099);
    CHECK_EQ_INT(b->nelem, f.nb);
    CHECK_EQ_INT(c->dtype, GR_DT_BF16);
    CHECK_EQ_INT(d->ndim, 0);
    CHECK_EQ_INT(d->nelem, 1);
    CHECK(gr_sparse_dense(s, a) != NULL && gr_sparse_dense(s, b) == NULL);

    float *y = malloc(f.nb * 4);
    CHECK(!gr_sparse_read_f32(s, a, 0, f.na, y));
    CHECK(!memcmp(y, f.a, f.na * 4));
    CHECK(!gr_sparse_read_f32(s, b, 0, f.nb, y));
    CHECK(!memcmp(y, f.b, f.nb * 4));
    CHECK(!gr_sparse_read_f32(s, c, 0, f.nc, y));
    CHECK(!memcmp(y, f.c, f.nc * 4));
    CHECK(!gr_sparse_read_f32(s, d, 0, 1, y));
    CHECK(y[0] == 2.5f);
    /* sub-ranges at awkward offsets, across block boundaries */
    static const uint64_t offs[][2] = {{0, 1},     {1, 63},   {5, 130},    {4095, 2},
                                       {4090, 20}, {8191, 9}, {12200, 97}, {12296, 1}};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        uint64_t o = offs[i][0], n = offs[i][1];
        memset(y, 0x7f, n * 4);
        CHECK(!gr_sparse_read_f32(s, b, o, n, y));
        CHECK_MSG(!memcmp(y, f.b + o, n * 4), "range [%llu, +%llu)", (unsigned long long)o,
                  (unsigned long long)n);
    }
    CHECK(gr_sparse_read_f32(s, b, f.nb - 1, 2, y) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "b.sparse");
    /* many threads reading chunks of one tensor at once */
    gr_sparse_close(&s);
    s = gr_sparse_open(path);
    b = gr_sparse_find(s, "b.sparse");
    memset(y, 0, f.nb * 4);
    int bad = 0;
#pragma omp parallel for num_threads(4) reduction(+ : bad)
    for (int k = 0; k < 37; k++) {
        uint64_t lo = f.nb * (uint64_t)k / 37, hi = f.nb * (uint64_t)(k + 1) / 37;
        bad += gr_sparse_read_f32(s, b, lo, hi - lo, y + lo) != 0;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(!memcmp(y, f.b, f.nb * 4));
    gr_sparse_release(s, b);
    CHECK(!gr_sparse_read_f32(s, b, 0, f.nb, y)); /* pages come back after release */
    CHECK(!memcmp(y, f.b, f.nb * 4));
    free(y);
out:
    gr_sparse_close(&s);
    free(f.a), free(f.b), free(f.c);
}

/* Writes raw tensors (no gr_sparse help) so each rule can be broken. */
typedef struct rawt {
    const char *name;
    gr_dtype dt;
    int ndim;
    int64_t shape[2];
    const void *data;
    size_t nbytes;
} rawt;

static const char *write_raw(const char *file, const rawt *t, size_t n)
{
    const char *path = ts_path(tmp, file);
    gr_stw *w = gr_stw_new(path, 0);
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++)
        rc = gr_stw_add(w, t[i].name, t[i].dt, t[i].ndim, t[i].shape);
    if (!rc) rc = gr_stw_begin(w);
    for (size_t i = 0; !rc && i < n; i++)
        rc = t[i].nbytes ? gr_stw_write(w, t[i].data, t[i].nbytes) : 0;
    if (!rc) rc = gr_stw_finish(w);
    gr_stw_destroy(&w);
    CHECK_MSG(!rc, "write %s: %s", file, gr_errmsg());
    return path;
}

static void expect_open_error(const char *path, const char *what)
{
    gr_sparse *s = gr_sparse_open(path);
    CHECK_MSG(s == NULL, "%s: opened", what);
    CHECK_CONTAINS(gr_errmsg(), path);
    CHECK_CONTAINS(gr_errmsg(), what);
    gr_sparse_close(&s);
}

static void expect_read_error(const char *path, const char *name, const char *what)
{
    gr_sparse *s = gr_sparse_open(path);
    CHECK_MSG(s != NULL, "%s", gr_errmsg());
    if (!s) return;
    const gr_sparse_tensor *t = gr_sparse_find(s, name);
    float y[64];
    CHECK(t != NULL);
    if (t) {
        CHECK(gr_sparse_read_f32(s, t, 0, t->nelem, y) == GR_EFORMAT);
        CHECK_CONTAINS(gr_errmsg(), name);
        CHECK_CONTAINS(gr_errmsg(), what);
        /* the failure sticks */
        CHECK(gr_sparse_read_f32(s, t, 0, 1, y) == GR_EFORMAT);
    }
    gr_sparse_close(&s);
}

static void test_corrupt(void)
{
    int64_t shp[2] = {3, 5}, neg[2] = {-1, 5};
    uint8_t mask[2] = {0x05, 0x00}, mask3[2] = {0x07, 0x00}, pad[2] = {0x01, 0x80};
    float vals[2] = {1, 2};
    int32_t ivals[2] = {1, 2};
    rawt good[] = {{"x::shape", GR_DT_I64, 1, {2}, shp, 16},
                   {"x::mask", GR_DT_U8, 1, {2}, mask, 2},
                   {"x::values", GR_DT_F32, 1, {2}, vals, 8}};
    gr_sparse *s = gr_sparse_open(write_raw("good.safetensors", good, 3));
    CHECK_MSG(s != NULL, "%s", gr_errmsg());
    gr_sparse_close(&s);

    expect_open_error(write_raw("nomask.safetensors", (rawt[]){good[0], good[2]}, 2), "::mask");
    expect_open_error(write_raw("noshape.safetensors", (rawt[]){good[1], good[2]}, 2), "::shape");
    rawt badlen[] = {good[0], {"x::mask", GR_DT_U8, 1, {1}, mask, 1}, good[2]};
    expect_open_error(write_raw("masklen.safetensors", badlen, 3), "x::mask");
    rawt negs[] = {{"x::shape", GR_DT_I64, 1, {2}, neg, 16}, good[1], good[2]};
    expect_open_error(write_raw("neg.safetensors", negs, 3), "negative");
    rawt ints[] = {good[0], good[1], {"x::values", GR_DT_I32, 1, {2}, ivals, 8}};
    expect_open_error(write_raw("ints.safetensors", ints, 3), "x::values");
    rawt unk[] = {good[0], good[1], good[2], {"x::extra", GR_DT_F32, 1, {2}, vals, 8}};
    expect_open_error(write_raw("unknown.safetensors", unk, 4), "x::extra");
    rawt both[] = {good[0], good[1], good[2], {"x", GR_DT_F32, 1, {2}, vals, 8}};
    expect_open_error(write_raw("both.safetensors", both, 4), "both dense and sparse");
    rawt shp8[] = {{"x::shape", GR_DT_F32, 1, {2}, vals, 8}, good[1], good[2]};
    expect_open_error(write_raw("shapedt.safetensors", shp8, 3), "I64");

    rawt cnt[] = {good[0], {"x::mask", GR_DT_U8, 1, {2}, mask3, 2}, good[2]};
    expect_read_error(write_raw("count.safetensors", cnt, 3), "x", "3 elements but 2 values");
    rawt pads[] = {good[0], {"x::mask", GR_DT_U8, 1, {2}, pad, 2}, good[2]};
    expect_read_error(write_raw("pad.safetensors", pads, 3), "x", "padding bits");
}

static void test_dense_checkpoint(void)
{
    /* a plain model checkpoint reads through the same call */
    gr_sparse *s = gr_sparse_open(fixture("golden/llama-gqa"));
    CHECK_MSG(s != NULL, "%s", gr_errmsg());
    if (!s) return;
    CHECK(!gr_sparse_has_sparse(s));
    CHECK(!gr_sparse_is_delta(s));
    CHECK_EQ_INT(gr_sparse_count(s), 21);
    const gr_sparse_tensor *t = gr_sparse_find(s, "model.norm.weight");
    CHECK(t && t->nelem == 64 && !t->is_sparse);
    float y[64];
    CHECK(t && !gr_sparse_read_f32(s, t, 0, 64, y));
    gr_sparse_close(&s);
}

int main(void)
{
    tmp = ts_tmpdir("graft-test-sparse-");
    RUN(test_compress_roundtrip);
    RUN(test_reader);
    RUN(test_corrupt);
    RUN(test_dense_checkpoint);
    gr_fs_rmrf(tmp);
    free(tmp);
    TEST_MAIN_END();
}
