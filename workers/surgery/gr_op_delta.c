/* delta op: the task vector θ_model − θ_base per tensor, or a PEFT LoRA
 * adapter's s·B·A, written as a delta checkpoint (absent tensors = zero). */
#include "gr_err.h"
#include "gr_op.h"
#include "gr_sparse.h"
#include "gr_surg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Elements per piece when a large tensor streams through. */
#define DELTA_CHUNK ((uint64_t)1 << 22)

static const gr_param delta_params[] = {
    {"base", GR_P_INPUT, 1, "base checkpoint"},
    {"model", GR_P_INPUT, 1, "fine-tuned checkpoint, or a PEFT LoRA adapter directory"},
    {"dtype", GR_P_STR, 0, "dtype of the delta: float32 (default), bfloat16, float16"},
    {"strict", GR_P_BOOL, 0, "fail on a missing tensor or a shape mismatch instead of warning"},
    {"shard_size", GR_P_INT, 0, "bytes per safetensors shard (default 5 GB)"},
    {NULL, 0, 0, NULL},
};

typedef struct plan {
    const gr_src_tensor *b, *m;
    uint64_t n; /* elements written (base's count: cropped rows dropped) */
} plan;

/* Checks model against base the way every delta reader expects and returns
 * the tensors to write. */
static int make_plan(gr_src *base, gr_src *model, int strict, gr_warns *w, plan **out, size_t *nout)
{
    const char *bt = gr_json_get_str(gr_src_config(base), "model_type", NULL);
    const char *mt = gr_json_get_str(gr_src_config(model), "model_type", NULL);
    if (bt && mt && strcmp(bt, mt))
        return gr_seterr(GR_EINVAL,
                         "delta: %s is a '%s' model but %s is a '%s' model (config.json "
                         "model_type): different architectures",
                         gr_src_role(base), bt, gr_src_role(model), mt);
    size_t nm = gr_src_count(model), nb = gr_src_count(base);
    plan *p = calloc((nm > nb ? nm : nb) + 1, sizeof *p);
    if (!p) return gr_seterr(GR_ENOMEM, "out of memory");
    size_t k = 0;
    char s1[160], s2[160];
    for (size_t i = 0; i < nm; i++) {
        const gr_src_tensor *m = gr_src_stored(model, i);
        const gr_src_tensor *b = gr_src_find(base, m->name);
        if (!b) {
            free(p);
            return gr_seterr(GR_EINVAL,
                             "delta: tensor '%s' of %s is missing in %s (different "
                             "architectures?)",
                             m->name, gr_src_role(model), gr_src_role(base));
        }
        gr_shape_str(s1, sizeof s1, m->ndim, m->shape);
        gr_shape_str(s2, sizeof s2, b->ndim, b->shape);
        int same = m->ndim == b->ndim && !memcmp(m->shape, b->shape, sizeof(int64_t) * m->ndim);
        if (!gr_dtype_is_float(b->dtype) || !gr_dtype_is_float(m->dtype)) {
            if (strict) {
                free(p);
                return gr_seterr(GR_EINVAL, "delta: tensor '%s' has dtype %s: no delta", m->name,
                                 gr_dtype_name(gr_dtype_is_float(b->dtype) ? m->dtype : b->dtype));
            }
            gr_warns_add(w, "delta", "tensor '%s': dtype %s has no delta; left out", m->name,
                         gr_dtype_name(gr_dtype_is_float(b->dtype) ? m->dtype : b->dtype));
            continue;
        }
        if (!same) {
            int crop = gr_src_kind_of(model) == GR_SRC_MODEL && m->ndim == b->ndim &&
                       gr_surg_is_vocab_tensor(m->name) &&
                       gr_surg_croppable(b->shape, m->shape, m->ndim);
            if (gr_src_kind_of(model) == GR_SRC_LORA || strict || !crop) {
                int fatal = gr_src_kind_of(model) == GR_SRC_LORA || strict;
                if (fatal) {
                    free(p);
                    return gr_seterr(GR_EINVAL, "delta: tensor '%s': shape %s in %s but %s in %s",
                                     m->name, s1, gr_src_role(model), s2, gr_src_role(base));
                }
                gr_warns_add(w, "delta", "tensor '%s': shape %s in %s but %s in base; left out",
                             m->name, s1, gr_src_role(model), s2);
                continue;
            }
            gr_warns_add(w, "delta", "tensor '%s': %s has %lld rows, base %lld; cropped to base",
                         m->name, gr_src_role(model), (long long)m->shape[0],
                         (long long)b->shape[0]);
        }
        p[k].b = b;
        p[k].m = m;
        p[k].n = b->nelem;
        k++;
    }
    if (gr_src_kind_of(model) == GR_SRC_MODEL)
        for (size_t i = 0; i < nb; i++) {
            const gr_src_tensor *b = gr_src_at(base, i);
            if (gr_src_find(model, b->name)) continue;
            if (strict) {
                free(p);
                return gr_seterr(GR_EINVAL, "delta: tensor '%s' of %s is missing in %s", b->name,
                                 gr_src_role(base), gr_src_role(model));
            }
            gr_warns_add(w, "delta", "tensor '%s' is missing in %s; its delta is left out (zero)",
                         b->name, gr_src_role(model));
        }
    *out = p;
    *nout = k;
    return 0;
}

static int delta_run(gr_op_ctx *ctx)
{
    const char *bpath, *mpath, *dtname;
    int strict, rc;
    int64_t shard;
    gr_dtype dt;
    gr_src *base = NULL, *model = NULL;
    gr_stw *w = NULL;
    plan *p = NULL;
    size_t np = 0;
    float *bb = NULL, *mb = NULL;
    gr_warns warns = {0};
    gr_buf m = {0};
    if ((rc = gr_op_req_str(ctx, "base", &bpath)) || (rc = gr_op_req_str(ctx, "model", &mpath)) ||
        (rc = gr_op_str(ctx, "dtype", "float32", &dtname)) ||
        (rc = gr_op_bool(ctx, "strict", 0, &strict)) ||
        (rc = gr_op_int(ctx, "shard_size", 0, &shard)) ||
        (rc = gr_surg_dtype_parse(dtname, "delta: parameter 'dtype'", &dt)))
        return rc;
    if (shard < 0) return gr_seterr(GR_EINVAL, "delta: parameter 'shard_size' must be >= 0");
    int threads = gr_surg_threads(ctx);
    char role[64];
    if (!(base = gr_src_open(bpath, "base"))) {
        rc = gr_errcode();
        goto fail;
    }
    if (gr_src_kind_of(base) != GR_SRC_MODEL) {
        rc = gr_seterr(GR_EINVAL, "delta: base (%s) is a %s, not a model checkpoint", bpath,
                       gr_src_kind_name(gr_src_kind_of(base)));
        goto fail;
    }
    snprintf(role, sizeof role, "model");
    if (!(model = gr_src_open(mpath, role))) {
        rc = gr_errcode();
        goto fail;
    }
    if (gr_src_kind_of(model) == GR_SRC_DELTA) {
        rc = gr_seterr(GR_EINVAL, "delta: model (%s) is already a delta", mpath);
        goto fail;
    }
    gr_src_set_threads(base, threads);
    gr_src_set_threads(model, threads);
    if ((rc = make_plan(base, model, strict, &warns, &p, &np))) goto fail;

    uint64_t maxn = 1, total = 0;
    for (size_t i = 0; i < np; i++) {
        /* element-wise: large tensors go through in pieces (a LoRA product
         * is computed whole) */
        uint64_t need =
            gr_src_streamable(model, p[i].m) && p[i].n > DELTA_CHUNK ? DELTA_CHUNK : p[i].m->nelem;
        if (need > maxn) maxn = need;
        total += p[i].n;
    }
    bb = malloc(maxn * sizeof *bb);
    mb = malloc(maxn * sizeof *mb);
    if (!bb || !mb) {
        rc = gr_seterr(GR_ENOMEM, "delta: out of memory for a tensor of %llu elements",
                       (unsigned long long)maxn);
        goto fail;
    }
    if (!(w = gr_stw_new(ctx->outdir, (uint64_t)shard))) {
        rc = gr_errcode();
        goto fail;
    }
    for (size_t i = 0; i < np; i++)
        if ((rc = gr_stw_add(w, p[i].b->name, dt, p[i].b->ndim, p[i].b->shape))) goto fail;
    if ((rc = gr_stw_meta(w, GR_SPARSE_META_KIND, GR_SPARSE_KIND_DELTA)) ||
        (rc = gr_stw_meta(w, "graft.delta.model", gr_src_kind_name(gr_src_kind_of(model)))) ||
        (rc = gr_stw_begin(w)))
        goto fail;
    double l2 = 0, maxabs = 0, done = 0;
    for (size_t i = 0; i < np; i++) {
        if (gr_op_cancelled(ctx)) {
            rc = gr_seterr(GR_ECANCEL, "delta: cancelled");
            goto fail;
        }
        uint64_t n = p[i].n;
        uint64_t step = gr_src_streamable(model, p[i].m) && n > DELTA_CHUNK ? DELTA_CHUNK : n;
        for (uint64_t off = 0; off < n; off += step) {
            uint64_t c = n - off < step ? n - off : step;
            if (p[i].m->theta && (rc = gr_src_read_range(base, p[i].b, off, c, bb))) goto fail;
            if ((rc = step == n ? gr_src_read_delta(model, p[i].m, bb, n, mb)
                                : gr_src_read_delta_range(model, p[i].m, bb, off, c, mb)))
                goto fail;
            for (uint64_t j = 0; j < c; j++) {
                double a = fabs((double)mb[j]);
                l2 += a * a;
                if (a > maxabs) maxabs = a;
            }
            if ((rc = gr_stw_write_f32(w, mb, c))) goto fail;
        }
        gr_src_release(base, p[i].b);
        gr_src_release(model, p[i].m);
        done += (double)n;
        gr_op_progress(ctx, done, (double)total, "%s", p[i].b->name);
    }
    if ((rc = gr_stw_finish(w))) goto fail;
    gr_stw_destroy(&w);
    if ((rc = gr_surg_copy_model_files(gr_src_dir(base), ctx->outdir, GR_SURG_COPY_CONFIG)))
        goto fail;
    gr_buf_printf(&m, "{\"source\":\"%s\",\"tensors\":%zu,\"elements\":%llu,\"dtype\":\"%s\",",
                  gr_src_kind_name(gr_src_kind_of(model)), np, (unsigned long long)total,
                  gr_dtype_name(dt));
    gr_buf_puts(&m, "\"l2\":");
    gr_buf_json_num(&m, sqrt(l2));
    gr_buf_puts(&m, ",\"max_abs\":");
    gr_buf_json_num(&m, maxabs);
    gr_buf_putc(&m, ',');
    gr_warns_json(&warns, &m);
    gr_buf_putc(&m, '}');
    if (m.oom) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    rc = gr_op_set_metrics(ctx, m.data);
    if (rc) goto fail;
    goto out;
fail:
    gr_stw_destroy(&w);
    gr_surg_clean_outdir(ctx->outdir);
out:
    gr_stw_destroy(&w);
    free(bb);
    free(mb);
    free(p);
    gr_src_close(&base);
    gr_src_close(&model);
    gr_warns_free(&warns);
    gr_buf_free(&m);
    return rc;
}

const gr_op gr_op_delta = {
    .name = "delta",
    .version = 1,
    .summary = "task vector θ_model − θ_base (or a LoRA adapter's s·B·A) as a delta checkpoint",
    .params = delta_params,
    .run = delta_run,
};
