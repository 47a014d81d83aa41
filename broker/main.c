/* graft-broker: entry point — options, signals, the event loop. */
#include "gr_broker.h"
#include "gr_err.h"
#include "gr_log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: graft-broker --bind tcp://*:5555 --redis URL [--prefix graft:]\n"
        "                    [--heartbeat-ms 1000] [--liveness 3] [--retention-s 604800]\n"
        "                    [--backoff-ms 1000] [--events-max 10000] [--store DIR]\n"
        "  --redis URL   redis://[:password@]host[:port][/db] or unix:///path (also GRAFT_REDIS)\n"
        "  --store DIR   check memoised outputs against this content-addressed store\n");
}

/* Parses a positive integer option value; exits with status 2 on a bad one. */
static long long num_arg(const char *opt, const char *v, long long min, long long max)
{
    char *end;
    long long n = v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || *end || n < min || n > max) {
        fprintf(stderr, "graft-broker: %s: expected an integer in [%lld, %lld], got '%s'\n", opt,
                min, max, v ? v : "");
        exit(2);
    }
    return n;
}

int main(int argc, char **argv)
{
    gr_broker_opts o = {0};
    o.redis_url = getenv("GRAFT_REDIS");
    o.store = NULL;
    for (int i = 1; i < argc; i += 2) { /* every option takes one value */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--version")) {
            printf("graft-broker %s\n", GRAFT_VERSION);
            return 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "graft-broker: %s: %s\n", a,
                    a[0] == '-' ? "missing value" : "unexpected argument");
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--bind"))
            o.bind = v;
        else if (!strcmp(a, "--redis"))
            o.redis_url = v;
        else if (!strcmp(a, "--prefix"))
            o.prefix = v;
        else if (!strcmp(a, "--store"))
            o.store = v;
        else if (!strcmp(a, "--heartbeat-ms"))
            o.heartbeat_ms = (int)num_arg(a, v, 10, 3600000);
        else if (!strcmp(a, "--liveness"))
            o.liveness = (int)num_arg(a, v, 1, 1000);
        else if (!strcmp(a, "--retention-s"))
            o.retention_s = num_arg(a, v, 1, 100LL * 365 * 86400);
        else if (!strcmp(a, "--backoff-ms"))
            o.backoff_ms = (int)num_arg(a, v, 1, 3600000);
        else if (!strcmp(a, "--events-max"))
            o.events_max = (int)num_arg(a, v, 10, 100000000);
        else {
            fprintf(stderr, "graft-broker: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!o.bind || !o.redis_url) {
        fprintf(stderr, "graft-broker: %s is required\n", !o.bind ? "--bind" : "--redis");
        usage(stderr);
        return 2;
    }
    if (o.prefix && (!*o.prefix || strlen(o.prefix) > 128)) {
        fprintf(stderr, "graft-broker: --prefix: must be 1 to 128 bytes\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    gr_broker *b = gr_broker_new(&o);
    if (!b) {
        fprintf(stderr, "graft-broker: %s\n", gr_errmsg());
        return gr_exit_status(gr_errcode());
    }
    int rc = gr_broker_run(b, &stop_flag);
    if (rc) fprintf(stderr, "graft-broker: %s\n", gr_errmsg());
    gr_broker_destroy(&b);
    return rc ? 1 : 0;
}
