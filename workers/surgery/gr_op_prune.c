/* prune op: sparsifies a delta (dare, darex, drop, magnitude, breadcrumbs,
 * della; per tensor or over the whole model) and writes a sparse delta. */
#include "gr_err.h"
#include "gr_mparam.h"
#include "gr_op.h"
#include "gr_prune.h"
#include "gr_rng.h"
#include "gr_sparse.h"
#include "gr_surg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const gr_param prune_params[] = {
    {"input", GR_P_INPUT, 1, "delta to prune (dense or sparse delta, or a LoRA adapter)"},
    {"method", GR_P_STR, 1, "dare | darex | drop | magnitude | breadcrumbs | della"},
    {"density", GR_P_ANY, 1, "fraction kept, in (0, 1]: number, layer gradient or filter list"},
    {"rescale", GR_P_STR, 0, "inverse | l1 | none (default: the method's own)"},
    {"q", GR_P_ANY, 0, "darex: kept entries are divided by q, density <= q < 1"},
    {"gamma", GR_P_ANY, 0, "breadcrumbs: top fraction dropped as outliers (default 0.01)"},
    {"epsilon", GR_P_ANY, 0, "della: keep probabilities span density ± epsilon (default 0.15)"},
    {"seed", GR_P_INT, 0, "random seed (dare, darex, drop, della; default 0)"},
    {"scope", GR_P_STR, 0, "tensor (default) | global: thresholds over the whole model"},
    {"include", GR_P_ANY, 0,
     "tensor-name patterns to prune (glob if it holds * ? [, else substring)"},
    {"exclude", GR_P_ANY, 0, "tensor-name patterns to leave unpruned"},
    {"dtype", GR_P_STR, 0, "dtype of the stored values (default: the input's)"},
    {"format", GR_P_STR, 0, "sparse (default) | dense"},
    {"shard_size", GR_P_INT, 0, "bytes per safetensors shard (default 5 GB)"},
    {NULL, 0, 0, NULL},
};

typedef struct pentry {
    const gr_src_tensor *t;
    gr_dtype dt;
    int sparse;
    uint64_t nnz;
    uint64_t off, len; /* spool: mask bytes then values (sparse) or the dense bytes */
} pentry;

typedef struct prune_job {
    gr_op_ctx *ctx;
    gr_src *in;
    gr_prune_method method;
    gr_rescale rescale;
    gr_mparam *density, *q, *gamma, *epsilon;
    uint64_t seed;
    int global, sparse_out, have_dtype, threads;
    gr_dtype dtype;
    char **include, **exclude;
    long nlayers;
} prune_job;

/* Resolves one optional per-tensor parameter (default when unset). */
static int eval_param(const gr_mparam *p, const char *tensor, long nlayers, double def, double *out)
{
    *out = def;
    if (!p) return 0;
    int rc = gr_mparam_eval_tensor(p, tensor, nlayers, out);
    if (rc == GR_ENOTFOUND) {
        *out = def;
        return 0;
    }
    return rc;
}

static int tensor_params(prune_job *j, const char *name, gr_prune_params *pp)
{
    gr_prune_params_init(pp, j->method);
    pp->rescale = j->rescale;
    double d;
    int rc = eval_param(j->density, name, j->nlayers, 1.0, &d);
    if (!rc) pp->density = d;
    if (!rc) rc = eval_param(j->gamma, name, j->nlayers, pp->gamma, &pp->gamma);
    if (!rc) rc = eval_param(j->epsilon, name, j->nlayers, pp->epsilon, &pp->epsilon);
    if (!rc) rc = eval_param(j->q, name, j->nlayers, pp->q, &pp->q);
    if (rc) return rc;
    char what[512];
    snprintf(what, sizeof what, "prune: tensor '%s'", name);
    return gr_prune_check(pp, what);
}

static size_t row_len_of(const gr_src_tensor *t)
{
    return t->ndim >= 1 && t->shape[t->ndim - 1] > 0 ? (size_t)t->shape[t->ndim - 1]
           : t->ndim >= 1                            ? (size_t)(t->nelem ? t->nelem : 1)
                                                     : 1;
}

static void stats_json(gr_buf *b, const char *name, const gr_prune_stats *s, int pruned)
{
    if (name) {
        gr_buf_puts(b, "{\"name\":");
        gr_buf_json_str(b, name, strlen(name));
        gr_buf_printf(b, ",\"pruned\":%s,", pruned ? "true" : "false");
    } else {
        gr_buf_putc(b, '{');
    }
    gr_buf_printf(b, "\"elements\":%llu,\"kept\":%llu,\"kept_fraction\":", (unsigned long long)s->n,
                  (unsigned long long)s->kept);
    gr_buf_json_num(b, s->n ? (double)s->kept / (double)s->n : 1.0);
    gr_buf_puts(b, ",\"l1_before\":");
    gr_buf_json_num(b, s->l1_before);
    gr_buf_puts(b, ",\"l1_after\":");
    gr_buf_json_num(b, s->l1_after);
    gr_buf_puts(b, ",\"l2_before\":");
    gr_buf_json_num(b, s->l2_before);
    gr_buf_puts(b, ",\"l2_after\":");
    gr_buf_json_num(b, s->l2_after);
    gr_buf_putc(b, '}');
}

/* Statistics of a tensor left as it is. */
static void plain_stats(const float *x, uint64_t n, gr_prune_stats *s)
{
    double l1 = 0, l2 = 0;
    uint64_t nz = 0;
    for (uint64_t i = 0; i < n; i++) {
        l1 += fabs((double)x[i]);
        l2 += (double)x[i] * x[i];
        nz += x[i] != 0.0f;
    }
    s->n = n;
    s->kept = nz;
    s->l1_before = s->l1_after = l1;
    s->l2_before = s->l2_after = sqrt(l2);
}

static int prune_run(gr_op_ctx *ctx)
{
    const char *inpath, *mname, *rname, *scope, *dtname, *fmt;
    int64_t seed, shard;
    int rc;
    prune_job j = {0};
    gr_prune_global *g = NULL;
    pentry *ent = NULL;
    float *buf = NULL;
    uint8_t *mask = NULL, *bytes = NULL;
    gr_spool *sp = NULL;
    gr_stw *w = NULL;
    gr_buf per = {0}, m = {0};
    gr_warns warns = {0};
    const char **names = NULL;
    j.ctx = ctx;
    if ((rc = gr_op_req_str(ctx, "input", &inpath)) ||
        (rc = gr_op_req_str(ctx, "method", &mname)) ||
        (rc = gr_op_str(ctx, "rescale", NULL, &rname)) ||
        (rc = gr_op_str(ctx, "scope", "tensor", &scope)) ||
        (rc = gr_op_str(ctx, "dtype", NULL, &dtname)) ||
        (rc = gr_op_str(ctx, "format", "sparse", &fmt)) ||
        (rc = gr_op_int(ctx, "seed", 0, &seed)) || (rc = gr_op_int(ctx, "shard_size", 0, &shard)))
        return rc;
    if ((rc = gr_prune_method_parse(mname, &j.method))) return rc;
    if (j.method == GR_PRUNE_NONE)
        return gr_seterr(GR_EINVAL, "prune: parameter 'method': '%s' prunes nothing", mname);
    j.rescale = GR_RESCALE_DEFAULT;
    if (rname && (rc = gr_rescale_parse(rname, &j.rescale))) return rc;
    if (strcmp(scope, "tensor") && strcmp(scope, "global"))
        return gr_seterr(GR_EINVAL,
                         "prune: parameter 'scope' must be 'tensor' or 'global', not '%s'", scope);
    if (strcmp(fmt, "sparse") && strcmp(fmt, "dense"))
        return gr_seterr(GR_EINVAL,
                         "prune: parameter 'format' must be 'sparse' or 'dense', not '%s'", fmt);
    if (shard < 0) return gr_seterr(GR_EINVAL, "prune: parameter 'shard_size' must be >= 0");
    j.sparse_out = !strcmp(fmt, "sparse");
    /* dare, darex and drop decide each element alone: their scope changes nothing */
    j.global = !strcmp(scope, "global") && j.method != GR_PRUNE_DARE &&
               j.method != GR_PRUNE_DAREX && j.method != GR_PRUNE_DROP;
    j.seed = (uint64_t)seed;
    if (dtname) {
        if ((rc = gr_surg_dtype_parse(dtname, "prune: parameter 'dtype'", &j.dtype))) return rc;
        j.have_dtype = 1;
    }
    static const char *const pnames[] = {"density", "q", "gamma", "epsilon"};
    gr_mparam **pslots[] = {&j.density, &j.q, &j.gamma, &j.epsilon};
    for (size_t i = 0; i < 4; i++) {
        const gr_json *v = gr_json_get(ctx->params, pnames[i]);
        if (!v || v->type == GR_JSON_NULL) continue;
        char what[64];
        snprintf(what, sizeof what, "prune: parameter '%s'", pnames[i]);
        if (j.global && v->type != GR_JSON_NUM) {
            rc =
                gr_seterr(GR_EINVAL, "%s: scope global needs one number for the whole model", what);
            goto fail;
        }
        if (!(*pslots[i] = gr_mparam_from_json(v, what))) {
            rc = gr_errcode();
            goto fail;
        }
    }
    if ((rc = gr_surg_patterns(gr_json_get(ctx->params, "include"), "prune: parameter 'include'",
                               &j.include)) ||
        (rc = gr_surg_patterns(gr_json_get(ctx->params, "exclude"), "prune: parameter 'exclude'",
                               &j.exclude)))
        goto fail;
    j.threads = gr_surg_threads(ctx);
    if (!(j.in = gr_src_open(inpath, "input"))) {
        rc = gr_errcode();
        goto fail;
    }
    if (gr_src_kind_of(j.in) == GR_SRC_MODEL) {
        rc = gr_seterr(GR_EINVAL,
                       "prune: input (%s) is a model checkpoint, not a delta (make one with the "
                       "delta op)",
                       inpath);
        goto fail;
    }
    gr_src_set_threads(j.in, j.threads);
    size_t nt = gr_src_count(j.in);
    names = calloc(nt + 1, sizeof *names);
    ent = calloc(nt + 1, sizeof *ent);
    if (!names || !ent) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    uint64_t maxn = 1, total = 0;
    for (size_t i = 0; i < nt; i++) {
        const gr_src_tensor *t = gr_src_stored(j.in, i);
        names[i] = t->name;
        if (t->nelem > maxn) maxn = t->nelem;
        total += t->nelem;
        if (t->theta) {
            rc = gr_seterr(GR_EINVAL,
                           "prune: tensor '%s' of %s is a whole tensor, not a delta (apply the "
                           "adapter's delta op first)",
                           t->name, inpath);
            goto fail;
        }
    }
    j.nlayers = gr_surg_num_layers(gr_src_config(j.in), names, nt);
    buf = malloc(maxn * sizeof *buf);
    mask = malloc(gr_sparse_mask_bytes(maxn) + 1);
    uint64_t maxb = 1; /* bytes of the largest tensor in its output dtype */
    for (size_t i = 0; i < nt; i++) {
        const gr_src_tensor *t = gr_src_at(j.in, i);
        uint64_t b = t->nelem * (gr_dtype_bits(j.have_dtype ? j.dtype : t->dtype) / 8);
        if (b > maxb) maxb = b;
    }
    bytes = malloc(maxb);
    if (!buf || !mask || !bytes) {
        rc = gr_seterr(GR_ENOMEM, "prune: out of memory for a tensor of %llu elements",
                       (unsigned long long)maxn);
        goto fail;
    }
    /* every tensor's parameters are checked before any work */
    for (size_t i = 0; i < nt; i++) {
        const gr_src_tensor *t = gr_src_stored(j.in, i);
        gr_prune_params pp;
        if (gr_surg_selected(j.include, j.exclude, t->name) &&
            (rc = tensor_params(&j, t->name, &pp)))
            goto fail;
    }
    if (j.global) {
        gr_prune_params pp;
        if ((rc = tensor_params(&j, "", &pp))) goto fail;
        if (!(g = gr_prune_global_new(&pp, j.threads))) {
            rc = gr_adderr(gr_errcode(), "prune: scope global");
            goto fail;
        }
        int pass = 0;
        do {
            for (size_t i = 0; i < nt; i++) {
                const gr_src_tensor *t = gr_src_stored(j.in, i);
                if (!gr_surg_selected(j.include, j.exclude, t->name)) continue;
                if ((rc = gr_src_read(j.in, t, t->nelem, buf)) ||
                    (rc = gr_prune_global_feed(g, buf, t->nelem)))
                    goto fail;
                gr_src_release(j.in, t);
                if (gr_op_cancelled(ctx)) {
                    rc = gr_seterr(GR_ECANCEL, "prune: cancelled");
                    goto fail;
                }
            }
            gr_op_progress(ctx, 0, (double)total, "scope global: pass %d over the model", ++pass);
        } while ((rc = gr_prune_global_end_pass(g)) > 0);
        if (rc < 0) goto fail;
    }

    if (!(sp = gr_spool_new(ctx->workdir))) {
        rc = gr_errcode();
        goto fail;
    }
    gr_prune_stats all = {0}, pruned = {0};
    size_t npruned = 0;
    double done = 0;
    gr_buf_putc(&per, '[');
    for (size_t i = 0; i < nt; i++) {
        const gr_src_tensor *t = gr_src_stored(j.in, i);
        pentry *e = &ent[i];
        uint64_t n = t->nelem;
        e->t = t;
        e->dt = j.have_dtype ? j.dtype : t->dtype;
        if (gr_op_cancelled(ctx)) {
            rc = gr_seterr(GR_ECANCEL, "prune: cancelled");
            goto fail;
        }
        if ((rc = gr_src_read(j.in, t, n, buf))) goto fail;
        gr_src_release(j.in, t);
        int sel = gr_surg_selected(j.include, j.exclude, t->name);
        gr_prune_stats st = {0};
        if (!sel) {
            plain_stats(buf, n, &st);
        } else if (j.global) {
            if ((rc = gr_prune_global_apply(g, buf, n, &st))) goto fail;
        } else {
            gr_prune_params pp;
            if ((rc = tensor_params(&j, t->name, &pp))) goto fail;
            uint64_t key = gr_rng_key(j.seed, t->name, 0);
            if ((rc = gr_prune_tensor(&pp, t->name, buf, n, row_len_of(t), key, j.threads, &st)))
                goto fail;
        }
        gr_prune_stats_add(&all, &st);
        if (sel) gr_prune_stats_add(&pruned, &st), npruned++;
        if (i) gr_buf_putc(&per, ',');
        stats_json(&per, t->name, &st, sel);

        size_t esz = gr_dtype_bits(e->dt) / 8;
        uint64_t nnz = 0;
        for (uint64_t k = 0; k < n; k++) nnz += buf[k] != 0.0f;
        uint64_t mb = gr_sparse_mask_bytes(n);
        e->sparse = j.sparse_out && mb + nnz * esz < n * esz;
        if (e->sparse) {
            e->nnz = gr_sparse_compress(buf, n, mask, buf);
            if ((rc = gr_from_f32(e->dt, buf, bytes, (size_t)e->nnz)) ||
                (rc = gr_spool_write(sp, mask, (size_t)mb, &e->off)) ||
                (rc = gr_spool_write(sp, bytes, (size_t)(e->nnz * esz), NULL)))
                goto fail;
            e->len = mb + e->nnz * esz;
        } else {
            e->nnz = n;
            if ((rc = gr_from_f32(e->dt, buf, bytes, (size_t)n)) ||
                (rc = gr_spool_write(sp, bytes, (size_t)(n * esz), &e->off)))
                goto fail;
            e->len = n * esz;
        }
        done += (double)n;
        gr_op_progress(ctx, done, (double)total, "%s", t->name);
    }
    gr_buf_putc(&per, ']');

    if (!(w = gr_stw_new(ctx->outdir, (uint64_t)shard))) {
        rc = gr_errcode();
        goto fail;
    }
    for (size_t i = 0; i < nt; i++) {
        const pentry *e = &ent[i];
        rc = e->sparse ? gr_sparse_declare(w, e->t->name, e->dt, e->t->ndim, e->t->shape, e->nnz)
                       : gr_stw_add(w, e->t->name, e->dt, e->t->ndim, e->t->shape);
        if (rc) goto fail;
    }
    char seedstr[32];
    snprintf(seedstr, sizeof seedstr, "%llu", (unsigned long long)j.seed);
    if ((rc = gr_stw_meta(w, GR_SPARSE_META_KIND,
                          j.sparse_out ? GR_SPARSE_KIND_SPARSE : GR_SPARSE_KIND_DELTA)) ||
        (j.sparse_out && (rc = gr_stw_meta(w, GR_SPARSE_META_FORMAT, GR_SPARSE_FORMAT))) ||
        (rc = gr_stw_meta(w, "graft.prune.method", gr_prune_method_name(j.method))) ||
        (rc = gr_stw_meta(w, "graft.prune.seed", seedstr)) || (rc = gr_stw_begin(w)))
        goto fail;
    for (size_t i = 0; i < nt; i++) {
        const pentry *e = &ent[i];
        if (e->sparse && (rc = gr_sparse_write_shape(w, e->t->ndim, e->t->shape))) goto fail;
        if ((rc = gr_spool_copy(sp, e->off, e->len, w))) goto fail;
    }
    if ((rc = gr_stw_finish(w))) goto fail;
    gr_stw_destroy(&w);
    if ((rc = gr_surg_copy_model_files(gr_src_dir(j.in), ctx->outdir, GR_SURG_COPY_CONFIG)))
        goto fail;

    gr_buf_printf(&m,
                  "{\"method\":\"%s\",\"scope\":\"%s\",\"format\":\"%s\",\"tensors\":%zu,"
                  "\"tensors_pruned\":%zu,\"total\":",
                  gr_prune_method_name(j.method), j.global ? "global" : "tensor", fmt, nt, npruned);
    stats_json(&m, NULL, &all, 1);
    gr_buf_puts(&m, ",\"pruned\":");
    stats_json(&m, NULL, &pruned, 1);
    gr_buf_puts(&m, ",\"per_tensor\":");
    gr_buf_append(&m, per.data, per.len);
    gr_buf_putc(&m, ',');
    gr_warns_json(&warns, &m);
    gr_buf_putc(&m, '}');
    if (m.oom || per.oom) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = gr_op_set_metrics(ctx, m.data))) goto fail;
    goto out;
fail:
    gr_stw_destroy(&w);
    gr_surg_clean_outdir(ctx->outdir);
out:
    gr_stw_destroy(&w);
    gr_spool_destroy(&sp);
    gr_prune_global_destroy(&g);
    gr_mparam_destroy(&j.density);
    gr_mparam_destroy(&j.q);
    gr_mparam_destroy(&j.gamma);
    gr_mparam_destroy(&j.epsilon);
    gr_surg_strv_free(&j.include);
    gr_surg_strv_free(&j.exclude);
    gr_src_close(&j.in);
    free(names);
    free(ent);
    free(buf);
    free(mask);
    free(bytes);
    gr_buf_free(&per);
    gr_buf_free(&m);
    gr_warns_free(&warns);
    return rc;
}

const gr_op gr_op_prune = {
    .name = "prune",
    .version = 1,
    .summary = "sparsify a delta (DARE, DAREx, drop, magnitude, breadcrumbs, DELLA) into a sparse "
               "delta",
    .params = prune_params,
    .run = prune_run,
};
