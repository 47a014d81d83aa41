/* evaluate: the `evaluate` op — its parameter table, the task dispatch, shard
 * arithmetic, result.json, and `task: combine` (exact joining of shards). */
#include "gr_err.h"
#include "evaluate/gr_evaluate.h"
#include "gr_fs.h"
#include "gr_jsonb.h"
#include "gr_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// clang-format off

/* Loads the model under the max_memory_mb budget: resident when its fp32
 * weights fit, else streamed a layer at a time (same results). */
gr_model *gr_eval_load_model(gr_op_ctx *ctx, const char *mpath)
{
    int64_t mb;
    if (gr_op_int(ctx, "max_memory_mb", 0, &mb)) return NULL;
    if (mb < 0 || mb > ((int64_t)1 << 40)) {
        gr_seterr(GR_EINVAL,
                  "evaluate: max_memory_mb must be in [0, 2^40] (0: half of the machine's "
                  "memory; is %lld)",
                  (long long)mb);
        return NULL;
    }
    const gr_model_opts o = {.mode = GR_MODEL_AUTO, .max_fp32_bytes = (uint64_t)mb << 20};
    return gr_model_load_opts(mpath, &o);
}

/* Every parameter of every task (the pipeline layer learns from this table
 * which parameters are inputs); each task accepts only its own subset. */
static const gr_param evaluate_params[] = {
    {"task", GR_P_STR, 1, "perplexity | choice | weights | combine | classify"},
    {"model", GR_P_INPUT, 0, "checkpoint directory (config.json + safetensors), or a delta"},
    {"models", GR_P_INPUTS, 0, "weights: several checkpoints or deltas compared pairwise"},
    {"base", GR_P_INPUT, 0, "weights: base checkpoint subtracted from each model"},
    {"data", GR_P_INPUT, 0, "token data: .bin (uint16/uint32 ids) or .jsonl"},
    {"token_dtype", GR_P_STR, 0, "ids in a .bin file: uint16 (default) or uint32"},
    {"seq_len", GR_P_INT, 0, "window length (default min(max_position_embeddings, 1024))"},
    {"stride", GR_P_INT, 0, "tokens between window starts (default seq_len)"},
    {"batch", GR_P_INT, 0, "windows per forward pass (default max(1, 2048 / seq_len))"},
    {"limit", GR_P_INT, 0, "evaluate only the first N windows or items"},
    {"max_memory_mb", GR_P_INT, 0, "perplexity, choice: most MB of fp32 weights held in memory "
                                   "(default half of RAM); a larger model streams its weights, "
                                   "a layer at a time"},
    {"shard", GR_P_STR, 0, "i/n: evaluate the i-th of n slices (join them with task: combine)"},
    {"inputs", GR_P_INPUTS, 0, "combine: the shard stages (or result.json files) to join"},
    /* classify (train/eval_classify.c): which rows of a CSV data set, transformed how */
    {"split", GR_P_STR, 0, "classify: rows evaluated: test (default) | train | all"},
    {"fraction", GR_P_NUM, 0, "classify: share of the rows in the train part (default 0.8)"},
    {"split_seed", GR_P_INT, 0, "classify: seed of the train/test split and of noise (default 0)"},
    {"transform", GR_P_STR, 0, "classify: identity | rot90 | rot180 | rot270 | flip | vflip | "
                               "invert | noise"},
    {"noise", GR_P_NUM, 0, "classify: noise sd as a fraction of the value range (default 0.25)"},
    {NULL, 0, 0, NULL},
};

extern const gr_eval_task gr_eval_task_classify; /* train/eval_classify.c */

/* The task table: one line per task. */
static const gr_eval_task *const tasks[] = {
    &gr_eval_task_perplexity,
    &gr_eval_task_choice,
    &gr_eval_task_weights,
    &gr_eval_task_combine,
    &gr_eval_task_classify,
    NULL,
};
// clang-format on

const gr_eval_task *gr_eval_task_find(const char *name)
{
    for (size_t i = 0; tasks[i]; i++)
        if (!strcmp(tasks[i]->name, name)) return tasks[i];
    return NULL;
}

static int evaluate_run(gr_op_ctx *ctx)
{
    const char *name;
    int rc = gr_op_req_str(ctx, "task", &name);
    if (rc) return rc;
    const gr_eval_task *t = gr_eval_task_find(name);
    if (!t) {
        char list[256] = "";
        size_t k = 0;
        for (size_t i = 0; tasks[i] && k < sizeof list - 40; i++)
            k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", tasks[i]->name);
        return gr_seterr(GR_EINVAL, "evaluate: unknown task '%.64s' (tasks: %s)", name, list);
    }
    const gr_json *p = ctx->params;
    for (size_t i = 0; p && p->type == GR_JSON_OBJ && i < p->len; i++) {
        const char *key = p->keys[i];
        if (key[0] == '_' || !strcmp(key, "task")) continue;
        int ok = 0;
        for (const char *const *q = t->params; *q && !ok; q++) ok = !strcmp(*q, key);
        if (!ok) {
            char list[512] = "";
            size_t k = 0;
            for (const char *const *q = t->params; *q && k < sizeof list - 40; q++)
                k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", q == t->params ? "" : ", ",
                                      *q);
            return gr_seterr(GR_EINVAL,
                             "evaluate: parameter '%s' does not apply to task '%s' (it takes: %s)",
                             key, t->name, list);
        }
    }
    return t->run(ctx);
}

const gr_op gr_op_evaluate = {
    .name = "evaluate",
    .version = 1,
    .summary = "perplexity and multiple-choice accuracy of a model; statistics of weights and "
               "deltas; joining sharded evaluations",
    .params = evaluate_params,
    .open_params = 0,
    .run = evaluate_run,
};

/* ---------------------------------------------------------------- sums */

int gr_eval_sum_set(gr_eval_sums *s, const char *key, double v)
{
    if (strlen(key) >= sizeof s->key[0])
        return gr_seterr(GR_EINVAL, "evaluate: sum name '%.40s' too long", key);
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->key[i], key)) return s->val[i] = v, 0;
    if (s->n == GR_EVAL_MAX_SUMS) return gr_seterr(GR_EINVAL, "evaluate: too many sums");
    snprintf(s->key[s->n], sizeof s->key[0], "%s", key);
    s->val[s->n++] = v;
    return 0;
}

double gr_eval_sum_get(const gr_eval_sums *s, const char *key)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->key[i], key)) return s->val[i];
    return NAN;
}

/* ---------------------------------------------------------------- shards */

int gr_eval_shard(const gr_op_ctx *ctx, int *i, int *n)
{
    const char *s;
    int rc = gr_op_str(ctx, "shard", NULL, &s);
    if (rc) return rc;
    *i = 0;
    *n = 1;
    if (!s) return 0;
    long a, b;
    int used = 0;
    if (sscanf(s, "%ld/%ld%n", &a, &b, &used) != 2 || (size_t)used != strlen(s) || b < 1 ||
        b > 1000000 || a < 0 || a >= b)
        return gr_seterr(GR_EINVAL,
                         "evaluate: parameter 'shard' must be \"i/n\" with 0 <= i < n "
                         "(is \"%.40s\")",
                         s);
    *i = (int)a;
    *n = (int)b;
    return 0;
}

void gr_eval_shard_range(uint64_t total, int i, int n, uint64_t *lo, uint64_t *hi)
{
    /* floor(total*i/n) without overflowing for large totals */
    const uint64_t q = total / (uint64_t)n, r = total % (uint64_t)n;
    *lo = q * (uint64_t)i + r * (uint64_t)i / (uint64_t)n;
    *hi = q * (uint64_t)(i + 1) + r * (uint64_t)(i + 1) / (uint64_t)n;
}

/* ---------------------------------------------------------------- results */

static void put_sums(gr_buf *b, const gr_eval_sums *s)
{
    gr_buf_putc(b, '{');
    for (int i = 0; i < s->n; i++) {
        if (i) gr_buf_putc(b, ',');
        gr_buf_json_str(b, s->key[i], strlen(s->key[i]));
        gr_buf_putc(b, ':');
        gr_buf_json_num(b, s->val[i]);
    }
    gr_buf_putc(b, '}');
}

/* result.json text for r (finish applied). */
static int result_json(const gr_eval_result *r, gr_buf *b, gr_buf *fin)
{
    int rc = r->task->finish ? r->task->finish(&r->sums, fin) : 0;
    if (rc) return rc;
    gr_buf_printf(b, "{\"task\":");
    gr_buf_json_str(b, r->task->name, strlen(r->task->name));
    gr_buf_printf(b, ",\"shard\":[%d,%d],\"units\":", r->shard_i, r->shard_n);
    gr_buf_json_str(b, r->units, strlen(r->units));
    gr_buf_printf(b, ",\"total\":%llu,\"first\":%llu,\"count\":%llu,\"settings\":%s,\"sums\":",
                  (unsigned long long)r->total, (unsigned long long)r->first,
                  (unsigned long long)r->count, r->settings ? r->settings : "{}");
    put_sums(b, &r->sums);
    if (r->parts_key) {
        gr_buf_printf(b, ",\"parts\":{");
        gr_buf_json_str(b, r->parts_key, strlen(r->parts_key));
        gr_buf_putc(b, ':');
        gr_buf_putc(b, '[');
        for (uint64_t i = 0; i < r->count; i++) {
            if (i) gr_buf_putc(b, ',');
            gr_buf_json_num(b, r->parts[i]);
        }
        gr_buf_printf(b, "]}");
    }
    gr_buf_printf(b, ",\"metrics\":{%s}", fin->data ? fin->data : "");
    if (r->extra && r->extra[0]) gr_buf_printf(b, ",%s", r->extra);
    gr_buf_puts(b, "}\n");
    return b->oom ? gr_seterr(GR_ENOMEM, "out of memory") : 0;
}

static int write_result(const char *outdir, const gr_buf *b)
{
    if (!outdir) return 0;
    char *p = gr_fs_join(outdir, GR_EVAL_RESULT);
    if (!p) return gr_seterr(GR_ENOMEM, "out of memory");
    int rc = gr_fs_write_atomic(p, b->data, b->len, 0644);
    free(p);
    return rc;
}

int gr_eval_finish(gr_op_ctx *ctx, const gr_eval_result *r)
{
    gr_buf b = {0}, fin = {0}, m = {0};
    int rc = result_json(r, &b, &fin);
    if (!rc) rc = write_result(ctx->outdir, &b);
    if (!rc) {
        gr_buf_printf(&m, "{%s%s", fin.data ? fin.data : "", fin.len ? "," : "");
        gr_buf_printf(&m, "\"shard\":\"%d/%d\"", r->shard_i, r->shard_n);
        if (r->timing && r->timing[0]) gr_buf_printf(&m, ",%s", r->timing);
        gr_buf_putc(&m, '}');
        rc = m.oom ? gr_seterr(GR_ENOMEM, "out of memory") : gr_op_set_metrics(ctx, m.data);
    }
    gr_buf_free(&b);
    gr_buf_free(&fin);
    gr_buf_free(&m);
    return rc;
}

/* ---------------------------------------------------------------- combine */

typedef struct shard_in {
    gr_json *j;
    const char *path;
    int i, n;
    uint64_t total, first, count;
} shard_in;

static int get_u64(const gr_json *j, const char *key, const char *path, uint64_t *out)
{
    const gr_json *v = gr_json_get(j, key);
    if (!v || v->type != GR_JSON_NUM || !v->is_int || v->i < 0)
        return gr_seterr(GR_EINVAL, "combine: %s: field '%s' must be a non-negative integer", path,
                         key);
    *out = (uint64_t)v->i;
    return 0;
}

static int load_shard(const char *path, shard_in *s)
{
    char *file = gr_fs_is_dir(path) ? gr_fs_join(path, GR_EVAL_RESULT) : strdup(path);
    if (!file) return gr_seterr(GR_ENOMEM, "out of memory");
    s->j = gr_json_parse_file(file);
    free(file);
    if (!s->j) return gr_adderr(gr_errcode(), "combine");
    const gr_json *sh = gr_json_get(s->j, "shard");
    if (s->j->type != GR_JSON_OBJ || !sh || sh->type != GR_JSON_ARR || sh->len != 2 ||
        !sh->items[0]->is_int || !sh->items[1]->is_int || !gr_json_get_str(s->j, "task", NULL))
        return gr_seterr(GR_EINVAL,
                         "combine: %s: not an evaluate result (needs task and shard "
                         "[i, n])",
                         path);
    s->i = (int)sh->items[0]->i;
    s->n = (int)sh->items[1]->i;
    int rc;
    if ((rc = get_u64(s->j, "total", path, &s->total)) ||
        (rc = get_u64(s->j, "first", path, &s->first)) ||
        (rc = get_u64(s->j, "count", path, &s->count)))
        return rc;
    const gr_json *sums = gr_json_get(s->j, "sums");
    if (!sums || sums->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "combine: %s: field 'sums' must be an object", path);
    return 0;
}

static int cmp_first(const void *a, const void *b)
{
    const shard_in *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

int gr_eval_combine(const char *const *paths, size_t n, gr_buf *result, gr_buf *metrics)
{
    if (!n) return gr_seterr(GR_EINVAL, "combine: no shards given (parameter 'inputs')");
    shard_in *s = calloc(n, sizeof *s);
    double *parts = NULL;
    gr_buf fin = {0};
    int rc = 0;
    if (!s) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t k = 0; k < n && !rc; k++) {
        s[k].path = paths[k];
        rc = load_shard(paths[k], &s[k]);
    }
    if (rc) goto done;
    const char *task = gr_json_get_str(s[0].j, "task", "");
    const gr_eval_task *t = gr_eval_task_find(task);
    if (!t || !t->finish) {
        rc = gr_seterr(GR_EINVAL, "combine: %s: task '%.64s' cannot be combined", paths[0], task);
        goto done;
    }
    for (const char *const *q = t->sums; q && *q; q++) {
        const gr_json *v = gr_json_get(gr_json_get(s[0].j, "sums"), *q);
        if (!v || v->type != GR_JSON_NUM) {
            rc = gr_seterr(GR_EINVAL, "combine: %s: sums.%s is missing (task '%s' needs it)",
                           paths[0], *q, task);
            goto done;
        }
    }
    const gr_json *settings0 = gr_json_get(s[0].j, "settings");
    const gr_json *units0 = gr_json_get(s[0].j, "units");
    for (size_t k = 0; k < n; k++) {
        const char *tk = gr_json_get_str(s[k].j, "task", "");
        if (strcmp(tk, task)) {
            rc = gr_seterr(GR_EINVAL, "combine: %s is a '%s' result but %s is a '%s' result",
                           paths[k], tk, paths[0], task);
            goto done;
        }
        if (s[k].n != (int)n || s[k].i < 0 || s[k].i >= s[k].n) {
            rc = gr_seterr(GR_EINVAL, "combine: %s is shard %d/%d, but %zu shards were given",
                           paths[k], s[k].i, s[k].n, n);
            goto done;
        }
        if (s[k].total != s[0].total ||
            !gr_jsonb_equal(gr_json_get(s[k].j, "settings"), settings0) ||
            !gr_jsonb_equal(gr_json_get(s[k].j, "units"), units0)) {
            rc = gr_seterr(GR_EINVAL,
                           "combine: %s and %s are shards of different evaluations "
                           "(settings or totals differ)",
                           paths[k], paths[0]);
            goto done;
        }
        for (size_t q = 0; q < k; q++)
            if (s[q].i == s[k].i) {
                rc = gr_seterr(GR_EINVAL, "combine: shard %d/%d given twice (%s, %s)", s[k].i,
                               s[k].n, paths[q], paths[k]);
                goto done;
            }
    }
    qsort(s, n, sizeof *s, cmp_first);
    uint64_t at = 0;
    for (size_t k = 0; k < n; k++) {
        if (s[k].first != at || s[k].count > s[k].total - at) {
            rc = gr_seterr(GR_EINVAL,
                           "combine: %s covers units [%llu, %llu), expected a shard "
                           "starting at %llu",
                           s[k].path, (unsigned long long)s[k].first,
                           (unsigned long long)(s[k].first + s[k].count), (unsigned long long)at);
            goto done;
        }
        at += s[k].count;
    }
    if (at != s[0].total) {
        rc = gr_seterr(GR_EINVAL, "combine: the shards cover %llu of %llu units",
                       (unsigned long long)at, (unsigned long long)s[0].total);
        goto done;
    }

    /* sums: with parts, re-added in unit order; otherwise in shard order */
    gr_eval_sums sums = {0};
    const gr_json *sums0 = gr_json_get(s[0].j, "sums");
    const gr_json *parts0 = gr_json_get(s[0].j, "parts");
    const char *pkey =
        parts0 && parts0->type == GR_JSON_OBJ && parts0->len == 1 ? parts0->keys[0] : NULL;
    /* every shard must list one part per unit before the parts are gathered
     * (so the allocation below is bounded by what the files hold) */
    for (size_t k = 0; pkey && k < n; k++) {
        const gr_json *pk = gr_json_get(gr_json_get(s[k].j, "parts"), pkey);
        if (!pk || pk->type != GR_JSON_ARR || pk->len != s[k].count) {
            rc = gr_seterr(GR_EINVAL, "combine: %s: parts.%s must list %llu values", s[k].path,
                           pkey, (unsigned long long)s[k].count);
            goto done;
        }
    }
    if (pkey && s[0].total && !(parts = malloc(s[0].total * sizeof *parts))) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t q = 0; q < sums0->len; q++) {
        const char *key = sums0->keys[q];
        const int from_parts = pkey && !strcmp(pkey, key);
        double v = 0;
        uint64_t u = 0;
        for (size_t k = 0; k < n; k++) {
            const gr_json *sk = gr_json_get(s[k].j, "sums");
            const gr_json *x = gr_json_get(sk, key);
            if (!x || x->type != GR_JSON_NUM || sk->len != sums0->len) {
                rc = gr_seterr(GR_EINVAL, "combine: %s: sums differ from %s's (at '%s')", s[k].path,
                               s[0].path, key);
                goto done;
            }
            if (!from_parts) {
                v += x->num;
                continue;
            }
            const gr_json *pk = gr_json_get(gr_json_get(s[k].j, "parts"), key);
            if (!pk || pk->type != GR_JSON_ARR || pk->len != s[k].count) {
                rc = gr_seterr(GR_EINVAL, "combine: %s: parts.%s must list %llu values", s[k].path,
                               key, (unsigned long long)s[k].count);
                goto done;
            }
            for (size_t e = 0; e < pk->len; e++) {
                if (pk->items[e]->type != GR_JSON_NUM) {
                    rc = gr_seterr(GR_EINVAL, "combine: %s: parts.%s[%zu] is not a number",
                                   s[k].path, key, e);
                    goto done;
                }
                parts[u++] = pk->items[e]->num;
            }
        }
        if (from_parts)
            for (uint64_t e = 0; e < u; e++) v += parts[e];
        if ((rc = gr_eval_sum_set(&sums, key, v))) goto done;
    }
    char *settings_text = settings0 ? gr_jsonb_canon(settings0) : NULL;
    gr_eval_result r = {
        .task = t,
        .shard_i = 0,
        .shard_n = 1,
        .units = units0 && units0->type == GR_JSON_STR ? units0->str : "units",
        .total = s[0].total,
        .first = 0,
        .count = s[0].total,
        .settings = settings_text,
        .sums = sums,
        .parts_key = pkey,
        .parts = parts,
    };
    rc = result_json(&r, result, &fin);
    if (!rc) {
        gr_buf_printf(metrics, "{%s%s\"shards\":%zu}", fin.data ? fin.data : "", fin.len ? "," : "",
                      n);
        if (metrics->oom) rc = gr_seterr(GR_ENOMEM, "out of memory");
    }
    gr_json *check = rc ? NULL : gr_json_parse(metrics->data, metrics->len, "metrics");
    if (!rc && !check) /* a task's finish fed values it cannot print */
        rc = gr_seterr(GR_EINVAL,
                       "combine: the shard results of task '%s' give no valid "
                       "metrics (sums missing or out of range)",
                       task);
    gr_json_free(check);
    free(settings_text);
done:
    for (size_t k = 0; k < n; k++) gr_json_free(s[k].j);
    free(s);
    free(parts);
    gr_buf_free(&fin);
    return rc;
}

static int combine_run(gr_op_ctx *ctx)
{
    const gr_json *in = gr_json_get(ctx->params, "inputs");
    if (!in || in->type != GR_JSON_ARR)
        return gr_seterr(GR_EINVAL, "evaluate: task 'combine' needs parameter 'inputs' (a list "
                                    "of shard stages)");
    const char **paths = calloc(in->len ? in->len : 1, sizeof *paths);
    if (!paths) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < in->len; i++) paths[i] = in->items[i]->str;
    gr_buf result = {0}, metrics = {0};
    int rc = gr_eval_combine(paths, in->len, &result, &metrics);
    if (!rc) rc = write_result(ctx->outdir, &result);
    if (!rc) rc = gr_op_set_metrics(ctx, metrics.data);
    free(paths);
    gr_buf_free(&result);
    gr_buf_free(&metrics);
    return rc;
}

static const char *const combine_params[] = {"inputs", NULL};

const gr_eval_task gr_eval_task_combine = {
    .name = "combine",
    .summary = "joins the result.json of the shards of one evaluation, exactly",
    .params = combine_params,
    .run = combine_run,
    .finish = NULL,
};
