/* cmd_jobs: graft submit, status, watch, cancel, workers — the job commands
 * that talk to a running broker (DESIGN.md section 6). */
#include "gr_log.h"
#include "cli.h"
#include "gr_err.h"
#include "gr_jsonb.h"
#include "gr_pipeline.h"
#include "gr_wire.h"
#include "jobs.h"

#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WATCH_POLL_MS    500  /* wait for events in slices of this */
#define WATCH_SILENCE_MS 3000 /* then ask STATUS (and re-WATCH: a restarted broker forgot us) */
#define PLAIN_PROGRESS_S 1.0  /* plain output: one progress line per stage per second */
#define MAX_SETS         256

const char *jobs_opt(int argc, char **argv, int *i, const char *name, int *missing)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n)) return NULL;
    if (a[n] == '=') return a + n + 1;
    if (a[n]) return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

/* ------------------------------------------------------------- submit */

int jobs_submit(gr_client *c, const char *path, const char *const *sets, size_t nsets, int no_cache,
                char jid[128])
{
    /* check locally first: the same parser the broker runs, so errors name
     * stage and line even when no broker is up */
    gr_pipeline *pl = gr_pipeline_load(path, sets, nsets);
    if (!pl) return cli_fail(gr_errcode());
    gr_pipeline_free(&pl);
    char *text = NULL;
    FILE *f = fopen(path, "rb");
    gr_buf b = {0};
    if (f) {
        char chunk[65536];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) gr_buf_append(&b, chunk, n);
        fclose(f);
    }
    if (!f || b.oom) {
        gr_buf_free(&b);
        return cli_fail(gr_seterr(GR_EIO, "%s: cannot read", path));
    }
    text = b.data ? gr_buf_take(&b) : strdup("");
    /* the broker resolves relative file:// URIs against the file's directory */
    char abs[PATH_MAX];
    const char *fname = realpath(path, abs) ? abs : path;
    gr_json *body = gr_jsonb_obj(), *arr = gr_jsonb_arr();
    int rc = GR_ENOMEM;
    for (size_t i = 0; arr && i < nsets; i++)
        if (gr_jsonb_push(arr, gr_jsonb_str(sets[i]))) arr = NULL;
    if (!body || !arr || gr_jsonb_set(body, "pipeline", gr_jsonb_str(text)) ||
        gr_jsonb_set(body, "filename", gr_jsonb_str(fname)) || gr_jsonb_set(body, "sets", arr) ||
        gr_jsonb_set(body, "no_cache", gr_jsonb_bool(no_cache))) {
        arr = NULL;
        goto out;
    }
    arr = NULL;
    gr_json *res = NULL;
    rc = gr_client_call(c, GR_CMD_SUBMIT, body, 0, &res);
    if (!rc) {
        const char *j = gr_json_get_str(res, "job", NULL);
        if (!j || strlen(j) >= 128)
            rc = gr_seterr(GR_EFORMAT, "the broker's SUBMIT reply has no job id");
        else
            snprintf(jid, 128, "%s", j);
    }
    gr_json_free(res);
out:
    gr_json_free(arr);
    gr_json_free(body);
    free(text);
    return rc ? cli_fail(rc) : 0;
}

/* ------------------------------------------------------------- status */

static const char *short_id(const char *id, char buf[32])
{
    if (!id) return "-";
    if (!strncmp(id, "sha256:", 7) && strlen(id) > 19) {
        snprintf(buf, 32, "sha256:%.12s", id + 7);
        return buf;
    }
    return id;
}

static void print_metrics(FILE *out, const gr_json *m)
{
    if (!m || m->type != GR_JSON_OBJ || !m->len) return;
    gr_buf b = {0};
    gr_jsonb_write(&b, m);
    if (b.len > 60) {
        b.len = 57;
        b.data[57] = 0;
        gr_buf_puts(&b, "...");
    }
    fprintf(out, "  %s", b.data ? b.data : "");
    gr_buf_free(&b);
}

void jobs_print_status(FILE *out, const gr_json *st, int json)
{
    if (json) {
        gr_buf b = {0};
        gr_wire_json_write(&b, st, 0);
        fprintf(out, "%s\n", b.data ? b.data : "null");
        gr_buf_free(&b);
        return;
    }
    const gr_json *stages = gr_json_get(st, "stages");
    size_t w = 5;
    for (size_t i = 0; stages && i < stages->len; i++) {
        size_t l = strlen(gr_json_get_str(stages->items[i], "id", ""));
        if (l > w) w = l;
    }
    if (w > 48) w = 48;
    fprintf(out, "job %s  %s  %s\n", gr_json_get_str(st, "job", "?"),
            gr_json_get_str(st, "name", ""), gr_json_get_str(st, "state", "?"));
    fprintf(out, "%-*s  %-10s %-9s %4s  %-19s %s\n", (int)w, "STAGE", "OP", "STATE", "TRY",
            "OUTPUT", "METRICS");
    for (size_t i = 0; stages && i < stages->len; i++) {
        const gr_json *s = stages->items[i];
        char sb[32];
        const char *state = gr_json_get_str(s, "state", "?");
        fprintf(out, "%-*s  %-10s %-9s %4lld  %-19s", (int)w, gr_json_get_str(s, "id", "?"),
                gr_json_get_str(s, "op", "?"), state, (long long)gr_json_get_int(s, "attempts", 0),
                short_id(gr_json_get_str(gr_json_get(s, "outputs"), "out", NULL), sb));
        const gr_json *p = gr_json_get(s, "progress");
        if (!strcmp(state, "running") && p && gr_json_get_num(p, "total", 0) > 0)
            fprintf(out, " %3.0f%% %s",
                    100.0 * gr_json_get_num(p, "done", 0) / gr_json_get_num(p, "total", 1),
                    gr_json_get_str(p, "message", ""));
        else
            print_metrics(out, gr_json_get(s, "metrics"));
        fputc('\n', out);
        const char *err = gr_json_get_str(s, "error", NULL);
        if (err &&
            (!strcmp(state, "failed") || !strcmp(state, "running") || !strcmp(state, "ready")))
            fprintf(out, "%*s  error: %s\n", (int)w, "", err);
    }
}

int jobs_status(gr_client *c, const char *job, int json, FILE *out)
{
    gr_json *body = gr_jsonb_obj(), *res = NULL;
    if (!body || gr_jsonb_set(body, "job", gr_jsonb_str(job))) {
        gr_json_free(body);
        return cli_fail(GR_ENOMEM);
    }
    int rc = gr_client_call(c, GR_CMD_STATUS, body, 0, &res);
    gr_json_free(body);
    if (rc) return cli_fail(rc);
    jobs_print_status(out, res, json);
    gr_json_free(res);
    return 0;
}

static void print_jobs(FILE *out, const gr_json *res, int json)
{
    if (json) {
        jobs_print_status(out, res, 1);
        return;
    }
    const gr_json *jobs = gr_json_get(res, "jobs");
    fprintf(out, "%-18s %-10s %7s  %s\n", "JOB", "STATE", "STAGES", "NAME");
    for (size_t i = 0; jobs && i < jobs->len; i++) {
        const gr_json *j = jobs->items[i];
        fprintf(out, "%-18s %-10s %7lld  %s\n", gr_json_get_str(j, "job", "?"),
                gr_json_get_str(j, "state", "?"), (long long)gr_json_get_int(j, "stages", 0),
                gr_json_get_str(j, "name", ""));
    }
}

/* -------------------------------------------------------------- watch */

typedef struct {
    char *id;
    char state[16];
    double done, total;
    char msg[96];
    double last_line; /* plain mode: last progress line */
} wstage;

typedef struct {
    FILE *out;
    int tty;
    double t0;
    wstage *s;
    size_t n;
    int drawn; /* tty: lines drawn last time */
    double last_draw;
    char job[128];
    char state[16];
    int announced; /* the final job state was printed from its event */
} watcher;

static int finished(const char *state)
{
    return !strcmp(state, "done") || !strcmp(state, "failed") || !strcmp(state, "cancelled");
}

static wstage *find_stage(watcher *W, const char *id)
{
    for (size_t i = 0; i < W->n; i++)
        if (!strcmp(W->s[i].id, id)) return &W->s[i];
    return NULL;
}

static void load_status(watcher *W, const gr_json *st)
{
    snprintf(W->state, sizeof W->state, "%s", gr_json_get_str(st, "state", "?"));
    const gr_json *stages = gr_json_get(st, "stages");
    for (size_t i = 0; stages && i < stages->len; i++) {
        const gr_json *s = stages->items[i];
        const char *id = gr_json_get_str(s, "id", "?");
        wstage *ws = find_stage(W, id);
        if (!ws) {
            wstage *n = realloc(W->s, (W->n + 1) * sizeof *n);
            if (!n) return;
            W->s = n;
            ws = &W->s[W->n++];
            memset(ws, 0, sizeof *ws);
            ws->id = strdup(id);
            ws->last_line = -1e9;
            if (!ws->id) {
                W->n--;
                return;
            }
        }
        snprintf(ws->state, sizeof ws->state, "%s", gr_json_get_str(s, "state", "?"));
        const gr_json *p = gr_json_get(s, "progress");
        ws->done = gr_json_get_num(p, "done", 0);
        ws->total = gr_json_get_num(p, "total", 0);
        snprintf(ws->msg, sizeof ws->msg, "%s", gr_json_get_str(p, "message", ""));
    }
}

static void draw(watcher *W, int force)
{
    double now = gr_now_s();
    if (!force && now - W->last_draw < 0.1) return;
    W->last_draw = now;
    for (int i = 0; i < W->drawn; i++) fputs("\033[1A\033[2K", W->out);
    int lines = 0;
    size_t counts[8] = {0};
    static const char *names[] = {"blocked", "ready",  "running",   "done",
                                  "cached",  "failed", "cancelled", "skipped"};
    for (size_t i = 0; i < W->n; i++) {
        for (int k = 0; k < 8; k++)
            if (!strcmp(W->s[i].state, names[k])) counts[k]++;
        if (strcmp(W->s[i].state, "running") || lines >= 20) continue;
        const int width = 30;
        double f = W->s[i].total > 0 ? W->s[i].done / W->s[i].total : 0;
        if (!(f >= 0)) f = 0;
        if (f > 1) f = 1;
        int fill = (int)(f * width + 0.5);
        fprintf(W->out, "%-32.32s [", W->s[i].id);
        for (int k = 0; k < width; k++) fputc(k < fill ? '#' : '.', W->out);
        fprintf(W->out, "] %3.0f%% %.40s\n", 100 * f, W->s[i].msg);
        lines++;
    }
    fprintf(W->out, "%s %s %.1fs:", W->job, W->state, now - W->t0);
    for (int k = 0; k < 8; k++)
        if (counts[k]) fprintf(W->out, " %s %zu", names[k], counts[k]);
    fputc('\n', W->out);
    lines++;
    W->drawn = lines;
    fflush(W->out);
}

static void plain(watcher *W, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void plain(watcher *W, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(W->out, "[%7.1fs] ", gr_now_s() - W->t0);
    vfprintf(W->out, fmt, ap);
    fputc('\n', W->out);
    fflush(W->out);
    va_end(ap);
}

static void on_event(watcher *W, const gr_json *ev)
{
    const char *type = gr_json_get_str(ev, "type", "");
    const char *sid = gr_json_get_str(ev, "stage", "");
    wstage *s = *sid ? find_stage(W, sid) : NULL;
    if (!strcmp(type, "job")) {
        snprintf(W->state, sizeof W->state, "%s", gr_json_get_str(ev, "state", "?"));
        if (!W->tty) plain(W, "job %s: %s", W->job, W->state);
        W->announced = finished(W->state);
    } else if (!strcmp(type, "stage") && s) {
        snprintf(s->state, sizeof s->state, "%s", gr_json_get_str(ev, "state", "?"));
        if (!W->tty) {
            const char *err = gr_json_get_str(ev, "error", NULL);
            const char *wk = gr_json_get_str(ev, "worker", NULL);
            char extra[400] = "";
            if (gr_json_get(ev, "attempt"))
                snprintf(extra, sizeof extra, " (attempt %lld%s%.300s)",
                         (long long)gr_json_get_int(ev, "attempt", 0), wk ? " on " : "",
                         wk ? wk : "");
            plain(W, "%s: %s%s", sid, s->state, extra);
            if (err) plain(W, "%s: error: %s", sid, err);
        }
    } else if (!strcmp(type, "progress") && s) {
        s->done = gr_json_get_num(ev, "done", 0);
        s->total = gr_json_get_num(ev, "total", 0);
        snprintf(s->msg, sizeof s->msg, "%s", gr_json_get_str(ev, "message", ""));
        double now = gr_now_s();
        if (!W->tty && now - s->last_line >= PLAIN_PROGRESS_S) {
            s->last_line = now;
            plain(W, "%s: %g/%g %s", sid, s->done, s->total, s->msg);
        }
    }
    if (W->tty) draw(W, 0);
}

static int send_watch(gr_client *c, const char *job, int cmd, gr_json **res, int timeout_ms)
{
    gr_json *body = gr_jsonb_obj();
    if (!body || gr_jsonb_set(body, "job", gr_jsonb_str(job))) {
        gr_json_free(body);
        return GR_ENOMEM;
    }
    int rc = gr_client_call(c, cmd, body, timeout_ms, res);
    gr_json_free(body);
    return rc;
}

int jobs_watch(gr_client *c, const char *job, FILE *out, gr_json **final, volatile int *interrupted)
{
    watcher W = {.out = out, .tty = isatty(fileno(out)), .t0 = gr_now_s()};
    snprintf(W.job, sizeof W.job, "%s", job);
    gr_json *st = NULL;
    int rc = send_watch(c, job, GR_CMD_WATCH, &st, 0);
    if (rc) return cli_fail(rc);
    load_status(&W, st);
    if (!W.tty) plain(&W, "job %s: %s, %zu stages", job, W.state, W.n);
    double last_heard = gr_now_s();
    int result = 0;
    while (!finished(W.state)) {
        if (interrupted && *interrupted) {
            result = 130;
            break;
        }
        gr_json *ev = NULL;
        int r = gr_client_event(c, WATCH_POLL_MS, &ev);
        if (r < 0) {
            result = cli_fail(r);
            break;
        }
        if (r == 0) {
            if (!strcmp(gr_json_get_str(ev, "job", ""), job)) {
                on_event(&W, ev);
                last_heard = gr_now_s();
            }
            gr_json_free(ev);
            continue;
        }
        if (W.tty) draw(&W, 0);
        if ((gr_now_s() - last_heard) * 1000 < WATCH_SILENCE_MS) continue;
        /* quiet: the job may be waiting, or the broker restarted and forgot
         * this watcher; asking again covers both */
        gr_json *fresh = NULL, *u = NULL;
        if (send_watch(c, job, GR_CMD_UNWATCH, &u, 2000) == 0) gr_json_free(u); /* no duplicate */
        if (send_watch(c, job, GR_CMD_WATCH, &fresh, 2000) == 0) {
            gr_json_free(st);
            st = fresh;
            load_status(&W, st);
            if (W.tty) draw(&W, 1);
        } else if (gr_errcode() == GR_ETIMEOUT) {
            if (!W.tty) plain(&W, "broker not answering (%s); still waiting", gr_errmsg());
            gr_client_reconnect(c);
        } else {
            result = cli_fail(gr_errcode());
            break;
        }
        last_heard = gr_now_s();
    }
    if (!result) {
        /* the final status, so callers print what STATUS would */
        gr_json *fin = NULL;
        if (send_watch(c, job, GR_CMD_STATUS, &fin, 0) == 0) {
            gr_json_free(st);
            st = fin;
            load_status(&W, st);
        }
        if (W.tty)
            draw(&W, 1);
        else if (!W.announced)
            plain(&W, "job %s: %s", job, W.state);
        result = !strcmp(W.state, "done") ? 0 : 1;
        /* stop the event stream */
        gr_json *u = NULL;
        send_watch(c, job, GR_CMD_UNWATCH, &u, 2000);
        gr_json_free(u);
    }
    if (final)
        *final = st;
    else
        gr_json_free(st);
    for (size_t i = 0; i < W.n; i++) free(W.s[i].id);
    free(W.s);
    return result;
}

/* ----------------------------------------------------------- commands */

/* Common options: --broker. Returns the new client or NULL (printed). */
static gr_client *connect_broker(const char *opt)
{
    char *ep = gr_client_broker(opt);
    if (!ep) {
        cli_fail(GR_ENOMEM);
        return NULL;
    }
    gr_client *c = gr_client_new(ep);
    free(ep);
    if (!c) cli_fail(gr_errcode());
    return c;
}

int cmd_submit(int argc, char **argv)
{
    const char *broker = NULL, *path = NULL, *sets[MAX_SETS];
    size_t nsets = 0;
    int no_cache = 0, missing = 0, watch = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = jobs_opt(argc, argv, &i, "--broker", &missing)))
            broker = v;
        else if ((v = jobs_opt(argc, argv, &i, "--set", &missing))) {
            if (nsets == MAX_SETS) return cli_usage_error("too many --set options");
            sets[nsets++] = v;
        } else if (!strcmp(argv[i], "--no-cache"))
            no_cache = 1;
        else if (!strcmp(argv[i], "--watch"))
            watch = 1;
        else if (missing || argv[i][0] == '-')
            return cli_usage_error("submit: %s: %s", argv[i],
                                   missing ? "missing value" : "unknown option");
        else if (path)
            return cli_usage_error("submit: one pipeline file at a time");
        else
            path = argv[i];
        if (missing) return cli_usage_error("submit: %s: missing value", argv[i]);
    }
    if (!path)
        return cli_usage_error("usage: graft submit PIPELINE.yaml [--set k=v]... [--no-cache] "
                               "[--watch] [--broker URL]");
    gr_client *c = connect_broker(broker);
    if (!c) return 1;
    char jid[128];
    int rc = jobs_submit(c, path, sets, nsets, no_cache, jid);
    if (!rc) {
        printf("%s\n", jid);
        fflush(stdout);
        if (watch) rc = jobs_watch(c, jid, stderr, NULL, NULL);
    }
    gr_client_destroy(&c);
    return rc;
}

int cmd_status(int argc, char **argv)
{
    const char *broker = NULL, *job = NULL;
    int json = 0, missing = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = jobs_opt(argc, argv, &i, "--broker", &missing)))
            broker = v;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (missing || argv[i][0] == '-')
            return cli_usage_error("status: %s: %s", argv[i],
                                   missing ? "missing value" : "unknown option");
        else if (job)
            return cli_usage_error("usage: graft status [JOB] [--json] [--broker URL]");
        else
            job = argv[i];
    }
    gr_client *c = connect_broker(broker);
    if (!c) return 1;
    int rc;
    if (job)
        rc = jobs_status(c, job, json, stdout);
    else {
        gr_json *res = NULL;
        rc = gr_client_call(c, GR_CMD_LIST, NULL, 0, &res);
        if (rc)
            rc = cli_fail(rc);
        else
            print_jobs(stdout, res, json);
        gr_json_free(res);
    }
    gr_client_destroy(&c);
    return rc;
}

int cmd_watch(int argc, char **argv)
{
    const char *broker = NULL, *job = NULL;
    int missing = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = jobs_opt(argc, argv, &i, "--broker", &missing)))
            broker = v;
        else if (missing || argv[i][0] == '-')
            return cli_usage_error("watch: %s: %s", argv[i],
                                   missing ? "missing value" : "unknown option");
        else if (job)
            return cli_usage_error("usage: graft watch JOB [--broker URL]");
        else
            job = argv[i];
    }
    if (!job) return cli_usage_error("usage: graft watch JOB [--broker URL]");
    gr_client *c = connect_broker(broker);
    if (!c) return 1;
    struct sigaction sa = {0};
    sa.sa_handler = cli_on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    int rc = jobs_watch(c, job, stdout, NULL, &cli_cancel);
    gr_client_destroy(&c);
    return rc;
}

int cmd_cancel(int argc, char **argv)
{
    const char *broker = NULL, *job = NULL;
    int missing = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = jobs_opt(argc, argv, &i, "--broker", &missing)))
            broker = v;
        else if (missing || argv[i][0] == '-')
            return cli_usage_error("cancel: %s: %s", argv[i],
                                   missing ? "missing value" : "unknown option");
        else if (job)
            return cli_usage_error("usage: graft cancel JOB [--broker URL]");
        else
            job = argv[i];
    }
    if (!job) return cli_usage_error("usage: graft cancel JOB [--broker URL]");
    gr_client *c = connect_broker(broker);
    if (!c) return 1;
    gr_json *body = gr_jsonb_obj(), *res = NULL;
    int rc = !body || gr_jsonb_set(body, "job", gr_jsonb_str(job))
                 ? GR_ENOMEM
                 : gr_client_call(c, GR_CMD_CANCEL, body, 0, &res);
    if (!rc) printf("%s: %s\n", job, gr_json_get_str(res, "state", "?"));
    gr_json_free(res);
    gr_json_free(body);
    gr_client_destroy(&c);
    return rc ? cli_fail(rc) : 0;
}

int cmd_workers(int argc, char **argv)
{
    const char *broker = NULL;
    int json = 0, missing = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = jobs_opt(argc, argv, &i, "--broker", &missing)))
            broker = v;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else
            return cli_usage_error("workers: %s: %s", argv[i],
                                   missing ? "missing value" : "unknown argument");
    }
    gr_client *c = connect_broker(broker);
    if (!c) return 1;
    gr_json *res = NULL;
    int rc = gr_client_call(c, GR_CMD_WORKERS, NULL, 0, &res);
    if (!rc && json)
        jobs_print_status(stdout, res, 1);
    else if (!rc) {
        const gr_json *ws = gr_json_get(res, "workers");
        printf("%-28s %-6s %-24s %8s %9s  %s\n", "WORKER", "STATE", "TASK", "HB AGE", "RSS MB",
               "OPS");
        for (size_t i = 0; ws && i < ws->len; i++) {
            const gr_json *w = ws->items[i];
            const gr_json *ops = gr_json_get(w, "ops");
            printf("%-28s %-6s %-24s %6lldms %9.1f  ", gr_json_get_str(w, "worker", "?"),
                   gr_json_get_str(w, "state", "?"), gr_json_get_str(w, "task", "-"),
                   (long long)gr_json_get_int(w, "heartbeat_age_ms", 0),
                   gr_json_get_num(w, "rss", 0) / (1 << 20));
            for (size_t k = 0; ops && k < ops->len; k++)
                printf("%s%s", k ? "," : "",
                       ops->items[k]->type == GR_JSON_STR ? ops->items[k]->str : "?");
            putchar('\n');
        }
    }
    gr_json_free(res);
    gr_client_destroy(&c);
    return rc ? cli_fail(rc) : 0;
}
