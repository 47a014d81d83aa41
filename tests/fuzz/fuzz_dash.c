/* fuzz_dash: arbitrary bytes into gr_dash's Redis URL parser and into the
 * strings and numbers of a dashboard snapshot (what Redis hands `graft top`
 * is not to be trusted). A URL is parsed into sane parts or rejected with a
 * message; the JSON form of any snapshot parses back with its strings intact;
 * the text form keeps every line within the width, printable ASCII, and
 * within the height. */
#include "gr_dash.h"
#include "gr_err.h"
#include "gr_json.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Next '\n'-separated piece of the input as an owned string (NULs kept out:
 * the snapshot holds C strings). */
static char *piece(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
    *p = nl ? nl + 1 : end;
    char *out = malloc(n + 1);
    if (!out) abort();
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i]) out[k++] = (char)s[i];
    out[k] = 0;
    return out;
}

static int64_t num(const uint8_t **p, const uint8_t *end)
{
    uint64_t v = 0;
    for (int i = 0; i < 8 && *p < end; i++) v = (v << 8) | *(*p)++;
    return (int64_t)v;
}

static void check_text(const char *t, int width, int height)
{
    int lines = 0;
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if ((int)n > width) abort();
        for (size_t i = 0; i < n; i++)
            if (p[i] < ' ' || p[i] > '~') abort();
        lines++;
        p += n + (nl ? 1 : 0);
    }
    if (height > 0 && lines > height) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    char *url = piece(&p, end);
    gr_dash_url u;
    gr_clearerr();
    if (gr_dash_parse_url(url, &u) == 0) {
        if (!u.host[0] == !u.path[0]) abort(); /* exactly one of host and socket */
        if (u.port < 1 || u.port > 65535 || u.db < 0 || u.db > 1000000) abort();
    } else if (!strstr(gr_errmsg(), "redis URL"))
        abort();
    char shown[128];
    gr_dash_url_display(url, shown, sizeof shown);
    free(url);

    /* a snapshot of hostile strings and numbers */
    gr_dash_snap *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->redis = piece(&p, end);
    s->prefix = piece(&p, end);
    s->time_ms = num(&p, end);
    s->window_s = (double)(num(&p, end) & 0xffff) / 16.0;
    size_t nq = p < end ? *p++ % 5 : 0, nw = p < end ? *p++ % 5 : 0, nj = p < end ? *p++ % 5 : 0;
    s->queues = calloc(nq + 1, sizeof *s->queues);
    s->workers = calloc(nw + 1, sizeof *s->workers);
    s->jobs = calloc(nj + 1, sizeof *s->jobs);
    s->counters = calloc(2, sizeof *s->counters);
    if (!s->queues || !s->workers || !s->jobs || !s->counters) abort();
    for (; s->nqueues < nq; s->nqueues++) {
        s->queues[s->nqueues].op = piece(&p, end);
        s->queues[s->nqueues].ready = num(&p, end);
    }
    s->counters[0].name = piece(&p, end);
    s->counters[0].value = num(&p, end);
    s->counters[0].rate = (double)num(&p, end);
    s->ncounters = 1;
    double lat[4] = {(double)num(&p, end), 1e300, -5, 0};
    gr_dash_latency(lat, (size_t)(size % 5), &s->wait);
    gr_dash_latency(lat, 0, &s->run);
    for (; s->nworkers < nw; s->nworkers++) {
        gr_dash_worker *w = &s->workers[s->nworkers];
        w->id = piece(&p, end);
        w->host = piece(&p, end);
        w->state = piece(&p, end);
        w->version = piece(&p, end);
        w->task = piece(&p, end);
        w->op = piece(&p, end);
        w->ops = piece(&p, end);
        w->p_msg = piece(&p, end);
        w->pid = num(&p, end);
        w->rss = num(&p, end);
        w->heartbeat_age_ms = num(&p, end);
        w->p_total = (double)(num(&p, end) & 0xff);
        w->task_ms = (double)num(&p, end);
    }
    for (; s->njobs < nj; s->njobs++) {
        gr_dash_job *j = &s->jobs[s->njobs];
        j->id = piece(&p, end);
        j->name = piece(&p, end);
        j->state = piece(&p, end);
        for (int k = 0; k < GR_DASH_NSTATES; k++) j->n[k] = num(&p, end) & 0xffffffff;
        j->nstages = num(&p, end);
        j->finished = num(&p, end);
    }

    gr_buf b = {0};
    if (gr_dash_json(s, &b)) abort();
    gr_json *j = gr_json_parse(b.data, b.len, "fuzz");
    /* strings that are not valid UTF-8 make the JSON invalid (the strict
     * parser says so); valid ones must come back byte for byte */
    if (j) {
        if (strcmp(gr_json_get_str(j, "prefix", "\x01"), s->prefix)) abort();
        const gr_json *w = gr_json_get(j, "workers");
        if (!w || w->len != s->nworkers) abort();
        for (size_t i = 0; i < w->len; i++)
            if (strcmp(gr_json_get_str(w->items[i], "worker", "\x01"), s->workers[i].id)) abort();
        gr_json_free(j);
    }
    int width = p < end ? 20 + *p++ : 80, height = p < end ? *p++ % 40 : 0;
    gr_buf_reset(&b);
    if (gr_dash_text(s, &b, width, height)) abort();
    check_text(b.data ? b.data : "", width < 40 ? 40 : width, height);
    gr_buf_free(&b);
    gr_dash_snap_free(&s);
    return 0;
}
