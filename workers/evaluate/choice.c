/* evaluate task choice: multiple-choice accuracy of a causal LM. Each choice
 * is scored by the log-probability of its tokens after the context: acc
 * picks the largest sum, acc_norm the largest mean per token. */
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

static int choice_finish(const gr_eval_sums *s, gr_buf *b)
{
    const double n = gr_eval_sum_get(s, "n");
    gr_buf_puts(b, "\"acc\":");
    gr_buf_json_num(b, n > 0 ? gr_eval_sum_get(s, "correct") / n : NAN);
    gr_buf_puts(b, ",\"acc_norm\":");
    gr_buf_json_num(b, n > 0 ? gr_eval_sum_get(s, "correct_norm") / n : NAN);
    gr_buf_puts(b, ",\"n\":");
    gr_buf_json_num(b, n);
    return b->oom ? gr_seterr(GR_ENOMEM, "out of memory") : 0;
}

static int choice_run(gr_op_ctx *ctx)
{
    const char *mpath, *dpath;
    int si = 0, sn = 1, rc;
    int64_t limit;
    gr_model *m = NULL;
    gr_choices *ch = NULL;
    gr_fwd *f = NULL;
    int32_t *ids = NULL;
    double *logp = NULL;
    char settings[512], timing[256];
    if ((rc = gr_op_req_str(ctx, "model", &mpath)) || (rc = gr_op_req_str(ctx, "data", &dpath)) ||
        (rc = gr_op_int(ctx, "limit", 0, &limit)) || (rc = gr_eval_shard(ctx, &si, &sn)))
        return rc;
    if (limit < 0) return gr_seterr(GR_EINVAL, "evaluate: limit must be >= 0");
    if (!(m = gr_eval_load_model(ctx, mpath))) return gr_errcode();
    const gr_model_cfg *c = gr_model_config(m);
    if (!(ch = gr_choices_open(dpath, (uint32_t)c->vocab))) {
        rc = gr_errcode();
        goto done;
    }
    size_t n = gr_choices_count(ch);
    if (limit && (uint64_t)limit < n) n = (size_t)limit;
    uint64_t lo, hi;
    gr_eval_shard_range(n, si, sn, &lo, &hi);
    uint64_t maxlen = 2;
    for (uint64_t i = lo; i < hi; i++) {
        const gr_choice_item *it = gr_choices_item(ch, i);
        for (int k = 0; k < it->nchoices; k++) {
            uint64_t len = (uint64_t)it->context_len + it->choice_len[k];
            if (len > (uint64_t)c->max_pos) {
                rc = gr_seterr(GR_EINVAL,
                               "evaluate: %s:%d: context + choices[%d] is %llu tokens, longer "
                               "than max_position_embeddings %d of the model (%s/config.json)",
                               dpath, it->line, k, (unsigned long long)len, c->max_pos, mpath);
                goto done;
            }
            if (len > maxlen) maxlen = len;
        }
    }
    if (!(f = gr_fwd_new(m, (int)maxlen, ctx->threads > 0 ? ctx->threads : 1))) {
        rc = gr_errcode();
        goto done;
    }
    ids = malloc(maxlen * sizeof *ids);
    logp = malloc(maxlen * sizeof *logp);
    if (!ids || !logp) {
        rc = gr_seterr(GR_ENOMEM, "evaluate: out of memory");
        goto done;
    }
    uint64_t correct = 0, correct_norm = 0, ntok = 0;
    const double t0 = gr_now_s();
    for (uint64_t i = lo; i < hi; i++) {
        if (gr_op_cancelled(ctx)) {
            rc = gr_seterr(GR_ECANCEL, "evaluate: cancelled");
            goto done;
        }
        const gr_choice_item *it = gr_choices_item(ch, i);
        const int nc = (int)it->context_len;
        int best = 0, best_norm = 0;
        double best_sum = -INFINITY, best_mean = -INFINITY;
        for (int k = 0; k < it->nchoices; k++) {
            const int T = nc + (int)it->choice_len[k];
            for (int t = 0; t < nc; t++) ids[t] = (int32_t)it->context[t];
            for (int t = nc; t < T; t++) ids[t] = (int32_t)it->choice[k][t - nc];
            /* the choice's tokens are predicted from positions nc-1 .. T-2 */
            if ((rc = gr_fwd_run(f, ids, 1, T, nc - 1, NULL, logp))) goto done;
            double sum = 0;
            for (int t = nc - 1; t < T - 1; t++) sum += logp[t];
            const double mean = sum / it->choice_len[k];
            if (sum > best_sum) best_sum = sum, best = k; /* ties keep the lower index */
            if (mean > best_mean) best_mean = mean, best_norm = k;
            ntok += (uint64_t)T;
        }
        correct += best == it->label;
        correct_norm += best_norm == it->label;
        gr_op_progress(ctx, (double)(i + 1 - lo), (double)(hi - lo), "choice: %llu/%llu items",
                       (unsigned long long)(i + 1 - lo), (unsigned long long)(hi - lo));
    }
    const double secs = gr_now_s() - t0;
    snprintf(settings, sizeof settings,
             "{\"items\":%zu,\"limit\":%lld,\"model_type\":\"%s\",\"vocab\":%d,\"nparams\":%llu}",
             n, (long long)limit, c->model_type, c->vocab, (unsigned long long)gr_model_nparams(m));
    snprintf(timing, sizeof timing,
             "\"tokens_per_s\":%.6g,\"seconds\":%.6g,\"threads\":%d,\"weights_streamed\":%d",
             secs > 0 ? (double)ntok / secs : 0.0, secs, ctx->threads > 0 ? ctx->threads : 1,
             gr_model_streaming(m));
    gr_eval_result r = {
        .task = &gr_eval_task_choice,
        .shard_i = si,
        .shard_n = sn,
        .units = "items",
        .total = n,
        .first = lo,
        .count = hi - lo,
        .settings = settings,
        .timing = timing,
    };
    if ((rc = gr_eval_sum_set(&r.sums, "correct", (double)correct)) ||
        (rc = gr_eval_sum_set(&r.sums, "correct_norm", (double)correct_norm)) ||
        (rc = gr_eval_sum_set(&r.sums, "n", (double)(hi - lo))))
        goto done;
    rc = gr_eval_finish(ctx, &r);
done:
    free(ids);
    free(logp);
    gr_fwd_destroy(&f);
    gr_choices_close(&ch);
    gr_model_destroy(&m);
    return rc;
}

static const char *const choice_sums[] = {"correct", "correct_norm", "n", NULL};

static const char *const choice_params[] = {"model", "data",          "limit",
                                            "shard", "max_memory_mb", NULL};

const gr_eval_task gr_eval_task_choice = {
    .name = "choice",
    .summary = "multiple-choice accuracy (acc: sum of log-probs, acc_norm: mean per token)",
    .params = choice_params,
    .run = choice_run,
    .finish = choice_finish,
    .sums = choice_sums,
};
