/* sleep: a test op that waits a number of seconds, reporting progress and
 * stopping early when cancelled (long stages, heartbeats, timeouts). */
#include "gr_log.h"
#include "gr_op.h"
#include "gr_err.h"

#include <math.h>
#include <stdio.h>
#include <time.h>

#define SLEEP_TICK_MS 20 /* cancel latency */

static const gr_param sleep_params[] = {
    {"seconds", GR_P_NUM, 0, "how long to wait (default 1, at most one day)"},
    {"input", GR_P_INPUT, 0, "a stage to wait for (its output is ignored)"},
    {"inputs", GR_P_INPUTS, 0, "stages to wait for (their outputs are ignored)"},
    {NULL, 0, 0, NULL},
};

static int sleep_run(gr_op_ctx *ctx)
{
    double secs;
    int rc = gr_op_num(ctx, "seconds", 1.0, &secs);
    if (rc) return rc;
    if (!(secs >= 0 && secs <= 86400))
        return gr_seterr(GR_EINVAL, "sleep: parameter 'seconds' = %g: must be in [0, 86400]", secs);
    double t0 = gr_now_s(), el = 0;
    while ((el = gr_now_s() - t0) < secs) {
        if (gr_op_cancelled(ctx))
            return gr_seterr(GR_ECANCEL, "sleep: cancelled after %.2f of %.2f s", el, secs);
        gr_op_progress(ctx, el, secs, "slept %.1f of %.1f s", el, secs);
        double left = secs - el;
        double tick = SLEEP_TICK_MS * 1e-3;
        double d = left < tick ? left : tick;
        struct timespec ts = {(time_t)d, (long)((d - floor(d)) * 1e9)};
        nanosleep(&ts, NULL);
    }
    gr_op_progress(ctx, secs, secs, "done");
    char m[64];
    snprintf(m, sizeof m, "{\"seconds\":%.17g}", secs);
    return gr_op_set_metrics(ctx, m);
}

const gr_op gr_op_sleep = {
    .name = "sleep",
    .version = 1,
    .summary = "test op: waits, reports progress, honours cancel",
    .params = sleep_params,
    .run = sleep_run,
};
