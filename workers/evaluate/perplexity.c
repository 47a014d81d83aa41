/* evaluate task perplexity: mean next-token negative log-likelihood of a
 * causal LM over token data cut into windows (gr_tokens), on the fp32
 * forward pass (gr_forward). */
#include "gr_log.h"
#include "gr_err.h"
#include "evaluate/gr_evaluate.h"
#include "gr_forward.h"
#include "gr_model.h"
#include "gr_tokens.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_SEQ 1024 /* default seq_len cap for models with long contexts */
#define DEFAULT_ROWS    2048 /* positions per forward pass when batch is not given */
#define MAX_BATCH_ROWS  (1 << 20)

/* Window settings shared by the tasks that read token data. */
static int window_params(gr_op_ctx *ctx, const gr_model_cfg *c, const char *mpath, int *seq_len,
                         int *stride, int *batch, int64_t *limit)
{
    int64_t sl, st, b;
    int rc;
    const int def = c->max_pos < DEFAULT_MAX_SEQ ? c->max_pos : DEFAULT_MAX_SEQ;
    if ((rc = gr_op_int(ctx, "seq_len", def, &sl)) || (rc = gr_op_int(ctx, "limit", 0, limit)))
        return rc;
    if (sl < 2)
        return gr_seterr(GR_EINVAL, "evaluate: seq_len must be at least 2 (is %lld)",
                         (long long)sl);
    if (sl > c->max_pos)
        return gr_seterr(GR_EINVAL,
                         "evaluate: seq_len %lld is longer than max_position_embeddings %d of "
                         "the model (%s/config.json)",
                         (long long)sl, c->max_pos, mpath);
    if ((rc = gr_op_int(ctx, "stride", sl, &st))) return rc;
    if (st < 1 || st > sl)
        return gr_seterr(GR_EINVAL, "evaluate: stride must be in [1, seq_len=%lld] (is %lld)",
                         (long long)sl, (long long)st);
    if ((rc = gr_op_int(ctx, "batch", sl < DEFAULT_ROWS ? DEFAULT_ROWS / sl : 1, &b))) return rc;
    if (b < 1 || b * sl > MAX_BATCH_ROWS)
        return gr_seterr(GR_EINVAL, "evaluate: batch must be in [1, %lld] for seq_len %lld",
                         (long long)(MAX_BATCH_ROWS / sl), (long long)sl);
    if (*limit < 0) return gr_seterr(GR_EINVAL, "evaluate: limit must be >= 0");
    *seq_len = (int)sl;
    *stride = (int)st;
    *batch = (int)b;
    return 0;
}

static int ppl_finish(const gr_eval_sums *s, gr_buf *b)
{
    const double nll = gr_eval_sum_get(s, "nll"), tokens = gr_eval_sum_get(s, "tokens");
    const double mean = tokens > 0 ? nll / tokens : NAN;
    gr_buf_puts(b, "\"mean_nll\":");
    gr_buf_json_num(b, mean);
    gr_buf_puts(b, ",\"ppl\":");
    gr_buf_json_num(b, exp(mean));
    gr_buf_puts(b, ",\"tokens\":");
    gr_buf_json_num(b, tokens);
    return b->oom ? gr_seterr(GR_ENOMEM, "out of memory") : 0;
}

static int ppl_run(gr_op_ctx *ctx)
{
    const char *mpath, *dpath, *tdt;
    int seq_len = 0, stride = 0, batch = 0, si = 0, sn = 1, rc;
    int64_t limit;
    gr_model *m = NULL;
    gr_tokens *tok = NULL;
    gr_window *win = NULL;
    gr_fwd *f = NULL;
    size_t nw = 0, *gstart = NULL, ng = 0;
    int32_t *ids = NULL;
    double *logp = NULL, *parts = NULL;
    char settings[1024], timing[256];
    if ((rc = gr_op_req_str(ctx, "model", &mpath)) || (rc = gr_op_req_str(ctx, "data", &dpath)) ||
        (rc = gr_op_str(ctx, "token_dtype", "uint16", &tdt)) || (rc = gr_eval_shard(ctx, &si, &sn)))
        return rc;
    if (strcmp(tdt, "uint16") && strcmp(tdt, "uint32"))
        return gr_seterr(GR_EINVAL, "evaluate: token_dtype must be uint16 or uint32 (is '%.32s')",
                         tdt);
    if (!(m = gr_eval_load_model(ctx, mpath))) return gr_errcode();
    const gr_model_cfg *c = gr_model_config(m);
    if ((rc = window_params(ctx, c, mpath, &seq_len, &stride, &batch, &limit))) goto done;
    if (!(tok = gr_tokens_open(dpath, tdt, (uint32_t)c->vocab))) {
        rc = gr_errcode();
        goto done;
    }
    if ((rc = gr_tokens_windows(tok, seq_len, stride, &win, &nw))) goto done;
    if (limit && (uint64_t)limit < nw) nw = (size_t)limit;

    /* Batches of consecutive windows of equal length, fixed for the whole
     * evaluation; shards take whole batches, so a window is computed the
     * same way sharded or not and shards join bit-exactly. */
    if (!(gstart = malloc((nw + 1) * sizeof *gstart))) goto oom;
    for (size_t w = 0; w < nw; w++)
        if (!ng || w - gstart[ng - 1] == (size_t)batch || win[w].len != win[w - 1].len)
            gstart[ng++] = w;
    gstart[ng] = nw;
    uint64_t glo, ghi;
    gr_eval_shard_range(ng, si, sn, &glo, &ghi);
    const size_t wlo = gstart[glo], whi = gstart[ghi];

    if (!(f = gr_fwd_new(m, batch * seq_len, ctx->threads > 0 ? ctx->threads : 1))) {
        rc = gr_errcode();
        goto done;
    }
    ids = malloc((size_t)batch * seq_len * sizeof *ids);
    logp = malloc((size_t)batch * (seq_len - 1) * sizeof *logp);
    parts = malloc((whi - wlo + 1) * sizeof *parts);
    if (!ids || !logp || !parts) goto oom;
    uint64_t ntok = 0;
    const double t0 = gr_now_s();
    for (uint64_t g = glo; g < ghi; g++) {
        if (gr_op_cancelled(ctx)) {
            rc = gr_seterr(GR_ECANCEL, "evaluate: cancelled");
            goto done;
        }
        const size_t w0 = gstart[g];
        const int B = (int)(gstart[g + 1] - w0), T = win[w0].len;
        int first = T;
        for (int b = 0; b < B; b++) {
            gr_tokens_get(tok, &win[w0 + b], ids + (size_t)b * T);
            if (win[w0 + b].first < first) first = win[w0 + b].first;
        }
        if ((rc = gr_fwd_run(f, ids, B, T, first, NULL, logp))) goto done;
        for (int b = 0; b < B; b++) {
            double s = 0;
            for (int t = win[w0 + b].first; t < T - 1; t++) s -= logp[(size_t)b * (T - 1) + t];
            parts[w0 + b - wlo] = s;
            ntok += (uint64_t)(T - 1 - win[w0 + b].first);
        }
        gr_op_progress(ctx, (double)(gstart[g + 1] - wlo), (double)(whi - wlo),
                       "perplexity: %zu/%zu windows", gstart[g + 1] - wlo, whi - wlo);
    }
    const double secs = gr_now_s() - t0;
    double nll = 0;
    for (size_t w = wlo; w < whi; w++) nll += parts[w - wlo]; /* in window order */
    snprintf(settings, sizeof settings,
             "{\"seq_len\":%d,\"stride\":%d,\"batch\":%d,\"token_dtype\":\"%s\",\"limit\":%lld,"
             "\"data_tokens\":%llu,\"model_type\":\"%s\",\"vocab\":%d,\"nparams\":%llu}",
             seq_len, stride, batch, tdt, (long long)limit,
             (unsigned long long)gr_tokens_total(tok), c->model_type, c->vocab,
             (unsigned long long)gr_model_nparams(m));
    snprintf(timing, sizeof timing,
             "\"tokens_per_s\":%.6g,\"seconds\":%.6g,\"threads\":%d,\"weights_streamed\":%d",
             secs > 0 ? (double)ntok / secs : 0.0, secs, ctx->threads > 0 ? ctx->threads : 1,
             gr_model_streaming(m));
    gr_eval_result r = {
        .task = &gr_eval_task_perplexity,
        .shard_i = si,
        .shard_n = sn,
        .units = "windows",
        .total = nw,
        .first = wlo,
        .count = whi - wlo,
        .settings = settings,
        .parts_key = "nll",
        .parts = parts,
        .timing = timing,
    };
    if ((rc = gr_eval_sum_set(&r.sums, "nll", nll)) ||
        (rc = gr_eval_sum_set(&r.sums, "tokens", (double)ntok)))
        goto done;
    rc = gr_eval_finish(ctx, &r);
    goto done;
oom:
    rc = gr_seterr(GR_ENOMEM, "evaluate: out of memory");
done:
    free(ids);
    free(logp);
    free(parts);
    free(gstart);
    free(win);
    gr_fwd_destroy(&f);
    gr_tokens_close(&tok);
    gr_model_destroy(&m);
    return rc;
}

static const char *const ppl_sums[] = {"nll", "tokens", NULL};

static const char *const ppl_params[] = {"model", "data",  "token_dtype", "seq_len",       "stride",
                                         "batch", "limit", "shard",       "max_memory_mb", NULL};

const gr_eval_task gr_eval_task_perplexity = {
    .name = "perplexity",
    .summary = "mean next-token NLL and perplexity of a causal LM on token data",
    .params = ppl_params,
    .run = ppl_run,
    .finish = ppl_finish,
    .sums = ppl_sums,
};
