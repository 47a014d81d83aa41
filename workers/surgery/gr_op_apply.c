/* apply op: base + scale·delta (a dense or sparse delta, or a PEFT LoRA
 * adapter) written as a checkpoint with the base's config and tokenizer. */
#include "gr_err.h"
#include "gr_op.h"
#include "gr_surg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Elements per piece when a large tensor streams through. */
#define APPLY_CHUNK ((uint64_t)1 << 22)

static const gr_param apply_params[] = {
    {"base", GR_P_INPUT, 1, "base checkpoint"},
    {"delta", GR_P_INPUT, 1, "delta (dense or sparse) or PEFT LoRA adapter directory"},
    {"scale", GR_P_NUM, 0, "factor on the delta (default 1)"},
    {"dtype", GR_P_STR, 0, "output dtype (default: the base's)"},
    {"shard_size", GR_P_INT, 0, "bytes per safetensors shard (default 5 GB)"},
    {NULL, 0, 0, NULL},
};

static int apply_run(gr_op_ctx *ctx)
{
    const char *bpath, *dpath, *dtname;
    double scale;
    int64_t shard;
    int rc, have_dt = 0;
    gr_dtype dt = GR_DT_F32;
    gr_src *base = NULL, *delta = NULL;
    gr_stw *w = NULL;
    float *bb = NULL, *db = NULL;
    gr_buf m = {0};
    if ((rc = gr_op_req_str(ctx, "base", &bpath)) || (rc = gr_op_req_str(ctx, "delta", &dpath)) ||
        (rc = gr_op_num(ctx, "scale", 1.0, &scale)) ||
        (rc = gr_op_str(ctx, "dtype", NULL, &dtname)) ||
        (rc = gr_op_int(ctx, "shard_size", 0, &shard)))
        return rc;
    if (!isfinite(scale)) return gr_seterr(GR_EINVAL, "apply: parameter 'scale' must be finite");
    if (shard < 0) return gr_seterr(GR_EINVAL, "apply: parameter 'shard_size' must be >= 0");
    if (dtname) {
        if ((rc = gr_surg_dtype_parse(dtname, "apply: parameter 'dtype'", &dt))) return rc;
        have_dt = 1;
    }
    int threads = gr_surg_threads(ctx);
    if (!(base = gr_src_open(bpath, "base")) || !(delta = gr_src_open(dpath, "delta"))) {
        rc = gr_errcode();
        goto fail;
    }
    if (gr_src_kind_of(base) != GR_SRC_MODEL) {
        rc = gr_seterr(GR_EINVAL, "apply: base (%s) is a %s, not a model checkpoint", bpath,
                       gr_src_kind_name(gr_src_kind_of(base)));
        goto fail;
    }
    if (gr_src_kind_of(delta) == GR_SRC_MODEL) {
        rc = gr_seterr(GR_EINVAL,
                       "apply: delta (%s) is a model checkpoint, not a delta (no graft.kind "
                       "metadata, no sparse tensors, no adapter_config.json)",
                       dpath);
        goto fail;
    }
    gr_src_set_threads(base, threads);
    gr_src_set_threads(delta, threads);
    char s1[160], s2[160];
    for (size_t i = 0; i < gr_src_count(delta); i++) {
        const gr_src_tensor *d = gr_src_at(delta, i), *b = gr_src_find(base, d->name);
        if (!b) {
            rc = gr_seterr(GR_EINVAL,
                           "apply: tensor '%s' of the delta (%s) is missing in the base (%s)",
                           d->name, dpath, bpath);
            goto fail;
        }
        if (!gr_dtype_is_float(b->dtype)) {
            rc = gr_seterr(GR_EINVAL,
                           "apply: tensor '%s' of the base has dtype %s: no delta applies", d->name,
                           gr_dtype_name(b->dtype));
            goto fail;
        }
        if (d->ndim != b->ndim || memcmp(d->shape, b->shape, sizeof(int64_t) * (size_t)b->ndim)) {
            gr_shape_str(s1, sizeof s1, d->ndim, d->shape);
            gr_shape_str(s2, sizeof s2, b->ndim, b->shape);
            rc = gr_seterr(GR_EINVAL,
                           "apply: tensor '%s': shape %s in the delta (%s) but %s in the base (%s)",
                           d->name, s1, dpath, s2, bpath);
            goto fail;
        }
    }
    uint64_t maxn = 1, total = 0;
    for (size_t i = 0; i < gr_src_count(base); i++) {
        const gr_src_tensor *b = gr_src_stored(base, i), *d = gr_src_find(delta, b->name);
        uint64_t need =
            b->nelem > APPLY_CHUNK && (!d || gr_src_streamable(delta, d)) ? APPLY_CHUNK : b->nelem;
        if (need > maxn) maxn = need;
        total += b->nelem;
    }
    bb = malloc(maxn * sizeof *bb);
    db = malloc(maxn * sizeof *db);
    if (!bb || !db) {
        rc = gr_seterr(GR_ENOMEM, "apply: out of memory for a tensor of %llu elements",
                       (unsigned long long)maxn);
        goto fail;
    }
    if (!(w = gr_stw_new(ctx->outdir, (uint64_t)shard))) {
        rc = gr_errcode();
        goto fail;
    }
    for (size_t i = 0; i < gr_src_count(base); i++) {
        const gr_src_tensor *b = gr_src_stored(base, i);
        gr_dtype odt = have_dt && gr_dtype_is_float(b->dtype) ? dt : b->dtype;
        if ((rc = gr_stw_add(w, b->name, odt, b->ndim, b->shape))) goto fail;
    }
    if ((rc = gr_stw_meta(w, "format", "pt")) || (rc = gr_stw_begin(w))) goto fail;
    size_t changed = 0;
    double done = 0, l2 = 0;
    for (size_t i = 0; i < gr_src_count(base); i++) {
        const gr_src_tensor *b = gr_src_stored(base, i), *d = gr_src_find(delta, b->name);
        uint64_t n = b->nelem;
        if (gr_op_cancelled(ctx)) {
            rc = gr_seterr(GR_ECANCEL, "apply: cancelled");
            goto fail;
        }
        if (!gr_dtype_is_float(b->dtype)) {
            const gr_tensor *raw = gr_src_raw(base, b);
            if ((rc = gr_stw_write(w, raw->data, raw->nbytes))) goto fail;
            continue;
        }
        /* element-wise: large tensors go through in pieces (a LoRA product
         * is computed whole) */
        uint64_t step = n > APPLY_CHUNK && (!d || gr_src_streamable(delta, d)) ? APPLY_CHUNK : n;
        for (uint64_t off = 0; off < n; off += step) {
            uint64_t c = n - off < step ? n - off : step;
            if ((rc = gr_src_read_range(base, b, off, c, bb))) goto fail;
            if (d) {
                if ((rc = step == n ? gr_src_read_delta(delta, d, bb, n, db)
                                    : gr_src_read_delta_range(delta, d, bb, off, c, db)))
                    goto fail;
                float s = (float)scale;
                for (uint64_t k = 0; k < c; k++) {
                    float v = s * db[k];
                    l2 += (double)v * v;
                    bb[k] += v;
                }
            }
            if ((rc = gr_stw_write_f32(w, bb, c))) goto fail;
        }
        if (d) gr_src_release(delta, d), changed++;
        gr_src_release(base, b);
        done += (double)n;
        gr_op_progress(ctx, done, (double)total, "%s", b->name);
    }
    if ((rc = gr_stw_finish(w))) goto fail;
    gr_stw_destroy(&w);
    if ((rc = gr_surg_copy_model_files(gr_src_dir(base), ctx->outdir, GR_SURG_COPY_ALL))) goto fail;
    gr_buf_printf(&m, "{\"delta\":\"%s\",\"tensors\":%zu,\"tensors_changed\":%zu,\"scale\":",
                  gr_src_kind_name(gr_src_kind_of(delta)), gr_src_count(base), changed);
    gr_buf_json_num(&m, scale);
    gr_buf_puts(&m, ",\"delta_l2\":");
    gr_buf_json_num(&m, sqrt(l2));
    gr_buf_putc(&m, '}');
    if (m.oom) {
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
    gr_src_close(&base);
    gr_src_close(&delta);
    free(bb);
    free(db);
    gr_buf_free(&m);
    return rc;
}

const gr_op gr_op_apply = {
    .name = "apply",
    .version = 1,
    .summary = "base + scale·delta (dense or sparse delta, or a LoRA adapter) as a checkpoint",
    .params = apply_params,
    .run = apply_run,
};
