/* test_broker_util: what the broker tests share — a real redis-server on a
 * free port in a temporary directory, the broker's event loop on a thread,
 * and scripted clients and workers speaking the wire protocol. */
#ifndef TEST_BROKER_UTIL_H
#define TEST_BROKER_UTIL_H

#include "gr_broker.h"
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_json.h"
#include "gr_log.h"
#include "gr_wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static inline int64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void th_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline int th_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) ||
        getsockname(s, (struct sockaddr *)&a, &l)) {
        if (s >= 0) close(s);
        return -1;
    }
    close(s);
    return ntohs(a.sin_port);
}

/* ---- redis-server ---- */

typedef struct th_redis {
    pid_t pid;
    int port;
    char dir[256];
    char url[64];
} th_redis;

static inline int th_redis_ping(const th_redis *r)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    int ok = 0;
    if (c && !c->err) {
        redisReply *rep = redisCommand(c, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep) freeReplyObject(rep);
    }
    if (c) redisFree(c);
    return ok;
}

/* Starts (or restarts, keeping dir and port) redis-server with AOF
 * everysec. Returns 0, or -1 when redis-server cannot run (tests skip). */
static inline int th_redis_start(th_redis *r)
{
    if (!r->dir[0]) {
        snprintf(r->dir, sizeof r->dir, "/tmp/graft-broker-test-XXXXXX");
        if (!mkdtemp(r->dir)) return -1;
        r->port = th_free_port();
        snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
    }
    char port[16];
    snprintf(port, sizeof port, "%d", r->port);
    r->pid = fork();
    if (r->pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir",
               r->dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
               "--maxmemory-policy", "noeviction", (char *)NULL);
        _exit(127);
    }
    if (r->pid < 0) return -1;
    for (int i = 0; i < 100; i++) {
        if (th_redis_ping(r)) return 0;
        int st;
        if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
            r->pid = 0;
            return -1;
        }
        th_sleep_ms(50);
    }
    return -1;
}

/* Stops redis-server (SIGTERM: it writes its AOF and exits). */
static inline void th_redis_stop(th_redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGTERM);
        int st;
        waitpid(r->pid, &st, 0);
        r->pid = 0;
    }
}

static inline void th_redis_cleanup(th_redis *r)
{
    th_redis_stop(r);
    if (r->dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
        if (system(cmd)) {
        }
    }
}

/* Runs a command on the test's own Redis connection (printf-style). */
static inline redisReply *th_redis_cmd(const th_redis *r, const char *fmt, ...)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        if (c) redisFree(c);
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return rep;
}

/* ---- broker on a thread ---- */

typedef struct th_broker {
    gr_broker *b;
    pthread_t t;
    volatile sig_atomic_t stop;
    char endpoint[64];
    int running;
} th_broker;

static inline void *th_broker_main(void *p)
{
    th_broker *tb = p;
    gr_broker_run(tb->b, &tb->stop);
    return NULL;
}

/* Starts a broker on a free port (endpoint set on first start and kept). */
static inline int th_broker_start(th_broker *tb, const gr_broker_opts *o_in)
{
    gr_broker_opts o = *o_in;
    if (!tb->endpoint[0])
        snprintf(tb->endpoint, sizeof tb->endpoint, "tcp://127.0.0.1:%d", th_free_port());
    o.bind = tb->endpoint;
    tb->stop = 0;
    for (int i = 0; i < 50 && !(tb->b = gr_broker_new(&o)); i++) th_sleep_ms(100); /* port reuse */
    if (!tb->b) {
        fprintf(stderr, "broker: %s\n", gr_errmsg());
        return -1;
    }
    if (pthread_create(&tb->t, NULL, th_broker_main, tb)) return -1;
    tb->running = 1;
    return 0;
}

static inline void th_broker_stop(th_broker *tb)
{
    if (!tb->running) return;
    tb->stop = 1;
    pthread_join(tb->t, NULL);
    gr_broker_destroy(&tb->b);
    tb->running = 0;
}

/* ---- peers ---- */

typedef struct th_peer {
    void *sock;
    int auto_hb; /* a worker answering the broker's HEARTBEATs inside th_recv */
    char wid[64];
    gr_wire_stats st;
    int64_t req;
} th_peer;

static inline int th_send_json(th_peer *p, int cmd, const char *json)
{
    gr_buf b = {0};
    if (gr_wire_pk_json_text(&b, json, strlen(json))) {
        fprintf(stderr, "bad test JSON: %s\n", gr_errmsg());
        gr_buf_free(&b);
        return -1;
    }
    int rc = gr_wire_send(p->sock, NULL, 0, cmd, b.data, b.len, &p->st);
    gr_buf_free(&b);
    return rc;
}

/* Receives one message within timeout_ms: 0 and *m, or -1. */
static inline int th_recv(th_peer *p, gr_wire_dir dir, gr_wire_msg *m, int timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - th_now_ms();
        if (left < 0) return -1;
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)left) <= 0) continue;
        int rc = gr_wire_recv(p->sock, dir, 0, GR_WIRE_NOWAIT, m, &p->st);
        if (rc == 0 && p->auto_hb && m->cmd == GR_CMD_HEARTBEAT) {
            th_send_json(p, GR_CMD_HEARTBEAT, "{}");
            continue;
        }
        if (rc == 0) return 0;
        if (rc < 0 && rc != GR_EINVAL && rc != GR_EFORMAT) return -1;
    }
}

static inline th_peer th_connect(void *zctx, const char *endpoint)
{
    th_peer p;
    memset(&p, 0, sizeof p);
    p.sock = gr_wire_dealer(zctx, endpoint);
    return p;
}

static inline void th_close(th_peer *p)
{
    if (p->sock) zmq_close(p->sock);
    p->sock = NULL;
}

/* A client request; returns the REPLY's result (a copy the caller frees) or
 * NULL; *err receives the ERROR text when there was one. Skips EVENTs. */
static inline gr_json *th_request(th_peer *c, int cmd, const char *json, char *err, size_t errsz)
{
    if (err) err[0] = 0;
    if (th_send_json(c, cmd, json)) return NULL;
    gr_wire_msg m = {0};
    gr_json *res = NULL;
    while (th_recv(c, GR_WIRE_TO_CLIENT, &m, 10000) == 0) {
        if (m.cmd == GR_CMD_EVENT) continue;
        if (m.cmd == GR_CMD_REPLY)
            res = gr_wire_json_dup(gr_json_get(m.body, "result"));
        else if (err)
            snprintf(err, errsz, "%s", gr_json_get_str(m.body, "error", "?"));
        break;
    }
    gr_wire_msg_clear(&m);
    return res;
}

/* Submits pipeline YAML; returns the job id (static buffer) or NULL. */
static inline const char *th_submit(th_peer *c, const char *yaml, int no_cache, char *err,
                                    size_t errsz)
{
    static char jid[64];
    gr_buf b = {0};
    gr_buf_puts(&b, "{\"pipeline\":");
    gr_buf_json_str(&b, yaml, strlen(yaml));
    gr_buf_printf(&b, ",\"filename\":\"test.yaml\",\"no_cache\":%s}", no_cache ? "true" : "false");
    gr_json *r = th_request(c, GR_CMD_SUBMIT, b.data, err, errsz);
    gr_buf_free(&b);
    if (!r) return NULL;
    snprintf(jid, sizeof jid, "%s", gr_json_get_str(r, "job", ""));
    gr_json_free(r);
    return jid[0] ? jid : NULL;
}

static inline gr_json *th_status(th_peer *c, const char *jid)
{
    char q[128], err[512];
    snprintf(q, sizeof q, "{\"job\":\"%s\"}", jid);
    gr_json *r = th_request(c, GR_CMD_STATUS, q, err, sizeof err);
    if (!r) fprintf(stderr, "status %s: %s\n", jid, err[0] ? err : "no reply");
    return r;
}

static inline const gr_json *th_stage(const gr_json *status, const char *sid)
{
    const gr_json *st = gr_json_get(status, "stages");
    for (size_t i = 0; st && i < st->len; i++)
        if (!strcmp(gr_json_get_str(st->items[i], "id", ""), sid)) return st->items[i];
    return NULL;
}

/* Polls STATUS until the job state is final; returns the final status. */
static inline gr_json *th_wait_job(th_peer *c, const char *jid, int timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    while (th_now_ms() < end) {
        gr_json *s = th_status(c, jid);
        const char *st = gr_json_get_str(s, "state", "");
        int final = !strcmp(st, "done") || !strcmp(st, "failed");
        if (!strcmp(st, "cancelled")) {
            /* cancelled is final once no stage is running */
            final = 1;
            const gr_json *stages = gr_json_get(s, "stages");
            for (size_t i = 0; stages && i < stages->len; i++)
                if (!strcmp(gr_json_get_str(stages->items[i], "state", ""), "running")) final = 0;
        }
        if (final) return s;
        gr_json_free(s);
        th_sleep_ms(20);
    }
    return NULL;
}

static inline int th_ready(th_peer *w, const char *wid, const char *ops_json, const char *task,
                           int64_t attempt)
{
    snprintf(w->wid, sizeof w->wid, "%s", wid);
    w->auto_hb = 1;
    char j[512];
    if (task)
        snprintf(j, sizeof j,
                 "{\"worker\":\"%s\",\"host\":\"test\",\"pid\":%d,\"ops\":%s,\"version\":\"t\","
                 "\"task\":\"%s\",\"attempt\":%lld}",
                 wid, (int)getpid(), ops_json, task, (long long)attempt);
    else
        snprintf(j, sizeof j,
                 "{\"worker\":\"%s\",\"host\":\"test\",\"pid\":%d,\"ops\":%s,\"version\":\"t\"}",
                 wid, (int)getpid(), ops_json);
    return th_send_json(w, GR_CMD_READY, j);
}

/* Lets ms pass while a worker keeps answering the broker's HEARTBEATs
 * (other messages are dropped). */
static inline void th_idle(th_peer *w, int ms)
{
    int64_t end = th_now_ms() + ms;
    gr_wire_msg m = {0};
    while (th_now_ms() < end) th_recv(w, GR_WIRE_TO_WORKER, &m, (int)(end - th_now_ms()));
    gr_wire_msg_clear(&m);
}

/* Waits for a message of cmd (others are skipped; HEARTBEATs are answered
 * when hb is set). */
static inline int th_expect(th_peer *w, int cmd, gr_wire_msg *m, int timeout_ms, int hb)
{
    int64_t end = th_now_ms() + timeout_ms;
    while (th_now_ms() < end) {
        if (th_recv(w, GR_WIRE_TO_WORKER, m, (int)(end - th_now_ms())) != 0) return -1;
        if (m->cmd == cmd) return 0;
        if (m->cmd == GR_CMD_HEARTBEAT && hb) th_send_json(w, GR_CMD_HEARTBEAT, "{}");
    }
    return -1;
}

/* An artifact id derived from a task id (distinct per stage). */
static inline const char *th_out_id(const char *task)
{
    static char id[80];
    uint64_t h = 1469598103934665603ull;
    for (const char *s = task; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    snprintf(id, sizeof id, "sha256:%016llx%016llx%016llx%016llx", (unsigned long long)h,
             (unsigned long long)(h * 31), (unsigned long long)(h * 37),
             (unsigned long long)(h * 41));
    return id;
}

static inline int th_done(th_peer *w, const gr_wire_msg *task, const char *out, const char *metrics)
{
    char j[1024];
    snprintf(j, sizeof j,
             "{\"task\":\"%s\",\"attempt\":%lld,\"outputs\":{\"out\":\"%s\"},\"metrics\":%s}",
             gr_json_get_str(task->body, "task", ""),
             (long long)gr_json_get_int(task->body, "attempt", 0),
             out ? out : th_out_id(gr_json_get_str(task->body, "task", "")),
             metrics ? metrics : "{}");
    return th_send_json(w, GR_CMD_DONE, j);
}

static inline int th_fail(th_peer *w, const gr_wire_msg *task, const char *error, int retryable)
{
    char j[1024];
    snprintf(j, sizeof j, "{\"task\":\"%s\",\"attempt\":%lld,\"error\":\"%s\",\"retryable\":%s}",
             gr_json_get_str(task->body, "task", ""),
             (long long)gr_json_get_int(task->body, "attempt", 0), error,
             retryable ? "true" : "false");
    return th_send_json(w, GR_CMD_FAIL, j);
}

#endif
