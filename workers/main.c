/* graft-worker: serves ops to a graft-broker (see workers/gr_worker.h). */
#include "gr_err.h"
#include "gr_log.h"
#include "gr_worker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: graft-worker --broker tcp://HOST:5555 [--ops a,b,c] [--store DIR]\n"
    "                    [--threads N] [--heartbeat-ms MS] [--liveness N] [--id NAME]\n"
    "  --broker    broker endpoint (default $GRAFT_BROKER or tcp://127.0.0.1:5555)\n"
    "  --ops       ops to serve, comma-separated (default: every op of this build)\n"
    "  --store     artifact store root (default $GRAFT_STORE or ~/.local/share/graft/store)\n"
    "  --threads   thread budget for ops and OpenBLAS (default: the CPUs it may use)\n"
    "  --heartbeat-ms, --liveness   heartbeat interval and missed beats before reconnecting\n"
    "SIGTERM/SIGINT: finish the running task, report it, exit; a second one hands the\n"
    "task back (reported as a retryable failure) and exits.\n";

static gr_worker *g_worker;
static volatile sig_atomic_t g_signals;

static void on_signal(int sig)
{
    (void)sig;
    g_signals++;
    gr_worker_stop(g_worker, g_signals > 1 ? GR_WORKER_HANDBACK : GR_WORKER_FINISH);
}

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || v < lo || v > hi) {
        fprintf(stderr, "graft-worker: %s needs an integer from %ld to %ld\n", flag, lo, hi);
        return 2;
    }
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    gr_worker_opts o = {0};
    const char *ops = NULL;
    o.broker = getenv("GRAFT_BROKER");
    if (!o.broker || !*o.broker) o.broker = "tcp://127.0.0.1:5555";
    for (int i = 1; i < argc; i += 2) { /* every option but --version/--help takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--version")) {
            printf("graft-worker %s\n", GRAFT_VERSION);
            return 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!v) {
            fprintf(stderr, "graft-worker: %s: unknown option or missing value\n%s", a, usage_text);
            return 2;
        } else if (!strcmp(a, "--broker"))
            o.broker = v;
        else if (!strcmp(a, "--ops"))
            ops = v;
        else if (!strcmp(a, "--store"))
            o.store = v;
        else if (!strcmp(a, "--id"))
            o.id = v;
        else if (!strcmp(a, "--threads"))
            rc = parse_int(a, v, 0, 4096, &o.threads);
        else if (!strcmp(a, "--heartbeat-ms"))
            rc = parse_int(a, v, 10, 600000, &o.heartbeat_ms);
        else if (!strcmp(a, "--liveness"))
            rc = parse_int(a, v, 1, 100, &o.liveness);
        else {
            fprintf(stderr, "graft-worker: unknown option '%s'\n%s", a, usage_text);
            return 2;
        }
        if (rc) return rc;
    }
    /* --ops a,b,c */
    char *opsbuf = ops ? strdup(ops) : NULL;
    const char *list[256];
    size_t n = 0;
    if (ops && !opsbuf) {
        fprintf(stderr, "graft-worker: out of memory\n");
        return 1;
    }
    for (char *save = NULL, *t = opsbuf ? strtok_r(opsbuf, ",", &save) : NULL; t;
         t = strtok_r(NULL, ",", &save)) {
        if (n == sizeof list / sizeof list[0]) {
            fprintf(stderr, "graft-worker: --ops: too many ops\n");
            free(opsbuf);
            return 2;
        }
        list[n++] = t;
    }
    if (ops && !n) {
        fprintf(stderr, "graft-worker: --ops: empty list\n");
        free(opsbuf);
        return 2;
    }
    o.ops = list;
    o.nops = n;
    g_worker = gr_worker_new(&o);
    if (!g_worker) {
        fprintf(stderr, "graft-worker: %s\n", gr_errmsg());
        free(opsbuf);
        return gr_exit_status(gr_errcode());
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* past a file-size limit (ulimit -f) a write fails with EFBIG and the
     * op's writers clean up, instead of SIGXFSZ killing the worker mid-write */
    signal(SIGXFSZ, SIG_IGN);
    int rc = gr_worker_run(g_worker);
    if (rc) fprintf(stderr, "graft-worker: %s\n", gr_errmsg());
    gr_worker *w = g_worker;
    g_worker = NULL;
    gr_worker_destroy(&w);
    free(opsbuf);
    return rc ? 1 : 0;
}
