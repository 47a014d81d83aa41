/* extract-lora op: factors every 2-D tensor of a delta by truncated SVD and
 * writes a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors). */
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_lora.h"
#include "gr_op.h"
#include "gr_surg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const gr_param xlora_params[] = {
    {"delta", GR_P_INPUT, 1, "delta to factor (dense or sparse)"},
    {"rank", GR_P_INT, 1, "largest rank per module"},
    {"threshold", GR_P_NUM, 0, "drop singular values <= this (default 0)"},
    {"rel_threshold", GR_P_NUM, 0, "drop singular values <= this × the largest (default 0)"},
    {"include", GR_P_ANY, 0, "tensor-name patterns to factor (default: every 2-D .weight)"},
    {"exclude", GR_P_ANY, 0, "tensor-name patterns to leave out"},
    {"embeddings", GR_P_ANY, 0,
     "patterns of embedding tensors, written as lora_embedding_A/B (default: embed_tokens, wte, "
     "wpe, word_embeddings, embed_in)"},
    {"fan_in_fan_out", GR_P_BOOL, 0,
     "weights stored [in, out] (GPT-2 Conv1D; default: true when config.json says gpt2)"},
    {"dtype", GR_P_STR, 0, "dtype of A and B (default float32)"},
    {"base_model_name_or_path", GR_P_STR, 0, "recorded in adapter_config.json"},
    {NULL, 0, 0, NULL},
};

static const char *const DEFAULT_EMB[] = {"embed_tokens",    "wte",      "wpe",
                                          "word_embeddings", "embed_in", NULL};

typedef struct xmod {
    char *module;
    int emb, rank;
    int64_t rows, cols; /* of the factored matrix: B [rows, r], A [r, cols] */
    uint64_t off_a, off_b;
    double rel_err;
} xmod;

/* A module name as a regex matching exactly it (for rank_pattern keys). */
static void json_regex_key(gr_buf *b, const char *module)
{
    gr_buf k = {0};
    for (const char *p = module; *p; p++) {
        if (strchr(".^$*+?()[]{}|\\", *p)) gr_buf_putc(&k, '\\');
        gr_buf_putc(&k, *p);
    }
    gr_buf_json_str(b, k.data ? k.data : "", k.len);
    gr_buf_free(&k);
}

static int xlora_run(gr_op_ctx *ctx)
{
    const char *dpath, *dtname, *bname;
    int64_t rank;
    double thr, rthr;
    int rc, fifo;
    gr_dtype dt;
    gr_src *src = NULL;
    char **inc = NULL, **exc = NULL, **emb = NULL;
    xmod *mods = NULL;
    size_t nmod = 0;
    gr_spool *sp = NULL;
    gr_stw *w = NULL;
    float *buf = NULL, *tr = NULL;
    void *bytes = NULL;
    char *wpath = NULL, *cpath = NULL;
    gr_buf cfg = {0}, m = {0};
    gr_warns warns = {0};
    if ((rc = gr_op_req_str(ctx, "delta", &dpath)) || (rc = gr_op_int(ctx, "rank", 0, &rank)) ||
        (rc = gr_op_num(ctx, "threshold", 0, &thr)) ||
        (rc = gr_op_num(ctx, "rel_threshold", 0, &rthr)) ||
        (rc = gr_op_str(ctx, "dtype", "float32", &dtname)) ||
        (rc = gr_op_str(ctx, "base_model_name_or_path", NULL, &bname)) ||
        (rc = gr_surg_dtype_parse(dtname, "extract-lora: parameter 'dtype'", &dt)))
        return rc;
    if (rank < 1 || rank > 1 << 20)
        return gr_seterr(GR_EINVAL,
                         "extract-lora: parameter 'rank' must be in [1, 1048576], not %lld",
                         (long long)rank);
    if (!(thr >= 0) || !(rthr >= 0 && rthr < 1))
        return gr_seterr(GR_EINVAL,
                         "extract-lora: 'threshold' must be >= 0 and 'rel_threshold' in [0, 1)");
    if ((rc = gr_surg_patterns(gr_json_get(ctx->params, "include"),
                               "extract-lora: parameter 'include'", &inc)) ||
        (rc = gr_surg_patterns(gr_json_get(ctx->params, "exclude"),
                               "extract-lora: parameter 'exclude'", &exc)))
        goto fail;
    const gr_json *ev = gr_json_get(ctx->params, "embeddings");
    if (ev) {
        if ((rc = gr_surg_patterns(ev, "extract-lora: parameter 'embeddings'", &emb))) goto fail;
    } else {
        size_t n = 0;
        while (DEFAULT_EMB[n]) n++;
        if (!(emb = calloc(n + 1, sizeof *emb))) goto oom;
        for (size_t i = 0; i < n; i++)
            if (!(emb[i] = strdup(DEFAULT_EMB[i]))) goto oom;
    }
    int threads = gr_surg_threads(ctx);
    if (!(src = gr_src_open(dpath, "delta"))) {
        rc = gr_errcode();
        goto fail;
    }
    if (gr_src_kind_of(src) == GR_SRC_MODEL) {
        rc = gr_seterr(GR_EINVAL, "extract-lora: %s is a model checkpoint, not a delta", dpath);
        goto fail;
    }
    gr_src_set_threads(src, threads);
    const char *mt = gr_json_get_str(gr_src_config(src), "model_type", "");
    if ((rc = gr_op_bool(ctx, "fan_in_fan_out", !strcmp(mt, "gpt2"), &fifo))) goto fail;
    size_t nt = gr_src_count(src);
    uint64_t maxn = 1;
    for (size_t i = 0; i < nt; i++)
        if (gr_src_at(src, i)->nelem > maxn) maxn = gr_src_at(src, i)->nelem;
    mods = calloc(nt + 1, sizeof *mods);
    buf = malloc(maxn * sizeof *buf);
    tr = malloc(maxn * sizeof *tr);
    bytes = malloc(maxn * (gr_dtype_bits(dt) / 8));
    if (!mods || !buf || !tr || !bytes) goto oom;
    if (!(sp = gr_spool_new(ctx->workdir))) {
        rc = gr_errcode();
        goto fail;
    }
    size_t esz = gr_dtype_bits(dt) / 8;
    int maxr = 0;
    for (size_t i = 0; i < nt; i++) {
        const gr_src_tensor *t = gr_src_stored(src, i);
        if (!gr_surg_selected(inc, exc, t->name)) continue;
        size_t len = strlen(t->name);
        if (t->ndim != 2 || len < 8 || strcmp(t->name + len - 7, ".weight")) {
            gr_warns_add(&warns, "extract-lora",
                         "tensor '%s' is not a 2-D .weight: no LoRA form; left out", t->name);
            continue;
        }
        if (t->theta) {
            rc = gr_seterr(GR_EINVAL,
                           "extract-lora: tensor '%s' of %s is a whole tensor, not a delta",
                           t->name, dpath);
            goto fail;
        }
        if (gr_op_cancelled(ctx)) {
            rc = gr_seterr(GR_ECANCEL, "extract-lora: cancelled");
            goto fail;
        }
        if ((rc = gr_src_read(src, t, t->nelem, buf))) goto fail;
        gr_src_release(src, t);
        int is_emb = 0;
        for (char **p = emb; *p && !is_emb; p++) is_emb = gr_surg_pattern_match(*p, t->name);
        int64_t r0 = t->shape[0], c0 = t->shape[1];
        const float *mat = buf;
        int64_t rows = r0, cols = c0;
        if (is_emb || fifo) { /* PEFT stores (B·A)ᵀ for these: factor the transpose */
            for (int64_t a = 0; a < r0; a++)
                for (int64_t b = 0; b < c0; b++) tr[b * r0 + a] = buf[a * c0 + b];
            mat = tr;
            rows = c0;
            cols = r0;
        }
        double fro = 0;
        for (uint64_t k = 0; k < t->nelem; k++) fro += (double)buf[k] * buf[k];
        float *A = NULL, *B = NULL;
        int r = 0;
        double resid = 0;
        if ((rc =
                 gr_lora_factor(mat, rows, cols, (int)rank, thr, rthr, &A, &B, &r, NULL, &resid))) {
            gr_adderr(rc, "extract-lora: tensor '%s'", t->name);
            goto fail;
        }
        if (!r) {
            gr_warns_add(&warns, "extract-lora",
                         "tensor '%s': no singular value above the "
                         "thresholds (zero delta); left out",
                         t->name);
            continue;
        }
        xmod *x = &mods[nmod];
        x->module = strndup(t->name, len - 7);
        x->emb = is_emb;
        x->rank = r;
        x->rows = rows;
        x->cols = cols;
        x->rel_err = fro > 0 ? resid / sqrt(fro) : 0;
        rc = x->module ? 0 : gr_seterr(GR_ENOMEM, "out of memory");
        if (!rc) rc = gr_from_f32(dt, A, bytes, (size_t)r * (size_t)cols);
        if (!rc) rc = gr_spool_write(sp, bytes, (size_t)r * (size_t)cols * esz, &x->off_a);
        if (!rc) rc = gr_from_f32(dt, B, bytes, (size_t)rows * (size_t)r);
        if (!rc) rc = gr_spool_write(sp, bytes, (size_t)rows * (size_t)r * esz, &x->off_b);
        free(A);
        free(B);
        if (rc) goto fail;
        nmod++;
        if (r > maxr) maxr = r;
        gr_op_progress(ctx, (double)(i + 1), (double)nt, "%s: rank %d", t->name, r);
    }
    if (!nmod) {
        rc = gr_seterr(GR_EINVAL, "extract-lora: %s has no 2-D .weight delta to factor", dpath);
        goto fail;
    }

    if (!(wpath = gr_fs_join(ctx->outdir, GR_LORA_WEIGHTS)) ||
        !(cpath = gr_fs_join(ctx->outdir, GR_LORA_CONFIG)))
        goto oom;
    if (!(w = gr_stw_new(wpath, 0))) {
        rc = gr_errcode();
        goto fail;
    }
    char name[4096];
    for (size_t i = 0; i < nmod; i++) {
        const xmod *x = &mods[i];
        int64_t sa[2] = {x->rank, x->cols}, sb[2] = {x->rows, x->rank};
        snprintf(name, sizeof name, "%s%s.%s", GR_LORA_PREFIX, x->module,
                 x->emb ? "lora_embedding_A" : "lora_A.weight");
        if ((rc = gr_stw_add(w, name, dt, 2, sa))) goto fail;
        snprintf(name, sizeof name, "%s%s.%s", GR_LORA_PREFIX, x->module,
                 x->emb ? "lora_embedding_B" : "lora_B.weight");
        if ((rc = gr_stw_add(w, name, dt, 2, sb))) goto fail;
    }
    if ((rc = gr_stw_meta(w, "format", "pt")) || (rc = gr_stw_begin(w))) goto fail;
    for (size_t i = 0; i < nmod; i++) {
        const xmod *x = &mods[i];
        uint64_t la = (uint64_t)x->rank * (uint64_t)x->cols * esz;
        uint64_t lb = (uint64_t)x->rows * (uint64_t)x->rank * esz;
        if ((rc = gr_spool_copy(sp, x->off_a, la, w)) || (rc = gr_spool_copy(sp, x->off_b, lb, w)))
            goto fail;
    }
    if ((rc = gr_stw_finish(w))) goto fail;
    gr_stw_destroy(&w);

    /* adapter_config.json: lora_alpha = r so every module's scale is 1 */
    gr_buf_printf(&cfg, "{\n  \"peft_type\": \"LORA\",\n  \"r\": %d,\n  \"lora_alpha\": %d,\n",
                  maxr, maxr);
    gr_buf_puts(&cfg, "  \"target_modules\": [");
    for (size_t i = 0; i < nmod; i++) {
        if (i) gr_buf_puts(&cfg, ", ");
        gr_buf_json_str(&cfg, mods[i].module, strlen(mods[i].module));
    }
    gr_buf_puts(&cfg, "],\n");
    for (int pass = 0; pass < 2; pass++) {
        gr_buf_printf(&cfg, "  \"%s\": {", pass ? "alpha_pattern" : "rank_pattern");
        int first = 1;
        for (size_t i = 0; i < nmod; i++) {
            if (mods[i].rank == maxr) continue;
            if (!first) gr_buf_puts(&cfg, ", ");
            first = 0;
            json_regex_key(&cfg, mods[i].module);
            gr_buf_printf(&cfg, ": %d", mods[i].rank);
        }
        gr_buf_puts(&cfg, "},\n");
    }
    gr_buf_printf(&cfg,
                  "  \"fan_in_fan_out\": %s,\n  \"use_rslora\": false,\n  \"use_dora\": "
                  "false,\n  \"bias\": \"none\",\n  \"lora_dropout\": 0.0,\n  "
                  "\"modules_to_save\": null,\n  \"inference_mode\": true,\n  "
                  "\"base_model_name_or_path\": ",
                  fifo ? "true" : "false");
    if (bname)
        gr_buf_json_str(&cfg, bname, strlen(bname));
    else
        gr_buf_puts(&cfg, "null");
    gr_buf_puts(&cfg, "\n}\n");
    if (cfg.oom) goto oom;
    if ((rc = gr_fs_write_atomic(cpath, cfg.data, cfg.len, 0644))) goto fail;

    uint64_t params = 0;
    gr_buf_printf(&m, "{\"modules\":%zu,\"max_rank\":%d,\"per_module\":[", nmod, maxr);
    for (size_t i = 0; i < nmod; i++) {
        const xmod *x = &mods[i];
        params += (uint64_t)x->rank * (uint64_t)(x->rows + x->cols);
        gr_buf_printf(&m, "%s{\"module\":", i ? "," : "");
        gr_buf_json_str(&m, x->module, strlen(x->module));
        gr_buf_printf(&m, ",\"rank\":%d,\"rel_error\":", x->rank);
        gr_buf_json_num(&m, x->rel_err);
        gr_buf_putc(&m, '}');
    }
    gr_buf_printf(&m, "],\"adapter_parameters\":%llu,", (unsigned long long)params);
    gr_warns_json(&warns, &m);
    gr_buf_putc(&m, '}');
    if (m.oom) goto oom;
    if ((rc = gr_op_set_metrics(ctx, m.data))) goto fail;
    goto out;
oom:
    rc = gr_seterr(GR_ENOMEM, "extract-lora: out of memory");
fail:
    gr_stw_destroy(&w);
    gr_surg_clean_outdir(ctx->outdir);
out:
    gr_stw_destroy(&w);
    gr_spool_destroy(&sp);
    gr_src_close(&src);
    for (size_t i = 0; mods && i < nmod + 1; i++) free(mods[i].module);
    free(mods);
    free(buf);
    free(tr);
    free(bytes);
    free(wpath);
    free(cpath);
    gr_surg_strv_free(&inc);
    gr_surg_strv_free(&exc);
    gr_surg_strv_free(&emb);
    gr_buf_free(&cfg);
    gr_buf_free(&m);
    gr_warns_free(&warns);
    return rc;
}

const gr_op gr_op_extract_lora = {
    .name = "extract-lora",
    .version = 1,
    .summary = "factor a delta into a PEFT LoRA adapter by truncated SVD",
    .params = xlora_params,
    .run = xlora_run,
};
