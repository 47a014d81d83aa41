/* evaluate task classify: accuracy and mean cross-entropy of a graft-mlp
 * classifier (made by train, merge, apply, ...) on a split of a CSV data set
 * with a transform. Shardable over rows: sums correct/loss/n, per-row losses
 * as parts, so joined shards equal an unsharded run bit for bit. */
#include "gr_log.h"
#include "evaluate/gr_evaluate.h"
#include "gr_err.h"
#include "gr_mlp.h"
#include "train/gr_taskdata.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 256 /* rows per forward pass (see classify_run) */

extern const gr_eval_task gr_eval_task_classify; /* registered in evaluate.c's task table */

static int classify_finish(const gr_eval_sums *s, gr_buf *b)
{
    const double n = gr_eval_sum_get(s, "n");
    gr_buf_puts(b, "\"acc\":");
    gr_buf_json_num(b, n > 0 ? gr_eval_sum_get(s, "correct") / n : NAN);
    gr_buf_puts(b, ",\"loss\":");
    gr_buf_json_num(b, n > 0 ? gr_eval_sum_get(s, "loss") / n : NAN);
    gr_buf_puts(b, ",\"n\":");
    gr_buf_json_num(b, n);
    return b->oom ? gr_seterr(GR_ENOMEM, "out of memory") : 0;
}

static int classify_run(gr_op_ctx *ctx)
{
    const char *mpath;
    int si = 0, sn = 1, rc;
    int64_t limit;
    gr_taskdata td;
    gr_dataset *d = NULL;
    gr_mlp *m = NULL;
    double *loss = NULL;
    int32_t *pred = NULL;
    gr_buf settings = {0};
    char timing[128];
    if ((rc = gr_op_req_str(ctx, "model", &mpath)) || (rc = gr_op_int(ctx, "limit", 0, &limit)) ||
        (rc = gr_eval_shard(ctx, &si, &sn)))
        return rc;
    if (limit < 0) return gr_seterr(GR_EINVAL, "evaluate: limit must be >= 0");
    const double t0 = gr_now_s();
    if (!(m = gr_mlp_load(mpath))) return gr_adderr(gr_errcode(), "evaluate: parameter 'model'");
    if ((rc = gr_taskdata_load(ctx, "evaluate", GR_SPLIT_TEST, &td, &d))) goto done;
    const int L = gr_mlp_nlayers(m);
    if ((size_t)gr_mlp_size(m, 0) != gr_dataset_features(d)) {
        rc = gr_seterr(GR_EINVAL, "evaluate: model %s takes %lld inputs but %s has %zu features",
                       mpath, (long long)gr_mlp_size(m, 0), td.path, gr_dataset_features(d));
        goto done;
    }
    if (gr_mlp_size(m, L) < gr_dataset_classes(d)) {
        rc = gr_seterr(GR_EINVAL, "evaluate: model %s has %lld classes but %s has labels up to %d",
                       mpath, (long long)gr_mlp_size(m, L), td.path, gr_dataset_classes(d) - 1);
        goto done;
    }
    uint64_t n = gr_dataset_rows(d);
    if (limit && (uint64_t)limit < n) n = (uint64_t)limit;
    uint64_t lo, hi;
    gr_eval_shard_range(n, si, sn, &lo, &hi);
    const uint64_t cnt = hi - lo;
    loss = malloc((cnt ? cnt : 1) * sizeof *loss);
    pred = malloc((cnt ? cnt : 1) * sizeof *pred);
    if (!loss || !pred) {
        rc = gr_seterr(GR_ENOMEM, "evaluate: out of memory");
        goto done;
    }
    /* A row's logits must not depend on the shard it falls in, or joined
     * shards would not equal an unsharded run bit for bit. sgemm's rounding
     * can depend on a row's position within the matrix and on the thread
     * split, so: one thread (the network is small), and forward passes over
     * fixed blocks of CHUNK rows counted from the first row of the split; a
     * shard computes the whole blocks its rows fall in. */
    openblas_set_num_threads(1);
    const size_t F = gr_dataset_features(d);
    double cl[CHUNK];
    int32_t cp[CHUNK];
    for (uint64_t c0 = lo - lo % CHUNK; c0 < hi; c0 += CHUNK) {
        const uint64_t c1 = c0 + CHUNK < n ? c0 + CHUNK : n;
        if ((rc = gr_mlp_predict(m, gr_dataset_x(d) + c0 * F, gr_dataset_y(d) + c0, c1 - c0, cl,
                                 cp)))
            goto done;
        for (uint64_t i = c0 > lo ? c0 : lo; i < c1 && i < hi; i++) {
            loss[i - lo] = cl[i - c0];
            pred[i - lo] = cp[i - c0];
        }
        if (gr_op_cancelled(ctx)) {
            rc = gr_seterr(GR_ECANCEL, "evaluate: cancelled");
            goto done;
        }
    }
    const int32_t *y = gr_dataset_y(d) + lo;
    double correct = 0, lsum = 0;
    for (uint64_t i = 0; i < cnt; i++) {
        correct += pred[i] == y[i];
        lsum += loss[i];
    }
    gr_eval_sums sums = {0};
    if ((rc = gr_eval_sum_set(&sums, "correct", correct)) ||
        (rc = gr_eval_sum_set(&sums, "loss", lsum)) ||
        (rc = gr_eval_sum_set(&sums, "n", (double)cnt)))
        goto done;
    gr_buf_putc(&settings, '{');
    if ((rc = gr_taskdata_json(&td, &settings))) goto done;
    gr_buf_printf(&settings, ",\"limit\":%lld,\"rows\":%zu}", (long long)limit, gr_dataset_rows(d));
    if (settings.oom) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    const double secs = gr_now_s() - t0;
    snprintf(timing, sizeof timing, "\"rows_per_s\":%.6g", secs > 0 ? (double)cnt / secs : 0.0);
    gr_eval_result r = {
        .task = &gr_eval_task_classify,
        .shard_i = si,
        .shard_n = sn,
        .units = "rows",
        .total = n,
        .first = lo,
        .count = cnt,
        .settings = settings.data,
        .sums = sums,
        .parts_key = "loss",
        .parts = loss,
        .timing = timing,
    };
    rc = gr_eval_finish(ctx, &r);
done:
    gr_buf_free(&settings);
    free(loss);
    free(pred);
    gr_mlp_destroy(&m);
    gr_dataset_destroy(&d);
    return rc;
}

static const char *const classify_params[] = {"model",      "data",      "split", "fraction",
                                              "split_seed", "transform", "noise", "limit",
                                              "shard",      NULL};

const gr_eval_task gr_eval_task_classify = {
    .name = "classify",
    .summary = "accuracy and mean cross-entropy of a graft-mlp classifier on a data split",
    .params = classify_params,
    .run = classify_run,
    .finish = classify_finish,
    .sums = (const char *const[]){"correct", "loss", "n", NULL},
};
