/* gr_evaluate: the `evaluate` op — model quality (perplexity, multiple
 * choice), weight statistics without running a model, and the exact joining
 * of an evaluation split into shards. Each task is one gr_eval_task in the
 * table of evaluate.c; a task is picked by the `task` parameter.
 *
 * Every task writes result.json into the op's output tree: deterministic
 * results only (no timings, so the tree's id depends on the inputs alone);
 * timings such as tokens_per_s go to the metrics only. A shardable task's
 * result.json reads:
 *   {"task": NAME, "shard": [i, n], "units": "windows"|"items"|...,
 *    "total": UNITS IN ALL SHARDS, "first": FIRST UNIT, "count": UNITS HERE,
 *    "settings": {...},            (equal in every shard of one evaluation)
 *    "sums": {"k": v, ...},        (additive over shards)
 *    "parts": {"k": [v per unit]}, (optional: per-unit values of one sum)
 *    "metrics": {...}}             (derived from sums by the task's finish)
 * `task: combine` joins such files: it checks that the shards are one
 * evaluation (same task, settings, n and total; ranges covering every unit
 * once), adds the sums (a sum with parts is re-added from the concatenated
 * parts in unit order, so the result is bit-identical to an unsharded run),
 * and applies the task's finish. */
#ifndef GR_EVALUATE_H
#define GR_EVALUATE_H

#include <stdint.h>

#include "gr_buf.h"
#include "gr_json.h"
#include "gr_op.h"

#define GR_EVAL_RESULT   "result.json"
#define GR_EVAL_MAX_SUMS 16

extern const gr_op gr_op_evaluate;

/* Loads the checkpoint at mpath under the task's max_memory_mb budget:
 * resident when its fp32 weights fit, else streamed a layer at a time (same
 * results). NULL with gr_errmsg() set on a bad budget or checkpoint. */
typedef struct gr_model gr_model; /* gr_model.h (not included: its gr_act
                                   * differs from gr_mlp.h's) */
gr_model *gr_eval_load_model(gr_op_ctx *ctx, const char *mpath);

/* Additive quantities of one evaluation (e.g. nll, tokens; correct, n). */
typedef struct gr_eval_sums {
    int n;
    char key[GR_EVAL_MAX_SUMS][32];
    double val[GR_EVAL_MAX_SUMS];
} gr_eval_sums;

/* Sets (or replaces) key; GR_EINVAL when full or the key is too long. */
int gr_eval_sum_set(gr_eval_sums *s, const char *key, double v);
/* The value of key, or NAN when absent. */
double gr_eval_sum_get(const gr_eval_sums *s, const char *key);

typedef struct gr_eval_task {
    const char *name;
    const char *summary;
    /* Parameters this task takes besides `task` (NULL-terminated). Each must
     * also be listed in the op's parameter table (evaluate.c). */
    const char *const *params;
    int (*run)(gr_op_ctx *ctx);
    /* Derived metrics from the sums, appended to b as JSON object members
     * without braces ("\"acc\":0.5,\"n\":10"); used for one shard and for
     * combined shards. NULL for tasks that cannot be sharded. */
    int (*finish)(const gr_eval_sums *s, gr_buf *b);
    /* The sums finish reads (NULL-terminated; NULL = unchecked): combine
     * rejects shard results that lack one. */
    const char *const *sums;
} gr_eval_task;

/* The task called name, or NULL. */
const gr_eval_task *gr_eval_task_find(const char *name);

/* Reads the `shard` parameter "i/n" (0 <= i < n <= 1e6; default 0/1). */
int gr_eval_shard(const gr_op_ctx *ctx, int *i, int *n);
/* Units [lo, hi) of shard i of n out of total, in contiguous blocks that
 * differ in size by at most one. */
void gr_eval_shard_range(uint64_t total, int i, int n, uint64_t *lo, uint64_t *hi);

/* What a shardable task hands to gr_eval_finish. */
typedef struct gr_eval_result {
    const gr_eval_task *task;
    int shard_i, shard_n;
    const char *units;
    uint64_t total, first, count;
    const char *settings; /* JSON object text (deterministic settings) */
    gr_eval_sums sums;
    const char *parts_key; /* optional: per-unit values of sums[parts_key] */
    const double *parts;   /* count values */
    const char *extra;     /* optional extra members for result.json ("\"k\":v,...") */
    const char *timing;    /* optional members for the metrics only */
} gr_eval_result;

/* Writes result.json into ctx->outdir (atomically) and sets the metrics to
 * the task's finished metrics plus shard info and timing. */
int gr_eval_finish(gr_op_ctx *ctx, const gr_eval_result *r);

/* Joins the result.json of the shards at paths (each a result.json file or
 * a directory holding one): checks and sums as described above. On success
 * result gets the joined result.json text and metrics the metrics object. */
int gr_eval_combine(const char *const *paths, size_t n, gr_buf *result, gr_buf *metrics);

/* The evaluation tasks (evaluate_*.c). */
extern const gr_eval_task gr_eval_task_perplexity, gr_eval_task_choice, gr_eval_task_weights,
    gr_eval_task_combine;

#endif
