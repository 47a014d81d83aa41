/* fail: a test op that fails on purpose (retries, backoff, dead letters,
 * skipped dependants). It fails attempts 1..times (or every attempt when
 * times < 0), as retryable (GR_EIO) or not (GR_EINVAL); the attempt number
 * comes from the runtime's reserved parameter `_attempt` (gr_worker.h). */
#include "gr_op.h"
#include "gr_err.h"

#include <stdio.h>

static const gr_param fail_params[] = {
    {"times", GR_P_INT, 0, "fail the first N attempts, then succeed (default -1: always fail)"},
    {"retryable", GR_P_BOOL, 0, "whether a retry can help (default true)"},
    {"message", GR_P_STR, 0, "error message"},
    {"input", GR_P_INPUT, 0, "a stage to wait for (its output is ignored)"},
    {"inputs", GR_P_INPUTS, 0, "stages to wait for (their outputs are ignored)"},
    {NULL, 0, 0, NULL},
};

static int fail_run(gr_op_ctx *ctx)
{
    int64_t times, attempt;
    int retryable;
    const char *msg;
    int rc;
    if ((rc = gr_op_int(ctx, "times", -1, &times)) ||
        (rc = gr_op_bool(ctx, "retryable", 1, &retryable)) ||
        (rc = gr_op_str(ctx, "message", "deliberate failure", &msg)) ||
        (rc = gr_op_int(ctx, "_attempt", 1, &attempt)))
        return rc;
    if (times < 0 || attempt <= times)
        return gr_seterr(retryable ? GR_EIO : GR_EINVAL, "fail: %s (attempt %lld, %s)", msg,
                         (long long)attempt, retryable ? "retryable" : "not retryable");
    char m[64];
    snprintf(m, sizeof m, "{\"succeeded_at\":%lld}", (long long)attempt);
    return gr_op_set_metrics(ctx, m);
}

const gr_op gr_op_fail = {
    .name = "fail",
    .version = 1,
    .summary = "test op: fails the first N attempts or always",
    .params = fail_params,
    .run = fail_run,
};
