/* evaluate task weights: statistics of a model or delta without running it —
 * per-tensor and overall L2 norm, mean, variance (the DAREx predictor of when
 * DARE's rescaling breaks: large mean or variance of the delta), largest
 * magnitude and sparsity — and, for several inputs, pairwise cosine
 * similarity and sign-conflict rate. Dense and sparse deltas are read through
 * gr_sparse; an optional base is subtracted from every input first. */
#include "gr_err.h"
#include "evaluate/gr_evaluate.h"
#include "gr_fs.h"
#include "gr_sparse.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK     (1u << 20) /* elements read at a time per input */
#define MAX_INPUT 64

/* Streaming moments (Chan et al.'s pairwise update) and counts. */
typedef struct stats {
    double n, mean, m2, sumsq, absmax, nnz;
} stats;

static void stats_add(stats *s, double n, double mean, double m2, double sumsq, double absmax,
                      double nnz)
{
    if (n == 0) return;
    double tot = s->n + n, d = mean - s->mean;
    s->mean += d * n / tot;
    s->m2 += m2 + d * d * s->n * n / tot;
    s->n = tot;
    s->sumsq += sumsq;
    s->absmax = absmax > s->absmax ? absmax : s->absmax;
    s->nnz += nnz;
}

static void chunk_stats(const float *x, size_t n, int threads, stats *s)
{
    double sum = 0, sumsq = 0, nnz = 0, m2 = 0;
    float amax = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) reduction(+ : sum, sumsq, nnz) reduction(max : amax)
#endif
    for (size_t i = 0; i < n; i++) {
        const double v = x[i];
        sum += v;
        sumsq += v * v;
        nnz += x[i] != 0.0f;
        const float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    const double mean = sum / (double)n;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) reduction(+ : m2)
#endif
    for (size_t i = 0; i < n; i++) m2 += (x[i] - mean) * (x[i] - mean);
    stats_add(s, (double)n, mean, m2, sumsq, amax, nnz);
}

typedef struct pair {
    double dot, conflict, both;
} pair;

static void chunk_pair(const float *a, const float *b, size_t n, int threads, pair *p)
{
    double dot = 0, conflict = 0, both = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) reduction(+ : dot, conflict, both)
#endif
    for (size_t i = 0; i < n; i++) {
        dot += (double)a[i] * b[i];
        const int nz = a[i] != 0.0f && b[i] != 0.0f;
        both += nz;
        conflict += nz && ((a[i] < 0) != (b[i] < 0));
    }
    p->dot += dot;
    p->conflict += conflict;
    p->both += both;
}

static void put_stats(gr_buf *b, const stats *s)
{
    gr_buf_printf(b, "\"numel\":%.0f,\"l2\":", s->n);
    gr_buf_json_num(b, sqrt(s->sumsq));
    gr_buf_puts(b, ",\"mean\":");
    gr_buf_json_num(b, s->n ? s->mean : 0);
    gr_buf_puts(b, ",\"var\":");
    gr_buf_json_num(b, s->n ? s->m2 / s->n : 0);
    gr_buf_puts(b, ",\"abs_max\":");
    gr_buf_json_num(b, s->absmax);
    gr_buf_puts(b, ",\"sparsity\":");
    gr_buf_json_num(b, s->n ? 1.0 - s->nnz / s->n : 0);
}

static void put_pair(gr_buf *b, const pair *p, const stats *x, const stats *y)
{
    const double den = sqrt(x->sumsq) * sqrt(y->sumsq);
    gr_buf_puts(b, "\"cosine\":");
    gr_buf_json_num(b, den > 0 ? p->dot / den : NAN);
    gr_buf_puts(b, ",\"sign_conflict\":");
    gr_buf_json_num(b, p->both > 0 ? p->conflict / p->both : NAN);
    gr_buf_puts(b, ",\"both_nonzero\":");
    gr_buf_json_num(b, x->n ? p->both / x->n : 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int same_shape(const gr_sparse_tensor *a, const gr_sparse_tensor *b)
{
    return a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim);
}

static int weights_run(gr_op_ctx *ctx)
{
    const char *paths[MAX_INPUT], *base_path;
    size_t k = 0, nnames = 0;
    int rc = 0;
    gr_sparse *in[MAX_INPUT] = {0}, *base = NULL;
    const char **names = NULL;
    float *buf = NULL, *bbuf = NULL;
    stats *per = NULL, tot[MAX_INPUT];
    pair *pp = NULL, *ppt = NULL;
    gr_buf res = {0}, met = {0};
    const int threads = ctx->threads > 0 ? ctx->threads : 1;
    memset(tot, 0, sizeof tot);

    const gr_json *one = gr_json_get(ctx->params, "model"),
                  *many = gr_json_get(ctx->params, "models");
    if ((one != NULL) == (many != NULL))
        return gr_seterr(GR_EINVAL, "evaluate: task 'weights' takes either 'model' or 'models'");
    if ((rc = gr_op_str(ctx, "base", NULL, &base_path))) return rc;
    if (one) {
        paths[k++] = one->str;
    } else {
        if (many->len < 1 || many->len > MAX_INPUT)
            return gr_seterr(GR_EINVAL, "evaluate: 'models' must list 1 to %d inputs", MAX_INPUT);
        for (size_t i = 0; i < many->len; i++) paths[k++] = many->items[i]->str;
    }
    for (size_t i = 0; i < k; i++)
        if (!(in[i] = gr_sparse_open(paths[i]))) {
            rc = gr_adderr(gr_errcode(), "evaluate: models[%zu]", i);
            goto done;
        }
    if (base_path && !(base = gr_sparse_open(base_path))) {
        rc = gr_adderr(gr_errcode(), "evaluate: base");
        goto done;
    }
    /* every tensor name of any input, once, sorted */
    size_t cap = 0;
    for (size_t i = 0; i < k; i++) cap += gr_sparse_count(in[i]);
    if (!(names = malloc((cap ? cap : 1) * sizeof *names))) goto oom;
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < gr_sparse_count(in[i]); j++)
            names[nnames++] = gr_sparse_at(in[i], j)->name;
    qsort(names, nnames, sizeof *names, cmp_str);
    size_t u = 0;
    for (size_t j = 0; j < nnames; j++)
        if (!u || strcmp(names[u - 1], names[j])) names[u++] = names[j];
    nnames = u;

    const size_t npairs = k * (k - 1) / 2;
    buf = malloc((size_t)k * CHUNK * sizeof *buf);
    bbuf = malloc(CHUNK * sizeof *bbuf);
    per = calloc(k, sizeof *per);
    pp = calloc(npairs ? npairs : 1, sizeof *pp);
    ppt = calloc(npairs ? npairs : 1, sizeof *ppt);
    if (!buf || !bbuf || !per || !pp || !ppt) goto oom;

    gr_buf_puts(&res, "{\"task\":\"weights\",\"tensors\":[");
    size_t done_t = 0, skipped = 0;
    for (size_t j = 0; j < nnames; j++) {
        const char *name = names[j];
        const gr_sparse_tensor *t[MAX_INPUT], *ref = NULL, *bt = NULL;
        int skip = 0;
        for (size_t i = 0; i < k; i++) {
            t[i] = gr_sparse_find(in[i], name);
            if (!t[i] && !gr_sparse_is_delta(in[i])) {
                rc = gr_seterr(GR_EINVAL,
                               "evaluate: tensor '%s' is missing in models[%zu] (%s), "
                               "which is not a delta",
                               name, i, paths[i]);
                goto done;
            }
            if (!t[i]) continue;
            if (ref && !same_shape(ref, t[i])) {
                rc = gr_seterr(GR_EINVAL,
                               "evaluate: tensor '%s' has different shapes in the "
                               "inputs (%s and %s)",
                               name, ref->file, t[i]->file);
                goto done;
            }
            if (!ref) ref = t[i];
            skip |= !gr_dtype_is_float(t[i]->dtype);
        }
        if (base) {
            bt = gr_sparse_find(base, name);
            if (!bt) {
                rc = gr_seterr(GR_EINVAL, "evaluate: tensor '%s' is missing in base (%s)", name,
                               base_path);
                goto done;
            }
            if (!same_shape(ref, bt)) {
                rc = gr_seterr(GR_EINVAL,
                               "evaluate: tensor '%s' has a different shape in base "
                               "(%s) than in %s",
                               name, bt->file, ref->file);
                goto done;
            }
            skip |= !gr_dtype_is_float(bt->dtype);
        }
        if (skip) { /* integer buffers and the like have no statistics */
            skipped++;
            continue;
        }
        memset(per, 0, k * sizeof *per);
        memset(ppt, 0, (npairs ? npairs : 1) * sizeof *ppt);
        for (uint64_t off = 0; off < ref->nelem; off += CHUNK) {
            if (gr_op_cancelled(ctx)) {
                rc = gr_seterr(GR_ECANCEL, "evaluate: cancelled");
                goto done;
            }
            const size_t n = (size_t)(ref->nelem - off < CHUNK ? ref->nelem - off : CHUNK);
            if (bt && (rc = gr_sparse_read_f32(base, bt, off, n, bbuf))) goto done;
            for (size_t i = 0; i < k; i++) {
                float *x = buf + i * CHUNK;
                if (!t[i])
                    memset(x, 0, n * sizeof *x);
                else if ((rc = gr_sparse_read_f32(in[i], t[i], off, n, x)))
                    goto done;
                if (bt)
                    for (size_t e = 0; e < n; e++) x[e] -= bbuf[e];
                chunk_stats(x, n, threads, &per[i]);
            }
            for (size_t a = 0, q = 0; a < k; a++)
                for (size_t b = a + 1; b < k; b++, q++)
                    chunk_pair(buf + a * CHUNK, buf + b * CHUNK, n, threads, &ppt[q]);
        }
        for (size_t i = 0; i < k; i++) {
            if (t[i]) gr_sparse_release(in[i], t[i]);
            stats_add(&tot[i], per[i].n, per[i].mean, per[i].m2, per[i].sumsq, per[i].absmax,
                      per[i].nnz);
        }
        if (bt) gr_sparse_release(base, bt);
        for (size_t q = 0; q < npairs; q++) {
            pp[q].dot += ppt[q].dot;
            pp[q].conflict += ppt[q].conflict;
            pp[q].both += ppt[q].both;
        }
        if (done_t++) gr_buf_putc(&res, ',');
        gr_buf_puts(&res, "{\"name\":");
        gr_buf_json_str(&res, name, strlen(name));
        gr_buf_puts(&res, ",\"models\":[");
        for (size_t i = 0; i < k; i++) {
            gr_buf_puts(&res, i ? ",{" : "{");
            put_stats(&res, &per[i]);
            gr_buf_putc(&res, '}');
        }
        gr_buf_putc(&res, ']');
        if (npairs) {
            gr_buf_puts(&res, ",\"pairs\":[");
            for (size_t a = 0, q = 0; a < k; a++)
                for (size_t b = a + 1; b < k; b++, q++) {
                    gr_buf_printf(&res, "%s{\"a\":%zu,\"b\":%zu,", q ? "," : "", a, b);
                    put_pair(&res, &ppt[q], &per[a], &per[b]);
                    gr_buf_putc(&res, '}');
                }
            gr_buf_putc(&res, ']');
        }
        gr_buf_putc(&res, '}');
        gr_op_progress(ctx, (double)(j + 1), (double)nnames, "weights: %zu/%zu tensors", j + 1,
                       nnames);
    }
    if (!done_t) {
        rc = gr_seterr(GR_EINVAL, "evaluate: %s holds no floating-point tensors", paths[0]);
        goto done;
    }
    /* overall: one input → flat; several → per input and per pair */
    gr_buf_printf(&met, "{\"tensors\":%zu,\"skipped\":%zu,", done_t, skipped);
    if (k == 1) {
        put_stats(&met, &tot[0]);
    } else {
        gr_buf_puts(&met, "\"models\":[");
        for (size_t i = 0; i < k; i++) {
            gr_buf_puts(&met, i ? ",{" : "{");
            put_stats(&met, &tot[i]);
            gr_buf_putc(&met, '}');
        }
        gr_buf_puts(&met, "],\"pairs\":[");
        double cs = 0, sc = 0;
        for (size_t a = 0, q = 0; a < k; a++)
            for (size_t b = a + 1; b < k; b++, q++) {
                gr_buf_printf(&met, "%s{\"a\":%zu,\"b\":%zu,", q ? "," : "", a, b);
                put_pair(&met, &pp[q], &tot[a], &tot[b]);
                gr_buf_putc(&met, '}');
                const double den = sqrt(tot[a].sumsq) * sqrt(tot[b].sumsq);
                cs += den > 0 ? pp[q].dot / den : NAN;
                sc += pp[q].both > 0 ? pp[q].conflict / pp[q].both : NAN;
            }
        gr_buf_puts(&met, "],\"cosine_mean\":");
        gr_buf_json_num(&met, cs / (double)npairs);
        gr_buf_puts(&met, ",\"sign_conflict_mean\":");
        gr_buf_json_num(&met, sc / (double)npairs);
    }
    gr_buf_putc(&met, '}');
    gr_buf_printf(&res, "],\"overall\":%s}\n", met.data ? met.data : "{}");
    if (res.oom || met.oom) goto oom;
    if (ctx->outdir) {
        char *p = gr_fs_join(ctx->outdir, GR_EVAL_RESULT);
        if (!p) goto oom;
        rc = gr_fs_write_atomic(p, res.data, res.len, 0644);
        free(p);
        if (rc) goto done;
    }
    rc = gr_op_set_metrics(ctx, met.data);
    goto done;
oom:
    rc = gr_seterr(GR_ENOMEM, "evaluate: out of memory");
done:
    for (size_t i = 0; i < k; i++) gr_sparse_close(&in[i]);
    gr_sparse_close(&base);
    free(names);
    free(buf);
    free(bbuf);
    free(per);
    free(pp);
    free(ppt);
    gr_buf_free(&res);
    gr_buf_free(&met);
    return rc;
}

static const char *const weights_params[] = {"model", "models", "base", NULL};

const gr_eval_task gr_eval_task_weights = {
    .name = "weights",
    .summary = "norms, mean, variance, sparsity of a model or delta; pairwise cosine and sign "
               "conflicts of several",
    .params = weights_params,
    .run = weights_run,
    .finish = NULL,
};
