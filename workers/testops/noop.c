/* noop: a test op that does nothing and succeeds (queue throughput, DAG
 * shapes). Writes no files; its metrics count its inputs. */
#include "gr_op.h"
#include "gr_err.h"

#include <stdio.h>

static const gr_param noop_params[] = {
    {"input", GR_P_INPUT, 0, "a stage to wait for (its output is ignored)"},
    {"inputs", GR_P_INPUTS, 0, "stages to wait for (their outputs are ignored)"},
    {NULL, 0, 0, NULL},
};

static int noop_run(gr_op_ctx *ctx)
{
    const gr_json *in = gr_json_get(ctx->params, "inputs");
    char m[64];
    snprintf(m, sizeof m, "{\"inputs\":%zu}", in ? in->len : (size_t)0);
    return gr_op_set_metrics(ctx, m);
}

const gr_op gr_op_noop = {
    .name = "noop",
    .version = 1,
    .summary = "test op: does nothing",
    .params = noop_params,
    .run = noop_run,
};
