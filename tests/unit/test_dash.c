/* test_dash: the dashboard helpers of gr_dash — percentiles against numpy,
 * duration/size/rate formatting, DAG progress bars, MATCH escaping, Redis
 * URLs (good, bad and random), and the JSON and text forms of a snapshot. */
#include "gr_dash.h"
#include "gr_err.h"
#include "gr_json.h"
#include "gr_test.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* deterministic pseudo-random numbers for the property tests */
static uint64_t g_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void)
{
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return g_state;
}
static double next_unit(void)
{
    return (double)(next_u64() >> 11) / 9007199254740992.0;
}

/* ------------------------------------------------------------ percentiles */

static void test_percentile_by_hand(void)
{
    double v[] = {1, 2, 3, 4};
    /* position p/100 * (n-1), linear between the neighbours */
    CHECK_NEAR(gr_dash_percentile(v, 4, 50), 2.5, 1e-12);
    CHECK_NEAR(gr_dash_percentile(v, 4, 0), 1, 0);
    CHECK_NEAR(gr_dash_percentile(v, 4, 100), 4, 0);
    CHECK_NEAR(gr_dash_percentile(v, 4, 95), 1 + 0.95 * 3, 1e-12);
    double one[] = {7.5};
    CHECK_NEAR(gr_dash_percentile(one, 1, 99), 7.5, 0);
    CHECK(isnan(gr_dash_percentile(v, 0, 50)));
    CHECK(isnan(gr_dash_percentile(v, 4, -1)));
    CHECK(isnan(gr_dash_percentile(v, 4, 101)));
    CHECK(isnan(gr_dash_percentile(v, 4, NAN)));
    double h[100];
    for (int i = 0; i < 100; i++) h[i] = i + 1;
    CHECK_NEAR(gr_dash_percentile(h, 100, 95), 95.05, 1e-9);
    CHECK_NEAR(gr_dash_percentile(h, 100, 99), 99.01, 1e-9);

    double u[] = {5, 1, 4, 2, 3};
    gr_dash_lat l;
    gr_dash_latency(u, 5, &l);
    CHECK(l.n == 5 && u[0] == 1 && u[4] == 5); /* sorted in place */
    CHECK_NEAR(l.p50, 3, 0);
    CHECK_NEAR(l.p95, 4.8, 1e-12);
    CHECK_NEAR(l.max, 5, 0);
    gr_dash_latency(u, 0, &l);
    CHECK(l.n == 0 && isnan(l.p50) && isnan(l.p99) && isnan(l.max));
}

static int have_numpy(void)
{
    return system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

/* Random samples (sizes 1..3000, with ties and wide ranges) against
 * numpy.percentile's default linear method. */
static void test_percentile_vs_numpy(void)
{
    if (!have_numpy()) {
        printf("SKIP test_percentile_vs_numpy: /usr/bin/python3 has no numpy\n");
        return;
    }
    char path[] = "/tmp/graft-test-dash-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    FILE *f = fdopen(fd, "w");
    static const size_t sizes[] = {1, 2, 3, 7, 20, 101, 1000, 2999};
    static const double ps[] = {0, 1, 25, 50, 90, 95, 99, 99.9, 100, 33.3};
    const size_t nsizes = sizeof sizes / sizeof *sizes, nps = sizeof ps / sizeof *ps;
    double *mine = calloc(nsizes * nps, sizeof *mine);
    for (size_t k = 0; k < nsizes; k++) {
        size_t n = sizes[k];
        double *v = calloc(n, sizeof *v);
        for (size_t i = 0; i < n; i++) {
            double x = next_unit();
            v[i] = k % 2 ? floor(x * 10) : x * x * 1e4; /* ties, or a skewed spread */
            fprintf(f, "%s%.17g", i ? " " : "", v[i]);
        }
        fputc('\n', f);
        gr_dash_lat l;
        gr_dash_latency(v, n, &l);
        for (size_t j = 0; j < nps; j++) mine[k * nps + j] = gr_dash_percentile(v, n, ps[j]);
        CHECK(l.p50 == mine[k * nps + 3] && l.p95 == mine[k * nps + 5]);
        free(v);
    }
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import numpy as np, sys\n"
             "for line in open(sys.argv[1]):\n"
             "  v = np.array([float(x) for x in line.split()])\n"
             "  print(\" \".join(repr(float(np.percentile(v, p))) for p in "
             "[0, 1, 25, 50, 90, 95, 99, 99.9, 100, 33.3]))\n' %s",
             path);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    double worst = 0;
    size_t got = 0;
    for (size_t k = 0; p && k < nsizes; k++)
        for (size_t j = 0; j < nps; j++) {
            double ref;
            if (fscanf(p, "%lf", &ref) != 1) break;
            got++;
            double err = fabs(ref - mine[k * nps + j]) / (fabs(ref) > 1 ? fabs(ref) : 1);
            if (err > worst) worst = err;
        }
    if (p) CHECK(pclose(p) == 0);
    CHECK_EQ_INT(got, nsizes * nps);
    CHECK_MSG(worst < 1e-12, "largest relative error vs numpy %.3g", worst);
    printf("percentiles vs numpy: %zu values, largest relative error %.3g\n", got, worst);
    free(mine);
    unlink(path);
}

/* ------------------------------------------------------------ formatting */

static void test_format(void)
{
    char b[32];
    struct {
        double ms;
        const char *want;
    } d[] = {{0, "0.00ms"},       {0.424, "0.42ms"},  {12.34, "12.3ms"}, {99.94, "99.9ms"},
             {99.96, "100ms"},    {850, "850ms"},     {999.4, "999ms"},  {999.6, "1.00s"},
             {4210, "4.21s"},     {42000, "42.0s"},   {59949, "59.9s"},  {245000, "4m05s"},
             {3599000, "59m59s"}, {7380000, "2h03m"}, {-1500, "-1.50s"}, {NAN, "-"}};
    for (size_t i = 0; i < sizeof d / sizeof *d; i++)
        CHECK_MSG(!strcmp(gr_dash_fmt_ms(b, sizeof b, d[i].ms), d[i].want), "%g ms -> %s, not %s",
                  d[i].ms, b, d[i].want);
    struct {
        double v;
        const char *want;
    } s[] = {{0, "0B"},
             {512, "512B"},
             {1023, "1023B"},
             {1024, "1.0KiB"},
             {1536, "1.5KiB"},
             {12.0 * 1048576, "12.0MiB"},
             {1048575, "1.0MiB"},
             {3.25 * 1073741824.0, "3.2GiB"},
             {-1, "-"}};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++)
        CHECK_MSG(!strcmp(gr_dash_fmt_bytes(b, sizeof b, s[i].v), s[i].want), "%g B -> %s, not %s",
                  s[i].v, b, s[i].want);
    CHECK(!strcmp(gr_dash_fmt_rate(b, sizeof b, 12.34), "12.3/s"));
    CHECK(!strcmp(gr_dash_fmt_rate(b, sizeof b, 0), "0.0/s"));
    CHECK(!strcmp(gr_dash_fmt_rate(b, sizeof b, 12345.6), "12346/s"));
    CHECK(!strcmp(gr_dash_fmt_rate(b, sizeof b, NAN), "-"));
    /* a tiny buffer is never overrun */
    char tiny[4];
    gr_dash_fmt_ms(tiny, sizeof tiny, 123456789);
    CHECK(strlen(tiny) == 3);
}

static void test_bar(void)
{
    char b[128];
    int64_t n[GR_DASH_NSTATES] = {0};
    CHECK(!strcmp(gr_dash_bar(b, sizeof b, 10, n), "[..........]")); /* empty job */
    n[GR_DASH_DONE] = 3;
    n[GR_DASH_CACHED] = 2;
    n[GR_DASH_FAILED] = 1;
    n[GR_DASH_RUNNING] = 2;
    n[GR_DASH_BLOCKED] = 2;
    /* boundaries floor(5*10/10)=5, floor(6)=6, floor(8)=8, then 10 */
    CHECK(!strcmp(gr_dash_bar(b, sizeof b, 10, n), "[#####x>>..]"));
    memset(n, 0, sizeof n);
    n[GR_DASH_DONE] = 999;
    n[GR_DASH_READY] = 1;
    CHECK(!strcmp(gr_dash_bar(b, sizeof b, 10, n), "[#########.]")); /* never full early */
    n[GR_DASH_READY] = 0;
    CHECK(!strcmp(gr_dash_bar(b, sizeof b, 10, n), "[##########]"));
    CHECK(!strcmp(gr_dash_bar(b, 5, 10, n), "")); /* does not fit: empty, no overrun */
    /* properties over random counts */
    for (int it = 0; it < 2000; it++) {
        int w = 1 + (int)(next_u64() % 60);
        int64_t total = 0;
        for (int k = 0; k < GR_DASH_NSTATES; k++) {
            n[k] = next_u64() % 4 == 0 ? (int64_t)(next_u64() % 1000) : 0;
            total += n[k];
        }
        gr_dash_bar(b, sizeof b, w, n);
        size_t hashes = 0;
        for (int i = 1; i <= w; i++) hashes += b[i] == '#';
        int64_t done = n[GR_DASH_DONE] + n[GR_DASH_CACHED];
        int ok = (int)strlen(b) == w + 2 && b[0] == '[' && b[w + 1] == ']' &&
                 (int64_t)hashes == (total ? done * w / total : 0) &&
                 ((hashes == (size_t)w) == (total > 0 && done == total));
        CHECK_MSG(ok, "width %d: %s", w, b);
        if (!ok) break;
    }
}

static void test_glob_escape(void)
{
    gr_buf b = {0};
    const char *p = "a*b?c[d]e\\f:";
    gr_dash_glob_escape(&b, p, strlen(p));
    CHECK(!strcmp(b.data, "a\\*b\\?c\\[d\\]e\\\\f:"));
    gr_buf_reset(&b);
    gr_dash_glob_escape(&b, "graft:", 6);
    CHECK(!strcmp(b.data, "graft:"));
    gr_buf_free(&b);
}

/* ------------------------------------------------------------ URLs */

static void test_urls(void)
{
    gr_dash_url u;
    CHECK(gr_dash_parse_url("redis://127.0.0.1:6390", &u) == 0);
    CHECK(!strcmp(u.host, "127.0.0.1") && u.port == 6390 && u.db == 0 && !u.password[0]);
    CHECK(gr_dash_parse_url("localhost", &u) == 0 && !strcmp(u.host, "localhost") &&
          u.port == 6379);
    CHECK(gr_dash_parse_url("redis://:pw@h:1/3", &u) == 0);
    CHECK(!strcmp(u.password, "pw") && !u.user[0] && !strcmp(u.host, "h") && u.port == 1 &&
          u.db == 3);
    CHECK(gr_dash_parse_url("redis://alice:p@ss@h/", &u) == 0);
    CHECK(!strcmp(u.user, "alice") && !strcmp(u.password, "p@ss") && !strcmp(u.host, "h") &&
          u.db == 0);
    CHECK(gr_dash_parse_url("redis://[::1]:7000/2", &u) == 0);
    CHECK(!strcmp(u.host, "::1") && u.port == 7000 && u.db == 2);
    CHECK(gr_dash_parse_url("unix:///run/redis.sock", &u) == 0 &&
          !strcmp(u.path, "/run/redis.sock") && !u.host[0]);

    struct {
        const char *url, *rule;
    } bad[] = {{"", "empty"},
               {"redis://", "no host"},
               {"redis://:6379", "no host"},
               {"redis://h:0", "port"},
               {"redis://h:65536", "port"},
               {"redis://h:12x", "port"},
               {"redis://h:", "port"},
               {"redis://h/x", "database"},
               {"redis://h/1000001", "database"},
               {"redis://h/-1", "database"},
               {"http://h", "scheme"},
               {"unix://", "socket path"},
               {"redis://h o", "spaces"},
               {"redis://[::1", "'['"},
               {"redis://[::1]x", "junk"},
               {"redis://:topsecret@h:0", "port"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = gr_dash_parse_url(bad[i].url, &u);
        CHECK_MSG(rc == GR_EINVAL, "'%s' accepted", bad[i].url);
        CHECK_CONTAINS(gr_errmsg(), bad[i].rule);
        CHECK_MSG(!strstr(gr_errmsg(), "topsecret"), "password shown: %s", gr_errmsg());
    }
    char long_host[400];
    memset(long_host, 'h', sizeof long_host - 1);
    long_host[sizeof long_host - 1] = 0;
    CHECK(gr_dash_parse_url(long_host, &u) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "too long");

    char shown[128];
    gr_dash_url_display("redis://:pw@h:1/3", shown, sizeof shown);
    CHECK(!strcmp(shown, "redis://:***@h:1/3"));
    gr_dash_url_display("redis://alice:pw@h", shown, sizeof shown);
    CHECK(!strcmp(shown, "redis://alice:***@h"));
    gr_dash_url_display("pw@h", shown, sizeof shown);
    CHECK(!strcmp(shown, "***@h"));
    gr_dash_url_display("redis://h:1", shown, sizeof shown);
    CHECK(!strcmp(shown, "redis://h:1"));

    /* random strings from URL-ish characters: either parsed or one message
     * naming the rule; what parses has a host or a path and a valid port */
    static const char alphabet[] = "redis:/unx@[]0123456789hH.-_ \t\x01\xff?*";
    for (int it = 0; it < 20000; it++) {
        char s[48];
        size_t n = next_u64() % (sizeof s - 1);
        if (it % 3 == 0 && n > 8) memcpy(s, "redis://", 8);
        for (size_t i = (it % 3 == 0 && n > 8) ? 8 : 0; i < n; i++)
            s[i] = alphabet[next_u64() % (sizeof alphabet - 1)];
        s[n] = 0;
        gr_clearerr();
        int rc = gr_dash_parse_url(s, &u);
        int ok = rc == 0 ? ((u.host[0] || u.path[0]) && u.port >= 1 && u.port <= 65535 &&
                            u.db >= 0 && u.db <= 1000000)
                         : (rc == GR_EINVAL && strstr(gr_errmsg(), "redis URL") != NULL);
        CHECK_MSG(ok, "'%s' -> %d %s", s, rc, gr_errmsg());
        if (!ok) break;
    }
}

/* ------------------------------------------------------------ snapshots */

static char *sdup(const char *s)
{
    return strdup(s);
}

/* A snapshot as gr_dash_sample would build it (owned strings). */
static gr_dash_snap *make_snap(size_t nworkers, size_t njobs, size_t nqueues)
{
    gr_dash_snap *s = calloc(1, sizeof *s);
    s->redis = sdup("redis://:***@db:6379");
    s->prefix = sdup("graft:");
    s->time_ms = 1700000000123;
    s->window_s = 2.0;
    s->queues = calloc(nqueues + 1, sizeof *s->queues);
    for (size_t i = 0; i < nqueues; i++) {
        char op[32];
        snprintf(op, sizeof op, "op%02zu", i);
        s->queues[i].op = sdup(op);
        s->queues[i].ready = (int64_t)i * 3;
        s->queues[i].served = i % 2 == 0;
        s->ready_total += s->queues[i].ready;
    }
    s->nqueues = nqueues;
    s->in_flight = 2;
    s->delayed = 1;
    s->dead = 4;
    s->jobs_total = 9;
    s->jobs_active = 1;
    s->workers_total = (int64_t)nworkers;
    const char *names[] = {"done", "failed", "retried", "timeouts"};
    const int64_t vals[] = {120, 4, 7, 1};
    s->counters = calloc(4, sizeof *s->counters);
    for (int i = 0; i < 4; i++) {
        s->counters[i].name = sdup(names[i]);
        s->counters[i].value = vals[i];
        s->counters[i].rate = i == 0 ? 12.5 : NAN;
    }
    s->ncounters = 4;
    double w[] = {1, 2, 3, 4, 100};
    gr_dash_latency(w, 5, &s->wait);
    gr_dash_latency(w, 0, &s->run);
    s->sample_jobs = 3;
    s->sample_stages = 17;
    s->workers = calloc(nworkers + 1, sizeof *s->workers);
    for (size_t i = 0; i < nworkers; i++) {
        gr_dash_worker *x = &s->workers[i];
        char id[64];
        snprintf(id, sizeof id, "worker-with-a-rather-long-name-%zu", i);
        x->id = sdup(id);
        x->host = sdup("host\x01\xc3\xa9");
        x->state = sdup(i == 0 ? "busy" : "idle");
        x->version = sdup("0.1.0");
        x->task = sdup(i == 0 ? "j1:train/lr=0.1" : "");
        x->op = sdup(i == 0 ? "sleep" : "");
        x->ops = sdup("sleep,noop");
        x->p_msg = sdup(i == 0 ? "step \"3\"" : "");
        x->pid = 4242;
        x->attempt = i == 0 ? 2 : 0;
        x->rss = 15 << 20;
        x->threads = 1;
        x->heartbeat_age_ms = 150;
        x->p_done = 3;
        x->p_total = i == 0 ? 10 : 0;
        x->task_ms = i == 0 ? 1234 : NAN;
        s->workers_busy += i == 0;
    }
    s->nworkers = nworkers;
    s->jobs = calloc(njobs + 1, sizeof *s->jobs);
    for (size_t i = 0; i < njobs; i++) {
        gr_dash_job *j = &s->jobs[i];
        char id[32];
        snprintf(id, sizeof id, "j%zu", i);
        j->id = sdup(id);
        j->name = sdup("pipe");
        j->state = sdup(i == 0 ? "running" : "done");
        j->n[GR_DASH_DONE] = 6;
        j->n[GR_DASH_CACHED] = 1;
        j->n[GR_DASH_RUNNING] = i == 0 ? 2 : 0;
        j->n[GR_DASH_SKIPPED] = i == 0 ? 1 : 3;
        j->nstages = 10;
        j->created = 1700000000000 - (int64_t)i;
        j->finished = i == 0 ? 0 : 1700000000100;
        j->active = i == 0;
    }
    s->njobs = njobs;
    return s;
}

static void test_json(void)
{
    gr_dash_snap *s = make_snap(2, 2, 3);
    gr_buf b = {0};
    CHECK(gr_dash_json(s, &b) == 0);
    gr_json *j = gr_json_parse(b.data, b.len, "snapshot");
    CHECK_MSG(j != NULL, "%s", gr_errmsg());
    if (!j) {
        fprintf(stderr, "%s\n", b.data);
        goto out;
    }
    CHECK(!strcmp(gr_json_get_str(j, "prefix", ""), "graft:"));
    CHECK(!strcmp(gr_json_get_str(j, "redis", ""), "redis://:***@db:6379"));
    CHECK_EQ_INT(gr_json_get_int(j, "time_ms", 0), 1700000000123);
    CHECK_NEAR(gr_json_get_num(j, "window_s", 0), 2.0, 0);
    CHECK_EQ_INT(gr_json_get_int(j, "ready", -1), 0 + 3 + 6);
    CHECK_EQ_INT(gr_json_get_int(j, "in_flight", -1), 2);
    CHECK_EQ_INT(gr_json_get_int(j, "dead", -1), 4);
    const gr_json *q = gr_json_get(j, "queues");
    CHECK(q && q->type == GR_JSON_ARR && q->len == 3);
    if (q && q->len == 3) {
        CHECK(!strcmp(gr_json_get_str(q->items[1], "op", ""), "op01"));
        CHECK_EQ_INT(gr_json_get_int(q->items[2], "ready", -1), 6);
        CHECK(gr_json_get_bool(q->items[0], "served", 0) == 1);
        CHECK(gr_json_get_bool(q->items[1], "served", 1) == 0);
    }
    CHECK_EQ_INT(gr_json_get_int(gr_json_get(j, "counters"), "done", -1), 120);
    CHECK_NEAR(gr_json_get_num(gr_json_get(j, "rates"), "done", -1), 12.5, 0);
    const gr_json *r = gr_json_get(gr_json_get(j, "rates"), "failed");
    CHECK(r && r->type == GR_JSON_NULL); /* NaN is null */
    CHECK_NEAR(gr_json_get_num(j, "throughput", -1), 12.5, 0);
    const gr_json *f = gr_json_get(j, "failures");
    CHECK_EQ_INT(gr_json_get_int(f, "failed", -1), 4);
    CHECK_EQ_INT(gr_json_get_int(f, "retried", -1), 7);
    CHECK_EQ_INT(gr_json_get_int(f, "timeouts", -1), 1);
    CHECK_EQ_INT(gr_json_get_int(f, "requeued", -1), 0); /* absent counter: 0 */
    CHECK_EQ_INT(gr_json_get_int(f, "delayed", -1), 1);
    const gr_json *lat = gr_json_get(j, "latency");
    CHECK_EQ_INT(gr_json_get_int(lat, "stages", -1), 17);
    CHECK_NEAR(gr_json_get_num(gr_json_get(lat, "wait_ms"), "p50", -1), 3, 0);
    CHECK_NEAR(gr_json_get_num(gr_json_get(lat, "wait_ms"), "p95", -1), 4 + 0.8 * 96, 1e-9);
    CHECK_NEAR(gr_json_get_num(gr_json_get(lat, "wait_ms"), "max", -1), 100, 0);
    const gr_json *rp50 = gr_json_get(gr_json_get(lat, "run_ms"), "p50");
    CHECK(rp50 && rp50->type == GR_JSON_NULL);
    const gr_json *w = gr_json_get(j, "workers");
    CHECK(w && w->len == 2);
    if (w && w->len == 2) {
        CHECK(!strcmp(gr_json_get_str(w->items[0], "task", ""), "j1:train/lr=0.1"));
        CHECK(gr_json_get(w->items[1], "task")->type == GR_JSON_NULL);
        CHECK(!strcmp(gr_json_get_str(w->items[0], "host", ""), "host\x01\xc3\xa9"));
        const gr_json *pg = gr_json_get(w->items[0], "progress");
        CHECK(!strcmp(gr_json_get_str(pg, "message", ""), "step \"3\""));
        CHECK_NEAR(gr_json_get_num(pg, "total", 0), 10, 0);
        const gr_json *ops = gr_json_get(w->items[0], "ops");
        CHECK(ops && ops->len == 2 && !strcmp(ops->items[1]->str, "noop"));
        CHECK_EQ_INT(gr_json_get_int(w->items[0], "heartbeat_age_ms", -1), 150);
    }
    const gr_json *jobs = gr_json_get(j, "jobs");
    CHECK(jobs && jobs->len == 2);
    if (jobs && jobs->len == 2) {
        const gr_json *c = gr_json_get(jobs->items[0], "counts");
        CHECK_EQ_INT(gr_json_get_int(c, "running", -1), 2);
        CHECK_EQ_INT(gr_json_get_int(c, "cached", -1), 1);
        CHECK_EQ_INT(gr_json_get_int(jobs->items[0], "finished_stages", -1), 8);
        CHECK(gr_json_get(jobs->items[0], "finished")->type == GR_JSON_NULL);
        CHECK_EQ_INT(gr_json_get_int(jobs->items[1], "finished", 0), 1700000000100);
        CHECK(gr_json_get_bool(jobs->items[0], "active", 0) == 1);
    }
    gr_json_free(j);
out:
    gr_buf_free(&b);
    gr_dash_snap_free(&s);
    CHECK(s == NULL);
}

/* Every line at most width bytes, printable ASCII; returns the line count. */
static int check_lines(const char *t, int width)
{
    int lines = 0, ok = 1;
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if ((int)n > width) ok = 0;
        for (size_t i = 0; i < n; i++)
            if (p[i] < ' ' || p[i] > '~') ok = 0;
        lines++;
        p += n + (nl ? 1 : 0);
    }
    CHECK_MSG(ok, "a line is wider than %d or not printable ASCII:\n%s", width, t);
    return lines;
}

static void test_text(void)
{
    gr_dash_snap *s = make_snap(3, 4, 2);
    gr_buf b = {0};
    CHECK(gr_dash_text(s, &b, 130, 0) == 0);
    int lines = check_lines(b.data, 130);
    CHECK_CONTAINS(b.data, "ready 3   in flight 2");
    CHECK_CONTAINS(b.data, "12.5/s done");
    CHECK_CONTAINS(b.data, "wait  p50 3.0ms");
    CHECK_CONTAINS(b.data, "4 failed (4 dead)");
    CHECK_CONTAINS(b.data, "op01                            3   (no worker serves it)");
    CHECK_CONTAINS(b.data, " host???  ");            /* control and UTF-8 bytes shown as '?' */
    CHECK_CONTAINS(b.data, "worker-with-a-rathe~ "); /* cut to the column, marked '~' */
    CHECK_CONTAINS(b.data, "j1:train/lr=0.1 sleep 1.23s 3/10 step \"3\"");
    CHECK_CONTAINS(b.data, "8/10");
    CHECK_CONTAINS(b.data, "running 2 done 6 cached 1 skipped 1");
    CHECK(strstr(b.data, "more") == NULL);
    /* unlimited height: 6 summary lines, 3 tables with headings and blank lines */
    CHECK_EQ_INT(lines, 6 + (1 + 1 + 2) + (1 + 1 + 3) + (1 + 1 + 4));

    /* a short screen: tables cut, saying how many rows were left out */
    gr_dash_snap_free(&s);
    s = make_snap(30, 40, 20);
    gr_buf_reset(&b);
    CHECK(gr_dash_text(s, &b, 60, 24) == 0);
    lines = check_lines(b.data, 60);
    CHECK_MSG(lines <= 24, "%d lines", lines);
    CHECK_CONTAINS(b.data, "more ops");
    CHECK_CONTAINS(b.data, "more workers");
    CHECK_CONTAINS(b.data, "more jobs");
    /* narrow widths are raised to 40, never overrun */
    gr_buf_reset(&b);
    CHECK(gr_dash_text(s, &b, 5, 0) == 0);
    check_lines(b.data, 40);
    gr_buf_free(&b);
    gr_dash_snap_free(&s);

    /* an empty installation */
    gr_dash_snap *e = calloc(1, sizeof *e);
    e->redis = sdup("redis://h:1");
    e->prefix = sdup("nope:");
    e->wait.p50 = e->wait.p95 = e->wait.p99 = e->wait.max = NAN;
    e->run = e->wait;
    gr_buf_reset(&b);
    CHECK(gr_dash_text(e, &b, 80, 0) == 0);
    CHECK_CONTAINS(b.data, "(no worker registered)");
    CHECK_CONTAINS(b.data, "(no job)");
    CHECK_CONTAINS(b.data, "throughput -");
    gr_buf_reset(&b);
    CHECK(gr_dash_json(e, &b) == 0);
    gr_json *j = gr_json_parse(b.data, b.len, "empty");
    CHECK(j && gr_json_get(j, "window_s")->type == GR_JSON_NULL &&
          gr_json_get(j, "jobs")->len == 0);
    gr_json_free(j);
    gr_buf_free(&b);
    gr_dash_snap_free(&e);
}

static void test_unreachable(void)
{
    /* a port nothing listens on (bound then closed would race; port 1 is
     * privileged and unused here) and a bad URL */
    gr_dash *d = gr_dash_new("redis://127.0.0.1:1", "graft:", 500, 10);
    CHECK(d == NULL && gr_errcode() == GR_ENET);
    CHECK_CONTAINS(gr_errmsg(), "redis redis://127.0.0.1:1 is not reachable");
    d = gr_dash_new("redis://:hush@127.0.0.1:70000", "graft:", 500, 10);
    CHECK(d == NULL && gr_errcode() == GR_EINVAL);
    CHECK(!strstr(gr_errmsg(), "hush"));
    gr_dash_destroy(&d);
}

int main(void)
{
    RUN(test_percentile_by_hand);
    RUN(test_percentile_vs_numpy);
    RUN(test_format);
    RUN(test_bar);
    RUN(test_glob_escape);
    RUN(test_urls);
    RUN(test_json);
    RUN(test_text);
    RUN(test_unreachable);
    TEST_MAIN_END();
}
