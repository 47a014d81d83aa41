/* test_broker_faults: the broker when things go wrong, with a real
 * redis-server — a worker that dies mid-stage (lease lapses, requeue, its
 * late DONE ignored), per-stage timeouts, cancellation reaching a running
 * stage, a broker restart with re-adoption of a running attempt, garbage on
 * the port, Redis restarting mid-job (AOF), Redis hanging (SIGSTOP) under
 * the broker's non-blocking connection, and retention. */
#include "gr_test.h"
#include "test_broker_util.h"
#include "gr_rconn.h"

#include <poll.h>

static th_redis R;
static th_broker B;
static void *Z;
static gr_broker_opts O;

#define HB       100
#define LIVENESS 3

static char *copy_jid(const char *j)
{
    static char b[8][64];
    static int k;
    char *d = b[k++ & 7];
    snprintf(d, 64, "%s", j ? j : "");
    return d;
}

/* A worker takes a stage and goes silent: after heartbeat x liveness the
 * stage is requeued to another worker; the first one's late DONE is stale. */
static void test_dead_worker(void)
{
    th_peer cl = th_connect(Z, B.endpoint), w1 = th_connect(Z, B.endpoint),
            w2 = th_connect(Z, B.endpoint);
    char err[512];
    th_ready(&w1, "w-dies", "[\"sleep\"]", NULL, 0);
    th_sleep_ms(50);
    char *jid = copy_jid(
        th_submit(&cl, "name: d\nstages:\n  s: {op: sleep, seconds: 60}\n", 1, err, sizeof err));
    gr_wire_msg t1 = {0}, t2 = {0};
    CHECK(th_expect(&w1, GR_CMD_TASK, &t1, 5000, 1) == 0);
    int64_t a1 = gr_json_get_int(t1.body, "attempt", 0);
    int64_t t0 = th_now_ms();
    w1.auto_hb = 0; /* silent from now on, like a SIGKILLed process */
    th_ready(&w2, "w-lives", "[\"sleep\"]", NULL, 0);
    CHECK(th_expect(&w2, GR_CMD_TASK, &t2, 5000, 1) == 0);
    int64_t dt = th_now_ms() - t0;
    CHECK_EQ_INT(gr_json_get_int(t2.body, "attempt", 0), a1 + 1);
    /* lease = HB x LIVENESS = 300 ms; the tick runs every 50 ms */
    CHECK_MSG(dt >= HB * LIVENESS - 20 && dt < HB * LIVENESS + 2000, "requeued after %lld ms",
              (long long)dt);
    /* the presumed-dead worker answers late: acknowledged and ignored */
    th_done(&w1, &t1, "sha256:1111111111111111111111111111111111111111111111111111111111111111",
            NULL);
    th_sleep_ms(100);
    gr_json *s = th_status(&cl, jid);
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "s"), "state", ""), "running"));
    gr_json_free(s);
    th_done(&w2, &t2, NULL, NULL);
    s = th_wait_job(&cl, jid, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "done"));
    const gr_json *st = th_stage(s, "s");
    CHECK(st && gr_json_get_int(st, "attempts", 0) == a1 + 1);
    CHECK(st && !strcmp(gr_json_get_str(st, "worker", ""), "w-lives"));
    CHECK(st && strcmp(gr_json_get_str(gr_json_get(st, "outputs"), "out", ""),
                       "sha256:1111111111111111111111111111111111111111111111111111111111111111"));
    gr_json_free(s);
    redisReply *r = th_redis_cmd(&R, "HGET graft-f:metrics stale");
    CHECK(r && r->type == REDIS_REPLY_STRING && atoi(r->str) >= 1);
    if (r) freeReplyObject(r);
    gr_wire_msg_clear(&t1);
    gr_wire_msg_clear(&t2);
    th_close(&w1);
    th_close(&w2);
    th_close(&cl);
}

/* timeout: 1 s per attempt; the worker gets CANCEL and the stage is retried */
/* Waits (up to 5 s) until the broker lists none of the workers an earlier
 * test closed: one it has not noticed yet could be handed the next task and
 * use up a retry when its lease lapses (seen on a loaded machine). */
static void wait_forgotten(th_peer *cl, const char *const *wids)
{
    char err[512];
    int64_t end = th_now_ms() + 5000;
    for (int listed = 1; listed && th_now_ms() < end;) {
        gr_json *wl = th_request(cl, GR_CMD_WORKERS, "{}", err, sizeof err);
        const gr_json *ws = gr_json_get(wl, "workers");
        listed = 0;
        for (size_t i = 0; ws && i < ws->len; i++)
            for (const char *const *w = wids; *w; w++)
                listed |= !strcmp(gr_json_get_str(ws->items[i], "worker", ""), *w);
        gr_json_free(wl);
        if (listed) th_sleep_ms(50);
    }
}

static void test_timeout(void)
{
    th_peer cl = th_connect(Z, B.endpoint), w = th_connect(Z, B.endpoint);
    char err[512];
    static const char *const earlier[] = {"w-dies", "w-lives", NULL};
    wait_forgotten(&cl, earlier);
    th_ready(&w, "w-slow", "[\"sleep\"]", NULL, 0);
    char *jid = copy_jid(
        th_submit(&cl, "name: t\nstages:\n  s: {op: sleep, seconds: 60, timeout: 1, retries: 1}\n",
                  1, err, sizeof err));
    gr_wire_msg t = {0}, c = {0};
    CHECK(th_expect(&w, GR_CMD_TASK, &t, 5000, 1) == 0);
    CHECK_EQ_INT(gr_json_get_int(t.body, "timeout", 0), 1);
    int64_t a1 = gr_json_get_int(t.body, "attempt", 0);
    int64_t t0 = th_now_ms();
    CHECK(th_expect(&w, GR_CMD_ABORT, &c, 5000, 1) == 0);
    int64_t dt = th_now_ms() - t0;
    CHECK_MSG(dt >= 950 && dt < 3000, "cancelled after %lld ms", (long long)dt);
    CHECK(!strcmp(gr_json_get_str(c.body, "task", ""), gr_json_get_str(t.body, "task", "")));
    CHECK_EQ_INT(gr_json_get_int(c.body, "attempt", 0), a1);
    /* the handler stops and the worker reports it: a stale FAIL */
    th_fail(&w, &t, "cancelled", 0);
    CHECK(th_expect(&w, GR_CMD_TASK, &t, 5000, 1) == 0);
    CHECK_EQ_INT(gr_json_get_int(t.body, "attempt", 0), a1 + 1);
    CHECK(th_expect(&w, GR_CMD_ABORT, &c, 5000, 1) == 0);
    th_fail(&w, &t, "cancelled", 0);
    gr_json *s = th_wait_job(&cl, jid, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "failed"));
    CHECK_CONTAINS(gr_json_get_str(th_stage(s, "s"), "error", ""), "timed out after 1 s");
    gr_json_free(s);
    gr_wire_msg_clear(&t);
    gr_wire_msg_clear(&c);
    th_close(&w);
    th_close(&cl);
}

static void test_cancel(void)
{
    th_peer cl = th_connect(Z, B.endpoint), w = th_connect(Z, B.endpoint);
    char err[512];
    th_ready(&w, "w-cancel", "[\"sleep\",\"noop\"]", NULL, 0);
    char *jid = copy_jid(th_submit(&cl,
                                   "name: c\nstages:\n  s: {op: sleep, seconds: 60}\n"
                                   "  n: {op: noop, inputs: [s]}\n  m: {op: noop, inputs: [n]}\n",
                                   1, err, sizeof err));
    gr_wire_msg t = {0}, c = {0};
    CHECK(th_expect(&w, GR_CMD_TASK, &t, 5000, 1) == 0);
    char q[128];
    snprintf(q, sizeof q, "{\"job\":\"%s\"}", jid);
    gr_json *r = th_request(&cl, GR_CMD_CANCEL, q, err, sizeof err);
    CHECK(r && !strcmp(gr_json_get_str(r, "state", ""), "cancelled"));
    gr_json_free(r);
    CHECK(th_expect(&w, GR_CMD_ABORT, &c, 2000, 1) == 0);
    CHECK(!strcmp(gr_json_get_str(c.body, "task", ""), gr_json_get_str(t.body, "task", "")));
    gr_json *s = th_status(&cl, jid);
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "s"), "state", ""), "running"));
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "n"), "state", ""), "cancelled"));
    gr_json_free(s);
    th_fail(&w, &t, "cancelled", 0); /* cooperative stop */
    s = th_wait_job(&cl, jid, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "cancelled"));
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "s"), "state", ""), "cancelled"));
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "m"), "state", ""), "cancelled"));
    gr_json_free(s);
    CHECK(th_expect(&w, GR_CMD_TASK, &t, 300, 1) != 0);
    /* the job's keys now carry the retention */
    redisReply *rr = th_redis_cmd(&R, "TTL graft-f:job:%s", jid);
    CHECK(rr && rr->type == REDIS_REPLY_INTEGER && rr->integer > 0);
    if (rr) freeReplyObject(rr);
    /* cancelling again, or an unknown job */
    r = th_request(&cl, GR_CMD_CANCEL, q, err, sizeof err);
    CHECK(r && !strcmp(gr_json_get_str(r, "state", ""), "cancelled"));
    gr_json_free(r);
    r = th_request(&cl, GR_CMD_CANCEL, "{\"job\":\"jnope\"}", err, sizeof err);
    CHECK(r == NULL);
    gr_wire_msg_clear(&t);
    gr_wire_msg_clear(&c);
    th_close(&w);
    th_close(&cl);
}

/* The broker is stopped (as by SIGKILL: nothing is flushed that is not in
 * Redis already) while a worker runs a stage; a new broker tells the worker
 * DISCONNECT, the worker re-registers naming its task, which is re-adopted:
 * same attempt, no second dispatch, the job finishes. */
static void test_broker_restart(void)
{
    th_peer cl = th_connect(Z, B.endpoint), w = th_connect(Z, B.endpoint);
    char err[512];
    th_ready(&w, "w-keep", "[\"sleep\",\"noop\"]", NULL, 0);
    char *jid = copy_jid(th_submit(
        &cl, "name: rs\nstages:\n  s: {op: sleep, seconds: 60}\n  n: {op: noop, inputs: [s]}\n", 1,
        err, sizeof err));
    gr_wire_msg t = {0}, m = {0};
    CHECK(th_expect(&w, GR_CMD_TASK, &t, 5000, 1) == 0);
    th_broker_stop(&B);
    th_sleep_ms(2 * HB * LIVENESS); /* longer than a lease: only the grace period saves it */
    CHECK(th_broker_start(&B, &O) == 0);
    /* the worker's heartbeat reaches a broker that does not know it */
    int disconnected = 0;
    int64_t end = th_now_ms() + 5000;
    w.auto_hb = 0;
    while (!disconnected && th_now_ms() < end) {
        th_send_json(&w, GR_CMD_HEARTBEAT, "{}");
        if (th_recv(&w, GR_WIRE_TO_WORKER, &m, 200) == 0 && m.cmd == GR_CMD_DISCONNECT)
            disconnected = 1;
    }
    CHECK(disconnected);
    th_ready(&w, "w-keep", "[\"sleep\",\"noop\"]", gr_json_get_str(t.body, "task", ""),
             gr_json_get_int(t.body, "attempt", 0));
    /* no new TASK for the adopted stage while it runs (well past the grace) */
    CHECK(th_expect(&w, GR_CMD_TASK, &m, 2 * HB * LIVENESS + 2 * HB, 1) != 0);
    int64_t a1 = gr_json_get_int(t.body, "attempt", 0);
    gr_json *s = th_status(&cl, jid);
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "s"), "state", ""), "running"));
    CHECK(s && gr_json_get_int(th_stage(s, "s"), "attempts", 0) == a1);
    gr_json_free(s);
    th_done(&w, &t, NULL, NULL);
    CHECK(th_expect(&w, GR_CMD_TASK, &m, 5000, 1) == 0);
    CHECK(!strcmp(gr_json_get_str(m.body, "stage", ""), "n"));
    th_done(&w, &m, NULL, NULL);
    s = th_wait_job(&cl, jid, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "done"));
    CHECK(s && gr_json_get_int(th_stage(s, "s"), "attempts", 0) == a1);
    gr_json_free(s);
    redisReply *r = th_redis_cmd(&R, "HGET graft-f:metrics adopted");
    CHECK(r && r->type == REDIS_REPLY_STRING && atoi(r->str) >= 1);
    if (r) freeReplyObject(r);

    /* a worker naming an attempt that is not current gets CANCEL for it */
    th_peer w2 = th_connect(Z, B.endpoint);
    char task[96];
    snprintf(task, sizeof task, "%s:s", jid);
    th_ready(&w2, "w-liar", "[\"sleep\"]", task, 7);
    CHECK(th_expect(&w2, GR_CMD_ABORT, &m, 2000, 1) == 0);
    CHECK_EQ_INT(gr_json_get_int(m.body, "attempt", 0), 7);
    gr_wire_msg_clear(&t);
    gr_wire_msg_clear(&m);
    th_close(&w2);
    th_close(&w);
    th_close(&cl);
}

/* Garbage from a raw socket while a job runs: counted, dropped, harmless. */
static void test_garbage(void)
{
    th_peer cl = th_connect(Z, B.endpoint), w = th_connect(Z, B.endpoint);
    void *g = zmq_socket(Z, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(g, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(g, B.endpoint);
    char err[512];
    th_ready(&w, "w-garbage", "[\"noop\"]", NULL, 0);
    char *jid =
        copy_jid(th_submit(&cl,
                           "name: g\nstages:\n  a: {op: noop}\n  b: {op: noop, inputs: [a]}\n"
                           "  c: {op: noop, inputs: [b]}\n",
                           1, err, sizeof err));
    static const char stale_done[] = "\x83\xa4task\xa5jx:zz\xa7\x61ttempt\x01\xa7outputs\x80";
    uint8_t junk[4096];
    uint64_t x = 88172645463325252ull;
    int sent = 0;
    for (int i = 0; i < 300; i++) {
        for (size_t k = 0; k < sizeof junk; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk[k] = (uint8_t)x;
        }
        size_t n = 1 + (x % sizeof junk);
        switch (i % 5) {
        case 0:
            zmq_send(g, junk, n, 0);
            break; /* one random frame */
        case 1:    /* right tag, random command and body */
            zmq_send(g, "GRAFT/1", 7, ZMQ_SNDMORE);
            zmq_send(g, junk, 1, ZMQ_SNDMORE);
            zmq_send(g, junk + 1, n, 0);
            break;
        case 2: /* a DONE whose body is not msgpack */
            zmq_send(g, "GRAFT/1", 7, ZMQ_SNDMORE);
            zmq_send(g, "\x23", 1, ZMQ_SNDMORE);
            zmq_send(g, "\xc1\xc1", 2, 0);
            break;
        case 3: /* a DONE for a task that does not exist (well-formed) */
            zmq_send(g, "GRAFT/1", 7, ZMQ_SNDMORE);
            zmq_send(g, "\x23", 1, ZMQ_SNDMORE);
            zmq_send(g, stale_done, sizeof stale_done - 1, 0);
            break;
        default: /* many frames */
            for (int f = 0; f < 6; f++) zmq_send(g, junk, 8, ZMQ_SNDMORE);
            zmq_send(g, junk, 8, 0);
        }
        sent++;
    }
    gr_wire_msg t = {0};
    for (int k = 0; k < 3; k++) {
        CHECK(th_expect(&w, GR_CMD_TASK, &t, 5000, 1) == 0);
        th_done(&w, &t, NULL, NULL);
    }
    gr_json *s = th_wait_job(&cl, jid, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "done"));
    gr_json_free(s);
    const gr_wire_stats *ws = gr_broker_wire_stats(B.b);
    CHECK_MSG(ws->dropped >= 200, "dropped %llu of %d", (unsigned long long)ws->dropped, sent);
    CHECK(ws->bad_cmd > 0 && ws->bad_frames > 0 && ws->bad_body > 0);
    th_sleep_ms(1100); /* the broker writes its counters every second */
    redisReply *r = th_redis_cmd(&R, "HGET graft-f:metrics wire_dropped");
    CHECK(r && r->type == REDIS_REPLY_STRING && atoll(r->str) >= 200);
    if (r) freeReplyObject(r);
    gr_wire_msg_clear(&t);
    zmq_close(g);
    th_close(&w);
    th_close(&cl);
}

/* Redis stops and comes back (AOF) in the middle of a job: the result that
 * arrived meanwhile is replayed and the job finishes. */
static void test_redis_restart(void)
{
    th_peer cl = th_connect(Z, B.endpoint), w = th_connect(Z, B.endpoint);
    char err[512];
    th_ready(&w, "w-redis", "[\"noop\",\"sleep\"]", NULL, 0);
    char *jid = copy_jid(
        th_submit(&cl, "name: rr\nstages:\n  s: {op: sleep}\n  n: {op: noop, inputs: [s]}\n", 1,
                  err, sizeof err));
    gr_wire_msg t = {0};
    CHECK(th_expect(&w, GR_CMD_TASK, &t, 5000, 1) == 0);
    int64_t a1 = gr_json_get_int(t.body, "attempt", 0);
    th_idle(&w, 1100); /* let appendfsync everysec write the dispatch */
    th_redis_stop(&R);
    gr_json *r = th_request(&cl, GR_CMD_STATUS, "{\"job\":\"x\"}", err, sizeof err);
    CHECK(r == NULL);
    const char *errp = err;
    CHECK_CONTAINS(errp, "redis is unavailable");
    th_done(&w, &t, NULL, NULL); /* kept by the broker until Redis is back */
    th_idle(&w, 500);
    CHECK(th_redis_start(&R) == 0);
    CHECK(th_expect(&w, GR_CMD_TASK, &t, 10000, 1) == 0);
    CHECK(!strcmp(gr_json_get_str(t.body, "stage", ""), "n"));
    th_done(&w, &t, NULL, NULL);
    gr_json *s = th_wait_job(&cl, jid, 10000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "done"));
    CHECK(s && gr_json_get_int(th_stage(s, "s"), "attempts", 0) == a1);
    gr_json_free(s);
    gr_wire_msg_clear(&t);
    th_close(&w);
    th_close(&cl);
}

typedef struct rcnt {
    int calls, nulls, oks;
    gr_rconn *c;
    int chain; /* commands to queue from inside the callback */
} rcnt;

static void on_reply(void *ud, redisReply *r)
{
    rcnt *n = ud;
    n->calls++;
    if (!r)
        n->nulls++;
    else if (r->type != REDIS_REPLY_ERROR)
        n->oks++;
    if (r && n->chain > 0) { /* queued from a callback: sent by the same pump */
        n->chain--;
        const char *argv[1] = {"PING"};
        size_t lens[1] = {4};
        gr_rconn_cmd(n->c, on_reply, n, 1, argv, lens);
    }
}

/* The connection the broker polls: replies come back without blocking, in
 * order, including commands queued by callbacks; a Redis that stops answering
 * (SIGSTOP) is given up after the timeout, its callbacks get NULL, and the
 * connection comes back once Redis runs again. */
static void test_redis_hung(void)
{
    gr_rconn *c = gr_rconn_new(R.url, 400);
    CHECK(c && gr_rconn_ensure(c) == 1);
    if (!c) return;
    rcnt n = {.c = c, .chain = 50};
    const char *argv[1] = {"PING"};
    size_t lens[1] = {4};
    for (int i = 0; i < 100; i++) gr_rconn_cmd(c, on_reply, &n, 1, argv, lens);
    int64_t end = th_now_ms() + 5000;
    while (gr_rconn_pending(c) && th_now_ms() < end) {
        struct pollfd pf = {gr_rconn_fd(c), POLLIN | (gr_rconn_want_write(c) ? POLLOUT : 0), 0};
        int n = poll(&pf, 1, 50);
        gr_rconn_pump(c, n > 0);
    }
    CHECK_MSG(n.oks == 150 && n.nulls == 0, "%d ok, %d failed", n.oks, n.nulls);

    /* Redis closes the idle connection (a server timeout, CLIENT KILL): seen
     * as soon as the socket polls readable, with no command in flight */
    const char *idv[2] = {"CLIENT", "ID"};
    size_t idl[2] = {6, 2};
    redisReply *id = gr_rconn_call(c, 2, idv, idl);
    CHECK(id && id->type == REDIS_REPLY_INTEGER);
    redisReply *k = id ? th_redis_cmd(&R, "CLIENT KILL ID %lld", id->integer) : NULL;
    CHECK(k && k->type == REDIS_REPLY_INTEGER && k->integer == 1);
    if (id) freeReplyObject(id);
    if (k) freeReplyObject(k);
    struct pollfd kp = {gr_rconn_fd(c), POLLIN, 0};
    CHECK(poll(&kp, 1, 2000) == 1);
    gr_rconn_pump(c, 1);
    CHECK(!gr_rconn_up(c));
    end = th_now_ms() + 5000;
    while (!gr_rconn_ensure(c) && th_now_ms() < end) th_sleep_ms(20);
    CHECK(gr_rconn_up(c));

    kill(R.pid, SIGSTOP);
    n = (rcnt){.c = c};
    gr_rconn_cmd(c, on_reply, &n, 1, argv, lens);
    int64_t t0 = th_now_ms();
    while (gr_rconn_up(c) && th_now_ms() - t0 < 5000) {
        gr_rconn_pump(c, 1); /* never blocks */
        th_sleep_ms(20);
    }
    int64_t took = th_now_ms() - t0;
    CHECK(!gr_rconn_up(c) && n.nulls == 1);
    CHECK_MSG(took >= 350 && took < 2000, "gave up after %lld ms (timeout 400)", (long long)took);
    kill(R.pid, SIGCONT);
    end = th_now_ms() + 5000;
    while (!gr_rconn_ensure(c) && th_now_ms() < end) th_sleep_ms(50);
    CHECK(gr_rconn_up(c));
    redisReply *r = gr_rconn_call(c, 1, argv, lens);
    CHECK(r && r->type == REDIS_REPLY_STATUS);
    if (r) freeReplyObject(r);
    gr_rconn_destroy(&c);
}

/* With a 1 s retention a finished job's keys expire and the job leaves the
 * list. */
static void test_retention(void)
{
    th_broker_stop(&B);
    gr_broker_opts o = O;
    o.retention_s = 1;
    CHECK(th_broker_start(&B, &o) == 0);
    th_peer cl = th_connect(Z, B.endpoint);
    char err[512];
    char *jid =
        copy_jid(th_submit(&cl, "name: ret\nstages:\n  s: {op: echo}\n", 1, err, sizeof err));
    CHECK_MSG(jid[0], "submit: %s", err);
    th_peer w = th_connect(Z, B.endpoint);
    th_ready(&w, "w-ret", "[\"echo\"]", NULL, 0);
    gr_wire_msg t = {0};
    if (th_expect(&w, GR_CMD_TASK, &t, 3000, 1) == 0) th_done(&w, &t, NULL, NULL);
    gr_json *s = th_wait_job(&cl, jid, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "done"));
    gr_json_free(s);
    int64_t end = th_now_ms() + 8000;
    int gone = 0;
    while (!gone && th_now_ms() < end) {
        th_sleep_ms(200);
        redisReply *r = th_redis_cmd(&R, "ZSCORE graft-f:jobs %s", jid);
        redisReply *e = th_redis_cmd(
            &R, "EXISTS graft-f:job:%s graft-f:stage:%s:s graft-f:events:%s", jid, jid, jid);
        gone = r && r->type == REDIS_REPLY_NIL && e && e->type == REDIS_REPLY_INTEGER &&
               e->integer == 0;
        if (r) freeReplyObject(r);
        if (e) freeReplyObject(e);
    }
    CHECK_MSG(gone, "job %s still in redis after the retention", jid);
    gr_json *r = th_request(&cl, GR_CMD_STATUS, "{}", err, sizeof err);
    const gr_json *jobs = gr_json_get(r, "jobs");
    for (size_t i = 0; jobs && i < jobs->len; i++)
        CHECK(strcmp(gr_json_get_str(jobs->items[i], "job", ""), jid));
    gr_json_free(r);
    gr_wire_msg_clear(&t);
    th_close(&w);
    th_close(&cl);
}

int main(void)
{
    gr_log_set_level(getenv("GRAFT_TEST_LOG") ? GR_LOG_DEBUG : GR_LOG_ERROR);
    if (th_redis_start(&R)) {
        printf("redis-server not available: skipping the broker tests\n");
        return 0;
    }
    Z = zmq_ctx_new();
    O = (gr_broker_opts){.redis_url = R.url,
                         .prefix = "graft-f:",
                         .heartbeat_ms = HB,
                         .liveness = LIVENESS,
                         .backoff_ms = 50};
    if (th_broker_start(&B, &O)) {
        th_redis_cleanup(&R);
        CHECK(0);
        TEST_MAIN_END();
    }
    RUN(test_dead_worker);
    RUN(test_timeout);
    RUN(test_cancel);
    RUN(test_broker_restart);
    RUN(test_garbage);
    RUN(test_redis_restart);
    RUN(test_redis_hung);
    RUN(test_retention);
    th_broker_stop(&B);
    zmq_ctx_term(Z);
    th_redis_cleanup(&R);
    TEST_MAIN_END();
}
