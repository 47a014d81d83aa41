/* test_worker: the worker runtime against a broker played by this test over a
 * real ZeroMQ ROUTER socket (wire protocol per schemas/protocol.md): READY,
 * TASK -> DONE with outputs in a real store, heartbeats while an op runs,
 * rate-limited PROGRESS, CANCEL, timeout, retryable and final failures,
 * busy, DISCONNECT re-registration naming the running task, results re-sent
 * after re-registration, reconnect after broker silence, SIGTERM-style
 * finish and hand-back. Plus gr_worker_exec, which `graft exec` uses. */
#include "gr_test.h"

#include "gr_cas.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_jsonb.h"
#include "gr_wire.h"
#include "gr_worker.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define HB_MS 100

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------- gr_worker_exec */

static char *g_tmp;

static char *mkdir_in(const char *name)
{
    char *p = gr_fs_join(g_tmp, name);
    gr_fs_rmrf(p);
    gr_fs_mkdirs(p, 0755, 0);
    return p;
}

static volatile int g_cancel;

static void *cancel_later(void *arg)
{
    (void)arg;
    usleep(150 * 1000);
    g_cancel = 1;
    return NULL;
}

static int g_progress_calls;
static void count_progress(void *ud, double done, double total, const char *msg)
{
    (void)ud, (void)done, (void)total, (void)msg;
    g_progress_calls++;
}

static void test_exec(void)
{
    char *out = mkdir_in("exec-out"), *work = mkdir_in("exec-work");
    const char *pj = "{\"b\":[1,2],\"a\":\"x\",\"_inputs\":[{\"stage\":\"s\"}]}";
    gr_json *params = gr_json_parse(pj, strlen(pj), NULL);
    gr_exec e = {.op = gr_op_find("echo"), .params = params, .outdir = out, .workdir = work};
    char *metrics = NULL;
    int rc = gr_worker_exec(&e, &metrics);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    char *file = gr_fs_join(out, "params.json"), *data = NULL;
    size_t len = 0;
    CHECK(gr_fs_read_file(file, 1 << 20, &data, &len) == 0);
    /* canonical: sorted keys, '_' keys dropped (no _attempt, no _inputs) */
    CHECK_MSG(data && !strcmp(data, "{\"a\":\"x\",\"b\":[1,2]}\n"), "%s", data ? data : "(null)");
    CHECK(metrics && !strcmp(metrics, "{\"bytes\":20}"));
    free(data);
    free(file);
    free(metrics);
    gr_json_free(params);

    /* parameters are checked before the handler runs */
    const char *bad = "{\"seconds\":\"soon\"}";
    params = gr_json_parse(bad, strlen(bad), NULL);
    e = (gr_exec){.op = gr_op_find("sleep"), .params = params, .outdir = out, .workdir = work};
    CHECK(gr_worker_exec(&e, &metrics) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "sleep: parameter 'seconds' must be a number");
    gr_json_free(params);

    /* fail: the attempt number decides */
    const char *f = "{\"times\":2}";
    params = gr_json_parse(f, strlen(f), NULL);
    e = (gr_exec){.op = gr_op_find("fail"), .params = params, .outdir = out, .workdir = work};
    e.attempt = 2;
    rc = gr_worker_exec(&e, &metrics);
    CHECK(rc == GR_EIO && gr_err_retryable(rc));
    CHECK_CONTAINS(gr_errmsg(), "attempt 2, retryable");
    e.attempt = 3;
    rc = gr_worker_exec(&e, &metrics);
    CHECK(rc == 0 && metrics && !strcmp(metrics, "{\"succeeded_at\":3}"));
    free(metrics);
    gr_json_free(params);
    const char *f2 = "{\"retryable\":false}";
    params = gr_json_parse(f2, strlen(f2), NULL);
    e.params = params;
    rc = gr_worker_exec(&e, &metrics);
    CHECK(rc == GR_EINVAL && !gr_err_retryable(rc));
    gr_json_free(params);

    /* sleep stops at cancel and reports progress */
    const char *s = "{\"seconds\":30}";
    params = gr_json_parse(s, strlen(s), NULL);
    g_cancel = 0;
    e = (gr_exec){.op = gr_op_find("sleep"),
                  .params = params,
                  .outdir = out,
                  .workdir = work,
                  .cancel = &g_cancel,
                  .progress_cb = count_progress};
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, NULL);
    int64_t t0 = now_ms();
    rc = gr_worker_exec(&e, &metrics);
    int64_t el = now_ms() - t0;
    pthread_join(th, NULL);
    CHECK(rc == GR_ECANCEL);
    CHECK_MSG(el < 1000, "cancel took %lld ms", (long long)el);
    CHECK(g_progress_calls > 1);
    gr_json_free(params);
    free(out);
    free(work);
}

/* ------------------------------------------------------ the fake broker */

typedef struct {
    void *zctx, *router;
    char endpoint[256];
    uint8_t peer[GR_WIRE_MAX_PEER];
    size_t peer_len;
    int pump; /* send HEARTBEAT to the worker every HB_MS while waiting */
    int64_t last_pump;
    int heartbeats; /* HEARTBEATs seen */
    int hb_with_task;
    int progress; /* PROGRESS seen */
} fake;

static gr_worker *g_w;
static int g_run_rc = -100;

static void *run_worker(void *arg)
{
    (void)arg;
    g_run_rc = gr_worker_run(g_w);
    return NULL;
}

static void send_to(fake *F, int cmd, const char *json)
{
    gr_buf b = {0};
    CHECK(gr_wire_pk_json_text(&b, json, strlen(json)) == 0);
    CHECK(gr_wire_send(F->router, F->peer, F->peer_len, cmd, b.data, b.len, NULL) == 0);
    gr_buf_free(&b);
}

/* Waits up to ms for a message with command cmd, counting the heartbeats
 * and progress notes on the way; returns its body (caller frees) or NULL. */
static gr_json *expect(fake *F, int cmd, int ms)
{
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (F->pump && now_ms() - F->last_pump >= HB_MS && F->peer_len) {
            gr_wire_send(F->router, F->peer, F->peer_len, GR_CMD_HEARTBEAT, "\x80", 1, NULL);
            F->last_pump = now_ms();
        }
        zmq_pollitem_t it = {F->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0) continue;
        gr_wire_msg m = {0};
        if (gr_wire_recv(F->router, GR_WIRE_TO_BROKER, 1, GR_WIRE_NOWAIT, &m, NULL)) {
            gr_wire_msg_clear(&m);
            continue;
        }
        memcpy(F->peer, m.peer, m.peer_len);
        F->peer_len = m.peer_len;
        if (m.cmd == GR_CMD_HEARTBEAT) {
            F->heartbeats++;
            if (gr_json_get(m.body, "task")) F->hb_with_task++;
        }
        if (m.cmd == GR_CMD_PROGRESS) F->progress++;
        if (m.cmd == cmd) {
            gr_json *b = m.body;
            m.body = NULL;
            gr_wire_msg_clear(&m);
            return b;
        }
        gr_wire_msg_clear(&m);
    }
    return NULL;
}

static void task_json(char *buf, size_t n, const char *task, int attempt, const char *op,
                      const char *params, int timeout)
{
    snprintf(buf, n,
             "{\"task\":\"%s\",\"job\":\"j1\",\"stage\":\"%s\",\"attempt\":%d,\"op\":\"%s\","
             "\"params\":%s,\"inputs\":[],\"deadline\":0,\"timeout\":%d}",
             task, strchr(task, ':') + 1, attempt, op, params, timeout);
}

static void test_runtime(void)
{
    fake F = {.pump = 1};
    F.zctx = zmq_ctx_new();
    F.router = gr_wire_router(F.zctx, "tcp://127.0.0.1:*");
    CHECK(F.router != NULL);
    if (!F.router) return;
    size_t elen = sizeof F.endpoint;
    zmq_getsockopt(F.router, ZMQ_LAST_ENDPOINT, F.endpoint, &elen);
    char *store = gr_fs_join(g_tmp, "store");
    const char *ops[] = {"noop", "sleep", "fail", "echo"};
    gr_worker_opts o = {.broker = F.endpoint,
                        .store = store,
                        .ops = ops,
                        .nops = 4,
                        .id = "w-test",
                        .threads = 1,
                        .heartbeat_ms = HB_MS,
                        .liveness = 3};
    /* a work directory left by a dead worker on this host is swept at start;
     * one of a live process (ours) is not */
    char host[256] = "localhost", dead[4200], live[4200];
    gethostname(host, sizeof host - 1);
    snprintf(dead, sizeof dead, "%s/work/%s-%d-abcdef/out", store, host, 999999);
    snprintf(live, sizeof live, "%s/work/%s-%d-abcdef", store, host, (int)getppid());
    gr_fs_mkdirs(dead, 0755, 0);
    gr_fs_mkdirs(live, 0755, 0);
    int dead_pid_free = kill(999999, 0) != 0;
    g_w = gr_worker_new(&o);
    CHECK_MSG(g_w != NULL, "%s", gr_errmsg());
    if (!g_w) return;
    if (dead_pid_free) CHECK(!gr_fs_exists(dead));
    CHECK(gr_fs_exists(live));
    gr_fs_rmrf(live);
    pthread_t th;
    pthread_create(&th, NULL, run_worker, NULL);

    /* READY */
    gr_json *r = expect(&F, GR_CMD_READY, 3000);
    CHECK(r != NULL);
    CHECK(!strcmp(gr_json_get_str(r, "worker", ""), "w-test"));
    CHECK_EQ_INT(gr_json_get_int(r, "pid", 0), getpid());
    const gr_json *rops = gr_json_get(r, "ops");
    CHECK(rops && rops->len == 4 && !strcmp(rops->items[3]->str, "echo"));
    CHECK(!strcmp(gr_json_get_str(r, "version", ""), GRAFT_VERSION));
    CHECK(!gr_json_get(r, "task"));
    gr_json_free(r);

    /* TASK echo with an input from the store -> DONE with a tree */
    gr_cas *cas = gr_cas_open(store);
    char in[GR_ID_SZ];
    CHECK(gr_cas_put_buf(cas, "hello", 5, in) == 0);
    char params[1024], msg[2048];
    snprintf(params, sizeof params,
             "{\"input\":\"%s\",\"inputs\":[\"%s\"],\"x\":1,\"_inputs\":[{\"stage\":\"a\"}]}", in,
             in);
    task_json(msg, sizeof msg, "j1:e", 1, "echo", params, 0);
    send_to(&F, GR_CMD_TASK, msg);
    r = expect(&F, GR_CMD_DONE, 5000);
    CHECK(r != NULL);
    const gr_json *outs = gr_json_get(r, "outputs");
    const char *out = gr_json_get_str(outs, "out", ""), *mid = gr_json_get_str(outs, "metrics", "");
    CHECK(!strcmp(gr_json_get_str(r, "task", ""), "j1:e") && gr_json_get_int(r, "attempt", 0) == 1);
    int kind = 0;
    CHECK(gr_cas_kind(cas, out, &kind) == 0 && kind == GR_CAS_TREE);
    char *tree = NULL;
    CHECK(gr_cas_materialize(cas, out, &tree) == 0);
    char *pf = tree ? gr_fs_join(tree, "params.json") : NULL, *data = NULL;
    size_t len;
    CHECK(pf && gr_fs_read_file(pf, 1 << 20, &data, &len) == 0);
    char want[1024];
    snprintf(
        want, sizeof want,
        "{\"input\":{\"sha256\":\"%s\",\"size\":5},\"inputs\":[{\"sha256\":\"%s\",\"size\":5}],"
        "\"x\":1}\n",
        in, in);
    CHECK_MSG(data && !strcmp(data, want), "%s", data ? data : "(null)");
    free(data);
    free(pf);
    free(tree);
    /* the metrics blob is the canonical form of the metrics sent */
    char *mdata = NULL;
    size_t mlen;
    CHECK(gr_cas_read_blob(cas, mid, 1 << 20, &mdata, &mlen) == 0);
    char *mcanon = gr_jsonb_canon(gr_json_get(r, "metrics"));
    CHECK(mdata && mcanon && !strcmp(mdata, mcanon));
    free(mdata);
    free(mcanon);
    /* a second run of the same task produces the same tree id */
    char first_out[GR_ID_SZ];
    snprintf(first_out, sizeof first_out, "%s", out);
    gr_json_free(r);
    task_json(msg, sizeof msg, "j1:e", 2, "echo", params, 0);
    send_to(&F, GR_CMD_TASK, msg);
    r = expect(&F, GR_CMD_DONE, 5000);
    CHECK(r && !strcmp(gr_json_get_str(gr_json_get(r, "outputs"), "out", ""), first_out));
    gr_json_free(r);

    /* DISCONNECT after a result: READY names it and the result comes again */
    send_to(&F, GR_CMD_DISCONNECT, "{\"reason\":\"test\"}");
    r = expect(&F, GR_CMD_READY, 2000);
    CHECK(r && !strcmp(gr_json_get_str(r, "task", ""), "j1:e") &&
          gr_json_get_int(r, "attempt", 0) == 2);
    gr_json_free(r);
    r = expect(&F, GR_CMD_DONE, 2000);
    CHECK(r && gr_json_get_int(r, "attempt", 0) == 2);
    gr_json_free(r);

    /* a long op: heartbeats keep flowing with the task, progress is rate-limited */
    F.heartbeats = F.hb_with_task = F.progress = 0;
    task_json(msg, sizeof msg, "j1:s", 1, "sleep", "{\"seconds\":1.2}", 0);
    send_to(&F, GR_CMD_TASK, msg);
    /* meanwhile a second TASK is refused as busy (retryable) */
    usleep(200 * 1000);
    task_json(msg, sizeof msg, "j1:other", 1, "noop", "{}", 0);
    send_to(&F, GR_CMD_TASK, msg);
    r = expect(&F, GR_CMD_FAIL, 1000);
    CHECK(r && !strcmp(gr_json_get_str(r, "task", ""), "j1:other") &&
          gr_json_get_bool(r, "retryable", 0));
    CHECK_CONTAINS(r ? gr_json_get_str(r, "error", "") : "", "busy with j1:s");
    gr_json_free(r);
    /* DISCONNECT while running: READY names the running task */
    send_to(&F, GR_CMD_DISCONNECT, "{}");
    r = expect(&F, GR_CMD_READY, 1000);
    CHECK(r && !strcmp(gr_json_get_str(r, "task", ""), "j1:s"));
    gr_json_free(r);
    r = expect(&F, GR_CMD_DONE, 5000);
    CHECK(r && !strcmp(gr_json_get_str(r, "task", ""), "j1:s"));
    gr_json_free(r);
    CHECK_MSG(F.hb_with_task >= 8, "%d heartbeats naming the task in 1.2 s", F.hb_with_task);
    CHECK_MSG(F.progress >= 3 && F.progress <= 1200 / 250 + 2, "%d PROGRESS in 1.2 s", F.progress);

    /* CANCEL: stops the op, final failure */
    task_json(msg, sizeof msg, "j1:c", 1, "sleep", "{\"seconds\":30}", 0);
    send_to(&F, GR_CMD_TASK, msg);
    usleep(200 * 1000);
    send_to(&F, GR_CMD_ABORT, "{\"task\":\"j1:c\",\"attempt\":1,\"reason\":\"job cancelled\"}");
    int64_t t0 = now_ms();
    r = expect(&F, GR_CMD_FAIL, 2000);
    CHECK(r && !strcmp(gr_json_get_str(r, "task", ""), "j1:c"));
    CHECK(r && !gr_json_get_bool(r, "retryable", 1));
    CHECK_CONTAINS(r ? gr_json_get_str(r, "error", "") : "", "cancelled");
    CHECK(now_ms() - t0 < 1000);
    gr_json_free(r);

    /* timeout: the worker stops the op itself; a retry may help */
    task_json(msg, sizeof msg, "j1:t", 1, "sleep", "{\"seconds\":30}", 1);
    t0 = now_ms();
    send_to(&F, GR_CMD_TASK, msg);
    r = expect(&F, GR_CMD_FAIL, 3000);
    int64_t el = now_ms() - t0;
    CHECK(r && gr_json_get_bool(r, "retryable", 0));
    CHECK_CONTAINS(r ? gr_json_get_str(r, "error", "") : "", "timeout");
    CHECK_MSG(el >= 1000 && el < 2000, "timeout after %lld ms", (long long)el);
    gr_json_free(r);

    /* failures: not retryable; a missing input; an op not served */
    task_json(msg, sizeof msg, "j1:f", 1, "fail", "{\"retryable\":false,\"message\":\"boom\"}", 0);
    send_to(&F, GR_CMD_TASK, msg);
    r = expect(&F, GR_CMD_FAIL, 2000);
    CHECK(r && !gr_json_get_bool(r, "retryable", 1));
    CHECK_CONTAINS(r ? gr_json_get_str(r, "error", "") : "", "fail: boom (attempt 1");
    gr_json_free(r);
    task_json(
        msg, sizeof msg, "j1:m", 1, "echo",
        "{\"input\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"}",
        0);
    send_to(&F, GR_CMD_TASK, msg);
    r = expect(&F, GR_CMD_FAIL, 2000);
    CHECK(r && !gr_json_get_bool(r, "retryable", 1));
    CHECK_CONTAINS(r ? gr_json_get_str(r, "error", "") : "", "parameter 'input'");
    CHECK_CONTAINS(r ? gr_json_get_str(r, "error", "") : "", "sha256:000000");
    gr_json_free(r);
    task_json(msg, sizeof msg, "j1:x", 1, "evaluate", "{}", 0);
    send_to(&F, GR_CMD_TASK, msg);
    r = expect(&F, GR_CMD_FAIL, 2000);
    CHECK_CONTAINS(r ? gr_json_get_str(r, "error", "") : "", "does not serve this op");
    gr_json_free(r);

    /* broker silence: after liveness x interval the worker reconnects with a
     * fresh socket and sends READY again */
    F.pump = 0;
    uint8_t old_peer[GR_WIRE_MAX_PEER];
    size_t old_len = F.peer_len;
    memcpy(old_peer, F.peer, old_len);
    t0 = now_ms();
    r = expect(&F, GR_CMD_READY, 3000);
    el = now_ms() - t0;
    CHECK(r != NULL);
    CHECK_MSG(el >= 2 * HB_MS && el < 1500, "reconnected after %lld ms", (long long)el);
    CHECK(F.peer_len != old_len || memcmp(F.peer, old_peer, old_len));
    gr_json_free(r);
    F.pump = 1;

    /* stop while running: FINISH reports the task, then run() returns */
    task_json(msg, sizeof msg, "j1:z", 1, "sleep", "{\"seconds\":0.4}", 0);
    send_to(&F, GR_CMD_TASK, msg);
    usleep(100 * 1000);
    gr_worker_stop(g_w, GR_WORKER_FINISH);
    r = expect(&F, GR_CMD_DONE, 3000);
    CHECK(r && !strcmp(gr_json_get_str(r, "task", ""), "j1:z"));
    gr_json_free(r);
    pthread_join(th, NULL);
    CHECK_EQ_INT(g_run_rc, 0);
    gr_worker_destroy(&g_w);

    /* HANDBACK: a new worker hands its running task back as retryable */
    g_w = gr_worker_new(&o);
    CHECK(g_w != NULL);
    if (g_w) {
        pthread_create(&th, NULL, run_worker, NULL);
        r = expect(&F, GR_CMD_READY, 3000);
        gr_json_free(r);
        task_json(msg, sizeof msg, "j1:h", 3, "sleep", "{\"seconds\":30}", 0);
        send_to(&F, GR_CMD_TASK, msg);
        usleep(200 * 1000);
        gr_worker_stop(g_w, GR_WORKER_HANDBACK);
        r = expect(&F, GR_CMD_FAIL, 3000);
        CHECK(r && gr_json_get_bool(r, "retryable", 0) && gr_json_get_int(r, "attempt", 0) == 3);
        CHECK_CONTAINS(r ? gr_json_get_str(r, "error", "") : "", "handed back");
        gr_json_free(r);
        pthread_join(th, NULL);
        gr_worker_destroy(&g_w);
    }
    /* no work directories are left behind */
    char *work = gr_fs_join(store, "work");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", work);
    CHECK(system(cmd) == 0);
    free(work);

    /* bad options */
    const char *bad_ops[] = {"noop", "nosuch"};
    gr_worker_opts bo = {.broker = F.endpoint, .store = store, .ops = bad_ops, .nops = 2};
    CHECK(gr_worker_new(&bo) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "--ops: unknown op 'nosuch'");

    gr_cas_destroy(&cas);
    free(store);
    zmq_close(F.router);
    zmq_ctx_term(F.zctx);
}

int main(void)
{
    char tmpl[] = "/tmp/graft-test-worker-XXXXXX";
    g_tmp = mkdtemp(tmpl);
    if (!g_tmp) return 1;
    RUN(test_exec);
    RUN(test_runtime);
    gr_fs_rmrf(g_tmp);
    TEST_MAIN_END();
}
