/* gr_dash: reads a graft installation's dashboard numbers from Redis (the keys
 * of schemas/redis-keys.md, read-only) and prints them as text or JSON. */
#include "gr_dash.h"
#include "gr_err.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCAN_COUNT     1000  /* keys per SCAN call */
#define SCAN_MAX_CALLS 10000 /* a keyspace of ~10M keys; more is cut */
#define RESCAN_MS      10000 /* the ready:<op> keys are looked for this often */
#define MAX_STR        4096  /* longest string taken from a reply */

static const char *const state_names[GR_DASH_NSTATES] = {
    "blocked", "ready", "running", "done", "cached", "failed", "cancelled", "skipped"};

/* The only commands this module sends: every one reads. */
static const char *const read_cmds[] = {"AUTH",   "SELECT", "PING",      "TIME",     "SCAN",
                                        "ZCARD",  "SCARD",  "ZREVRANGE", "SMEMBERS", "LLEN",
                                        "LRANGE", "HMGET",  "HGETALL",   NULL};

const char *gr_dash_state_name(int i)
{
    return i >= 0 && i < GR_DASH_NSTATES ? state_names[i] : "?";
}

/* ------------------------------------------------------------ URLs */

void gr_dash_url_display(const char *url, char *buf, size_t size)
{
    if (!size) return;
    buf[0] = 0;
    if (!url) return;
    const char *start = strstr(url, "://");
    start = start ? start + 3 : url;
    const char *at = strncmp(url, "unix://", 7) ? strrchr(start, '@') : NULL;
    if (!at) {
        snprintf(buf, size, "%s", url);
        return;
    }
    const char *colon = memchr(start, ':', (size_t)(at - start));
    int keep = (int)((colon ? colon + 1 : start) - url); /* scheme and user */
    snprintf(buf, size, "%.*s***%s", keep, url, at);
}

static int url_err(const char *url, const char *rule)
{
    char shown[600];
    gr_dash_url_display(url, shown, sizeof shown);
    return gr_seterr(GR_EINVAL, "redis URL '%s': %s", shown, rule);
}

/* Copies s[0..n) into dst (size bytes with the NUL); 0 or -1 when too long. */
static int copy_part(char *dst, size_t size, const char *s, size_t n)
{
    if (n >= size) return -1;
    memcpy(dst, s, n);
    dst[n] = 0;
    return 0;
}

/* Decimal digits only, value in [lo, hi]. */
static int parse_uint(const char *s, size_t n, long lo, long hi, long *out)
{
    if (!n || n > 9) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int gr_dash_parse_url(const char *url, gr_dash_url *o)
{
    memset(o, 0, sizeof *o);
    o->port = 6379;
    if (!url || !*url) return gr_seterr(GR_EINVAL, "redis URL is empty");
    for (const unsigned char *c = (const unsigned char *)url; *c; c++)
        if (*c <= ' ' || *c == 0x7f)
            return url_err(url, "control characters and spaces are not allowed");
    if (!strncmp(url, "unix://", 7)) {
        const char *p = url + 7;
        if (!*p) return url_err(url, "no socket path");
        if (copy_part(o->path, sizeof o->path, p, strlen(p)))
            return url_err(url, "socket path too long");
        return 0;
    }
    const char *p = url;
    if (!strncmp(p, "redis://", 8))
        p += 8;
    else if (strstr(p, "://"))
        return url_err(url, "the scheme must be redis:// or unix://");
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if (colon && copy_part(o->user, sizeof o->user, p, (size_t)(colon - p)))
            return url_err(url, "user name too long");
        if (copy_part(o->password, sizeof o->password, pw, (size_t)(at - pw)))
            return url_err(url, "password too long");
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *hend = slash ? slash : p + strlen(p);
    const char *host = p, *port = NULL;
    size_t hlen;
    if (*p == '[') { /* [v6 address] */
        const char *close = memchr(p, ']', (size_t)(hend - p));
        if (!close) return url_err(url, "'[' without ']' around the host");
        host = p + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < hend) {
            if (close[1] != ':') return url_err(url, "junk after ']'");
            port = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(hend - p));
        hlen = (size_t)((colon ? colon : hend) - p);
        if (colon) port = colon + 1;
    }
    if (!hlen) return url_err(url, "no host");
    if (copy_part(o->host, sizeof o->host, host, hlen)) return url_err(url, "host name too long");
    long v;
    if (port) {
        if (parse_uint(port, (size_t)(hend - port), 1, 65535, &v))
            return url_err(url, "the port must be a number from 1 to 65535");
        o->port = (int)v;
    }
    if (slash && slash[1]) {
        if (parse_uint(slash + 1, strlen(slash + 1), 0, 1000000, &v))
            return url_err(url, "the database must be a number from 0 to 1000000");
        o->db = (int)v;
    }
    return 0;
}

/* ------------------------------------------------------------ formatting helpers */

double gr_dash_percentile(const double *sorted, size_t n, double p)
{
    if (!n || !(p >= 0 && p <= 100)) return NAN;
    double pos = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)pos;
    if (lo >= n - 1) return sorted[n - 1];
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * (pos - (double)lo);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void gr_dash_latency(double *v, size_t n, gr_dash_lat *out)
{
    if (n) qsort(v, n, sizeof *v, cmp_double);
    out->n = n;
    out->p50 = gr_dash_percentile(v, n, 50);
    out->p95 = gr_dash_percentile(v, n, 95);
    out->p99 = gr_dash_percentile(v, n, 99);
    out->max = n ? v[n - 1] : NAN;
}

char *gr_dash_fmt_ms(char *buf, size_t size, double ms)
{
    if (isnan(ms)) {
        snprintf(buf, size, "-");
        return buf;
    }
    const char *sign = ms < 0 ? "-" : "";
    double a = fabs(ms);
    if (a < 1)
        snprintf(buf, size, "%s%.2fms", sign, a);
    else if (a < 99.95)
        snprintf(buf, size, "%s%.1fms", sign, a);
    else if (a < 999.5)
        snprintf(buf, size, "%s%.0fms", sign, a);
    else if (a < 9995)
        snprintf(buf, size, "%s%.2fs", sign, a / 1000);
    else if (a < 59950)
        snprintf(buf, size, "%s%.1fs", sign, a / 1000);
    else if (a < 3600e3) {
        long s = lround(a / 1000);
        snprintf(buf, size, "%s%ldm%02lds", sign, s / 60, s % 60);
    } else if (a < 1e12) {
        long m = lround(a / 60e3);
        snprintf(buf, size, "%s%ldh%02ldm", sign, m / 60, m % 60);
    } else
        snprintf(buf, size, "%s>1e9s", sign);
    return buf;
}

char *gr_dash_fmt_bytes(char *buf, size_t size, double bytes)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (isnan(bytes) || bytes < 0) {
        snprintf(buf, size, "-");
        return buf;
    }
    if (bytes < 1024) {
        snprintf(buf, size, "%.0fB", bytes);
        return buf;
    }
    double v = bytes / 1024;
    int u = 0;
    while (v >= 1023.95 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, "%.1f%s", v, units[u]);
    return buf;
}

char *gr_dash_fmt_rate(char *buf, size_t size, double per_s)
{
    if (!isfinite(per_s))
        snprintf(buf, size, "-");
    else if (fabs(per_s) < 99.95)
        snprintf(buf, size, "%.1f/s", per_s);
    else
        snprintf(buf, size, "%.0f/s", per_s);
    return buf;
}

char *gr_dash_bar(char *buf, size_t size, int width, const int64_t n[GR_DASH_NSTATES])
{
    if (!size) return buf;
    if (width < 1 || (size_t)width + 3 > size) {
        buf[0] = 0;
        return buf;
    }
    /* cells in this order: done+cached, failed+cancelled+skipped, running,
     * then ready+blocked (what is left) */
    int64_t part[4] = {n[GR_DASH_DONE] + n[GR_DASH_CACHED],
                       n[GR_DASH_FAILED] + n[GR_DASH_CANCELLED] + n[GR_DASH_SKIPPED],
                       n[GR_DASH_RUNNING], n[GR_DASH_READY] + n[GR_DASH_BLOCKED]};
    static const char cell[4] = {'#', 'x', '>', '.'};
    double total = 0;
    for (int i = 0; i < 4; i++) total += part[i] > 0 ? (double)part[i] : 0;
    buf[0] = '[';
    int pos = 0;
    double cum = 0;
    for (int i = 0; i < 4; i++) {
        cum += part[i] > 0 ? (double)part[i] : 0;
        int end = total > 0 ? (int)floor(cum * width / total) : 0;
        if (i == 3) end = width; /* nothing counted yet: all '.' */
        for (; pos < end && pos < width; pos++) buf[1 + pos] = cell[i];
    }
    buf[1 + width] = ']';
    buf[2 + width] = 0;
    return buf;
}

int gr_dash_glob_escape(gr_buf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strchr("*?[]\\", s[i]) && s[i]) gr_buf_putc(out, '\\');
        gr_buf_putc(out, s[i]);
    }
    return out->oom ? GR_ENOMEM : 0;
}

/* ------------------------------------------------------------ snapshots */

void gr_dash_snap_free(gr_dash_snap **ps)
{
    gr_dash_snap *s = ps ? *ps : NULL;
    if (!s) return;
    free(s->redis);
    free(s->prefix);
    for (size_t i = 0; i < s->nqueues; i++) free(s->queues[i].op);
    free(s->queues);
    for (size_t i = 0; i < s->ncounters; i++) free(s->counters[i].name);
    free(s->counters);
    for (size_t i = 0; i < s->nworkers; i++) {
        gr_dash_worker *w = &s->workers[i];
        free(w->id);
        free(w->host);
        free(w->state);
        free(w->version);
        free(w->task);
        free(w->op);
        free(w->ops);
        free(w->p_msg);
    }
    free(s->workers);
    for (size_t i = 0; i < s->njobs; i++) {
        free(s->jobs[i].id);
        free(s->jobs[i].name);
        free(s->jobs[i].state);
    }
    free(s->jobs);
    free(s);
    *ps = NULL;
}

static const gr_dash_counter *find_counter(const gr_dash_counter *c, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = strcmp(c[mid].name, name);
        if (!d) return &c[mid];
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int64_t gr_dash_snap_counter(const gr_dash_snap *s, const char *name)
{
    const gr_dash_counter *c = find_counter(s->counters, s->ncounters, name);
    return c ? c->value : 0;
}

double gr_dash_snap_rate(const gr_dash_snap *s, const char *name)
{
    const gr_dash_counter *c = find_counter(s->counters, s->ncounters, name);
    return c ? c->rate : (s->window_s > 0 ? 0.0 : NAN); /* never counted: 0 */
}

/* ------------------------------------------------------------ the reader */

struct gr_dash {
    char url[600]; /* display form */
    gr_dash_url u;
    char *prefix;
    size_t plen;
    int timeout_ms, max_jobs;
    redisContext *ctx;
    char **ops; /* ops that had a ready:<op> key at the last scan */
    size_t nops;
    int64_t scan_ms;       /* Redis time of that scan; 0: never */
    gr_dash_counter *prev; /* counters of the previous sample */
    size_t nprev;
    int64_t prev_ms;
};

static void drop_conn(gr_dash *d)
{
    if (d->ctx) redisFree(d->ctx);
    d->ctx = NULL;
}

static int net_err(gr_dash *d, const char *what)
{
    int rc = gr_seterr(GR_ENET, "redis %s: %s: %s", d->url, what,
                       d->ctx && d->ctx->errstr[0] ? d->ctx->errstr : "connection lost");
    drop_conn(d);
    return rc;
}

static int is_read_cmd(const char *cmd)
{
    for (const char *const *c = read_cmds; *c; c++)
        if (!strcmp(*c, cmd)) return 1;
    return 0;
}

/* One synchronous command during connection setup; returns the reply or
 * NULL (connection failed, message set). */
static redisReply *call(gr_dash *d, int argc, const char **argv)
{
    if (!is_read_cmd(argv[0])) {
        gr_seterr(GR_EINVAL, "gr_dash: refusing to send %s (not a read command)", argv[0]);
        return NULL;
    }
    redisReply *r = redisCommandArgv(d->ctx, argc, argv, NULL);
    if (!r) net_err(d, argv[0]);
    return r;
}

static int dash_connect(gr_dash *d)
{
    struct timeval tv = {d->timeout_ms / 1000, (d->timeout_ms % 1000) * 1000};
    d->ctx = d->u.path[0] ? redisConnectUnixWithTimeout(d->u.path, tv)
                          : redisConnectWithTimeout(d->u.host, d->u.port, tv);
    if (!d->ctx) return gr_seterr(GR_ENOMEM, "redis %s: out of memory", d->url);
    if (d->ctx->err) {
        int rc = gr_seterr(GR_ENET, "redis %s is not reachable: %s", d->url, d->ctx->errstr);
        drop_conn(d);
        return rc;
    }
    redisSetTimeout(d->ctx, tv);
    redisReply *r;
    if (d->u.password[0]) {
        const char *a3[] = {"AUTH", d->u.user, d->u.password}, *a2[] = {"AUTH", d->u.password};
        r = d->u.user[0] ? call(d, 3, a3) : call(d, 2, a2);
        if (!r) return gr_errcode();
        int bad = r->type == REDIS_REPLY_ERROR;
        if (bad) gr_seterr(GR_EINVAL, "redis %s: authentication failed: %s", d->url, r->str);
        freeReplyObject(r);
        if (bad) goto fail;
    }
    if (d->u.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", d->u.db);
        const char *a[] = {"SELECT", db};
        if (!(r = call(d, 2, a))) return gr_errcode();
        int bad = r->type == REDIS_REPLY_ERROR;
        if (bad)
            gr_seterr(GR_EINVAL, "redis %s: cannot select database %d: %s", d->url, d->u.db,
                      r->str);
        freeReplyObject(r);
        if (bad) goto fail;
    }
    const char *ping[] = {"PING"};
    if (!(r = call(d, 1, ping))) return gr_errcode();
    int bad = r->type == REDIS_REPLY_ERROR;
    if (bad) gr_seterr(GR_EINVAL, "redis %s: %s", d->url, r->str); /* e.g. NOAUTH */
    freeReplyObject(r);
    if (bad) goto fail;
    return 0;
fail:
    drop_conn(d);
    return gr_errcode();
}

gr_dash *gr_dash_new(const char *url, const char *prefix, int timeout_ms, int max_jobs)
{
    gr_dash *d = calloc(1, sizeof *d);
    if (!d) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    if (!url) url = GR_DASH_DEFAULT_URL;
    if (!prefix) prefix = GR_DASH_DEFAULT_PREFIX;
    gr_dash_url_display(url, d->url, sizeof d->url);
    d->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    d->max_jobs = max_jobs > 0 ? (max_jobs < GR_DASH_MAX_ITEMS ? max_jobs : GR_DASH_MAX_ITEMS) : 20;
    if (strlen(prefix) > 256) {
        gr_seterr(GR_EINVAL, "key prefix '%.40s...': longer than 256 bytes", prefix);
        goto fail;
    }
    if (gr_dash_parse_url(url, &d->u)) goto fail;
    if (!(d->prefix = strdup(prefix))) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    d->plen = strlen(prefix);
    if (dash_connect(d)) goto fail;
    return d;
fail:
    gr_dash_destroy(&d);
    return NULL;
}

static void free_counters(gr_dash_counter *c, size_t n)
{
    for (size_t i = 0; i < n; i++) free(c[i].name);
    free(c);
}

void gr_dash_destroy(gr_dash **pd)
{
    gr_dash *d = pd ? *pd : NULL;
    if (!d) return;
    drop_conn(d);
    free(d->prefix);
    for (size_t i = 0; i < d->nops; i++) free(d->ops[i]);
    free(d->ops);
    free_counters(d->prev, d->nprev);
    free(d);
    *pd = NULL;
}

/* ---- pipelined commands: appended in a batch, then read back in order */

typedef struct pipe {
    gr_dash *d;
    char **what; /* "CMD key" of each command sent, for error messages */
    size_t n, cap, next;
    int rc;
} pipe_t;

/* Appends CMD <prefix><k1><k2><k3><k4> args... (key parts may be NULL; no
 * key at all when k1 is NULL; args NULL-terminated). */
static void pipe_cmd(pipe_t *p, const char *cmd, const char *k1, const char *k2, const char *k3,
                     const char *k4, ...)
{
    if (p->rc) return;
    if (!is_read_cmd(cmd)) {
        p->rc = gr_seterr(GR_EINVAL, "gr_dash: refusing to send %s (not a read command)", cmd);
        return;
    }
    if (!p->d->ctx) {
        p->rc = gr_seterr(GR_ENET, "redis %s: not connected", p->d->url);
        return;
    }
    const char *argv[64];
    size_t lens[64];
    int argc = 0;
    gr_buf key = {0};
    argv[argc] = cmd;
    lens[argc++] = strlen(cmd);
    if (k1) {
        gr_buf_append(&key, p->d->prefix, p->d->plen);
        gr_buf_puts(&key, k1);
        if (k2) gr_buf_puts(&key, k2);
        if (k3) gr_buf_puts(&key, k3);
        if (k4) gr_buf_puts(&key, k4);
        if (key.oom) {
            p->rc = gr_seterr(GR_ENOMEM, "out of memory");
            return;
        }
        argv[argc] = key.data;
        lens[argc++] = key.len;
    }
    va_list ap;
    va_start(ap, k4);
    const char *a;
    while ((a = va_arg(ap, const char *)) && argc < 64) {
        argv[argc] = a;
        lens[argc++] = strlen(a);
    }
    va_end(ap);
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        char **w = realloc(p->what, cap * sizeof *w);
        if (!w) {
            gr_buf_free(&key);
            p->rc = gr_seterr(GR_ENOMEM, "out of memory");
            return;
        }
        p->what = w;
        p->cap = cap;
    }
    /* for messages: one line of printable text (keys hold ids from Redis) */
    gr_buf what = {0};
    gr_buf_printf(&what, "%s %.*s", cmd, (int)(key.len > 300 ? 300 : key.len),
                  key.data ? key.data : "");
    for (size_t i = 0; i < what.len; i++)
        if (what.data[i] < ' ' || what.data[i] > '~') what.data[i] = '?';
    int oom = what.oom;
    if (oom || redisAppendCommandArgv(p->d->ctx, argc, argv, lens) != REDIS_OK) {
        gr_buf_free(&key);
        gr_buf_free(&what);
        p->rc = oom ? gr_seterr(GR_ENOMEM, "out of memory") : net_err(p->d, cmd);
        return;
    }
    p->what[p->n++] = gr_buf_take(&what);
    gr_buf_free(&key);
}

/* The next reply (caller frees), checked to be of type t (or an array when t
 * is REDIS_REPLY_ARRAY); NULL with p->rc set otherwise. */
static redisReply *pipe_next(pipe_t *p, int t)
{
    if (p->rc || p->next >= p->n) {
        if (!p->rc) p->rc = gr_seterr(GR_EINVAL, "gr_dash: reply without a command");
        return NULL;
    }
    const char *what = p->what[p->next++];
    redisReply *r = NULL;
    if (!p->d->ctx || redisGetReply(p->d->ctx, (void **)&r) != REDIS_OK || !r) {
        p->rc = net_err(p->d, what);
        return NULL;
    }
    if (r->type == t) return r;
    if (r->type == REDIS_REPLY_ERROR)
        p->rc = gr_seterr(GR_EFORMAT, "redis %s: %s: %s", p->d->url, what, r->str);
    else
        p->rc = gr_seterr(GR_EFORMAT, "redis %s: %s: unexpected reply type %d", p->d->url, what,
                          r->type);
    freeReplyObject(r);
    return NULL;
}

/* Ends a batch: on an error or unread replies the connection is dropped
 * (replies would come out of step); returns p->rc. */
static int pipe_end(pipe_t *p)
{
    if (p->rc || p->next != p->n) drop_conn(p->d);
    for (size_t i = 0; i < p->n; i++) free(p->what[i]);
    free(p->what);
    p->what = NULL;
    p->n = p->cap = p->next = 0;
    return p->rc;
}

/* ---- reply helpers */

/* A string element as an owned C string: "" for nil; longer strings cut;
 * embedded NULs end it. NULL only when out of memory. */
static char *rstr(const redisReply *r)
{
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS) || !r->str)
        return strdup("");
    size_t n = r->len > MAX_STR ? MAX_STR : r->len;
    return strndup(r->str, n);
}

/* An integer field: 1 with *v when the element is a decimal integer. */
static int rint64(const redisReply *r, int64_t *v)
{
    if (!r) return 0;
    if (r->type == REDIS_REPLY_INTEGER) {
        *v = r->integer;
        return 1;
    }
    if (r->type != REDIS_REPLY_STRING || !r->len || r->len > 24) return 0;
    char tmp[32], *end;
    memcpy(tmp, r->str, r->len);
    tmp[r->len] = 0;
    errno = 0;
    long long x = strtoll(tmp, &end, 10);
    if (errno || *end || end == tmp) return 0;
    *v = x;
    return 1;
}

/* a - b, saturated (timestamps from Redis may be anything) */
static int64_t sub_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (!__builtin_sub_overflow(a, b, &r)) return r;
    return b < 0 ? INT64_MAX : INT64_MIN;
}

static int64_t rint_or(const redisReply *r, int64_t def)
{
    int64_t v;
    return rint64(r, &v) ? v : def;
}

static double rnum_or(const redisReply *r, double def)
{
    if (!r || r->type != REDIS_REPLY_STRING || !r->len || r->len > 40) return def;
    char tmp[48], *end;
    memcpy(tmp, r->str, r->len);
    tmp[r->len] = 0;
    double v = strtod(tmp, &end);
    return *end || end == tmp || !isfinite(v) ? def : v;
}

static int reply_is(const redisReply *r, const char *s)
{
    return r && r->type == REDIS_REPLY_STRING && r->len == strlen(s) && !memcmp(r->str, s, r->len);
}

/* A reply element usable as an id: a non-empty string without NULs. */
static int id_ok(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STRING && r->len && r->len <= MAX_STR &&
           !memchr(r->str, 0, r->len);
}

/* "a","b" JSON array text -> "a,b" (anything else: the text as is, cut). */
static char *ops_list(const char *json)
{
    gr_buf b = {0};
    const char *p = json;
    int in = 0;
    if (*p != '[') return strdup(json);
    for (p++; *p && *p != ']'; p++) {
        if (*p == '"') {
            in = !in;
            continue;
        }
        if (in)
            gr_buf_putc(&b, *p);
        else if (*p == ',')
            gr_buf_putc(&b, ',');
    }
    if (b.oom) {
        gr_buf_free(&b);
        return NULL;
    }
    return b.data ? gr_buf_take(&b) : strdup("");
}

static int cmp_counter(const void *a, const void *b)
{
    return strcmp(((const gr_dash_counter *)a)->name, ((const gr_dash_counter *)b)->name);
}
static int cmp_worker(const void *a, const void *b)
{
    return strcmp(((const gr_dash_worker *)a)->id, ((const gr_dash_worker *)b)->id);
}
static int cmp_job_created_desc(const void *a, const void *b)
{
    const gr_dash_job *x = a, *y = b;
    if (x->created != y->created) return x->created < y->created ? 1 : -1;
    return strcmp(x->id, y->id);
}
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds op to the sorted unique list; 0 or GR_ENOMEM. */
static int add_op(char ***ops, size_t *n, const char *op)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*ops)[i], op)) return 0;
    if (*n >= GR_DASH_MAX_ITEMS) return 0;
    char **o = realloc(*ops, (*n + 1) * sizeof *o);
    if (!o) return gr_seterr(GR_ENOMEM, "out of memory");
    *ops = o;
    if (!(o[*n] = strdup(op))) return gr_seterr(GR_ENOMEM, "out of memory");
    (*n)++;
    return 0;
}

/* Finds every P ready:<op> key with SCAN (MATCH on the escaped prefix);
 * replaces d->ops. */
static int scan_ops(gr_dash *d)
{
    gr_buf pat = {0};
    char **ops = NULL;
    size_t nops = 0;
    int rc = 0;
    gr_dash_glob_escape(&pat, d->prefix, d->plen);
    gr_buf_puts(&pat, "ready:*");
    if (pat.oom) return GR_ENOMEM;
    char cursor[32] = "0", count[16];
    snprintf(count, sizeof count, "%d", SCAN_COUNT);
    size_t skip = d->plen + 6;
    for (int calls = 0; calls < SCAN_MAX_CALLS; calls++) {
        pipe_t p = {.d = d};
        pipe_cmd(&p, "SCAN", NULL, NULL, NULL, NULL, cursor, "MATCH", pat.data, "COUNT", count,
                 NULL);
        redisReply *r = pipe_next(&p, REDIS_REPLY_ARRAY);
        if (r && (r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
                  r->element[0]->len >= sizeof cursor || r->element[1]->type != REDIS_REPLY_ARRAY))
            p.rc = gr_seterr(GR_EFORMAT, "redis %s: SCAN: malformed reply", d->url);
        if (!p.rc) {
            memcpy(cursor, r->element[0]->str, r->element[0]->len);
            cursor[r->element[0]->len] = 0;
            redisReply *keys = r->element[1];
            for (size_t i = 0; i < keys->elements && !rc; i++) {
                redisReply *k = keys->element[i];
                if (!id_ok(k) || k->len <= skip) continue;
                rc = add_op(&ops, &nops, k->str + skip);
            }
        }
        if (r) freeReplyObject(r);
        if ((rc = rc ? rc : pipe_end(&p))) goto out;
        if (!strcmp(cursor, "0")) break;
    }
    for (size_t i = 0; i < d->nops; i++) free(d->ops[i]);
    free(d->ops);
    d->ops = ops;
    d->nops = nops;
    ops = NULL;
    nops = 0;
out:
    for (size_t i = 0; i < nops; i++) free(ops[i]);
    free(ops);
    gr_buf_free(&pat);
    return rc;
}

/* ---- one sample */

typedef struct sample_ctx {
    redisReply *metrics, *workers, *active, *finished, *recent;
    redisReply **w_hash, **j_hash, **llen, **task, **lrange, **qcard, **stages;
    size_t nw, nj, ns, nq, nstages;
    char **qops; /* ops whose queues were read (borrowed from d->ops, or owned copies) */
    double *waits, *runs;
} sample_ctx;

static void free_replies(redisReply **r, size_t n)
{
    if (!r) return;
    for (size_t i = 0; i < n; i++)
        if (r[i]) freeReplyObject(r[i]);
    free(r);
}

static void sample_ctx_free(sample_ctx *c)
{
    redisReply *one[] = {c->metrics, c->workers, c->active, c->finished, c->recent};
    for (size_t i = 0; i < sizeof one / sizeof *one; i++)
        if (one[i]) freeReplyObject(one[i]);
    free_replies(c->w_hash, c->nw);
    free_replies(c->j_hash, c->nj);
    free_replies(c->llen, c->ns);
    free_replies(c->task, c->nw);
    free_replies(c->lrange, c->ns);
    free_replies(c->qcard, c->nq);
    free_replies(c->stages, c->nstages);
    if (c->qops)
        for (size_t i = 0; i < c->nq; i++) free(c->qops[i]);
    free(c->qops);
    free(c->waits);
    free(c->runs);
}

static redisReply **replies(size_t n)
{
    redisReply **r = calloc(n ? n : 1, sizeof *r);
    if (!r) gr_seterr(GR_ENOMEM, "out of memory");
    return r;
}

static int64_t card(pipe_t *p)
{
    redisReply *r = pipe_next(p, REDIS_REPLY_INTEGER);
    int64_t v = r ? r->integer : 0;
    if (r) freeReplyObject(r);
    return v;
}

/* Worker hash fields, in HMGET order. */
enum {
    WF_HOST,
    WF_PID,
    WF_OPS,
    WF_VERSION,
    WF_THREADS,
    WF_STATE,
    WF_TASK,
    WF_ATTEMPT,
    WF_RSS,
    WF_LAST_SEEN,
    WF_N
};
/* Job hash fields: name, state, nstages, n_* (GR_DASH_NSTATES), created, finished. */
#define JF_N (3 + GR_DASH_NSTATES + 2)

/* The counters of redis-keys.md (not the gauges): 0 until first counted. */
static const char *const known_counters[] = {"adopted",
                                             "cached",
                                             "cancelled",
                                             "dispatched",
                                             "done",
                                             "failed",
                                             "jobs_cancelled",
                                             "jobs_done",
                                             "jobs_failed",
                                             "jobs_pruned",
                                             "jobs_submitted",
                                             "requeued",
                                             "retried",
                                             "skipped",
                                             "stale",
                                             "submitted",
                                             "timeouts",
                                             "workers_lost",
                                             "workers_registered",
                                             NULL};

static int fill_counters(gr_dash *d, gr_dash_snap *s, const redisReply *m)
{
    size_t n = m->elements / 2, nknown = sizeof known_counters / sizeof *known_counters - 1;
    s->counters = calloc(n + nknown, sizeof *s->counters);
    if (!s->counters) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (!id_ok(m->element[2 * i]) || !rint64(m->element[2 * i + 1], &v)) continue;
        gr_dash_counter *c = &s->counters[s->ncounters];
        if (!(c->name = rstr(m->element[2 * i]))) return gr_seterr(GR_ENOMEM, "out of memory");
        c->value = v;
        c->rate = NAN;
        s->ncounters++;
    }
    qsort(s->counters, s->ncounters, sizeof *s->counters, cmp_counter);
    size_t have = s->ncounters;
    for (size_t k = 0; k < nknown; k++) {
        if (find_counter(s->counters, have, known_counters[k])) continue;
        gr_dash_counter *c = &s->counters[s->ncounters];
        if (!(c->name = strdup(known_counters[k]))) return gr_seterr(GR_ENOMEM, "out of memory");
        c->value = 0;
        c->rate = NAN;
        s->ncounters++;
    }
    qsort(s->counters, s->ncounters, sizeof *s->counters, cmp_counter);
    if (d->prev_ms && s->time_ms > d->prev_ms) {
        s->window_s = (double)(s->time_ms - d->prev_ms) / 1000.0;
        for (size_t i = 0; i < s->ncounters; i++) {
            const gr_dash_counter *o = find_counter(d->prev, d->nprev, s->counters[i].name);
            int64_t before = o ? o->value : 0;
            if (s->counters[i].value >= before)
                s->counters[i].rate = ((double)s->counters[i].value - (double)before) / s->window_s;
        }
    }
    return 0;
}

/* Keeps this sample's counters for the next sample's rates. */
static int keep_counters(gr_dash *d, const gr_dash_snap *s)
{
    gr_dash_counter *c = calloc(s->ncounters ? s->ncounters : 1, sizeof *c);
    if (!c) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < s->ncounters; i++) {
        c[i] = s->counters[i];
        if (!(c[i].name = strdup(s->counters[i].name))) {
            free_counters(c, i);
            return gr_seterr(GR_ENOMEM, "out of memory");
        }
    }
    free_counters(d->prev, d->nprev);
    d->prev = c;
    d->nprev = s->ncounters;
    d->prev_ms = s->time_ms;
    return 0;
}

int gr_dash_sample(gr_dash *d, gr_dash_snap **out)
{
    *out = NULL;
    if (!d->ctx && dash_connect(d)) return gr_errcode();
    gr_dash_snap *s = calloc(1, sizeof *s);
    sample_ctx c = {0};
    pipe_t p = {.d = d};
    int rc = 0;
#define NOMEM()                                                                                    \
    do {                                                                                           \
        rc = gr_seterr(GR_ENOMEM, "out of memory");                                                \
        goto fail;                                                                                 \
    } while (0)
    if (!s || !(s->redis = strdup(d->url)) || !(s->prefix = strdup(d->prefix))) NOMEM();
    s->wait.p50 = s->wait.p95 = s->wait.p99 = s->wait.max = NAN;
    s->run = s->wait;

    /* round 1: scalars and the lists everything else hangs on */
    char maxw[16], maxj[16], nrecent[16];
    snprintf(maxw, sizeof maxw, "%d", GR_DASH_MAX_ITEMS - 1);
    snprintf(maxj, sizeof maxj, "%d", d->max_jobs - 1);
    snprintf(nrecent, sizeof nrecent, "%d", GR_DASH_SAMPLE_JOBS - 1);
    pipe_cmd(&p, "TIME", NULL, NULL, NULL, NULL, NULL);
    pipe_cmd(&p, "HGETALL", "metrics", NULL, NULL, NULL, NULL);
    pipe_cmd(&p, "ZCARD", "leases", NULL, NULL, NULL, NULL);
    pipe_cmd(&p, "ZCARD", "delayed", NULL, NULL, NULL, NULL);
    pipe_cmd(&p, "SCARD", "resolve", NULL, NULL, NULL, NULL);
    pipe_cmd(&p, "ZCARD", "dead", NULL, NULL, NULL, NULL);
    pipe_cmd(&p, "ZCARD", "jobs", NULL, NULL, NULL, NULL);
    pipe_cmd(&p, "SCARD", "active", NULL, NULL, NULL, NULL);
    pipe_cmd(&p, "ZCARD", "workers", NULL, NULL, NULL, NULL);
    pipe_cmd(&p, "ZREVRANGE", "workers", NULL, NULL, NULL, "0", maxw, "WITHSCORES", NULL);
    pipe_cmd(&p, "SMEMBERS", "active", NULL, NULL, NULL, NULL);
    pipe_cmd(&p, "ZREVRANGE", "finished", NULL, NULL, NULL, "0", maxj, NULL);
    pipe_cmd(&p, "ZREVRANGE", "jobs", NULL, NULL, NULL, "0", nrecent, NULL);
    redisReply *t = pipe_next(&p, REDIS_REPLY_ARRAY);
    if (t) {
        int64_t sec, usec;
        if (t->elements == 2 && rint64(t->element[0], &sec) && rint64(t->element[1], &usec) &&
            sec >= 0 && sec < INT64_MAX / 1000 && usec >= 0 && usec < 1000000)
            s->time_ms = sec * 1000 + usec / 1000;
        else
            p.rc = gr_seterr(GR_EFORMAT, "redis %s: TIME: malformed reply", d->url);
        freeReplyObject(t);
    }
    c.metrics = pipe_next(&p, REDIS_REPLY_ARRAY);
    s->in_flight = card(&p);
    s->delayed = card(&p);
    s->resolving = card(&p);
    s->dead = card(&p);
    s->jobs_total = card(&p);
    s->jobs_active = card(&p);
    s->workers_total = card(&p);
    c.workers = pipe_next(&p, REDIS_REPLY_ARRAY);
    c.active = pipe_next(&p, REDIS_REPLY_ARRAY);
    c.finished = pipe_next(&p, REDIS_REPLY_ARRAY);
    c.recent = pipe_next(&p, REDIS_REPLY_ARRAY);
    if ((rc = pipe_end(&p))) goto fail;
    if ((rc = fill_counters(d, s, c.metrics))) goto fail;

    /* the ready:<op> keys: looked for now and then (SCAN walks the keyspace) */
    if (!d->scan_ms || s->time_ms - d->scan_ms >= RESCAN_MS || s->time_ms < d->scan_ms) {
        if ((rc = scan_ops(d))) goto fail;
        d->scan_ms = s->time_ms;
    }

    /* round 2: worker and job hashes, stage list lengths of the recent jobs */
    size_t nw = c.workers->elements / 2, nact = c.active->elements, nfin = c.finished->elements;
    if (nact > GR_DASH_MAX_ITEMS) nact = GR_DASH_MAX_ITEMS;
    c.nw = nw;
    c.nj = nact + nfin;
    c.ns = c.recent->elements;
    if (!(c.w_hash = replies(c.nw)) || !(c.j_hash = replies(c.nj)) || !(c.llen = replies(c.ns)) ||
        !(c.task = replies(c.nw)) || !(c.lrange = replies(c.ns)))
        NOMEM();
    for (size_t i = 0; i < nw; i++) {
        redisReply *id = c.workers->element[2 * i];
        if (!id_ok(id)) continue;
        pipe_cmd(&p, "HMGET", "worker:", id->str, NULL, NULL, "host", "pid", "ops", "version",
                 "threads", "state", "task", "attempt", "rss", "last_seen", NULL);
    }
    for (size_t i = 0; i < c.nj; i++) {
        redisReply *id = i < nact ? c.active->element[i] : c.finished->element[i - nact];
        if (!id_ok(id)) continue;
        pipe_cmd(&p, "HMGET", "job:", id->str, NULL, NULL, "name", "state", "nstages", "n_blocked",
                 "n_ready", "n_running", "n_done", "n_cached", "n_failed", "n_cancelled",
                 "n_skipped", "created", "finished", NULL);
    }
    for (size_t i = 0; i < c.ns; i++) {
        redisReply *id = c.recent->element[i];
        if (!id_ok(id)) continue;
        pipe_cmd(&p, "LLEN", "job:", id->str, ":stages", NULL, NULL);
    }
    for (size_t i = 0; i < nw; i++)
        if (id_ok(c.workers->element[2 * i])) c.w_hash[i] = pipe_next(&p, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < c.nj; i++) {
        redisReply *id = i < nact ? c.active->element[i] : c.finished->element[i - nact];
        if (id_ok(id)) c.j_hash[i] = pipe_next(&p, REDIS_REPLY_ARRAY);
    }
    for (size_t i = 0; i < c.ns; i++)
        if (id_ok(c.recent->element[i])) c.llen[i] = pipe_next(&p, REDIS_REPLY_INTEGER);
    if ((rc = pipe_end(&p))) goto fail;

    /* workers (their ops join the queue list: a served op shows depth 0) */
    for (size_t i = 0; i < d->nops; i++)
        if ((rc = add_op(&c.qops, &c.nq, d->ops[i]))) goto fail;
    s->workers = calloc(nw ? nw : 1, sizeof *s->workers);
    if (!s->workers) NOMEM();
    for (size_t i = 0; i < nw; i++) {
        redisReply *h = c.w_hash[i];
        if (!h || h->elements != WF_N || h->element[WF_HOST]->type == REDIS_REPLY_NIL)
            continue; /* gone between the two reads */
        gr_dash_worker *w = &s->workers[s->nworkers++];
        w->id = rstr(c.workers->element[2 * i]);
        w->host = rstr(h->element[WF_HOST]);
        w->state = rstr(h->element[WF_STATE]);
        w->version = rstr(h->element[WF_VERSION]);
        w->task = rstr(h->element[WF_TASK]);
        w->op = strdup("");
        w->p_msg = strdup("");
        char *ops = rstr(h->element[WF_OPS]);
        w->ops = ops ? ops_list(ops) : NULL;
        free(ops);
        if (!w->id || !w->host || !w->state || !w->version || !w->task || !w->op || !w->p_msg ||
            !w->ops)
            NOMEM();
        w->pid = rint_or(h->element[WF_PID], 0);
        w->threads = rint_or(h->element[WF_THREADS], 0);
        w->attempt = rint_or(h->element[WF_ATTEMPT], 0);
        w->rss = rint_or(h->element[WF_RSS], 0);
        int64_t seen = rint_or(h->element[WF_LAST_SEEN], 0);
        if (!seen) seen = (int64_t)rnum_or(c.workers->element[2 * i + 1], 0);
        w->heartbeat_age_ms = seen ? sub_sat(s->time_ms, seen) : -1;
        w->task_ms = NAN;
        if (!strcmp(w->state, "busy")) s->workers_busy++;
        /* each op it serves has a queue to show */
        for (char *q = w->ops, *e; q && *q; q = *e ? e + 1 : e) {
            e = strchr(q, ',');
            if (!e) e = q + strlen(q);
            char save = *e;
            *e = 0;
            if (*q) rc = add_op(&c.qops, &c.nq, q);
            *e = save;
            if (rc) goto fail;
        }
    }
    if (c.nq) qsort(c.qops, c.nq, sizeof *c.qops, cmp_str);

    /* the sample of recent stages: how many of each job's list */
    size_t left = GR_DASH_SAMPLE_STAGES, take[GR_DASH_SAMPLE_JOBS] = {0};
    for (size_t i = 0; i < c.ns && i < GR_DASH_SAMPLE_JOBS; i++) {
        int64_t len = c.llen[i] ? c.llen[i]->integer : 0;
        take[i] = len <= 0 ? 0 : ((size_t)len < left ? (size_t)len : left);
        left -= take[i];
    }

    /* round 3: the workers' tasks, the stage lists, the queue depths */
    if (!(c.qcard = replies(c.nq))) NOMEM();
    for (size_t i = 0; i < s->nworkers; i++)
        if (*s->workers[i].task)
            pipe_cmd(&p, "HMGET", "stage:", s->workers[i].task, NULL, NULL, "op", "p_done",
                     "p_total", "p_msg", "attempt_started", NULL);
    for (size_t i = 0; i < c.ns && i < GR_DASH_SAMPLE_JOBS; i++) {
        if (!take[i]) continue;
        char end[24];
        snprintf(end, sizeof end, "%zu", take[i] - 1);
        pipe_cmd(&p, "LRANGE", "job:", c.recent->element[i]->str, ":stages", NULL, "0", end, NULL);
    }
    for (size_t i = 0; i < c.nq; i++) pipe_cmd(&p, "ZCARD", "ready:", c.qops[i], NULL, NULL, NULL);
    for (size_t i = 0; i < s->nworkers; i++)
        if (*s->workers[i].task) c.task[i] = pipe_next(&p, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < c.ns && i < GR_DASH_SAMPLE_JOBS; i++)
        if (take[i]) c.lrange[i] = pipe_next(&p, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < c.nq; i++) c.qcard[i] = pipe_next(&p, REDIS_REPLY_INTEGER);
    if ((rc = pipe_end(&p))) goto fail;

    /* round 4: the sampled stages' timestamps */
    size_t nst = 0;
    for (size_t i = 0; i < c.ns; i++)
        if (c.lrange[i]) nst += c.lrange[i]->elements;
    if (!(c.stages = replies(nst)) || !(c.waits = calloc(nst + 1, sizeof *c.waits)) ||
        !(c.runs = calloc(nst + 1, sizeof *c.runs)))
        NOMEM();
    c.nstages = nst;
    for (size_t i = 0; i < c.ns; i++) {
        if (!c.lrange[i]) continue;
        s->sample_jobs++;
        for (size_t k = 0; k < c.lrange[i]->elements; k++) {
            redisReply *sid = c.lrange[i]->element[k];
            if (!id_ok(sid)) continue;
            pipe_cmd(&p, "HMGET", "stage:", c.recent->element[i]->str, ":", sid->str, "state",
                     "ready_us", "attempt_started", "finished", NULL);
        }
    }
    if ((rc = p.rc)) goto fail;
    size_t got = 0;
    for (size_t i = 0; i < c.ns; i++) {
        if (!c.lrange[i]) continue;
        for (size_t k = 0; k < c.lrange[i]->elements; k++)
            if (id_ok(c.lrange[i]->element[k])) c.stages[got++] = pipe_next(&p, REDIS_REPLY_ARRAY);
    }
    if ((rc = pipe_end(&p))) goto fail;
    size_t nwait = 0, nrun = 0;
    for (size_t i = 0; i < got; i++) {
        redisReply *v = c.stages[i];
        if (!v || v->elements != 4) continue;
        s->sample_stages++;
        int64_t ru, as, fin;
        int has_as = rint64(v->element[2], &as);
        if (has_as && rint64(v->element[1], &ru) && (double)ru / 1000.0 <= (double)as)
            c.waits[nwait++] = (double)as - (double)ru / 1000.0;
        if (reply_is(v->element[0], "done") && has_as && rint64(v->element[3], &fin) && fin >= as)
            c.runs[nrun++] = (double)fin - (double)as;
    }
    gr_dash_latency(c.waits, nwait, &s->wait);
    gr_dash_latency(c.runs, nrun, &s->run);

    /* queues */
    s->queues = calloc(c.nq ? c.nq : 1, sizeof *s->queues);
    if (!s->queues) NOMEM();
    for (size_t i = 0; i < c.nq; i++) {
        gr_dash_queue *q = &s->queues[s->nqueues++];
        if (!(q->op = strdup(c.qops[i]))) NOMEM();
        q->ready = c.qcard[i] ? c.qcard[i]->integer : 0;
        s->ready_total += q->ready;
        for (size_t k = 0; k < s->nworkers && !q->served; k++) {
            const char *o = s->workers[k].ops;
            size_t n = strlen(q->op);
            for (const char *f = strstr(o, q->op); f; f = strstr(f + 1, q->op))
                if ((f == o || f[-1] == ',') && (f[n] == ',' || !f[n])) {
                    q->served = 1;
                    break;
                }
        }
    }

    /* workers' current tasks */
    for (size_t i = 0; i < s->nworkers; i++) {
        gr_dash_worker *w = &s->workers[i];
        redisReply *h = c.task[i];
        if (!h || h->elements != 5) continue;
        free(w->op);
        free(w->p_msg);
        w->op = rstr(h->element[0]);
        w->p_msg = rstr(h->element[3]);
        if (!w->op || !w->p_msg) NOMEM();
        w->p_done = rnum_or(h->element[1], 0);
        w->p_total = rnum_or(h->element[2], 0);
        int64_t as;
        if (rint64(h->element[4], &as)) w->task_ms = (double)s->time_ms - (double)as;
    }
    qsort(s->workers, s->nworkers, sizeof *s->workers, cmp_worker);

    /* jobs: active newest first, then the most recently finished */
    s->jobs = calloc(c.nj ? c.nj : 1, sizeof *s->jobs);
    if (!s->jobs) NOMEM();
    size_t nactive_rows = 0;
    for (size_t i = 0; i < c.nj; i++) {
        redisReply *h = c.j_hash[i];
        if (!h || h->elements != JF_N || h->element[1]->type == REDIS_REPLY_NIL) continue;
        redisReply *id = i < nact ? c.active->element[i] : c.finished->element[i - nact];
        int dup = 0;
        for (size_t k = 0; k < s->njobs && i >= nact; k++)
            dup |= (size_t)strlen(s->jobs[k].id) == id->len &&
                   !memcmp(s->jobs[k].id, id->str, id->len);
        if (dup) continue;
        gr_dash_job *j = &s->jobs[s->njobs++];
        j->id = rstr(id);
        j->name = rstr(h->element[0]);
        j->state = rstr(h->element[1]);
        if (!j->id || !j->name || !j->state) NOMEM();
        j->nstages = rint_or(h->element[2], 0);
        for (int k = 0; k < GR_DASH_NSTATES; k++) j->n[k] = rint_or(h->element[3 + k], 0);
        j->created = rint_or(h->element[3 + GR_DASH_NSTATES], 0);
        j->finished = rint_or(h->element[4 + GR_DASH_NSTATES], 0);
        j->active = i < nact;
        if (i < nact) nactive_rows++;
    }
    qsort(s->jobs, nactive_rows, sizeof *s->jobs, cmp_job_created_desc);
    if (s->njobs > (size_t)d->max_jobs) {
        for (size_t i = (size_t)d->max_jobs; i < s->njobs; i++) {
            free(s->jobs[i].id);
            free(s->jobs[i].name);
            free(s->jobs[i].state);
        }
        s->njobs = (size_t)d->max_jobs;
    }

    if ((rc = keep_counters(d, s))) goto fail;
    sample_ctx_free(&c);
    *out = s;
    return 0;
fail:
#undef NOMEM
    if (!rc) rc = gr_seterr(GR_ENOMEM, "out of memory");
    pipe_end(&p);
    sample_ctx_free(&c);
    gr_dash_snap_free(&s);
    return rc;
}

/* ------------------------------------------------------------ JSON */

static void jkey(gr_buf *b, const char *k)
{
    gr_buf_json_str(b, k, strlen(k));
    gr_buf_putc(b, ':');
}

static void jstr(gr_buf *b, const char *k, const char *v)
{
    jkey(b, k);
    gr_buf_json_str(b, v, strlen(v));
}

static void jint(gr_buf *b, const char *k, int64_t v)
{
    jkey(b, k);
    gr_buf_printf(b, "%lld", (long long)v);
}

/* A number; large magnitudes are written here (gr_buf_json_num casts to long
 * long first, which is undefined beyond its range). */
static void jnumv(gr_buf *b, double v)
{
    if (isfinite(v) && fabs(v) >= 1e15)
        gr_buf_printf(b, "%.17g", v);
    else
        gr_buf_json_num(b, v);
}

static void jnum(gr_buf *b, const char *k, double v)
{
    jkey(b, k);
    jnumv(b, v);
}

static void jlat(gr_buf *b, const char *k, const gr_dash_lat *l)
{
    jkey(b, k);
    gr_buf_putc(b, '{');
    jint(b, "n", (int64_t)l->n);
    gr_buf_putc(b, ',');
    jnum(b, "p50", l->p50);
    gr_buf_putc(b, ',');
    jnum(b, "p95", l->p95);
    gr_buf_putc(b, ',');
    jnum(b, "p99", l->p99);
    gr_buf_putc(b, ',');
    jnum(b, "max", l->max);
    gr_buf_putc(b, '}');
}

int gr_dash_json(const gr_dash_snap *s, gr_buf *b)
{
    gr_buf_putc(b, '{');
    jstr(b, "redis", s->redis ? s->redis : "");
    gr_buf_putc(b, ',');
    jstr(b, "prefix", s->prefix ? s->prefix : "");
    gr_buf_putc(b, ',');
    jint(b, "time_ms", s->time_ms);
    gr_buf_putc(b, ',');
    jnum(b, "window_s", s->window_s > 0 ? s->window_s : NAN);
    gr_buf_puts(b, ",\"queues\":[");
    for (size_t i = 0; i < s->nqueues; i++) {
        gr_buf_puts(b, i ? ",{" : "{");
        jstr(b, "op", s->queues[i].op);
        gr_buf_putc(b, ',');
        jint(b, "ready", s->queues[i].ready);
        gr_buf_puts(b, ",\"served\":");
        gr_buf_puts(b, s->queues[i].served ? "true}" : "false}");
    }
    gr_buf_putc(b, ']');
    const struct {
        const char *k;
        int64_t v;
    } scalars[] = {{"ready", s->ready_total},
                   {"in_flight", s->in_flight},
                   {"delayed", s->delayed},
                   {"resolving", s->resolving},
                   {"dead", s->dead},
                   {"jobs_total", s->jobs_total},
                   {"jobs_active", s->jobs_active},
                   {"workers_total", s->workers_total},
                   {"workers_busy", s->workers_busy}};
    for (size_t i = 0; i < sizeof scalars / sizeof *scalars; i++) {
        gr_buf_putc(b, ',');
        jint(b, scalars[i].k, scalars[i].v);
    }
    gr_buf_puts(b, ",\"counters\":{");
    for (size_t i = 0; i < s->ncounters; i++) {
        if (i) gr_buf_putc(b, ',');
        jint(b, s->counters[i].name, s->counters[i].value);
    }
    gr_buf_puts(b, "},\"rates\":{");
    for (size_t i = 0; i < s->ncounters; i++) {
        if (i) gr_buf_putc(b, ',');
        jnum(b, s->counters[i].name, s->counters[i].rate);
    }
    gr_buf_puts(b, "},");
    jnum(b, "throughput", gr_dash_snap_rate(s, "done"));
    gr_buf_puts(b, ",\"failures\":{");
    jint(b, "failed", gr_dash_snap_counter(s, "failed"));
    gr_buf_putc(b, ',');
    jint(b, "retried", gr_dash_snap_counter(s, "retried"));
    gr_buf_putc(b, ',');
    jint(b, "timeouts", gr_dash_snap_counter(s, "timeouts"));
    gr_buf_putc(b, ',');
    jint(b, "requeued", gr_dash_snap_counter(s, "requeued"));
    gr_buf_putc(b, ',');
    jint(b, "dead", s->dead);
    gr_buf_putc(b, ',');
    jint(b, "delayed", s->delayed);
    gr_buf_puts(b, "},\"latency\":{");
    jint(b, "jobs", (int64_t)s->sample_jobs);
    gr_buf_putc(b, ',');
    jint(b, "stages", (int64_t)s->sample_stages);
    gr_buf_putc(b, ',');
    jlat(b, "wait_ms", &s->wait);
    gr_buf_putc(b, ',');
    jlat(b, "run_ms", &s->run);
    gr_buf_puts(b, "},\"workers\":[");
    for (size_t i = 0; i < s->nworkers; i++) {
        const gr_dash_worker *w = &s->workers[i];
        gr_buf_puts(b, i ? ",{" : "{");
        jstr(b, "worker", w->id);
        gr_buf_putc(b, ',');
        jstr(b, "host", w->host);
        gr_buf_putc(b, ',');
        jint(b, "pid", w->pid);
        gr_buf_putc(b, ',');
        jstr(b, "state", w->state);
        gr_buf_putc(b, ',');
        jkey(b, "task");
        if (*w->task)
            gr_buf_json_str(b, w->task, strlen(w->task));
        else
            gr_buf_puts(b, "null");
        gr_buf_putc(b, ',');
        jstr(b, "op", w->op);
        gr_buf_putc(b, ',');
        jint(b, "attempt", w->attempt);
        gr_buf_putc(b, ',');
        jnum(b, "task_ms", w->task_ms);
        gr_buf_putc(b, ',');
        jkey(b, "progress");
        if (*w->task && w->p_total > 0) {
            gr_buf_putc(b, '{');
            jnum(b, "done", w->p_done);
            gr_buf_putc(b, ',');
            jnum(b, "total", w->p_total);
            gr_buf_putc(b, ',');
            jstr(b, "message", w->p_msg);
            gr_buf_putc(b, '}');
        } else
            gr_buf_puts(b, "null");
        gr_buf_putc(b, ',');
        jint(b, "heartbeat_age_ms", w->heartbeat_age_ms);
        gr_buf_putc(b, ',');
        jint(b, "rss", w->rss);
        gr_buf_putc(b, ',');
        jint(b, "threads", w->threads);
        gr_buf_putc(b, ',');
        jstr(b, "version", w->version);
        gr_buf_puts(b, ",\"ops\":[");
        const char *o = w->ops;
        for (int first = 1; *o; first = 0) {
            const char *e = strchr(o, ',');
            size_t n = e ? (size_t)(e - o) : strlen(o);
            if (!first) gr_buf_putc(b, ',');
            gr_buf_json_str(b, o, n);
            o += n + (e ? 1 : 0);
        }
        gr_buf_puts(b, "]}");
    }
    gr_buf_puts(b, "],\"jobs\":[");
    for (size_t i = 0; i < s->njobs; i++) {
        const gr_dash_job *j = &s->jobs[i];
        int64_t fin = 0;
        for (int k = GR_DASH_DONE; k < GR_DASH_NSTATES; k++) fin += j->n[k];
        gr_buf_puts(b, i ? ",{" : "{");
        jstr(b, "job", j->id);
        gr_buf_putc(b, ',');
        jstr(b, "name", j->name);
        gr_buf_putc(b, ',');
        jstr(b, "state", j->state);
        gr_buf_puts(b, ",\"active\":");
        gr_buf_puts(b, j->active ? "true," : "false,");
        jint(b, "nstages", j->nstages);
        gr_buf_putc(b, ',');
        jint(b, "finished_stages", fin);
        gr_buf_puts(b, ",\"counts\":{");
        for (int k = 0; k < GR_DASH_NSTATES; k++) {
            if (k) gr_buf_putc(b, ',');
            jint(b, state_names[k], j->n[k]);
        }
        gr_buf_puts(b, "},");
        jint(b, "created", j->created);
        gr_buf_putc(b, ',');
        jkey(b, "finished");
        if (j->finished)
            gr_buf_printf(b, "%lld", (long long)j->finished);
        else
            gr_buf_puts(b, "null");
        gr_buf_putc(b, '}');
    }
    gr_buf_puts(b, "]}");
    return b->oom ? gr_seterr(GR_ENOMEM, "out of memory") : 0;
}

/* ------------------------------------------------------------ text */

typedef struct text {
    gr_buf *out;
    int width, height, lines;
} text;

/* Printable ASCII copy of s in dst (size bytes), cut to fit: other bytes
 * become '?', a cut string ends in '~'. Pads with spaces to pad (if > 0). */
static const char *fit(char *dst, size_t size, const char *s, int pad)
{
    size_t n = 0, max = size - 1;
    if (pad > 0 && (size_t)pad < max) max = (size_t)pad;
    for (; s && s[n] && n < max; n++) dst[n] = (s[n] >= ' ' && s[n] < 0x7f) ? s[n] : '?';
    if (s && s[n] && n) dst[n - 1] = '~';
    for (; pad > 0 && n < (size_t)pad && n < size - 1; n++) dst[n] = ' ';
    dst[n] = 0;
    return dst;
}

static int room(const text *t)
{
    return t->height <= 0 ? INT_MAX : t->height - t->lines;
}

/* Appends one line, cut to the width. */
static void emit(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(text *t, const char *fmt, ...)
{
    if (room(t) <= 0) return;
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof tmp) n = sizeof tmp - 1;
    if (n > t->width) n = t->width;
    while (n > 0 && tmp[n - 1] == ' ') n--; /* no trailing blanks */
    gr_buf_append(t->out, tmp, (size_t)n);
    gr_buf_putc(t->out, '\n');
    t->lines++;
}

/* Rows that fit for a table with nrows rows when reserve lines must stay
 * free below it (heading not counted). */
static size_t rows_fit(const text *t, size_t nrows, int reserve)
{
    int avail = room(t) - 1 - reserve; /* the heading */
    if (avail <= 0) return 0;
    if (nrows <= (size_t)avail) return nrows;
    return avail > 1 ? (size_t)avail - 1 : 0; /* and a "... more" line */
}

int gr_dash_text(const gr_dash_snap *s, gr_buf *out, int width, int height)
{
    text t = {
        .out = out, .width = width < 40 ? 40 : (width > 1000 ? 1000 : width), .height = height};
    char a[64], b[64], c[64], d[64], e[64], f[256], g[256], h[1024];
    time_t secs = (time_t)(s->time_ms / 1000);
    struct tm tm;
    char when[32] = "?";
    if (localtime_r(&secs, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    emit(&t, "graft top   redis %s   prefix %s   %s", fit(f, sizeof f, s->redis, 0),
         fit(g, sizeof g, s->prefix, 0), when);
    emit(&t,
         "jobs %lld active / %lld kept   workers %lld (%lld busy)   ready %lld   in flight %lld   "
         "retry wait %lld   resolving %lld",
         (long long)s->jobs_active, (long long)s->jobs_total, (long long)s->workers_total,
         (long long)s->workers_busy, (long long)s->ready_total, (long long)s->in_flight,
         (long long)s->delayed, (long long)s->resolving);
    if (s->window_s > 0)
        emit(&t, "throughput %s done   %s dispatched   %s failed   %s retried   (over %.1fs)",
             gr_dash_fmt_rate(a, sizeof a, gr_dash_snap_rate(s, "done")),
             gr_dash_fmt_rate(b, sizeof b, gr_dash_snap_rate(s, "dispatched")),
             gr_dash_fmt_rate(c, sizeof c, gr_dash_snap_rate(s, "failed")),
             gr_dash_fmt_rate(d, sizeof d, gr_dash_snap_rate(s, "retried")), s->window_s);
    else
        emit(&t, "throughput -   (a rate needs two samples: --interval S)");
    emit(&t, "wait  p50 %s  p95 %s  p99 %s  max %s   (%zu of %zu stages in the last %zu jobs)",
         gr_dash_fmt_ms(a, sizeof a, s->wait.p50), gr_dash_fmt_ms(b, sizeof b, s->wait.p95),
         gr_dash_fmt_ms(c, sizeof c, s->wait.p99), gr_dash_fmt_ms(d, sizeof d, s->wait.max),
         s->wait.n, s->sample_stages, s->sample_jobs);
    emit(&t, "run   p50 %s  p95 %s  p99 %s  max %s   (%zu done)",
         gr_dash_fmt_ms(a, sizeof a, s->run.p50), gr_dash_fmt_ms(b, sizeof b, s->run.p95),
         gr_dash_fmt_ms(c, sizeof c, s->run.p99), gr_dash_fmt_ms(d, sizeof d, s->run.max),
         s->run.n);
    emit(&t,
         "failures %lld failed (%lld dead)   %lld retried   %lld timeouts   %lld requeued "
         "(lost workers)   %lld stale",
         (long long)gr_dash_snap_counter(s, "failed"), (long long)s->dead,
         (long long)gr_dash_snap_counter(s, "retried"),
         (long long)gr_dash_snap_counter(s, "timeouts"),
         (long long)gr_dash_snap_counter(s, "requeued"),
         (long long)gr_dash_snap_counter(s, "stale"));

    /* queues: at most a few lines when the screen is short */
    int later = 6; /* lines kept for the worker and job tables */
    emit(&t, "%s", "");
    size_t nq = rows_fit(&t, s->nqueues ? s->nqueues : 1, later);
    emit(&t, "%-24s %8s", "OP", "READY");
    if (!s->nqueues) emit(&t, "(no queue: no ready:<op> key and no worker)");
    for (size_t i = 0; i < nq && i < s->nqueues; i++)
        emit(&t, "%s %8lld%s", fit(f, sizeof f, s->queues[i].op, 24), (long long)s->queues[i].ready,
             s->queues[i].served ? "" : "   (no worker serves it)");
    if (nq < s->nqueues) emit(&t, "... %zu more ops", s->nqueues - nq);

    /* workers */
    emit(&t, "%s", "");
    size_t nw = rows_fit(&t, s->nworkers ? s->nworkers : 1, 3);
    int taskw = t.width - (20 + 1 + 12 + 1 + 7 + 1 + 5 + 1 + 6 + 1 + 8 + 1);
    if (taskw < 8) taskw = 8;
    emit(&t, "%-20s %-12s %7s %-5s %6s %8s %s", "WORKER", "HOST", "PID", "STATE", "BEAT", "RSS",
         "TASK");
    if (!s->nworkers) emit(&t, "(no worker registered)");
    for (size_t i = 0; i < nw && i < s->nworkers; i++) {
        const gr_dash_worker *w = &s->workers[i];
        gr_buf task = {0};
        if (*w->task) {
            gr_buf_printf(&task, "%s %s", w->task, w->op);
            if (!isnan(w->task_ms))
                gr_buf_printf(&task, " %s", gr_dash_fmt_ms(a, sizeof a, w->task_ms));
            if (w->p_total > 0)
                gr_buf_printf(&task, " %.0f/%.0f %s", w->p_done, w->p_total, w->p_msg);
        } else
            gr_buf_puts(&task, "-");
        emit(&t, "%s %s %7lld %s %6s %8s %s", fit(f, sizeof f, w->id, 20),
             fit(g, sizeof g, w->host, 12), (long long)w->pid, fit(e, sizeof e, w->state, 5),
             w->heartbeat_age_ms < 0 ? "-"
                                     : gr_dash_fmt_ms(a, sizeof a, (double)w->heartbeat_age_ms),
             gr_dash_fmt_bytes(b, sizeof b, (double)w->rss),
             fit(h, sizeof h, task.data ? task.data : "", 0));
        gr_buf_free(&task);
    }
    if (nw < s->nworkers) emit(&t, "... %zu more workers", s->nworkers - nw);

    /* jobs */
    emit(&t, "%s", "");
    size_t nj = rows_fit(&t, s->njobs ? s->njobs : 1, 0);
    int barw = t.width - (18 + 1 + 10 + 1 + 13 + 1 + 2) - 40;
    if (barw > 40) barw = 40;
    if (barw < 10) barw = 10;
    emit(&t, "%-18s %-10s %13s %-*s %s", "JOB", "STATE", "DONE/STAGES", barw + 2, "PROGRESS",
         "COUNTS");
    if (!s->njobs) emit(&t, "(no job)");
    for (size_t i = 0; i < nj && i < s->njobs; i++) {
        const gr_dash_job *j = &s->jobs[i];
        int64_t fin = 0;
        for (int k = GR_DASH_DONE; k < GR_DASH_NSTATES; k++) fin += j->n[k];
        gr_buf counts = {0};
        for (int k = 0; k < GR_DASH_NSTATES; k++)
            if (j->n[k])
                gr_buf_printf(&counts, "%s%s %lld", counts.len ? " " : "", state_names[k],
                              (long long)j->n[k]);
        char bar[64];
        char frac[40];
        snprintf(frac, sizeof frac, "%lld/%lld", (long long)fin, (long long)j->nstages);
        emit(&t, "%s %s %13s %s %s", fit(f, sizeof f, j->id, 18), fit(g, sizeof g, j->state, 10),
             frac, gr_dash_bar(bar, sizeof bar, barw, j->n), counts.data ? counts.data : "");
        gr_buf_free(&counts);
    }
    if (nj < s->njobs) emit(&t, "... %zu more jobs", s->njobs - nj);
    return out->oom ? gr_seterr(GR_ENOMEM, "out of memory") : 0;
}
