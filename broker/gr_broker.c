/* gr_broker: the broker's event loop. Messages are decoded by gr_wire, every
 * state change is one Lua script in Redis (schemas/lua), queued on a
 * pipelined connection and answered in callbacks; the only memory the broker
 * keeps is what it can rebuild: connected workers, watchers and hints about
 * which ready queues may be non-empty. */
#include "gr_broker.h"
#include "gr_buf.h"
#include "gr_cas.h"
#include "gr_err.h"
#include "gr_json.h"
#include "gr_log.h"
#include "gr_lua.h"
#include "gr_pipeline.h"
#include "gr_rconn.h"
#include "gr_resolve.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define LOG "broker"

#define RECV_BATCH       1024  /* messages handled before Redis is flushed */
#define TICK_MS          50    /* leases, timeouts, retries */
#define WATCH_MS         50    /* event streams of watched jobs */
#define SECOND_MS        1000  /* metrics, recovery, dispatch hints */
#define PRUNE_MS         60000 /* retention */
#define TICK_LIMIT       1000  /* entries per kind per tick */
#define RECOVER_LIMIT    1000
#define PRUNE_LIMIT      1000
#define REPLAY_MAX       100000 /* DONE/FAIL kept while Redis is away */
#define LOGGED_PEERS_MAX 1024
#define LIST_DEFAULT     100
#define LIST_MAX         10000
#define XREAD_COUNT      1000
#define SUBMIT_CHUNK     2000 /* stages per submit.lua call */
/* A reply slower than this counts as Redis gone. The longest script is the
 * one finishing a job, which sets the retention on each of its stage keys
 * (100,000 stages: well under a second on an idle machine). */
#define REDIS_TIMEOUT_MS 10000

/* ------------------------------------------------------------------ */
/* state                                                               */

typedef struct bworker {
    char *wid;
    uint8_t peer[GR_WIRE_MAX_PEER];
    size_t peer_len;
    char **ops;
    size_t nops;
    char *ops_json;
    char *host, *version;
    int64_t pid, threads, rss;
    char *task; /* the task it runs (NULL: idle) */
    int64_t attempt;
    int inflight;      /* a script that may hand it a task is queued */
    int64_t last_seen; /* monotonic ms */
    int64_t last_hb_write;
    int gone; /* a send found its connection closed: forgotten at the next timer */
} bworker;

typedef struct opflag {
    char *op;
    uint64_t gen; /* bumped whenever the queue may have gained work */
    int maybe;    /* the ready queue may be non-empty */
} opflag;

typedef struct watcher {
    uint8_t peer[GR_WIRE_MAX_PEER];
    size_t peer_len;
    char *jid;
    char *last; /* last event id seen */
    int inflight;
} watcher;

typedef struct replay {
    int cmd;
    gr_json *body;
    uint8_t peer[GR_WIRE_MAX_PEER];
    size_t peer_len;
} replay;

typedef struct peerlog {
    uint8_t peer[GR_WIRE_MAX_PEER];
    size_t len;
} peerlog;

struct gr_broker {
    gr_broker_opts o;
    char *bind, *redis_url, *prefix, *store;
    void *zctx, *sock;
    gr_rconn *rc;
    gr_cas *cas;
    gr_wire_stats ws;
    bworker **w;
    size_t nw, wcap;
    opflag *ops;
    size_t nops, opscap;
    watcher **watch;
    size_t nwatch, watchcap;
    replay *rq;
    size_t nrq, rqcap;
    peerlog *logged;
    size_t nlogged;
    uint64_t suppressed_logs;
    int64_t next_tick, next_watch, next_hb, next_second, next_prune;
    int64_t grace_until, last_timers;
    uint64_t epoch_seen;
    uint64_t rng;
    int64_t lease_ms;
    /* periodic scripts still owed a reply: not queued again meanwhile (a
     * slow Redis must not pile them up) */
    int tick_busy, recover_busy, prune_busy;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t rnd(gr_broker *b)
{
    /* xorshift64*: jitter and job ids, not security */
    b->rng ^= b->rng >> 12;
    b->rng ^= b->rng << 25;
    b->rng ^= b->rng >> 27;
    return b->rng * 2685821657736338717ull;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

void gr_broker_opts_default(gr_broker_opts *o)
{
    if (!o->bind) o->bind = "tcp://*:5555";
    if (!o->redis_url) o->redis_url = "redis://127.0.0.1:6379";
    if (!o->prefix) o->prefix = "graft:";
    if (o->heartbeat_ms <= 0) o->heartbeat_ms = 1000;
    if (o->liveness <= 0) o->liveness = 3;
    if (o->retention_s <= 0) o->retention_s = 604800;
    if (o->backoff_ms <= 0) o->backoff_ms = 1000;
    if (o->events_max <= 0) o->events_max = 10000;
}

const gr_wire_stats *gr_broker_wire_stats(const gr_broker *b)
{
    return &b->ws;
}

/* ------------------------------------------------------------------ */
/* workers, op hints, watchers                                         */

static bworker *worker_by_peer(gr_broker *b, const uint8_t *peer, size_t len)
{
    for (size_t i = 0; i < b->nw; i++)
        if (b->w[i]->peer_len == len && !memcmp(b->w[i]->peer, peer, len)) return b->w[i];
    return NULL;
}

static bworker *worker_by_id(gr_broker *b, const char *wid)
{
    for (size_t i = 0; i < b->nw; i++)
        if (!strcmp(b->w[i]->wid, wid)) return b->w[i];
    return NULL;
}

static void worker_free(bworker *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->nops; i++) free(w->ops[i]);
    free(w->ops);
    free(w->ops_json);
    free(w->wid);
    free(w->host);
    free(w->version);
    free(w->task);
    free(w);
}

static void worker_remove(gr_broker *b, bworker *w)
{
    for (size_t i = 0; i < b->nw; i++)
        if (b->w[i] == w) {
            b->w[i] = b->w[--b->nw];
            break;
        }
    worker_free(w);
}

static void worker_set_task(bworker *w, const char *task, int64_t attempt)
{
    free(w->task);
    w->task = task ? strdup(task) : NULL;
    w->attempt = task ? attempt : 0;
}

static opflag *op_flag(gr_broker *b, const char *op)
{
    for (size_t i = 0; i < b->nops; i++)
        if (!strcmp(b->ops[i].op, op)) return &b->ops[i];
    if (b->nops == b->opscap) {
        size_t nc = b->opscap ? b->opscap * 2 : 16;
        opflag *v = realloc(b->ops, nc * sizeof *v);
        if (!v) return NULL;
        b->ops = v;
        b->opscap = nc;
    }
    char *name = strdup(op);
    if (!name) return NULL;
    b->ops[b->nops] = (opflag){name, 1, 1};
    return &b->ops[b->nops++];
}

static void op_hint(gr_broker *b, const char *op)
{
    opflag *f = op_flag(b, op);
    if (f) {
        f->maybe = 1;
        f->gen++;
    }
}

static void op_hint_all(gr_broker *b)
{
    for (size_t i = 0; i < b->nops; i++) {
        b->ops[i].maybe = 1;
        b->ops[i].gen++;
    }
}

static void watcher_remove(gr_broker *b, size_t i)
{
    watcher *w = b->watch[i];
    free(w->jid);
    free(w->last);
    free(w);
    b->watch[i] = b->watch[--b->nwatch];
}

/* Logs a dropped message once per peer (then only counts). */
static void log_dropped(gr_broker *b, const gr_wire_msg *m)
{
    for (size_t i = 0; i < b->nlogged; i++)
        if (b->logged[i].len == m->peer_len && !memcmp(b->logged[i].peer, m->peer, m->peer_len))
            return;
    if (b->nlogged >= LOGGED_PEERS_MAX) {
        b->suppressed_logs++;
        return;
    }
    memcpy(b->logged[b->nlogged].peer, m->peer, m->peer_len);
    b->logged[b->nlogged++].len = m->peer_len;
    char hex[2 * 16 + 1] = "";
    for (size_t i = 0; i < m->peer_len && i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", m->peer[i]);
    GR_WARN(LOG,
            "dropped a malformed message from peer %s: %s (further ones from it are only counted)",
            hex, gr_errmsg());
}

/* ------------------------------------------------------------------ */
/* sending                                                             */

static int send_buf(gr_broker *b, const uint8_t *peer, size_t plen, int cmd, gr_buf *body)
{
    if (body->oom) return gr_seterr(GR_ENOMEM, "out of memory building a message");
    int rc = gr_wire_send(b->sock, peer, plen, cmd, body->data, body->len, &b->ws);
    if (rc) GR_DEBUG(LOG, "send %s: %s", gr_wire_cmd_name(cmd), gr_errmsg());
    return rc;
}

static void pk_req(gr_buf *o, const gr_json *req)
{
    if (req) {
        gr_wire_pk_str(o, "req");
        gr_wire_pk_json(o, req);
    }
}

static void send_error(gr_broker *b, const uint8_t *peer, size_t plen, const gr_json *req, int code,
                       const char *msg)
{
    gr_buf o = {0};
    gr_wire_pk_map(&o, req ? 3 : 2);
    pk_req(&o, req);
    gr_wire_pk_kv_str(&o, "error", msg);
    gr_wire_pk_kv_str(&o, "code", gr_errname(code));
    send_buf(b, peer, plen, GR_CMD_ERROR, &o);
    gr_buf_free(&o);
}

static void send_simple(gr_broker *b, const uint8_t *peer, size_t plen, int cmd, const char *key,
                        const char *val)
{
    gr_buf o = {0};
    gr_wire_pk_map(&o, key ? 1 : 0);
    if (key) gr_wire_pk_kv_str(&o, key, val);
    send_buf(b, peer, plen, cmd, &o);
    gr_buf_free(&o);
}

static void send_abort(gr_broker *b, bworker *w, const char *task, int64_t attempt,
                       const char *reason)
{
    if (!w) return;
    gr_buf o = {0};
    gr_wire_pk_map(&o, 3);
    gr_wire_pk_kv_str(&o, "task", task);
    gr_wire_pk_kv_int(&o, "attempt", attempt);
    gr_wire_pk_kv_str(&o, "reason", reason);
    send_buf(b, w->peer, w->peer_len, GR_CMD_ABORT, &o);
    gr_buf_free(&o);
}

static void send_heartbeat(gr_broker *b, bworker *w)
{
    gr_buf o = {0};
    gr_wire_pk_map(&o, 2);
    gr_wire_pk_kv_int(&o, "interval_ms", b->o.heartbeat_ms);
    gr_wire_pk_kv_int(&o, "liveness", b->o.liveness);
    if (send_buf(b, w->peer, w->peer_len, GR_CMD_HEARTBEAT, &o) == GR_ENOTFOUND) w->gone = 1;
    gr_buf_free(&o);
}

/* ------------------------------------------------------------------ */
/* redis replies                                                       */

static const char *rstr(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) ? r->str : "";
}

static int64_t rint_(const redisReply *r)
{
    if (!r) return 0;
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    if (r->type == REDIS_REPLY_STRING) return strtoll(r->str, NULL, 10);
    return 0;
}

static const redisReply *rel(const redisReply *r, size_t i)
{
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i] : NULL;
}

static int is_arr(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ARRAY;
}

/* Packs stored JSON text, or def (a JSON text) when empty or corrupt. */
static void pk_stored_json(gr_buf *o, const char *text, const char *def)
{
    if (text && *text) {
        gr_json *j = gr_json_parse(text, strlen(text), "stored");
        if (j) {
            gr_wire_pk_json(o, j);
            gr_json_free(j);
            return;
        }
    }
    gr_wire_pk_json_text(o, def, strlen(def));
}

static void pk_int_or_nil(gr_buf *o, const char *s)
{
    if (s && *s)
        gr_wire_pk_int(o, strtoll(s, NULL, 10));
    else
        gr_wire_pk_nil(o);
}

static void pk_str_or_nil(gr_buf *o, const char *s)
{
    if (s && *s)
        gr_wire_pk_str(o, s);
    else
        gr_wire_pk_nil(o);
}

static void pk_num_str(gr_buf *o, const char *s)
{
    char *end;
    double v = strtod(s ? s : "", &end);
    if (!s || !*s) v = 0;
    if (v == (double)(int64_t)v && v > -9e15 && v < 9e15)
        gr_wire_pk_int(o, (int64_t)v);
    else
        gr_wire_pk_double(o, v);
}

/* The status object of schemas/protocol.md (STATUS) from status.lua's reply. */
static void pk_status(gr_buf *o, const char *jid, const redisReply *r)
{
    const redisReply *j = rel(r, 0), *st = rel(r, 2);
    gr_wire_pk_map(o, 6);
    gr_wire_pk_kv_str(o, "job", jid);
    gr_wire_pk_kv_str(o, "name", rstr(rel(j, 0)));
    gr_wire_pk_kv_str(o, "state", rstr(rel(j, 1)));
    gr_wire_pk_str(o, "created");
    pk_int_or_nil(o, rstr(rel(j, 2)));
    gr_wire_pk_str(o, "updated");
    pk_int_or_nil(o, rstr(rel(j, 3)));
    gr_wire_pk_str(o, "stages");
    size_t n = is_arr(st) ? st->elements : 0;
    gr_wire_pk_arr(o, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const redisReply *s = st->element[i];
        gr_wire_pk_map(o, 11);
        gr_wire_pk_kv_str(o, "id", rstr(rel(s, 0)));
        gr_wire_pk_kv_str(o, "op", rstr(rel(s, 1)));
        gr_wire_pk_kv_str(o, "state", rstr(rel(s, 2)));
        gr_wire_pk_kv_int(o, "attempts", rint_(rel(s, 3)));
        gr_wire_pk_str(o, "outputs");
        pk_stored_json(o, rstr(rel(s, 4)), "{}");
        gr_wire_pk_str(o, "metrics");
        pk_stored_json(o, rstr(rel(s, 5)), "null");
        gr_wire_pk_str(o, "error");
        pk_str_or_nil(o, rstr(rel(s, 6)));
        gr_wire_pk_str(o, "progress");
        gr_wire_pk_map(o, 3);
        gr_wire_pk_str(o, "done");
        pk_num_str(o, rstr(rel(s, 7)));
        gr_wire_pk_str(o, "total");
        pk_num_str(o, rstr(rel(s, 8)));
        gr_wire_pk_kv_str(o, "message", rstr(rel(s, 9)));
        gr_wire_pk_str(o, "worker");
        pk_str_or_nil(o, rstr(rel(s, 10)));
        gr_wire_pk_str(o, "started");
        pk_int_or_nil(o, rstr(rel(s, 11)));
        gr_wire_pk_str(o, "finished");
        pk_int_or_nil(o, rstr(rel(s, 12)));
    }
}

/* ------------------------------------------------------------------ */
/* script calls                                                        */

/* The ARGV every script starts with (common.lua). */
static void script_args(gr_broker *b, gr_rargs *a)
{
    int64_t us = wall_us();
    gr_rargs_str(a, b->prefix);
    gr_rargs_int(a, us / 1000);
    gr_rargs_int(a, us);
    gr_rargs_int(a, b->o.retention_s);
    gr_rargs_int(a, b->o.events_max);
    gr_rargs_int(a, b->o.backoff_ms);
    char j[32];
    snprintf(j, sizeof j, "%.6f", 0.5 + (double)(rnd(b) >> 11) / 9007199254740992.0);
    gr_rargs_str(a, j);
}

/* Queues script with args (consumed). */
static void run_script(gr_broker *b, int script, gr_rargs *a, gr_rconn_cb cb, void *ud)
{
    if (a->oom) {
        gr_rargs_reset(a);
        if (cb) cb(ud, NULL);
        return;
    }
    gr_rconn_script(b->rc, script, cb, ud, (int)a->n, (const char **)a->v, a->len);
    gr_rargs_reset(a);
}

/* Context passed to callbacks: the broker plus what the answer needs. */
typedef struct cbctx {
    gr_broker *b;
    uint8_t peer[GR_WIRE_MAX_PEER];
    size_t peer_len;
    gr_json *req; /* client's req value (owned copy) or NULL */
    char *s1, *s2;
    int64_t i1;
    int cmd;
    gr_json *body; /* for replay after a Redis outage */
    uint64_t *gens;
    size_t ngens;
} cbctx;

static cbctx *ctx_new(gr_broker *b, const gr_wire_msg *m)
{
    cbctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->b = b;
    if (m) {
        memcpy(c->peer, m->peer, m->peer_len);
        c->peer_len = m->peer_len;
        const gr_json *req = gr_json_get(m->body, "req");
        if (req) c->req = gr_wire_json_dup(req);
    }
    return c;
}

static void ctx_free(cbctx *c)
{
    if (!c) return;
    gr_json_free(c->req);
    gr_json_free(c->body);
    free(c->s1);
    free(c->s2);
    free(c->gens);
    free(c);
}

static void reply_unavailable(cbctx *c)
{
    send_error(c->b, c->peer, c->peer_len, c->req, GR_ENET, "redis is unavailable; try again");
}

static void keep_for_replay(gr_broker *b, int cmd, gr_json *body, const uint8_t *peer, size_t plen)
{
    if (!body) return;
    if (b->nrq >= REPLAY_MAX) {
        GR_WARN(LOG, "redis away too long: dropping a %s (its stage will run again)",
                gr_wire_cmd_name(cmd));
        gr_json_free(body);
        return;
    }
    if (b->nrq == b->rqcap) {
        size_t nc = b->rqcap ? b->rqcap * 2 : 64;
        replay *v = realloc(b->rq, nc * sizeof *v);
        if (!v) {
            gr_json_free(body);
            return;
        }
        b->rq = v;
        b->rqcap = nc;
    }
    replay *r = &b->rq[b->nrq++];
    r->cmd = cmd;
    r->body = body;
    memcpy(r->peer, peer, plen);
    r->peer_len = plen;
}

/* ---- resolution of stages whose dependencies finished ---- */

static void resolve_infos(gr_broker *b, const redisReply *infos, int chain);
static void recover(gr_broker *b, int chain);
static void dispatch_idle(gr_broker *b);

static void on_resolve(void *ud, redisReply *r)
{
    cbctx *c = ud;
    gr_broker *b = c->b;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        /* the stages stay in the `resolve` set: recover.lua finds them again */
        if (r) GR_WARN(LOG, "resolve: %s", r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        ctx_free(c);
        return;
    }
    resolve_infos(b, rel(r, 0), 0);
    if (c->i1) recover(b, 1); /* more stages wait in `resolve` */
    /* memo hits to check against the store */
    const redisReply *ver = rel(r, 1);
    if (is_arr(ver) && ver->elements) {
        gr_rargs a = {0};
        script_args(b, &a);
        gr_rargs_str(&a, "0");
        for (size_t i = 0; i < ver->elements; i++) {
            const redisReply *v = ver->element[i];
            const char *outs = rstr(rel(v, 3));
            int ok = 1;
            gr_json *o = gr_json_parse(outs, strlen(outs), "memo outputs");
            for (size_t k = 0; o && ok && o->type == GR_JSON_OBJ && k < o->len; k++) {
                const gr_json *id = o->items[k];
                ok = id->type == GR_JSON_STR && b->cas && gr_cas_has(b->cas, id->str) == 1;
            }
            if (!o || o->type != GR_JSON_OBJ) ok = 0;
            gr_json_free(o);
            gr_rargs_str(&a, rstr(rel(v, 0)));
            gr_rargs_str(&a, rstr(rel(v, 1)));
            /* rparams and inputs were stored by the first pass; resend them */
            gr_rargs_str(&a, "");
            gr_rargs_str(&a, "");
            gr_rargs_str(&a, rstr(rel(v, 2)));
            gr_rargs_str(&a, ok ? "hit" : "miss");
            gr_rargs_str(&a, "");
            if (!ok)
                GR_INFO(LOG, "memo %s: outputs missing from the store; running the stage",
                        rstr(rel(v, 2)));
        }
        cbctx *c2 = ctx_new(b, NULL);
        if (c2)
            run_script(b, GR_LUA_RESOLVE, &a, on_resolve, c2);
        else
            gr_rargs_reset(&a);
    }
    const redisReply *ops = rel(r, 2);
    for (size_t i = 0; is_arr(ops) && i < ops->elements; i++) op_hint(b, rstr(ops->element[i]));
    const redisReply *fin = rel(r, 3);
    for (size_t i = 0; is_arr(fin) && i < fin->elements; i++)
        GR_INFO(LOG, "job %s %s", rstr(rel(fin->element[i], 0)), rstr(rel(fin->element[i], 1)));
    ctx_free(c);
}

/* infos: resolve_info arrays (common.lua). Computes each stage's resolved
 * params, inputs and memo key and queues one resolve.lua for all. */
static void resolve_infos(gr_broker *b, const redisReply *infos, int chain)
{
    if (!is_arr(infos) || !infos->elements) {
        if (chain) recover(b, 1);
        return;
    }
    gr_rargs a = {0};
    script_args(b, &a);
    gr_rargs_str(&a, b->cas ? "0" : "1");
    for (size_t i = 0; i < infos->elements; i++) {
        const redisReply *inf = infos->element[i];
        if (!is_arr(inf) || inf->elements < 5 || (inf->elements - 5) % 5) continue;
        size_t nd = (inf->elements - 5) / 5;
        gr_resolve_dep *deps = nd ? calloc(nd, sizeof *deps) : NULL;
        if (nd && !deps) continue;
        for (size_t d = 0; d < nd; d++) {
            const redisReply *const *e = (const redisReply *const *)inf->element + 5 + 5 * d;
            deps[d] = (gr_resolve_dep){rstr(e[0]), rstr(e[1]), rstr(e[2]), rstr(e[3]), rstr(e[4])};
        }
        const char *jid = rstr(inf->element[0]), *sid = rstr(inf->element[1]);
        int no_cache = !strcmp(rstr(inf->element[4]), "1");
        gr_resolved res;
        int rc = gr_resolve_stage(rstr(inf->element[2]), rstr(inf->element[3]), deps, nd, &res);
        free(deps);
        gr_rargs_str(&a, jid);
        gr_rargs_str(&a, sid);
        if (rc) {
            GR_WARN(LOG, "job %s stage '%s': %s", jid, sid, gr_errmsg());
            gr_rargs_str(&a, "{}");
            gr_rargs_str(&a, "[]");
            gr_rargs_str(&a, "");
            gr_rargs_str(&a, "error");
            gr_rargs_str(&a, gr_errmsg());
            continue;
        }
        gr_rargs_str(&a, res.rparams);
        gr_rargs_str(&a, res.inputs);
        gr_rargs_str(&a, no_cache ? "" : res.memo);
        gr_rargs_str(&a, "check");
        gr_rargs_str(&a, "");
        gr_resolved_clear(&res);
        op_hint(b, rstr(inf->element[2]));
    }
    cbctx *c = ctx_new(b, NULL);
    if (c) {
        c->i1 = chain;
        run_script(b, GR_LUA_RESOLVE, &a, on_resolve, c);
    } else
        gr_rargs_reset(&a);
    /* idle workers for these ops ask right behind it in the same pipeline:
     * Redis runs the two in order, so a stage made ready is leased without
     * another round trip */
    dispatch_idle(b);
}

/* ---- TASK ---- */

static void on_ignore(void *ud, redisReply *r);

/* The stage is back in ready:<op> (c->s1): let idle workers ask. */
static void on_requeued(void *ud, redisReply *r)
{
    cbctx *c = ud;
    if (r && r->type == REDIS_REPLY_ARRAY) op_hint(c->b, c->s1);
    ctx_free(c);
}

/* A leased task that cannot go to its worker (gone, or busy after all):
 * straight back to the ready queue without using a retry (fail.lua
 * 'undelivered'). t: dispatch_one's reply. */
static void requeue_undelivered(gr_broker *b, const redisReply *t, const char *wid, const char *why)
{
    GR_WARN(LOG, "task %s:%s attempt %lld: %s; requeued", rstr(rel(t, 0)), rstr(rel(t, 1)),
            (long long)rint_(rel(t, 2)), why);
    gr_rargs a = {0};
    script_args(b, &a);
    gr_rargs_str(&a, rstr(rel(t, 0)));
    gr_rargs_str(&a, rstr(rel(t, 1)));
    gr_rargs_int(&a, rint_(rel(t, 2)));
    gr_rargs_str(&a, wid);
    gr_rargs_str(&a, why);
    gr_rargs_str(&a, "1");
    gr_rargs_str(&a, "undelivered");
    cbctx *c = ctx_new(b, NULL);
    if (c && !(c->s1 = strdup(rstr(rel(t, 3))))) {
        ctx_free(c);
        c = NULL;
    }
    if (c)
        run_script(b, GR_LUA_FAIL, &a, on_requeued, c);
    else
        gr_rargs_reset(&a);
}

/* t: dispatch_one's reply {jid, sid, attempt, op, params, inputs, deadline,
 * timeout_ms, ready_us}. */
static void send_task(gr_broker *b, bworker *w, const redisReply *t)
{
    const char *jid = rstr(rel(t, 0)), *sid = rstr(rel(t, 1));
    int64_t attempt = rint_(rel(t, 2));
    int64_t timeout_ms = strtoll(rstr(rel(t, 7)), NULL, 10);
    const char *ready_us = rstr(rel(t, 8));
    gr_buf task = {0};
    gr_buf_printf(&task, "%s:%s", jid, sid);
    worker_set_task(w, task.data, attempt);
    gr_buf o = {0};
    gr_wire_pk_map(&o, *ready_us ? 10 : 9);
    gr_wire_pk_kv_str(&o, "task", task.data);
    gr_wire_pk_kv_str(&o, "job", jid);
    gr_wire_pk_kv_str(&o, "stage", sid);
    gr_wire_pk_kv_int(&o, "attempt", attempt);
    gr_wire_pk_kv_str(&o, "op", rstr(rel(t, 3)));
    gr_wire_pk_str(&o, "params");
    pk_stored_json(&o, rstr(rel(t, 4)), "{}");
    gr_wire_pk_str(&o, "inputs");
    pk_stored_json(&o, rstr(rel(t, 5)), "[]");
    gr_wire_pk_kv_int(&o, "deadline", strtoll(rstr(rel(t, 6)), NULL, 10));
    gr_wire_pk_kv_int(&o, "timeout", (timeout_ms + 999) / 1000);
    if (*ready_us) gr_wire_pk_kv_int(&o, "ready_us", strtoll(ready_us, NULL, 10));
    GR_DEBUG(LOG, "TASK %s attempt %lld -> worker %s", task.data, (long long)attempt, w->wid);
    if (send_buf(b, w->peer, w->peer_len, GR_CMD_TASK, &o)) {
        /* never reached the worker: straight back to the queue */
        requeue_undelivered(b, t, w->wid, "worker unreachable");
        worker_set_task(w, NULL, 0);
        w->gone = 1;
    }
    gr_buf_free(&o);
    gr_buf_free(&task);
}

static void ops_gens(gr_broker *b, bworker *w, cbctx *c)
{
    c->gens = calloc(w->nops ? w->nops : 1, sizeof *c->gens);
    c->ngens = c->gens ? w->nops : 0;
    for (size_t i = 0; i < c->ngens; i++) {
        opflag *f = op_flag(b, w->ops[i]);
        c->gens[i] = f ? f->gen : 0;
    }
}

/* A dispatch for w came back empty: its queues had nothing, unless work
 * arrived since the call was queued (generation changed). */
static void ops_empty(gr_broker *b, bworker *w, cbctx *c)
{
    for (size_t i = 0; i < w->nops && i < c->ngens; i++) {
        opflag *f = op_flag(b, w->ops[i]);
        if (f && f->gen == c->gens[i]) f->maybe = 0;
    }
}

static void on_dispatch(void *ud, redisReply *r)
{
    cbctx *c = ud;
    gr_broker *b = c->b;
    bworker *w = worker_by_id(b, c->s1);
    if (w) w->inflight = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 9) {
        if (w && !w->task && !w->gone)
            send_task(b, w, r);
        else
            requeue_undelivered(b, r, c->s1, w ? "worker busy meanwhile" : "worker gone meanwhile");
    } else if (w && r && r->type == REDIS_REPLY_NIL) {
        ops_empty(b, w, c);
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        GR_WARN(LOG, "dispatch: %s", r->str);
    }
    ctx_free(c);
}

static int worker_wants(gr_broker *b, bworker *w)
{
    if (w->task || w->inflight || w->gone) return 0;
    for (size_t i = 0; i < w->nops; i++) {
        opflag *f = op_flag(b, w->ops[i]);
        if (f && f->maybe) return 1;
    }
    return 0;
}

static void dispatch_idle(gr_broker *b)
{
    if (!gr_rconn_up(b->rc)) return;
    for (size_t i = 0; i < b->nw; i++) {
        bworker *w = b->w[i];
        if (!worker_wants(b, w)) continue;
        cbctx *c = ctx_new(b, NULL);
        if (!c || !(c->s1 = strdup(w->wid))) {
            ctx_free(c);
            continue;
        }
        ops_gens(b, w, c);
        gr_rargs a = {0};
        script_args(b, &a);
        gr_rargs_str(&a, w->wid);
        gr_rargs_int(&a, b->lease_ms);
        for (size_t k = 0; k < w->nops; k++) gr_rargs_str(&a, w->ops[k]);
        w->inflight = 1;
        run_script(b, GR_LUA_DISPATCH, &a, on_dispatch, c);
    }
}

/* ------------------------------------------------------------------ */
/* worker messages                                                     */

/* Splits "jid:sid" (borrowed) into jid/sid copies in c->s1/s2. */
static int split_task(const char *task, char **jid, char **sid)
{
    const char *colon = strchr(task, ':');
    if (!colon || colon == task || !colon[1])
        return gr_seterr(GR_EINVAL, "task '%s' is not JOB:STAGE", task);
    *jid = strndup(task, (size_t)(colon - task));
    *sid = strdup(colon + 1);
    if (!*jid || !*sid) {
        free(*jid);
        free(*sid);
        return gr_seterr(GR_ENOMEM, "out of memory");
    }
    return 0;
}

static void on_ready(void *ud, redisReply *r)
{
    cbctx *c = ud;
    gr_broker *b = c->b;
    bworker *w = worker_by_id(b, c->s1);
    const char *st = rstr(r);
    if (w && c->s2 && !strcmp(st, "stale")) {
        send_abort(b, w, c->s2, c->i1, "this attempt is no longer yours");
        GR_INFO(LOG, "worker %s: task %s attempt %lld is stale; cancelled", w->wid, c->s2,
                (long long)c->i1);
    } else if (w && c->s2 && !strcmp(st, "adopted")) {
        GR_INFO(LOG, "worker %s: re-adopted task %s attempt %lld", w->wid, c->s2, (long long)c->i1);
    }
    ctx_free(c);
}

/* A callback context naming worker w and the task it runs: s1 = its id,
 * s2 = "jid:sid" or NULL, i1 = the attempt. NULL when out of memory. */
static cbctx *worker_ctx(gr_broker *b, const bworker *w)
{
    cbctx *c = ctx_new(b, NULL);
    if (!c || !(c->s1 = strdup(w->wid))) {
        ctx_free(c);
        return NULL;
    }
    c->s2 = w->task ? strdup(w->task) : NULL;
    c->i1 = w->attempt;
    return c;
}

/* Records w in Redis (ready.lua); when it names a task, the attempt is
 * re-adopted or, if no longer its, cancelled at the worker (on_ready). */
static void worker_register(gr_broker *b, bworker *w)
{
    cbctx *c = worker_ctx(b, w);
    if (!c) return;
    gr_rargs a = {0};
    script_args(b, &a);
    gr_rargs_str(&a, w->wid);
    gr_rargs_str(&a, w->host);
    gr_rargs_int(&a, w->pid);
    gr_rargs_str(&a, w->ops_json ? w->ops_json : "[]");
    gr_rargs_str(&a, w->version);
    gr_rargs_int(&a, w->threads);
    gr_rargs_str(&a, w->task ? w->task : "");
    gr_rargs_int(&a, w->attempt);
    gr_rargs_int(&a, b->lease_ms);
    run_script(b, GR_LUA_READY, &a, on_ready, c);
}

static void handle_ready(gr_broker *b, gr_wire_msg *m)
{
    const gr_json *body = m->body;
    const char *wid = gr_json_get_str(body, "worker", "");
    bworker *w = worker_by_id(b, wid);
    bworker *byp = worker_by_peer(b, m->peer, m->peer_len);
    if (byp && byp != w) worker_remove(b, byp); /* the peer re-registered under a new id */
    if (!w) {
        if (b->nw == b->wcap) {
            size_t nc = b->wcap ? b->wcap * 2 : 16;
            bworker **v = realloc(b->w, nc * sizeof *v);
            if (!v) return;
            b->w = v;
            b->wcap = nc;
        }
        if (!(w = calloc(1, sizeof *w)) || !(w->wid = strdup(wid))) {
            free(w);
            return;
        }
        b->w[b->nw++] = w;
        GR_INFO(LOG, "worker %s registered (%s pid %lld)", wid, gr_json_get_str(body, "host", "?"),
                (long long)gr_json_get_int(body, "pid", 0));
    } else {
        for (size_t i = 0; i < w->nops; i++) free(w->ops[i]);
        free(w->ops);
        w->ops = NULL;
        w->nops = 0;
        free(w->ops_json);
        free(w->host);
        free(w->version);
    }
    memcpy(w->peer, m->peer, m->peer_len);
    w->peer_len = m->peer_len;
    const gr_json *ops = gr_json_get(body, "ops");
    w->ops = calloc(ops->len ? ops->len : 1, sizeof *w->ops);
    for (size_t i = 0; w->ops && i < ops->len; i++)
        if ((w->ops[w->nops] = strdup(ops->items[i]->str))) {
            op_flag(b, w->ops[w->nops]);
            w->nops++;
        }
    gr_buf oj = {0};
    gr_wire_json_write(&oj, ops, 0);
    w->ops_json = gr_buf_take(&oj);
    w->host = xstrdup(gr_json_get_str(body, "host", ""));
    w->version = xstrdup(gr_json_get_str(body, "version", ""));
    w->pid = gr_json_get_int(body, "pid", 0);
    w->threads = gr_json_get_int(body, "threads", 0);
    w->last_seen = mono_ms();
    w->inflight = 0;
    w->gone = 0;
    const char *task = gr_json_get_str(body, "task", NULL);
    int64_t attempt = gr_json_get_int(body, "attempt", 0);
    /* a worker naming a task is busy with it until it reports, whatever
     * Redis says: it runs one task at a time */
    worker_set_task(w, task, attempt);
    send_heartbeat(b, w);
    worker_register(b, w);
}

static void on_heartbeat(void *ud, redisReply *r)
{
    cbctx *c = ud;
    bworker *w = worker_by_id(c->b, c->s1);
    if (w && r && r->type == REDIS_REPLY_INTEGER && r->integer < 0 && w->task && c->s2 &&
        !strcmp(w->task, c->s2) && w->attempt == c->i1) {
        /* its lease lapsed and the stage went elsewhere (or was cancelled) */
        send_abort(c->b, w, c->s2, c->i1, "lease lost: the stage was requeued or cancelled");
    }
    ctx_free(c);
}

static void renew(gr_broker *b, bworker *w, int64_t rss)
{
    int64_t now = mono_ms();
    w->last_seen = now;
    if (rss >= 0) w->rss = rss;
    /* write at most twice per interval (leases are several intervals long) */
    if (now - w->last_hb_write < b->o.heartbeat_ms / 2 || !gr_rconn_up(b->rc)) return;
    w->last_hb_write = now;
    cbctx *c = worker_ctx(b, w);
    if (!c) return;
    gr_rargs a = {0};
    script_args(b, &a);
    gr_rargs_str(&a, w->wid);
    gr_rargs_str(&a, w->task ? w->task : "");
    gr_rargs_int(&a, w->attempt);
    gr_rargs_int(&a, b->lease_ms);
    gr_rargs_int(&a, w->rss);
    run_script(b, GR_LUA_HEARTBEAT, &a, on_heartbeat, c);
}

static void on_progress(void *ud, redisReply *r)
{
    ctx_free(ud);
}

static void handle_progress(gr_broker *b, gr_wire_msg *m, bworker *w)
{
    char *jid, *sid;
    if (split_task(gr_json_get_str(m->body, "task", ""), &jid, &sid)) return;
    char num[2][40];
    snprintf(num[0], sizeof num[0], "%.17g", gr_json_get_num(m->body, "done", 0));
    snprintf(num[1], sizeof num[1], "%.17g", gr_json_get_num(m->body, "total", 0));
    gr_rargs a = {0};
    script_args(b, &a);
    gr_rargs_str(&a, jid);
    gr_rargs_str(&a, sid);
    gr_rargs_int(&a, gr_json_get_int(m->body, "attempt", 0));
    gr_rargs_str(&a, w ? w->wid : "");
    gr_rargs_str(&a, num[0]);
    gr_rargs_str(&a, num[1]);
    gr_rargs_str(&a, gr_json_get_str(m->body, "message", ""));
    gr_rargs_int(&a, b->lease_ms);
    free(jid);
    free(sid);
    run_script(b, GR_LUA_PROGRESS, &a, on_progress, ctx_new(b, NULL));
    if (w) w->last_hb_write = mono_ms();
}

static void on_done(void *ud, redisReply *r)
{
    cbctx *c = ud;
    gr_broker *b = c->b;
    bworker *w = c->s1 ? worker_by_id(b, c->s1) : NULL;
    if (!r) {
        if (w && c->gens) w->inflight = 0;
        keep_for_replay(b, c->cmd, c->body, c->peer, c->peer_len);
        c->body = NULL;
        ctx_free(c);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        if (w && c->gens) w->inflight = 0;
        GR_ERROR(LOG, "%s: %s", gr_wire_cmd_name(c->cmd), r->str);
    } else if (c->cmd == GR_CMD_DONE) {
        if (!strcmp(rstr(rel(r, 0)), "stale"))
            GR_DEBUG(LOG, "stale DONE for %s attempt %lld ignored", c->s2, (long long)c->i1);
        /* the worker's next task first: resolve_infos below may dispatch to
         * idle workers, and this one must not look idle */
        const redisReply *nxt = rel(r, 3);
        if (c->gens) {
            if (w) w->inflight = 0;
            if (is_arr(nxt) && nxt->elements >= 9) {
                if (w && !w->task && !w->gone)
                    send_task(b, w, nxt);
                else
                    requeue_undelivered(b, nxt, c->s1,
                                        w ? "worker busy meanwhile" : "worker gone meanwhile");
            } else if (w && nxt && nxt->type == REDIS_REPLY_NIL) {
                ops_empty(b, w, c);
            }
        }
        resolve_infos(b, rel(r, 1), 0);
        const redisReply *fin = rel(r, 2);
        if (fin && fin->type == REDIS_REPLY_STRING) GR_INFO(LOG, "job of %s %s", c->s2, fin->str);
    } else {
        const char *res = rstr(rel(r, 0));
        if (!strcmp(res, "stale"))
            GR_DEBUG(LOG, "stale FAIL for %s attempt %lld ignored", c->s2, (long long)c->i1);
        else if (!strcmp(res, "retry")) {
            /* back in `delayed`: tick.lua moves it to ready after the backoff */
        }
        const redisReply *fin = rel(r, 1);
        if (fin && fin->type == REDIS_REPLY_STRING) GR_INFO(LOG, "job of %s %s", c->s2, fin->str);
    }
    ctx_free(c);
}

/* DONE and FAIL are accepted from any peer (the attempt number fences them),
 * so that a result reported to a restarted broker is not lost. */
static void handle_result(gr_broker *b, int cmd, gr_json *body, const uint8_t *peer, size_t plen,
                          bworker *w)
{
    const char *task = gr_json_get_str(body, "task", "");
    int64_t attempt = gr_json_get_int(body, "attempt", 0);
    char *jid, *sid;
    if (split_task(task, &jid, &sid)) {
        gr_json_free(body);
        return;
    }
    if (w && w->task && !strcmp(w->task, task)) worker_set_task(w, NULL, 0);
    cbctx *c = calloc(1, sizeof *c);
    if (!c) {
        free(jid);
        free(sid);
        gr_json_free(body);
        return;
    }
    c->b = b;
    c->cmd = cmd;
    c->body = body;
    memcpy(c->peer, peer, plen);
    c->peer_len = plen;
    c->s1 = w ? strdup(w->wid) : NULL;
    c->s2 = strdup(task);
    c->i1 = attempt;
    if (!gr_rconn_up(b->rc)) {
        free(jid);
        free(sid);
        on_done(c, NULL);
        return;
    }
    gr_rargs a = {0};
    script_args(b, &a);
    gr_rargs_str(&a, jid);
    gr_rargs_str(&a, sid);
    gr_rargs_int(&a, attempt);
    gr_rargs_str(&a, w ? w->wid : "");
    free(jid);
    free(sid);
    if (cmd == GR_CMD_DONE) {
        gr_buf t = {0};
        gr_wire_json_write(&t, gr_json_get(body, "outputs"), 1);
        gr_rargs_str(&a, t.data ? t.data : "{}");
        gr_buf_reset(&t);
        const gr_json *met = gr_json_get(body, "metrics");
        if (met)
            gr_wire_json_write(&t, met, 0);
        else
            gr_buf_puts(&t, "null");
        gr_rargs_str(&a, t.data);
        gr_buf_free(&t);
        gr_rargs_int(&a, gr_json_get_int(body, "elapsed_ms", 0));
        gr_rargs_int(&a, b->lease_ms);
        /* ask for its next task in the same step */
        if (w && !w->task && !w->inflight && worker_wants(b, w)) {
            ops_gens(b, w, c);
            for (size_t k = 0; k < w->nops; k++) gr_rargs_str(&a, w->ops[k]);
            w->inflight = 1;
        }
        run_script(b, GR_LUA_DONE, &a, on_done, c);
    } else {
        gr_rargs_str(&a, gr_json_get_str(body, "error", ""));
        gr_rargs_str(&a, gr_json_get_bool(body, "retryable", 0) ? "1" : "0");
        run_script(b, GR_LUA_FAIL, &a, on_done, c);
    }
}

/* ------------------------------------------------------------------ */
/* client messages                                                     */

typedef struct {
    const char *key;
    size_t len;
    size_t idx;
} idslot;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* Stage id -> index (open addressing), for dependants lists. */
static int index_stages(const gr_pipeline *p, size_t **tab, size_t *cap)
{
    size_t c = 16;
    while (c < p->nstages * 2) c *= 2;
    size_t *t = malloc(c * sizeof *t);
    if (!t) return GR_ENOMEM;
    for (size_t i = 0; i < c; i++) t[i] = SIZE_MAX;
    for (size_t i = 0; i < p->nstages; i++) {
        size_t h = hash_str(p->stages[i].id) & (c - 1);
        while (t[h] != SIZE_MAX) h = (h + 1) & (c - 1);
        t[h] = i;
    }
    *tab = t;
    *cap = c;
    return 0;
}

static size_t find_stage(const gr_pipeline *p, const size_t *t, size_t cap, const char *id)
{
    size_t h = hash_str(id) & (cap - 1);
    while (t[h] != SIZE_MAX) {
        if (!strcmp(p->stages[t[h]].id, id)) return t[h];
        h = (h + 1) & (cap - 1);
    }
    return SIZE_MAX;
}

/* The stages arguments of submit.lua: one JSON array per chunk of
 * SUBMIT_CHUNK stages (chunks[0..nchunks), gr_bufs the caller frees). */
static int stages_json(const gr_pipeline *p, gr_buf *chunks, size_t nchunks)
{
    size_t *tab = NULL, cap = 0;
    size_t *nrd = calloc(p->nstages ? p->nstages : 1, sizeof *nrd);
    size_t **rd = calloc(p->nstages ? p->nstages : 1, sizeof *rd);
    int rc = (!nrd || !rd) ? GR_ENOMEM : index_stages(p, &tab, &cap);
    for (size_t i = 0; !rc && i < p->nstages; i++)
        for (size_t d = 0; !rc && d < p->stages[i].ndeps; d++) {
            size_t k = find_stage(p, tab, cap, p->stages[i].deps[d]);
            if (k == SIZE_MAX) {
                rc = gr_seterr(GR_EINVAL, "stage '%s': dependency '%s' does not exist",
                               p->stages[i].id, p->stages[i].deps[d]);
                break;
            }
            size_t *v = realloc(rd[k], (nrd[k] + 1) * sizeof *v);
            if (!v) {
                rc = GR_ENOMEM;
                break;
            }
            rd[k] = v;
            v[nrd[k]++] = i;
        }
    for (size_t i = 0; !rc && i < p->nstages; i++) {
        const gr_stage *s = &p->stages[i];
        gr_buf *o = &chunks[i / SUBMIT_CHUNK];
        gr_buf_putc(o, i % SUBMIT_CHUNK ? ',' : '[');
        gr_buf_putc(o, '[');
        gr_buf_json_str(o, s->id, strlen(s->id));
        gr_buf_putc(o, ',');
        gr_buf_json_str(o, s->op, strlen(s->op));
        gr_buf_putc(o, ',');
        gr_buf ps = {0};
        gr_wire_json_write(&ps, s->params, 1);
        gr_buf_json_str(o, ps.data ? ps.data : "{}", ps.len);
        if (ps.oom) o->oom = 1;
        gr_buf_free(&ps);
        gr_buf_putc(o, ',');
        gr_buf dj = {0};
        gr_buf_putc(&dj, '[');
        for (size_t d = 0; d < s->ndeps; d++) {
            if (d) gr_buf_putc(&dj, ',');
            gr_buf_json_str(&dj, s->deps[d], strlen(s->deps[d]));
        }
        gr_buf_putc(&dj, ']');
        gr_buf_json_str(o, dj.data, dj.len);
        gr_buf_reset(&dj);
        gr_buf_putc(&dj, '[');
        for (size_t d = 0; d < nrd[i]; d++) {
            if (d) gr_buf_putc(&dj, ',');
            const char *id = p->stages[rd[i][d]].id;
            gr_buf_json_str(&dj, id, strlen(id));
        }
        gr_buf_putc(&dj, ']');
        gr_buf_putc(o, ',');
        gr_buf_json_str(o, dj.data, dj.len);
        if (dj.oom) o->oom = 1;
        gr_buf_free(&dj);
        double tmo = s->timeout > 0 ? s->timeout * 1000.0 : 0;
        if (tmo > 1e13) tmo = 1e13;
        gr_buf_printf(o, ",%d,%lld,%d,%d]", s->retries < 0 ? 0 : s->retries, (long long)(tmo + 0.5),
                      s->priority, s->line);
        if (i % SUBMIT_CHUNK == SUBMIT_CHUNK - 1 || i + 1 == p->nstages) gr_buf_putc(o, ']');
        if (o->oom) rc = GR_ENOMEM;
    }
    if (!p->nstages && nchunks) gr_buf_puts(&chunks[0], "[]");
    for (size_t i = 0; rd && i < p->nstages; i++) free(rd[i]);
    free(rd);
    free(nrd);
    free(tab);
    for (size_t c = 0; !rc && c < nchunks; c++)
        if (chunks[c].oom) rc = GR_ENOMEM;
    if (rc == GR_ENOMEM) gr_seterr(GR_ENOMEM, "out of memory building the job");
    return rc;
}

/* One submission, answered when its last chunk's script has run. */
typedef struct subctx {
    cbctx *c; /* peer, req, s1 = job id, s2 = name, i1 = stages */
    size_t pending;
    char *err;
} subctx;

static void on_submit(void *ud, redisReply *r)
{
    subctx *sc = ud;
    cbctx *c = sc->c;
    gr_broker *b = c->b;
    if (!sc->err) {
        if (!r)
            sc->err = strdup("redis is unavailable; try again");
        else if (r->type == REDIS_REPLY_ERROR)
            sc->err = strdup(r->str);
    }
    if (--sc->pending) return;
    if (sc->err) {
        send_error(b, c->peer, c->peer_len, c->req, r ? GR_EIO : GR_ENET, sc->err);
    } else {
        gr_buf o = {0};
        gr_wire_pk_map(&o, c->req ? 2 : 1);
        pk_req(&o, c->req);
        gr_wire_pk_str(&o, "result");
        gr_wire_pk_map(&o, 3);
        gr_wire_pk_kv_str(&o, "job", c->s1);
        gr_wire_pk_kv_str(&o, "name", c->s2);
        gr_wire_pk_kv_int(&o, "stages", c->i1);
        send_buf(b, c->peer, c->peer_len, GR_CMD_REPLY, &o);
        gr_buf_free(&o);
        GR_INFO(LOG, "job %s (%s): %lld stages submitted", c->s1, c->s2, (long long)c->i1);
        /* roots beyond what one reply holds wait in `resolve`: drain them */
        resolve_infos(b, rel(r, 0), rint_(rel(r, 1)) != 0);
    }
    free(sc->err);
    ctx_free(c);
    free(sc);
}

static void handle_submit(gr_broker *b, gr_wire_msg *m)
{
    const gr_json *body = m->body;
    const gr_json *text = gr_json_get(body, "pipeline");
    const gr_json *sets = gr_json_get(body, "sets");
    const gr_json *req = gr_json_get(body, "req");
    const char **sv = NULL;
    size_t ns = sets ? sets->len : 0;
    if (ns && !(sv = calloc(ns, sizeof *sv))) return;
    for (size_t i = 0; i < ns; i++) sv[i] = sets->items[i]->str;
    gr_pipeline *p =
        gr_pipeline_parse(text->str, text->len, gr_json_get_str(body, "filename", NULL), sv, ns);
    free(sv);
    if (!p) {
        send_error(b, m->peer, m->peer_len, req, gr_errcode() ? gr_errcode() : GR_EINVAL,
                   gr_errmsg());
        return;
    }
    if (!gr_rconn_up(b->rc)) {
        send_error(b, m->peer, m->peer_len, req, GR_ENET, "redis is unavailable; try again");
        gr_pipeline_free(&p);
        return;
    }
    size_t nchunks = p->nstages ? (p->nstages + SUBMIT_CHUNK - 1) / SUBMIT_CHUNK : 1;
    gr_buf *chunks = calloc(nchunks, sizeof *chunks);
    subctx *sc = calloc(1, sizeof *sc);
    cbctx *c = ctx_new(b, m);
    char jid[32];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    snprintf(jid, sizeof jid, "j%011" PRIx64 "%05" PRIx64, (uint64_t)(ms & 0xfffffffffffull),
             (uint64_t)(rnd(b) & 0xfffffull));
    const char *name = gr_json_get_str(body, "name", p->name ? p->name : "pipeline");
    if (!chunks || !sc || !c || !(c->s1 = strdup(jid)) || !(c->s2 = strdup(name))) {
        send_error(b, m->peer, m->peer_len, req, GR_ENOMEM, "out of memory");
        goto fail;
    }
    if (stages_json(p, chunks, nchunks)) {
        send_error(b, m->peer, m->peer_len, req, gr_errcode(), gr_errmsg());
        goto fail;
    }
    c->i1 = (int64_t)p->nstages;
    sc->c = c;
    sc->pending = nchunks;
    for (size_t k = 0; k < nchunks; k++) {
        gr_rargs a = {0};
        script_args(b, &a);
        gr_rargs_str(&a, jid);
        gr_rargs_str(&a, name);
        gr_rargs_int(&a, gr_json_get_int(body, "priority", 0));
        gr_rargs_str(&a, gr_json_get_bool(body, "no_cache", 0) ? "1" : "0");
        if (k == 0)
            gr_rargs_add(&a, text->str, text->len);
        else
            gr_rargs_str(&a, "");
        gr_rargs_add(&a, chunks[k].data, chunks[k].len);
        gr_rargs_str(&a, k == 0 ? "1" : "0");
        gr_rargs_str(&a, k + 1 == nchunks ? "1" : "0");
        gr_rargs_int(&a, (int64_t)p->nstages);
        gr_buf_free(&chunks[k]);
        run_script(b, GR_LUA_SUBMIT, &a, on_submit, sc);
    }
    free(chunks);
    gr_pipeline_free(&p);
    return;
fail:
    for (size_t k = 0; chunks && k < nchunks; k++) gr_buf_free(&chunks[k]);
    free(chunks);
    free(sc);
    ctx_free(c);
    gr_pipeline_free(&p);
}

static void on_status(void *ud, redisReply *r)
{
    cbctx *c = ud;
    gr_broker *b = c->b;
    if (!r)
        reply_unavailable(c);
    else if (r->type == REDIS_REPLY_ERROR)
        send_error(b, c->peer, c->peer_len, c->req, GR_EIO, r->str);
    else if (r->type != REDIS_REPLY_ARRAY) {
        char msg[600];
        snprintf(msg, sizeof msg, "job %s: no such job (unknown, or expired after the retention)",
                 c->s1);
        send_error(b, c->peer, c->peer_len, c->req, GR_ENOTFOUND, msg);
    } else {
        gr_buf o = {0};
        gr_wire_pk_map(&o, c->req ? 2 : 1);
        pk_req(&o, c->req);
        gr_wire_pk_str(&o, "result");
        pk_status(&o, c->s1, r);
        send_buf(b, c->peer, c->peer_len, GR_CMD_REPLY, &o);
        gr_buf_free(&o);
        const char *state = rstr(rel(rel(r, 0), 1));
        const char *finished = rstr(rel(rel(r, 0), 4));
        if (c->cmd == GR_CMD_WATCH && !*finished) {
            (void)state;
            watcher *w = calloc(1, sizeof *w);
            if (w && b->nwatch == b->watchcap) {
                size_t nc = b->watchcap ? b->watchcap * 2 : 16;
                watcher **v = realloc(b->watch, nc * sizeof *v);
                if (v) {
                    b->watch = v;
                    b->watchcap = nc;
                }
            }
            if (w && b->nwatch < b->watchcap && (w->jid = strdup(c->s1)) &&
                (w->last = strdup(*rstr(rel(r, 1)) ? rstr(rel(r, 1)) : "0-0"))) {
                memcpy(w->peer, c->peer, c->peer_len);
                w->peer_len = c->peer_len;
                b->watch[b->nwatch++] = w;
            } else if (w) {
                free(w->jid);
                free(w->last);
                free(w);
            }
        }
    }
    ctx_free(c);
}

static void pk_list(gr_buf *o, const redisReply *r)
{
    static const char *states[] = {"blocked", "ready",  "running",   "done",
                                   "cached",  "failed", "cancelled", "skipped"};
    size_t n = is_arr(r) ? r->elements : 0;
    gr_wire_pk_map(o, 1);
    gr_wire_pk_str(o, "jobs");
    gr_wire_pk_arr(o, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const redisReply *j = r->element[i];
        gr_wire_pk_map(o, 7);
        gr_wire_pk_kv_str(o, "job", rstr(rel(j, 0)));
        gr_wire_pk_kv_str(o, "name", rstr(rel(j, 1)));
        gr_wire_pk_kv_str(o, "state", rstr(rel(j, 2)));
        gr_wire_pk_str(o, "created");
        pk_int_or_nil(o, rstr(rel(j, 3)));
        gr_wire_pk_str(o, "updated");
        pk_int_or_nil(o, rstr(rel(j, 4)));
        gr_wire_pk_kv_int(o, "stages", rint_(rel(j, 5)));
        gr_wire_pk_str(o, "counts");
        gr_wire_pk_map(o, 8);
        for (int k = 0; k < 8; k++) gr_wire_pk_kv_int(o, states[k], rint_(rel(j, 6 + (size_t)k)));
    }
}

static void on_list(void *ud, redisReply *r)
{
    cbctx *c = ud;
    if (!r)
        reply_unavailable(c);
    else if (r->type == REDIS_REPLY_ERROR)
        send_error(c->b, c->peer, c->peer_len, c->req, GR_EIO, r->str);
    else {
        gr_buf o = {0};
        gr_wire_pk_map(&o, c->req ? 2 : 1);
        pk_req(&o, c->req);
        gr_wire_pk_str(&o, "result");
        pk_list(&o, r);
        send_buf(c->b, c->peer, c->peer_len, GR_CMD_REPLY, &o);
        gr_buf_free(&o);
    }
    ctx_free(c);
}

static void on_cancel(void *ud, redisReply *r)
{
    cbctx *c = ud;
    gr_broker *b = c->b;
    const char *st = rstr(rel(r, 0));
    if (!r)
        reply_unavailable(c);
    else if (r->type == REDIS_REPLY_ERROR)
        send_error(b, c->peer, c->peer_len, c->req, GR_EIO, r->str);
    else if (!strcmp(st, "notfound")) {
        char msg[600];
        snprintf(msg, sizeof msg, "job %s: no such job", c->s1);
        send_error(b, c->peer, c->peer_len, c->req, GR_ENOTFOUND, msg);
    } else {
        const redisReply *running = rel(r, 2);
        for (size_t i = 0; is_arr(running) && i < running->elements; i++) {
            const redisReply *e = running->element[i];
            bworker *w = worker_by_id(b, rstr(rel(e, 2)));
            gr_buf task = {0};
            gr_buf_printf(&task, "%s:%s", c->s1, rstr(rel(e, 0)));
            if (w && task.data) send_abort(b, w, task.data, rint_(rel(e, 1)), "job cancelled");
            gr_buf_free(&task);
        }
        gr_buf o = {0};
        gr_wire_pk_map(&o, c->req ? 2 : 1);
        pk_req(&o, c->req);
        gr_wire_pk_str(&o, "result");
        gr_wire_pk_map(&o, 2);
        gr_wire_pk_kv_str(&o, "job", c->s1);
        gr_wire_pk_kv_str(&o, "state", rstr(rel(r, 1)));
        send_buf(b, c->peer, c->peer_len, GR_CMD_REPLY, &o);
        gr_buf_free(&o);
        if (!strcmp(st, "ok")) GR_INFO(LOG, "job %s cancelled", c->s1);
    }
    ctx_free(c);
}

static void handle_workers(gr_broker *b, gr_wire_msg *m)
{
    const gr_json *req = gr_json_get(m->body, "req");
    int64_t now = mono_ms();
    gr_buf o = {0};
    gr_wire_pk_map(&o, req ? 2 : 1);
    pk_req(&o, req);
    gr_wire_pk_str(&o, "result");
    gr_wire_pk_map(&o, 1);
    gr_wire_pk_str(&o, "workers");
    gr_wire_pk_arr(&o, (uint32_t)b->nw);
    for (size_t i = 0; i < b->nw; i++) {
        bworker *w = b->w[i];
        gr_wire_pk_map(&o, 10);
        gr_wire_pk_kv_str(&o, "worker", w->wid);
        gr_wire_pk_kv_str(&o, "host", w->host ? w->host : "");
        gr_wire_pk_kv_int(&o, "pid", w->pid);
        gr_wire_pk_str(&o, "ops");
        gr_wire_pk_arr(&o, (uint32_t)w->nops);
        for (size_t k = 0; k < w->nops; k++) gr_wire_pk_str(&o, w->ops[k]);
        gr_wire_pk_kv_str(&o, "version", w->version ? w->version : "");
        gr_wire_pk_kv_str(&o, "state", w->task ? "busy" : "idle");
        gr_wire_pk_str(&o, "task");
        pk_str_or_nil(&o, w->task);
        gr_wire_pk_kv_int(&o, "attempt", w->attempt);
        gr_wire_pk_kv_int(&o, "heartbeat_age_ms", now - w->last_seen);
        gr_wire_pk_kv_int(&o, "rss", w->rss);
    }
    send_buf(b, m->peer, m->peer_len, GR_CMD_REPLY, &o);
    gr_buf_free(&o);
}

static void handle_client(gr_broker *b, gr_wire_msg *m)
{
    const gr_json *req = gr_json_get(m->body, "req");
    if (m->cmd == GR_CMD_SUBMIT) {
        handle_submit(b, m);
        return;
    }
    if (m->cmd == GR_CMD_WORKERS) {
        handle_workers(b, m);
        return;
    }
    if (m->cmd == GR_CMD_UNWATCH) {
        const char *jid = gr_json_get_str(m->body, "job", "");
        for (size_t i = 0; i < b->nwatch;) {
            watcher *w = b->watch[i];
            if (w->peer_len == m->peer_len && !memcmp(w->peer, m->peer, m->peer_len) &&
                !strcmp(w->jid, jid))
                watcher_remove(b, i);
            else
                i++;
        }
        gr_buf o = {0};
        gr_wire_pk_map(&o, req ? 2 : 1);
        pk_req(&o, req);
        gr_wire_pk_str(&o, "result");
        gr_wire_pk_map(&o, 1);
        gr_wire_pk_kv_str(&o, "job", jid);
        send_buf(b, m->peer, m->peer_len, GR_CMD_REPLY, &o);
        gr_buf_free(&o);
        return;
    }
    if (!gr_rconn_up(b->rc)) {
        send_error(b, m->peer, m->peer_len, req, GR_ENET, "redis is unavailable; try again");
        return;
    }
    cbctx *c = ctx_new(b, m);
    if (!c) return;
    c->cmd = m->cmd;
    const char *jid = gr_json_get_str(m->body, "job", NULL);
    if (jid && !(c->s1 = strdup(jid))) {
        ctx_free(c);
        return;
    }
    gr_rargs a = {0};
    script_args(b, &a);
    if ((m->cmd == GR_CMD_STATUS || m->cmd == GR_CMD_WATCH) && jid) {
        gr_rargs_str(&a, jid);
        run_script(b, GR_LUA_STATUS, &a, on_status, c);
    } else if (m->cmd == GR_CMD_CANCEL) {
        gr_rargs_str(&a, jid);
        run_script(b, GR_LUA_CANCEL, &a, on_cancel, c);
    } else { /* LIST, or STATUS without a job */
        int64_t limit = gr_json_get_int(m->body, "limit", LIST_DEFAULT);
        if (limit <= 0 || limit > LIST_MAX) limit = limit <= 0 ? LIST_DEFAULT : LIST_MAX;
        gr_rargs_int(&a, limit);
        gr_rargs_str(&a, gr_json_get_str(m->body, "state", ""));
        run_script(b, GR_LUA_LIST, &a, on_list, c);
    }
}

/* ------------------------------------------------------------------ */
/* dispatching received messages                                       */

static void handle(gr_broker *b, gr_wire_msg *m)
{
    bworker *w = worker_by_peer(b, m->peer, m->peer_len);
    switch (m->cmd) {
    case GR_CMD_READY:
        handle_ready(b, m);
        return;
    case GR_CMD_HEARTBEAT:
        if (!w) break;
        renew(b, w, gr_json_get_int(m->body, "rss", -1));
        return;
    case GR_CMD_PROGRESS:
        handle_progress(b, m, w);
        if (!w) break;
        renew(b, w, -1);
        return;
    case GR_CMD_DONE:
    case GR_CMD_FAIL: {
        gr_json *body = m->body;
        m->body = NULL; /* handle_result owns it */
        if (w) w->last_seen = mono_ms();
        handle_result(b, m->cmd, body, m->peer, m->peer_len, w);
        if (!w) break;
        return;
    }
    default:
        handle_client(b, m);
        return;
    }
    /* a worker message from a peer we do not know (e.g. after a restart) */
    send_simple(b, m->peer, m->peer_len, GR_CMD_DISCONNECT, "reason", "unknown worker: send READY");
}

/* ------------------------------------------------------------------ */
/* timers                                                              */

static void on_tick(void *ud, redisReply *r)
{
    cbctx *c = ud;
    gr_broker *b = c->b;
    b->tick_busy = 0;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        const redisReply *acts = rel(r, 0);
        for (size_t i = 0; is_arr(acts) && i < acts->elements; i++) {
            const redisReply *a = acts->element[i];
            const char *kind = rstr(rel(a, 0)), *jid = rstr(rel(a, 1)), *sid = rstr(rel(a, 2));
            int64_t attempt = rint_(rel(a, 3));
            const char *wid = rstr(rel(a, 4)), *res = rstr(rel(a, 5));
            GR_WARN(LOG, "job %s stage '%s' attempt %lld: %s (worker %s) -> %s", jid, sid,
                    (long long)attempt, !strcmp(kind, "lost") ? "lease lapsed" : "timed out", wid,
                    res);
            bworker *w = worker_by_id(b, wid);
            gr_buf task = {0};
            gr_buf_printf(&task, "%s:%s", jid, sid);
            if (w && task.data && !strcmp(kind, "timeout"))
                send_abort(b, w, task.data, attempt, "timed out");
            if (w && !strcmp(kind, "lost") && w->task && task.data && !strcmp(w->task, task.data)) {
                /* it is connected but missed its lease: let it stop */
                send_abort(b, w, task.data, attempt, "lease lapsed");
            }
            gr_buf_free(&task);
        }
        const redisReply *ops = rel(r, 1);
        for (size_t i = 0; is_arr(ops) && i < ops->elements; i++) op_hint(b, rstr(ops->element[i]));
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        GR_ERROR(LOG, "tick: %s", r->str);
    }
    ctx_free(c);
}

static void on_recover(void *ud, redisReply *r)
{
    cbctx *c = ud;
    if (!c->i1) c->b->recover_busy = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements) {
        if (!c->i1) GR_INFO(LOG, "resolving %zu stage(s) left waiting", r->elements);
        /* a full batch: there may be more, fetch them once these are done */
        resolve_infos(c->b, r, c->i1 && r->elements >= RECOVER_LIMIT);
    }
    ctx_free(c);
}

/* Queues recover.lua; chain: keep draining while batches come back full. */
static void recover(gr_broker *b, int chain)
{
    cbctx *c = ctx_new(b, NULL);
    if (!c) {
        if (!chain) b->recover_busy = 0;
        return;
    }
    c->i1 = chain;
    gr_rargs a = {0};
    script_args(b, &a);
    gr_rargs_int(&a, RECOVER_LIMIT);
    run_script(b, GR_LUA_RECOVER, &a, on_recover, c);
}

static void on_ignore(void *ud, redisReply *r)
{
    cbctx *c = ud;
    if (r && r->type == REDIS_REPLY_ERROR) GR_WARN(LOG, "%s", r->str);
    ctx_free(c);
}

static void on_pruned(void *ud, redisReply *r)
{
    cbctx *c = ud;
    c->b->prune_busy = 0;
    on_ignore(ud, r);
}

static void on_watch(void *ud, redisReply *r)
{
    cbctx *c = ud;
    gr_broker *b = c->b;
    size_t wi = SIZE_MAX;
    for (size_t i = 0; i < b->nwatch; i++)
        if (b->watch[i] == (watcher *)c->s2) wi = i;
    c->s2 = NULL; /* borrowed pointer, not ours to free */
    if (wi == SIZE_MAX) {
        ctx_free(c);
        return;
    }
    watcher *w = b->watch[wi];
    w->inflight = 0;
    const redisReply *entries = rel(rel(rel(r, 0), 1), 0) ? rel(rel(r, 0), 1) : NULL;
    int drop = 0;
    for (size_t i = 0; is_arr(entries) && i < entries->elements && !drop; i++) {
        const redisReply *e = entries->element[i];
        const char *id = rstr(rel(e, 0));
        const redisReply *f = rel(e, 1);
        size_t nf = is_arr(f) ? f->elements / 2 : 0;
        int final = 0;
        gr_buf o = {0};
        gr_wire_pk_map(&o, (uint32_t)(nf + 2));
        gr_wire_pk_kv_str(&o, "job", w->jid);
        gr_wire_pk_kv_str(&o, "seq", id);
        for (size_t k = 0; k < nf; k++) {
            const char *key = rstr(f->element[2 * k]), *val = rstr(f->element[2 * k + 1]);
            gr_wire_pk_str(&o, key);
            if (!strcmp(key, "ts") || !strcmp(key, "attempt"))
                gr_wire_pk_int(&o, strtoll(val, NULL, 10));
            else if (!strcmp(key, "done") || !strcmp(key, "total"))
                pk_num_str(&o, val);
            else if (!strcmp(key, "final")) {
                gr_wire_pk_bool(&o, 1);
                final = 1;
            } else
                gr_wire_pk_str(&o, val);
        }
        int rc = send_buf(b, w->peer, w->peer_len, GR_CMD_EVENT, &o);
        gr_buf_free(&o);
        char *nl = strdup(id);
        if (nl) {
            free(w->last);
            w->last = nl;
        }
        if (final || rc == GR_ENOTFOUND) drop = 1;
    }
    if (drop) watcher_remove(b, wi);
    ctx_free(c);
}

static void timers(gr_broker *b)
{
    int64_t now = mono_ms();
    int up = gr_rconn_ensure(b->rc);
    if (up && gr_rconn_epoch(b->rc) != b->epoch_seen) {
        /* (re)connected: workers' leases could not be renewed while Redis was
         * away (or this broker just started), so give them time to report */
        b->epoch_seen = gr_rconn_epoch(b->rc);
        b->grace_until = now + b->lease_ms + b->o.heartbeat_ms;
        op_hint_all(b);
        b->next_second = now; /* recover at once */
        for (size_t i = 0; i < b->nw; i++) {
            /* Redis may have lost them (a restart) or missed their READY */
            b->w[i]->last_hb_write = 0;
            if (!b->w[i]->gone) worker_register(b, b->w[i]);
        }
        /* replay results that arrived while Redis was away */
        size_t n = b->nrq;
        replay *rq = b->rq;
        b->rq = NULL;
        b->nrq = b->rqcap = 0;
        if (n) GR_INFO(LOG, "replaying %zu result(s) received while redis was away", n);
        for (size_t i = 0; i < n; i++)
            handle_result(b, rq[i].cmd, rq[i].body, rq[i].peer, rq[i].peer_len,
                          worker_by_peer(b, rq[i].peer, rq[i].peer_len));
        free(rq);
    }
    if (b->last_timers && now - b->last_timers > b->o.heartbeat_ms) {
        /* this loop was stalled (a slow Redis): workers could not be heard
         * meanwhile, so that time does not count against them */
        for (size_t i = 0; i < b->nw; i++) b->w[i]->last_seen += now - b->last_timers;
        GR_WARN(LOG, "event loop stalled for %lld ms", (long long)(now - b->last_timers));
    }
    b->last_timers = now;
    if (now >= b->next_hb) {
        b->next_hb = now + b->o.heartbeat_ms;
        int64_t dead = (int64_t)b->o.heartbeat_ms * b->o.liveness;
        for (size_t i = 0; i < b->nw;) {
            bworker *w = b->w[i];
            if (now - w->last_seen > dead || w->gone) {
                GR_WARN(LOG, "worker %s: %s; forgetting it%s%s%s", w->wid,
                        w->gone ? "its connection is closed" : "no heartbeat within the liveness",
                        w->task ? " (its task is requeued when the lease lapses: " : "",
                        w->task ? w->task : "", w->task ? ")" : "");
                if (up) {
                    gr_rargs a = {0};
                    script_args(b, &a);
                    gr_rargs_str(&a, w->wid);
                    run_script(b, GR_LUA_WORKER_GONE, &a, on_ignore, ctx_new(b, NULL));
                }
                worker_remove(b, w);
                continue;
            }
            send_heartbeat(b, w);
            i++;
        }
    }
    if (!up) return;
    if (now >= b->next_tick && !b->tick_busy) {
        b->next_tick = now + TICK_MS;
        cbctx *c = ctx_new(b, NULL);
        b->tick_busy = c != NULL;
        gr_rargs a = {0};
        script_args(b, &a);
        gr_rargs_str(&a, now >= b->grace_until ? "1" : "0");
        gr_rargs_int(&a, TICK_LIMIT);
        if (c)
            run_script(b, GR_LUA_TICK, &a, on_tick, c);
        else
            gr_rargs_reset(&a);
    }
    if (now >= b->next_watch) {
        b->next_watch = now + WATCH_MS;
        for (size_t i = 0; i < b->nwatch; i++) {
            watcher *w = b->watch[i];
            if (w->inflight) continue;
            cbctx *c = ctx_new(b, NULL);
            if (!c) continue;
            c->s2 = (char *)w; /* identifies the watcher; checked before use */
            w->inflight = 1;
            gr_buf key = {0};
            gr_buf_printf(&key, "%sevents:%s", b->prefix, w->jid);
            char cnt[16];
            snprintf(cnt, sizeof cnt, "%d", XREAD_COUNT);
            const char *argv[6] = {"XREAD", "COUNT", cnt, "STREAMS", key.data ? key.data : "",
                                   w->last};
            size_t lens[6] = {5, 5, strlen(cnt), 7, key.len, strlen(w->last)};
            gr_rconn_cmd(b->rc, on_watch, c, 6, argv, lens);
            gr_buf_free(&key);
        }
    }
    if (now >= b->next_second) {
        b->next_second = now + SECOND_MS;
        op_hint_all(b);
        if (!b->recover_busy) {
            b->recover_busy = 1;
            recover(b, 0);
        }
        /* wire counters for dashboards */
        gr_buf key = {0};
        gr_buf_printf(&key, "%smetrics", b->prefix);
        const gr_wire_stats *s = &b->ws;
        char v[9][24];
        uint64_t vals[9] = {s->received, s->dropped,  s->bad_frames, s->bad_tag,     s->bad_cmd,
                            s->oversize, s->bad_body, s->bad_fields, (uint64_t)b->nw};
        const char *names[9] = {"wire_received", "wire_dropped",    "wire_bad_frames",
                                "wire_bad_tag",  "wire_bad_cmd",    "wire_oversize",
                                "wire_bad_body", "wire_bad_fields", "workers_connected"};
        const char *argv[20];
        size_t lens[20];
        argv[0] = "HSET";
        lens[0] = 4;
        argv[1] = key.data ? key.data : "";
        lens[1] = key.len;
        for (int i = 0; i < 9; i++) {
            snprintf(v[i], sizeof v[i], "%" PRIu64, vals[i]);
            argv[2 + 2 * i] = names[i];
            lens[2 + 2 * i] = strlen(names[i]);
            argv[3 + 2 * i] = v[i];
            lens[3 + 2 * i] = strlen(v[i]);
        }
        gr_rconn_cmd(b->rc, on_ignore, ctx_new(b, NULL), 20, argv, lens);
        gr_buf_free(&key);
    }
    if (now >= b->next_prune && !b->prune_busy) {
        /* a minute, or half the retention when that is shorter */
        int64_t half = b->o.retention_s * 500;
        b->next_prune = now + (half < PRUNE_MS ? (half < 500 ? 500 : half) : PRUNE_MS);
        gr_rargs a = {0};
        script_args(b, &a);
        gr_rargs_int(&a, PRUNE_LIMIT);
        cbctx *c = ctx_new(b, NULL);
        b->prune_busy = c != NULL;
        if (c)
            run_script(b, GR_LUA_PRUNE, &a, on_pruned, c);
        else
            gr_rargs_reset(&a);
    }
}

/* ------------------------------------------------------------------ */
/* life cycle                                                          */

gr_broker *gr_broker_new(const gr_broker_opts *opts)
{
    gr_broker *b = calloc(1, sizeof *b);
    if (!b) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    b->o = *opts;
    gr_broker_opts_default(&b->o);
    b->bind = xstrdup(b->o.bind);
    b->redis_url = xstrdup(b->o.redis_url);
    b->prefix = xstrdup(b->o.prefix);
    b->store = xstrdup(b->o.store);
    b->o.bind = b->bind;
    b->o.redis_url = b->redis_url;
    b->o.prefix = b->prefix;
    b->o.store = b->store;
    b->lease_ms = (int64_t)b->o.heartbeat_ms * b->o.liveness;
    if (getrandom(&b->rng, sizeof b->rng, 0) != sizeof b->rng) b->rng = (uint64_t)wall_us();
    b->rng |= 1;
    if (!(b->logged = calloc(LOGGED_PEERS_MAX, sizeof *b->logged))) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    if (!(b->rc = gr_rconn_new(b->redis_url, REDIS_TIMEOUT_MS))) goto fail;
    if (b->store && !(b->cas = gr_cas_open(b->store))) goto fail;
    if (!(b->zctx = zmq_ctx_new())) {
        gr_seterr(GR_EIO, "zmq context: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (!(b->sock = gr_wire_router(b->zctx, b->bind))) goto fail;
    for (const gr_op *const *op = gr_ops; *op; op++) op_flag(b, (*op)->name);
    int64_t now = mono_ms();
    b->grace_until = now + b->lease_ms + b->o.heartbeat_ms;
    b->next_prune = now + 1000;
    return b;
fail:
    gr_broker_destroy(&b);
    return NULL;
}

int gr_broker_run(gr_broker *b, volatile sig_atomic_t *stop)
{
    GR_INFO(LOG, "listening on %s, redis %s, prefix %s, heartbeat %d ms x %d", b->bind,
            b->redis_url, b->prefix, b->o.heartbeat_ms, b->o.liveness);
    gr_wire_msg m = {0};
    int rc = 0;
    gr_rconn_ensure(b->rc); /* connect before the first request, not after */
    while (!*stop) {
        int64_t now = mono_ms();
        int64_t next = b->next_tick;
        if (b->nwatch && b->next_watch < next) next = b->next_watch;
        if (b->next_hb < next) next = b->next_hb;
        long timeout = (long)(next - now);
        if (timeout < 0) timeout = 0;
        if (timeout > 100) timeout = 100;
        /* Redis replies are handled as they come, so the broker takes the
         * next messages while Redis runs the scripts of the last ones */
        zmq_pollitem_t it[2] = {{b->sock, 0, ZMQ_POLLIN, 0}, {NULL, gr_rconn_fd(b->rc), 0, 0}};
        it[1].events = (short)(ZMQ_POLLIN | (gr_rconn_want_write(b->rc) ? ZMQ_POLLOUT : 0));
        if (zmq_poll(it, it[1].fd >= 0 ? 2 : 1, timeout) < 0) {
            if (zmq_errno() == EINTR) continue;
            rc = gr_seterr(GR_EIO, "zmq poll: %s", zmq_strerror(zmq_errno()));
            break;
        }
        for (int n = 0; n < RECV_BATCH; n++) {
            int r = gr_wire_recv(b->sock, GR_WIRE_TO_BROKER, 1, GR_WIRE_NOWAIT, &m, &b->ws);
            if (r == 1) break;
            if (r == GR_EIO) {
                rc = r;
                goto out;
            }
            if (r < 0) {
                log_dropped(b, &m);
                continue;
            }
            handle(b, &m);
        }
        gr_rconn_pump(b->rc, it[1].fd >= 0 && (it[1].revents & (ZMQ_POLLIN | ZMQ_POLLERR)));
        timers(b);
        dispatch_idle(b);
        gr_rconn_pump(b->rc, 0);
    }
out:
    gr_wire_msg_clear(&m);
    GR_INFO(LOG, "stopping");
    return rc;
}

void gr_broker_destroy(gr_broker **pb)
{
    gr_broker *b = pb ? *pb : NULL;
    if (!b) return;
    if (b->rc) gr_rconn_flush(b->rc);
    gr_rconn_destroy(&b->rc);
    for (size_t i = 0; i < b->nw; i++) worker_free(b->w[i]);
    free(b->w);
    for (size_t i = 0; i < b->nops; i++) free(b->ops[i].op);
    free(b->ops);
    while (b->nwatch) watcher_remove(b, 0);
    free(b->watch);
    for (size_t i = 0; i < b->nrq; i++) gr_json_free(b->rq[i].body);
    free(b->rq);
    free(b->logged);
    if (b->sock) {
        int zero = 0; /* nothing to wait for at shutdown */
        zmq_setsockopt(b->sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(b->sock);
    }
    if (b->zctx) zmq_ctx_term(b->zctx);
    gr_cas_destroy(&b->cas);
    free(b->bind);
    free(b->redis_url);
    free(b->prefix);
    free(b->store);
    free(b);
    *pb = NULL;
}
