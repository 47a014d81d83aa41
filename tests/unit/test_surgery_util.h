/* test_surgery_util: helpers the model-surgery tests share: scratch
 * directories, random checkpoints written with gr_stw, running an op
 * in-process, reading tensors back as fp32. */
#ifndef TEST_SURGERY_UTIL_H
#define TEST_SURGERY_UTIL_H

#include "gr_dtype.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_json.h"
#include "gr_op.h"
#include "gr_rng.h"
#include "gr_sparse.h"
#include "gr_st.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct tspec {
    const char *name;
    gr_dtype dt;
    int ndim;
    int64_t shape[4];
} tspec;

static inline uint64_t ts_nelem(const tspec *t)
{
    uint64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
    return n;
}

/* A fresh scratch directory (caller frees the string, removes the tree). */
static inline char *ts_tmpdir(const char *tag)
{
    const char *root = getenv("TMPDIR");
    char *out = NULL;
    if (gr_fs_mkdtemp(root && *root ? root : "/tmp", tag, &out)) {
        fprintf(stderr, "mkdtemp: %s\n", gr_errmsg());
        exit(1);
    }
    return out;
}

/* dir/name in a static ring of buffers. */
static inline const char *ts_path(const char *dir, const char *name)
{
    static char buf[32][4096];
    static int k;
    char *b = buf[k++ & 31], tmp[sizeof buf[0]];
    /* via tmp: dir may itself be an earlier ring entry */
    snprintf(tmp, sizeof tmp, "%s/%s", dir, name);
    memcpy(b, tmp, sizeof tmp);
    return b;
}

static inline void ts_mkdir(const char *p)
{
    if (gr_fs_mkdirs(p, 0755, 0)) {
        fprintf(stderr, "mkdir %s: %s\n", p, gr_errmsg());
        exit(1);
    }
}

/* Gaussian values: mean + sd·N(0,1), from the counter generator. */
static inline void ts_gauss(float *x, uint64_t n, uint64_t seed, const char *tag, double mean,
                            double sd)
{
    gr_rng_stream s;
    gr_rng_stream_init(&s, seed, tag);
    for (uint64_t i = 0; i < n; i++) x[i] = (float)(mean + sd * gr_rng_next_normal(&s));
}

/* Rounds x to what dtype dt stores (so later comparisons see stored values). */
static inline void ts_round(gr_dtype dt, float *x, uint64_t n)
{
    if (dt == GR_DT_F32) return;
    void *tmp = malloc(n * 8 + 8);
    gr_from_f32(dt, x, tmp, n);
    gr_to_f32(dt, tmp, x, n);
    free(tmp);
}

/* Writes a checkpoint directory (or file when dest ends in .safetensors)
 * with tensors t[i] holding data[i] (fp32, converted to t[i].dt); meta_kind
 * (may be NULL) becomes graft.kind; config (may be NULL) is written as
 * config.json beside. Exits on failure (a broken test fixture). */
static inline void ts_write(const char *dest, const tspec *t, size_t n, float *const *data,
                            const char *meta_kind, const char *config, uint64_t shard)
{
    gr_stw *w = gr_stw_new(dest, shard);
    int rc = w ? 0 : -1;
    for (size_t i = 0; !rc && i < n; i++)
        rc = gr_stw_add(w, t[i].name, t[i].dt, t[i].ndim, t[i].shape);
    if (!rc && meta_kind) rc = gr_stw_meta(w, GR_SPARSE_META_KIND, meta_kind);
    if (!rc) rc = gr_stw_begin(w);
    for (size_t i = 0; !rc && i < n; i++) rc = gr_stw_write_f32(w, data[i], ts_nelem(&t[i]));
    if (!rc) rc = gr_stw_finish(w);
    gr_stw_destroy(&w);
    if (rc) {
        fprintf(stderr, "writing %s: %s\n", dest, gr_errmsg());
        exit(1);
    }
    if (config) {
        size_t l = strlen(dest);
        if (l > 12 && !strcmp(dest + l - 12, ".safetensors")) return;
        if (gr_fs_write_atomic(ts_path(dest, "config.json"), config, strlen(config), 0644)) {
            fprintf(stderr, "config: %s\n", gr_errmsg());
            exit(1);
        }
    }
}

/* A whole tensor of a checkpoint or delta as fp32 (caller frees), NULL if
 * absent; *n gets its element count. */
static inline float *ts_read(const char *path, const char *name, uint64_t *n)
{
    gr_sparse *s = gr_sparse_open(path);
    if (!s) {
        fprintf(stderr, "open %s: %s\n", path, gr_errmsg());
        return NULL;
    }
    const gr_sparse_tensor *t = gr_sparse_find(s, name);
    float *x = NULL;
    if (t) {
        x = malloc((t->nelem ? t->nelem : 1) * sizeof *x);
        if (gr_sparse_read_f32(s, t, 0, t->nelem, x)) {
            fprintf(stderr, "read %s: %s\n", name, gr_errmsg());
            free(x);
            x = NULL;
        } else if (n) {
            *n = t->nelem;
        }
    }
    gr_sparse_close(&s);
    return x;
}

/* Runs op with JSON params into outdir (created), as the runtime would:
 * parameters checked first. Returns the op's code; *metrics (may be NULL)
 * receives a copy of the metrics JSON (caller frees). */
static inline int ts_run_op(const char *opname, const char *params_json, const char *outdir,
                            int threads, char **metrics)
{
    const gr_op *op = gr_op_find(opname);
    if (metrics) *metrics = NULL;
    if (!op) return gr_seterr(GR_ENOTFOUND, "no op '%s'", opname);
    gr_json *p = gr_json_parse(params_json, strlen(params_json), "params");
    if (!p) return gr_errcode();
    int rc = gr_op_check_params(op, p);
    if (!rc) {
        ts_mkdir(outdir);
        gr_op_ctx ctx;
        memset(&ctx, 0, sizeof ctx);
        ctx.op = op;
        ctx.params = p;
        ctx.outdir = outdir;
        ctx.threads = threads;
        rc = op->run(&ctx);
        if (metrics && ctx.metrics.data) *metrics = strdup(ctx.metrics.data);
        gr_buf_free(&ctx.metrics);
    }
    gr_json_free(p);
    return rc;
}

/* Number of entries in a directory (0 if missing). */
static inline int ts_count_entries(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ls -A '%s' 2>/dev/null | wc -l", dir);
    FILE *f = popen(cmd, "r");
    int n = 0;
    if (f) {
        if (fscanf(f, "%d", &n) != 1) n = -1;
        pclose(f);
    }
    return n;
}

/* Largest |a-b| / max(max|b|, tiny) over n elements. */
static inline double ts_relerr(const float *a, const float *b, uint64_t n)
{
    double md = 0, mb = 1e-30;
    for (uint64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md || d != d) md = d != d ? INFINITY : d;
        if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
    }
    return md / mb;
}

#endif
