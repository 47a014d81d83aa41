/* gr_rconn: pipelined Redis commands with callbacks over one hiredis
 * context whose socket is non-blocking once connected (the broker's event
 * loop polls it beside its ZeroMQ socket), script loading, reconnect with
 * backoff. */
#include "gr_rconn.h"
#include "gr_err.h"
#include "gr_log.h"
#include "gr_lua.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef struct pending {
    gr_rconn_cb cb;
    void *ud;
    char *cmd; /* formatted command, kept to resend after NOSCRIPT */
    int len;
    int resent;
} pending;

struct gr_rconn {
    char *url;
    char *host; /* NULL for a unix socket */
    char *path;
    int port;
    int db;
    char *password;
    int timeout_ms;
    redisContext *ctx;
    uint64_t epoch;
    int64_t retry_at_ms;
    int backoff_ms;
    int outage_logged;
    char sha[GR_LUA_COUNT][41];
    pending *q;
    size_t qhead, qlen, qcap; /* ring of commands sent and not yet answered */
    int in_pump;
    int wpending;         /* bytes queued that the socket has not taken yet */
    int64_t last_read_ms; /* last reply bytes (or first command after idle) */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_url(gr_rconn *c, const char *url)
{
    const char *p = url;
    if (!strncmp(p, "unix://", 7)) {
        c->path = strdup(p + 7);
        if (!c->path || !c->path[0])
            return gr_seterr(GR_EINVAL, "redis URL '%s': no socket path", url);
        return 0;
    }
    if (!strncmp(p, "redis://", 8)) p += 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        c->password = strndup(pw, (size_t)(at - pw));
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *hend = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(hend - p));
    c->port = 6379;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != hend || port <= 0 || port > 65535)
            return gr_seterr(GR_EINVAL, "redis URL '%s': bad port", url);
        c->port = (int)port;
        hend = colon;
    }
    if (hend == p) return gr_seterr(GR_EINVAL, "redis URL '%s': no host", url);
    c->host = strndup(p, (size_t)(hend - p));
    if (slash && slash[1]) {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (*end || db < 0 || db > 1000000)
            return gr_seterr(GR_EINVAL, "redis URL '%s': bad database number", url);
        c->db = (int)db;
    }
    if (!c->host) return gr_seterr(GR_ENOMEM, "out of memory");
    return 0;
}

gr_rconn *gr_rconn_new(const char *url, int timeout_ms)
{
    gr_rconn *c = calloc(1, sizeof *c);
    if (!c) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    c->url = strdup(url);
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    c->backoff_ms = BACKOFF_MIN_MS;
    if (!c->url || parse_url(c, url)) {
        if (!c->url) gr_seterr(GR_ENOMEM, "out of memory");
        gr_rconn_destroy(&c);
        return NULL;
    }
    for (int i = 0; i < GR_LUA_COUNT; i++)
        if (!gr_lua_src[i]) {
            gr_seterr(GR_EINVAL, "broker script %d is missing from the build", i);
            gr_rconn_destroy(&c);
            return NULL;
        }
    return c;
}

static void fail_pending(gr_rconn *c)
{
    /* callbacks may queue more commands: those fail at once (we are down) */
    while (c->qlen) {
        pending p = c->q[c->qhead];
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
        free(p.cmd);
        if (p.cb) p.cb(p.ud, NULL);
    }
}

static void mark_down(gr_rconn *c, const char *why)
{
    if (c->ctx) {
        if (!c->outage_logged)
            GR_WARN("broker", "redis %s: %s; reconnecting with backoff", c->url, why);
        c->outage_logged = 1;
        redisFree(c->ctx);
        c->ctx = NULL;
    }
    c->retry_at_ms = mono_ms() + c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    fail_pending(c);
}

void gr_rconn_destroy(gr_rconn **pc)
{
    gr_rconn *c = pc ? *pc : NULL;
    if (!c) return;
    if (c->ctx) redisFree(c->ctx);
    c->ctx = NULL;
    fail_pending(c);
    free(c->q);
    free(c->url);
    free(c->host);
    free(c->path);
    free(c->password);
    free(c);
    *pc = NULL;
}

/* The socket is blocking while connecting and for gr_rconn_call, and
 * non-blocking for the pipeline (hiredis then returns instead of waiting). */
static int set_blocking(gr_rconn *c, int on)
{
    int fl = fcntl(c->ctx->fd, F_GETFL);
    if (fl < 0 || fcntl(c->ctx->fd, F_SETFL, on ? fl & ~O_NONBLOCK : fl | O_NONBLOCK) < 0)
        return gr_seterr(GR_ENET, "redis %s: fcntl: %s", c->url, strerror(errno));
    if (on)
        c->ctx->flags |= REDIS_BLOCK;
    else
        c->ctx->flags &= ~REDIS_BLOCK;
    return 0;
}

static redisReply *sync_cmd(gr_rconn *c, int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(c->ctx, argc, argv, lens);
    if (!r)
        gr_seterr(GR_ENET, "redis %s: %s", c->url,
                  c->ctx->errstr[0] ? c->ctx->errstr : "I/O error");
    return r;
}

static int load_scripts(gr_rconn *c)
{
    for (int i = 0; i < GR_LUA_COUNT; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", gr_lua_src[i]};
        size_t lens[3] = {6, 4, strlen(gr_lua_src[i])};
        redisReply *r = sync_cmd(c, 3, argv, lens);
        if (!r) return GR_ENET;
        if (r->type != REDIS_REPLY_STRING || r->len != 40) {
            gr_seterr(GR_EINVAL, "redis %s: SCRIPT LOAD of broker script %d failed: %s", c->url, i,
                      r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            freeReplyObject(r);
            return GR_EINVAL;
        }
        memcpy(c->sha[i], r->str, 40);
        c->sha[i][40] = 0;
        freeReplyObject(r);
    }
    return 0;
}

static int connect_now(gr_rconn *c)
{
    struct timeval tv = {c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000};
    c->ctx = c->path ? redisConnectUnixWithTimeout(c->path, tv)
                     : redisConnectWithTimeout(c->host, c->port, tv);
    if (!c->ctx) return gr_seterr(GR_ENOMEM, "redis %s: out of memory", c->url);
    if (c->ctx->err) return gr_seterr(GR_ENET, "redis %s: %s", c->url, c->ctx->errstr);
    redisSetTimeout(c->ctx, tv);
    if (!c->path) redisEnableKeepAlive(c->ctx);
    if (c->password) {
        const char *argv[2] = {"AUTH", c->password};
        size_t lens[2] = {4, strlen(c->password)};
        redisReply *r = sync_cmd(c, 2, argv, lens);
        if (!r) return GR_ENET;
        int bad = r->type == REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (bad) return gr_seterr(GR_EINVAL, "redis %s: authentication failed", c->url);
    }
    if (c->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        redisReply *r = sync_cmd(c, 2, argv, lens);
        if (!r) return GR_ENET;
        int bad = r->type == REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (bad) return gr_seterr(GR_EINVAL, "redis %s: cannot select database %d", c->url, c->db);
    }
    int rc = load_scripts(c);
    return rc ? rc : set_blocking(c, 0);
}

int gr_rconn_ensure(gr_rconn *c)
{
    if (c->ctx) return 1;
    if (mono_ms() < c->retry_at_ms) return 0;
    if (connect_now(c)) {
        if (!c->outage_logged) GR_WARN("broker", "%s; retrying with backoff", gr_errmsg());
        c->outage_logged = 1;
        if (c->ctx) redisFree(c->ctx);
        c->ctx = NULL;
        mark_down(c, gr_errmsg());
        return 0;
    }
    if (c->outage_logged) GR_INFO("broker", "redis %s: connected again", c->url);
    c->outage_logged = 0;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->epoch++;
    return 1;
}

int gr_rconn_up(const gr_rconn *c)
{
    return c->ctx != NULL;
}

uint64_t gr_rconn_epoch(const gr_rconn *c)
{
    return c->epoch;
}

size_t gr_rconn_pending(const gr_rconn *c)
{
    return c->qlen;
}

static int push_pending(gr_rconn *c, pending p)
{
    if (c->qlen == c->qcap) {
        size_t nc = c->qcap ? c->qcap * 2 : 64;
        pending *q = malloc(nc * sizeof *q);
        if (!q) return gr_seterr(GR_ENOMEM, "out of memory queueing a redis command");
        for (size_t i = 0; i < c->qlen; i++) q[i] = c->q[(c->qhead + i) % c->qcap];
        free(c->q);
        c->q = q;
        c->qhead = 0;
        c->qcap = nc;
    }
    c->q[(c->qhead + c->qlen) % c->qcap] = p;
    c->qlen++;
    return 0;
}

int gr_rconn_cmd(gr_rconn *c, gr_rconn_cb cb, void *ud, int argc, const char **argv,
                 const size_t *lens)
{
    if (!c->ctx) {
        if (cb) cb(ud, NULL);
        return 0;
    }
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0 || !cmd) {
        if (cb) cb(ud, NULL);
        return gr_seterr(GR_ENOMEM, "out of memory formatting a redis command");
    }
    if (redisAppendFormattedCommand(c->ctx, cmd, (size_t)len) != REDIS_OK) {
        free(cmd);
        if (cb) cb(ud, NULL);
        mark_down(c, "cannot queue a command");
        return 0;
    }
    if (!c->qlen) c->last_read_ms = mono_ms(); /* the reply clock starts now */
    c->wpending = 1;
    if (push_pending(c, (pending){cb, ud, cmd, len, 0})) {
        /* the command is on its way but nobody waits for its reply: drop the
         * connection so replies cannot go to the wrong callbacks */
        free(cmd);
        if (cb) cb(ud, NULL);
        mark_down(c, "out of memory");
        return GR_ENOMEM;
    }
    return 0;
}

#define MAX_ARGS_STACK 64

int gr_rconn_script(gr_rconn *c, int script, gr_rconn_cb cb, void *ud, int argc, const char **argv,
                    const size_t *lens)
{
    const char *sv[MAX_ARGS_STACK];
    size_t sl[MAX_ARGS_STACK];
    const char **v = sv;
    size_t *l = sl;
    if (argc + 3 > MAX_ARGS_STACK) {
        v = malloc((size_t)(argc + 3) * sizeof *v);
        l = malloc((size_t)(argc + 3) * sizeof *l);
        if (!v || !l) {
            free(v);
            free(l);
            if (cb) cb(ud, NULL);
            return gr_seterr(GR_ENOMEM, "out of memory");
        }
    }
    v[0] = "EVALSHA";
    l[0] = 7;
    v[1] = c->sha[script];
    l[1] = 40;
    v[2] = "0";
    l[2] = 1;
    for (int i = 0; i < argc; i++) {
        v[3 + i] = argv[i];
        l[3 + i] = lens[i];
    }
    int rc = gr_rconn_cmd(c, cb, ud, argc + 3, v, l);
    if (v != sv) {
        free(v);
        free(l);
    }
    return rc;
}

/* One reply for the oldest command: its callback, or (NOSCRIPT after the
 * script cache was flushed) the scripts queued again and then the command.
 * Returns 0, or -1 when the connection went down. */
static int handle_reply(gr_rconn *c, redisReply *r)
{
    pending p = c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8) && !p.resent) {
        /* Redis runs one connection's commands in order */
        freeReplyObject(r);
        int bad = 0;
        for (int i = 0; i < GR_LUA_COUNT && !bad; i++) {
            const char *argv[3] = {"SCRIPT", "LOAD", gr_lua_src[i]};
            size_t lens[3] = {6, 4, strlen(gr_lua_src[i])};
            bad = gr_rconn_cmd(c, NULL, NULL, 3, argv, lens) != 0 || !c->ctx;
        }
        if (bad || redisAppendFormattedCommand(c->ctx, p.cmd, (size_t)p.len) != REDIS_OK) {
            free(p.cmd);
            if (p.cb) p.cb(p.ud, NULL);
            if (c->ctx) mark_down(c, "cannot reload scripts");
            return -1;
        }
        p.resent = 1;
        c->wpending = 1;
        if (push_pending(c, p)) {
            free(p.cmd);
            if (p.cb) p.cb(p.ud, NULL);
            mark_down(c, "out of memory");
            return -1;
        }
        return 0;
    }
    if (r->type == REDIS_REPLY_ERROR)
        GR_DEBUG("broker", "redis error reply: %.*s", (int)r->len, r->str);
    free(p.cmd);
    if (p.cb) p.cb(p.ud, r);
    freeReplyObject(r);
    return 0;
}

int gr_rconn_fd(const gr_rconn *c)
{
    return c->ctx ? c->ctx->fd : -1;
}

int gr_rconn_want_write(const gr_rconn *c)
{
    return c->ctx && c->wpending;
}

static void write_some(gr_rconn *c)
{
    int done = 0;
    if (c->ctx && c->wpending) {
        if (redisBufferWrite(c->ctx, &done) != REDIS_OK)
            mark_down(c, c->ctx->errstr[0] ? c->ctx->errstr : "write failed");
        else
            c->wpending = !done;
    }
}

void gr_rconn_pump(gr_rconn *c, int readable)
{
    if (c->in_pump || !c->ctx) return; /* a callback's commands go out below */
    c->in_pump = 1;
    write_some(c);
    if (c->ctx && readable && !c->qlen) {
        /* nothing is owed, so this is Redis closing the connection (or a
         * reply nobody asked for): notice it now rather than spin on a
         * readable socket until the next command */
        void *rv = NULL;
        if (redisBufferRead(c->ctx) != REDIS_OK)
            mark_down(c, c->ctx->errstr[0] ? c->ctx->errstr : "connection lost");
        else if (redisGetReplyFromReader(c->ctx, &rv) != REDIS_OK || rv) {
            if (rv) freeReplyObject(rv);
            mark_down(c, "a reply no command asked for");
        }
    }
    int got = 0;
    while (c->ctx && c->qlen) {
        void *rv = NULL;
        if (redisGetReplyFromReader(c->ctx, &rv) != REDIS_OK) {
            mark_down(c, c->ctx->errstr[0] ? c->ctx->errstr : "bad reply");
            break;
        }
        if (!rv) {
            /* one read a pump, and only when poll saw data: an empty read is
             * a wasted system call on every loop */
            if (got || !readable) break;
            got = 1;
            if (redisBufferRead(c->ctx) != REDIS_OK) { /* EAGAIN is not an error */
                mark_down(c, c->ctx->errstr[0] ? c->ctx->errstr : "connection lost");
                break;
            }
            continue;
        }
        c->last_read_ms = mono_ms();
        if (handle_reply(c, rv)) break;
        write_some(c); /* what the callback queued */
    }
    if (c->ctx && c->qlen && mono_ms() - c->last_read_ms > c->timeout_ms)
        mark_down(c, "no reply within the timeout");
    if (!c->ctx) fail_pending(c);
    c->in_pump = 0;
}

void gr_rconn_flush(gr_rconn *c)
{
    if (c->in_pump) return; /* a callback's commands are read by the outer loop */
    int readable = 0;
    while (c->ctx && c->qlen) {
        gr_rconn_pump(c, readable);
        if (!c->ctx || !c->qlen) break;
        struct pollfd pf = {c->ctx->fd, (short)(POLLIN | (c->wpending ? POLLOUT : 0)), 0};
        int wait = (int)(c->timeout_ms - (mono_ms() - c->last_read_ms));
        int n = poll(&pf, 1, wait > 0 ? (wait < 100 ? wait : 100) : 0);
        if (n < 0 && errno != EINTR) {
            mark_down(c, strerror(errno));
            break;
        }
        readable = n > 0 && (pf.revents & (POLLIN | POLLHUP | POLLERR));
    }
    if (!c->ctx) fail_pending(c);
}

redisReply *gr_rconn_call(gr_rconn *c, int argc, const char **argv, const size_t *lens)
{
    if (!c->ctx && !gr_rconn_ensure(c)) {
        gr_seterr(GR_ENET, "redis %s is not reachable", c->url);
        return NULL;
    }
    gr_rconn_flush(c);
    if (!c->ctx) {
        gr_seterr(GR_ENET, "redis %s is not reachable", c->url);
        return NULL;
    }
    redisReply *r = set_blocking(c, 1) ? NULL : sync_cmd(c, argc, argv, lens);
    if (!r || set_blocking(c, 0)) {
        if (r) freeReplyObject(r);
        r = NULL;
        mark_down(c, gr_errmsg());
    }
    return r;
}

/* ---- argument lists ---- */

void gr_rargs_add(gr_rargs *a, const char *s, size_t n)
{
    if (a->oom) return;
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 16;
        char **v = realloc(a->v, nc * sizeof *v);
        if (!v) {
            a->oom = 1;
            return;
        }
        a->v = v;
        size_t *l = realloc(a->len, nc * sizeof *l);
        if (!l) {
            a->oom = 1;
            return;
        }
        a->len = l;
        a->cap = nc;
    }
    char *c = malloc(n + 1);
    if (!c) {
        a->oom = 1;
        return;
    }
    if (n) memcpy(c, s, n);
    c[n] = 0;
    a->v[a->n] = c;
    a->len[a->n] = n;
    a->n++;
}

void gr_rargs_str(gr_rargs *a, const char *s)
{
    gr_rargs_add(a, s ? s : "", s ? strlen(s) : 0);
}

void gr_rargs_int(gr_rargs *a, int64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof b, "%lld", (long long)v);
    gr_rargs_add(a, b, (size_t)n);
}

void gr_rargs_reset(gr_rargs *a)
{
    for (size_t i = 0; i < a->n; i++) free(a->v[i]);
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof *a);
}
