/* test_broker_flow: the broker against a real redis-server with scripted
 * workers and clients — DAG order, input substitution, fan-in descriptions,
 * memoisation, retries with backoff, non-retryable failures and skipped
 * dependants, watch events, the job list and the workers list. */
#include "gr_test.h"
#include "test_broker_util.h"

#include "gr_cas.h"

static th_redis R;
static th_broker B;
static void *Z;
static gr_broker_opts O;

static const char *CHAIN = "name: chain\n"
                           "stages:\n"
                           "  a: {op: noop}\n"
                           "  b: {op: noop, inputs: [a]}\n"
                           "  c: {op: echo, inputs: [a, b]}\n";

/* Runs one worker until the job is over, answering every TASK with DONE;
 * records the order of tasks. Returns the number of tasks run. */
static int run_all(th_peer *w, th_peer *cl, const char *jid, char order[][64], int max,
                   gr_json **last_c_params)
{
    int n = 0;
    gr_wire_msg m = {0};
    int64_t end = th_now_ms() + 10000;
    while (th_now_ms() < end) {
        if (th_recv(w, GR_WIRE_TO_WORKER, &m, 300) != 0) {
            gr_json *s = th_status(cl, jid);
            const char *st = gr_json_get_str(s, "state", "");
            int fin = !strcmp(st, "done") || !strcmp(st, "failed");
            gr_json_free(s);
            if (fin) break;
            continue;
        }
        if (m.cmd != GR_CMD_TASK) continue;
        if (n < max) snprintf(order[n], 64, "%s", gr_json_get_str(m.body, "stage", ""));
        n++;
        if (last_c_params && !strcmp(gr_json_get_str(m.body, "stage", ""), "c")) {
            gr_json_free(*last_c_params);
            *last_c_params = gr_wire_json_dup(m.body);
        }
        th_done(w, &m, NULL, "{\"score\":0.5}");
    }
    gr_wire_msg_clear(&m);
    return n;
}

static void test_dag_and_memo(void)
{
    th_peer cl = th_connect(Z, B.endpoint), w = th_connect(Z, B.endpoint);
    th_ready(&w, "w-flow", "[\"noop\",\"echo\"]", NULL, 0);
    char err[512];
    const char *j = th_submit(&cl, CHAIN, 0, err, sizeof err);
    CHECK_MSG(j != NULL, "submit: %s", err);
    if (!j) return;
    char jid[64];
    snprintf(jid, sizeof jid, "%s", j);
    char order[8][64];
    gr_json *task_c = NULL;
    int n = run_all(&w, &cl, jid, order, 8, &task_c);
    CHECK_EQ_INT(n, 3);
    CHECK(n >= 3 && !strcmp(order[0], "a") && !strcmp(order[1], "b") && !strcmp(order[2], "c"));

    /* c's TASK: stage ids replaced by output ids, inputs listed, _inputs described */
    CHECK(task_c != NULL);
    if (task_c) {
        char ta[80], tb[80];
        char task_a[96], task_b[96];
        snprintf(task_a, sizeof task_a, "%s:a", jid);
        snprintf(task_b, sizeof task_b, "%s:b", jid);
        snprintf(ta, sizeof ta, "%s", th_out_id(task_a));
        snprintf(tb, sizeof tb, "%s", th_out_id(task_b));
        const gr_json *params = gr_json_get(task_c, "params");
        const gr_json *ins = gr_json_get(params, "inputs");
        CHECK(ins && ins->len == 2 && !strcmp(ins->items[0]->str, ta) &&
              !strcmp(ins->items[1]->str, tb));
        const gr_json *inputs = gr_json_get(task_c, "inputs");
        CHECK(inputs && inputs->len == 2 && !strcmp(inputs->items[0]->str, ta));
        const gr_json *fan = gr_json_get(params, "_inputs");
        CHECK(fan && fan->type == GR_JSON_ARR && fan->len == 2);
        if (fan && fan->len == 2) {
            CHECK(!strcmp(gr_json_get_str(fan->items[1], "stage", ""), "b"));
            CHECK(!strcmp(gr_json_get_str(fan->items[1], "op", ""), "noop"));
            CHECK(!strcmp(gr_json_get_str(fan->items[1], "out", ""), tb));
            CHECK_NEAR(gr_json_get_num(gr_json_get(fan->items[1], "metrics"), "score", 0), 0.5, 0);
            /* the upstream's own params as it ran: b's inputs = [a's out] */
            const gr_json *bp = gr_json_get(fan->items[1], "params");
            const gr_json *bi = gr_json_get(bp, "inputs");
            CHECK(bi && bi->len == 1 && !strcmp(bi->items[0]->str, ta));
        }
        CHECK_EQ_INT(gr_json_get_int(task_c, "attempt", 0), 1);
        CHECK(gr_json_get_int(task_c, "deadline", 0) > 0);
        gr_json_free(task_c);
    }
    gr_json *s = th_wait_job(&cl, jid, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "done"));
    const gr_json *sc = th_stage(s, "c");
    CHECK(sc && !strcmp(gr_json_get_str(sc, "state", ""), "done"));
    CHECK(sc && gr_json_get_int(sc, "attempts", 0) == 1);
    CHECK(sc && gr_json_get(sc, "error") && gr_json_get(sc, "error")->type == GR_JSON_NULL);
    CHECK(sc && !strcmp(gr_json_get_str(sc, "worker", ""), "w-flow"));
    CHECK(sc && gr_json_get_int(sc, "finished", 0) >= gr_json_get_int(sc, "started", 1));
    CHECK(s && gr_json_get_int(s, "created", 0) > 0);
    gr_json_free(s);

    /* the same pipeline again: every stage cached, nothing dispatched */
    j = th_submit(&cl, CHAIN, 0, err, sizeof err);
    CHECK(j != NULL);
    char jid2[64];
    snprintf(jid2, sizeof jid2, "%s", j ? j : "");
    s = th_wait_job(&cl, jid2, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "done"));
    const gr_json *st = gr_json_get(s, "stages");
    for (size_t i = 0; st && i < st->len; i++) {
        CHECK(!strcmp(gr_json_get_str(st->items[i], "state", ""), "cached"));
        CHECK_EQ_INT(gr_json_get_int(st->items[i], "attempts", -1), 0);
    }
    const gr_json *c2 = th_stage(s, "c");
    char task_c1[96];
    snprintf(task_c1, sizeof task_c1, "%s:c", jid);
    CHECK(c2 &&
          !strcmp(gr_json_get_str(gr_json_get(c2, "outputs"), "out", ""), th_out_id(task_c1)));
    gr_json_free(s);
    gr_wire_msg m = {0};
    CHECK(th_expect(&w, GR_CMD_TASK, &m, 300, 1) != 0); /* no task for a cached job */
    gr_wire_msg_clear(&m);

    /* --no-cache runs everything again */
    j = th_submit(&cl, CHAIN, 1, err, sizeof err);
    CHECK(j != NULL);
    snprintf(jid2, sizeof jid2, "%s", j ? j : "");
    n = run_all(&w, &cl, jid2, order, 8, NULL);
    CHECK_EQ_INT(n, 3);
    th_close(&w);
    th_close(&cl);
}

static void test_bad_pipeline(void)
{
    th_peer cl = th_connect(Z, B.endpoint);
    char err[512];
    const char *errp = err;
    const char *j = th_submit(&cl, "stages:\n  a: {op: nop}\n", 0, err, sizeof err);
    CHECK(j == NULL);
    CHECK_CONTAINS(errp, "test.yaml");
    CHECK_CONTAINS(errp, "'a'");
    j = th_submit(&cl, "stages:\n  a: {op: noop, inputs: [zz]}\n", 0, err, sizeof err);
    CHECK(j == NULL);
    CHECK_CONTAINS(errp, "zz");
    gr_json *r = th_request(&cl, GR_CMD_STATUS, "{\"job\":\"jnothere\"}", err, sizeof err);
    CHECK(r == NULL);
    CHECK_CONTAINS(errp, "no such job");
    th_close(&cl);
}

static void test_retries(void)
{
    th_peer cl = th_connect(Z, B.endpoint), w = th_connect(Z, B.endpoint);
    th_ready(&w, "w-retry", "[\"fail\",\"noop\"]", NULL, 0);
    char err[512];
    const char *y = "name: r\nstages:\n  f: {op: fail, retries: 2}\n  g: {op: noop, inputs: [f]}\n";
    const char *j = th_submit(&cl, y, 1, err, sizeof err);
    CHECK_MSG(j != NULL, "%s", err);
    if (!j) return;
    char jid[64];
    snprintf(jid, sizeof jid, "%s", j);
    gr_wire_msg m = {0};
    int64_t t[4];
    for (int k = 0; k < 3; k++) {
        CHECK(th_expect(&w, GR_CMD_TASK, &m, 5000, 1) == 0);
        t[k] = th_now_ms();
        CHECK_EQ_INT(gr_json_get_int(m.body, "attempt", 0), k + 1);
        if (k < 2)
            th_fail(&w, &m, "flaky", 1);
        else
            th_done(&w, &m, NULL, NULL);
    }
    /* backoff base 50 ms, doubling, jitter in [0.5, 1.5): >= 25 ms then >= 50 ms */
    CHECK_MSG(t[1] - t[0] >= 20, "first retry after %lld ms", (long long)(t[1] - t[0]));
    CHECK_MSG(t[2] - t[1] >= 45, "second retry after %lld ms", (long long)(t[2] - t[1]));
    CHECK(th_expect(&w, GR_CMD_TASK, &m, 5000, 1) == 0);
    CHECK(!strcmp(gr_json_get_str(m.body, "stage", ""), "g"));
    th_done(&w, &m, NULL, NULL);
    gr_json *s = th_wait_job(&cl, jid, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "done"));
    CHECK(s && gr_json_get_int(th_stage(s, "f"), "attempts", 0) == 3);
    gr_json_free(s);

    /* retries exhausted: failed, dependants skipped, job failed */
    y = "name: r2\nstages:\n  f: {op: fail, retries: 1}\n  g: {op: noop, inputs: [f]}\n"
        "  h: {op: noop, inputs: [g]}\n  i: {op: noop}\n";
    j = th_submit(&cl, y, 1, err, sizeof err);
    snprintf(jid, sizeof jid, "%s", j ? j : "");
    int fails = 0, other = 0;
    int64_t end = th_now_ms() + 5000;
    while (th_now_ms() < end && fails + other < 3) {
        if (th_expect(&w, GR_CMD_TASK, &m, 1000, 1)) continue;
        if (!strcmp(gr_json_get_str(m.body, "stage", ""), "f")) {
            th_fail(&w, &m, "broken for good", 1);
            fails++;
        } else {
            th_done(&w, &m, NULL, NULL);
            other++;
        }
    }
    CHECK_EQ_INT(fails, 2);
    CHECK_EQ_INT(other, 1); /* only i, the independent stage */
    s = th_wait_job(&cl, jid, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "failed"));
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "f"), "state", ""), "failed"));
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "f"), "error", ""), "broken for good"));
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "g"), "state", ""), "skipped"));
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "h"), "state", ""), "skipped"));
    CHECK(s && !strcmp(gr_json_get_str(th_stage(s, "i"), "state", ""), "done"));
    gr_json_free(s);

    /* not retryable: one attempt only */
    y = "name: r3\nstages:\n  f: {op: fail, retries: 5}\n";
    j = th_submit(&cl, y, 1, err, sizeof err);
    snprintf(jid, sizeof jid, "%s", j ? j : "");
    CHECK(th_expect(&w, GR_CMD_TASK, &m, 5000, 1) == 0);
    th_fail(&w, &m, "bad parameter", 0);
    CHECK(th_expect(&w, GR_CMD_TASK, &m, 400, 1) != 0);
    s = th_wait_job(&cl, jid, 5000);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "failed"));
    CHECK(s && gr_json_get_int(th_stage(s, "f"), "attempts", 0) == 1);
    gr_json_free(s);
    /* the dead letter is recorded */
    redisReply *r = th_redis_cmd(&R, "ZSCORE graft-t:dead %s:f", jid);
    CHECK(r && r->type == REDIS_REPLY_STRING);
    if (r) freeReplyObject(r);
    gr_wire_msg_clear(&m);
    th_close(&w);
    th_close(&cl);
}

static void test_priority_order(void)
{
    th_peer cl = th_connect(Z, B.endpoint), w = th_connect(Z, B.endpoint);
    char err[512];
    /* submitted before any worker serves `echo`: all three wait in the queue */
    const char *y = "name: p\nstages:\n  lo: {op: echo, priority: -1}\n  mid: {op: echo}\n"
                    "  hi: {op: echo, priority: 7}\n";
    const char *j = th_submit(&cl, y, 1, err, sizeof err);
    CHECK(j != NULL);
    th_sleep_ms(200);
    th_ready(&w, "w-prio", "[\"echo\"]", NULL, 0);
    const char *want[3] = {"hi", "mid", "lo"};
    gr_wire_msg m = {0};
    for (int k = 0; k < 3; k++) {
        CHECK(th_expect(&w, GR_CMD_TASK, &m, 5000, 1) == 0);
        CHECK_MSG(!strcmp(gr_json_get_str(m.body, "stage", ""), want[k]), "got %s, want %s",
                  gr_json_get_str(m.body, "stage", ""), want[k]);
        th_done(&w, &m, NULL, NULL);
    }
    gr_wire_msg_clear(&m);
    th_close(&w);
    th_close(&cl);
}

static void test_watch_list_workers(void)
{
    th_peer cl = th_connect(Z, B.endpoint), wa = th_connect(Z, B.endpoint),
            w = th_connect(Z, B.endpoint);
    th_ready(&w, "w-watch", "[\"sleep\"]", NULL, 0);
    char err[512];
    const char *j =
        th_submit(&cl, "name: wt\nstages:\n  s: {op: sleep, seconds: 0}\n", 1, err, sizeof err);
    CHECK(j != NULL);
    char jid[64], q[128];
    snprintf(jid, sizeof jid, "%s", j ? j : "");
    snprintf(q, sizeof q, "{\"job\":\"%s\",\"req\":9}", jid);
    CHECK(th_send_json(&wa, GR_CMD_WATCH, q) == 0);
    gr_wire_msg m = {0}, e = {0};
    CHECK(th_recv(&wa, GR_WIRE_TO_CLIENT, &m, 5000) == 0);
    CHECK_EQ_INT(m.cmd, GR_CMD_REPLY);
    CHECK_EQ_INT(gr_json_get_int(m.body, "req", 0), 9);
    CHECK(!strcmp(gr_json_get_str(gr_json_get(m.body, "result"), "job", ""), jid));

    CHECK(th_expect(&w, GR_CMD_TASK, &m, 5000, 1) == 0);
    char pj[256];
    snprintf(pj, sizeof pj,
             "{\"task\":\"%s\",\"attempt\":1,\"done\":2,\"total\":4,\"message\":\"half\"}",
             gr_json_get_str(m.body, "task", ""));
    th_send_json(&w, GR_CMD_PROGRESS, pj);
    th_sleep_ms(100);
    gr_json *s = th_status(&cl, jid);
    const gr_json *pr = gr_json_get(th_stage(s, "s"), "progress");
    CHECK(pr && gr_json_get_num(pr, "done", 0) == 2 && gr_json_get_num(pr, "total", 0) == 4);
    CHECK(pr && !strcmp(gr_json_get_str(pr, "message", ""), "half"));
    gr_json_free(s);

    /* WORKERS shows it busy with that task */
    gr_json *wl = th_request(&cl, GR_CMD_WORKERS, "{}", err, sizeof err);
    const gr_json *ws = gr_json_get(wl, "workers");
    int found = 0;
    for (size_t i = 0; ws && i < ws->len; i++)
        if (!strcmp(gr_json_get_str(ws->items[i], "worker", ""), "w-watch")) {
            found = 1;
            CHECK(!strcmp(gr_json_get_str(ws->items[i], "state", ""), "busy"));
            CHECK(!strcmp(gr_json_get_str(ws->items[i], "task", ""),
                          gr_json_get_str(m.body, "task", "")));
        }
    CHECK(found);
    gr_json_free(wl);
    th_done(&w, &m, NULL, NULL);

    /* the watcher sees running, progress, done and the final job event */
    int saw_progress = 0, saw_done = 0, saw_final = 0;
    int64_t end = th_now_ms() + 5000;
    while (!saw_final && th_now_ms() < end) {
        if (th_recv(&wa, GR_WIRE_TO_CLIENT, &e, 500)) continue;
        if (e.cmd != GR_CMD_EVENT) continue;
        const char *type = gr_json_get_str(e.body, "type", "");
        if (!strcmp(type, "progress") && gr_json_get_num(e.body, "done", 0) == 2) saw_progress = 1;
        if (!strcmp(type, "stage") && !strcmp(gr_json_get_str(e.body, "state", ""), "done"))
            saw_done = 1;
        if (!strcmp(type, "job") && gr_json_get_bool(e.body, "final", 0)) {
            saw_final = 1;
            CHECK(!strcmp(gr_json_get_str(e.body, "state", ""), "done"));
        }
    }
    CHECK(saw_progress && saw_done && saw_final);

    /* LIST: newest first, with counts */
    gr_json *l = th_request(&cl, GR_CMD_LIST, "{\"limit\":2}", err, sizeof err);
    const gr_json *jobs = gr_json_get(l, "jobs");
    CHECK(jobs && jobs->len == 2);
    CHECK(jobs && jobs->len && !strcmp(gr_json_get_str(jobs->items[0], "job", ""), jid));
    CHECK(jobs && jobs->len &&
          gr_json_get_int(gr_json_get(jobs->items[0], "counts"), "done", 0) == 1);
    gr_json_free(l);
    l = th_request(&cl, GR_CMD_STATUS, "{\"req\":3}", err, sizeof err);
    CHECK(l && gr_json_get(l, "jobs") && gr_json_get(l, "jobs")->len >= 2);
    gr_json_free(l);
    gr_wire_msg_clear(&m);
    gr_wire_msg_clear(&e);
    th_close(&w);
    th_close(&wa);
    th_close(&cl);
}

/* With --store the broker checks a memo entry's outputs against the store:
 * present -> cached; deleted from the store -> the stage runs again. */
static void test_memo_store(void)
{
    char dir[] = "/tmp/graft-broker-store-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    gr_cas *cas = gr_cas_open(dir);
    CHECK(cas != NULL);
    if (!cas) return;
    char id[GR_ID_SZ];
    CHECK(gr_cas_put_buf(cas, "memo me", 7, id) == 0);
    th_broker b2 = {0};
    gr_broker_opts o = O;
    o.prefix = "graft-s:";
    o.store = dir;
    CHECK(th_broker_start(&b2, &o) == 0);
    th_peer cl = th_connect(Z, b2.endpoint), w = th_connect(Z, b2.endpoint);
    th_ready(&w, "w-store", "[\"echo\"]", NULL, 0);
    const char *y = "name: m\nstages:\n  s: {op: echo}\n";
    char err[512];
    gr_wire_msg t = {0};
    for (int round = 0; round < 3; round++) {
        const char *j = th_submit(&cl, y, 0, err, sizeof err);
        CHECK_MSG(j != NULL, "%s", err);
        char jid[64];
        snprintf(jid, sizeof jid, "%s", j ? j : "");
        int ran = th_expect(&w, GR_CMD_TASK, &t, 1000, 1) == 0;
        if (ran) th_done(&w, &t, id, NULL);
        gr_json *s = th_wait_job(&cl, jid, 5000);
        const char *st = gr_json_get_str(th_stage(s, "s"), "state", "");
        if (round == 0) CHECK_MSG(ran && !strcmp(st, "done"), "round 0: %s", st);
        if (round == 1) CHECK_MSG(!ran && !strcmp(st, "cached"), "round 1: %s", st);
        if (round == 2) CHECK_MSG(ran && !strcmp(st, "done"), "round 2: %s", st);
        CHECK(!strcmp(gr_json_get_str(gr_json_get(th_stage(s, "s"), "outputs"), "out", ""), id));
        gr_json_free(s);
        if (round == 1) { /* the artifact disappears from the store */
            char *path = NULL;
            uint64_t size;
            CHECK(gr_cas_blob_path(cas, id, &path, &size) == 0);
            CHECK(path && unlink(path) == 0);
            free(path);
        }
    }
    gr_wire_msg_clear(&t);
    th_close(&w);
    th_close(&cl);
    th_broker_stop(&b2);
    gr_cas_destroy(&cas);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) {
    }
}

/* A job bigger than one submission chunk (2,000 stages) with more roots than
 * one resolution batch (1,000): 2,600 roots, then 1,900 stages that each take
 * two roots from different chunks. Every stage runs exactly once, never
 * before its inputs, and the job's per-state counts add up. */
#define BIG_ROOTS 2600
#define BIG_DEPS  1900
static void test_big_job(void)
{
    gr_buf y = {0};
    gr_buf_puts(&y, "name: big\nstages:\n");
    for (int i = 0; i < BIG_ROOTS; i++) gr_buf_printf(&y, "  r%d: {op: noop}\n", i);
    for (int i = 0; i < BIG_DEPS; i++)
        gr_buf_printf(&y, "  d%d: {op: noop, inputs: [r%d, r%d]}\n", i, i, BIG_ROOTS - 1 - i);
    th_peer cl = th_connect(Z, B.endpoint), w = th_connect(Z, B.endpoint);
    th_ready(&w, "w-big", "[\"noop\"]", NULL, 0);
    char err[512];
    const char *j = th_submit(&cl, y.data, 1, err, sizeof err);
    gr_buf_free(&y);
    CHECK_MSG(j, "submit: %s", err);
    if (!j) return;
    char jid[64];
    snprintf(jid, sizeof jid, "%s", j);
    static unsigned char ran_r[BIG_ROOTS], ran_d[BIG_DEPS];
    memset(ran_r, 0, sizeof ran_r);
    memset(ran_d, 0, sizeof ran_d);
    int n = 0, twice = 0, early = 0;
    gr_wire_msg m = {0};
    int64_t end = th_now_ms() + 120000;
    while (n < BIG_ROOTS + BIG_DEPS && th_now_ms() < end) {
        if (th_recv(&w, GR_WIRE_TO_WORKER, &m, 1000) != 0 || m.cmd != GR_CMD_TASK) continue;
        const char *sid = gr_json_get_str(m.body, "stage", "");
        int k = atoi(sid + 1);
        if (sid[0] == 'r' && k >= 0 && k < BIG_ROOTS) {
            twice += ran_r[k]++ > 0;
        } else if (sid[0] == 'd' && k >= 0 && k < BIG_DEPS) {
            twice += ran_d[k]++ > 0;
            early += !ran_r[k] || !ran_r[BIG_ROOTS - 1 - k];
        }
        n++;
        th_done(&w, &m, NULL, NULL);
    }
    gr_wire_msg_clear(&m);
    CHECK_MSG(n == BIG_ROOTS + BIG_DEPS && !twice && !early, "%d tasks, %d twice, %d early", n,
              twice, early);
    gr_json *st = th_wait_job(&cl, jid, 20000);
    CHECK(st && !strcmp(gr_json_get_str(st, "state", ""), "done"));
    const gr_json *stages = gr_json_get(st, "stages");
    CHECK(stages && stages->len == BIG_ROOTS + BIG_DEPS);
    gr_json_free(st);
    redisReply *r =
        th_redis_cmd(&R, "HMGET graft-t:job:%s nstages n_blocked n_ready n_running n_done", jid);
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 5);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 5) {
        CHECK_EQ_INT(atoll(r->element[0]->str), BIG_ROOTS + BIG_DEPS);
        for (int i = 1; i < 4; i++) CHECK_EQ_INT(atoll(r->element[i]->str), 0);
        CHECK_EQ_INT(atoll(r->element[4]->str), BIG_ROOTS + BIG_DEPS);
    }
    if (r) freeReplyObject(r);
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
                         .prefix = "graft-t:",
                         .heartbeat_ms = 200,
                         .liveness = 3,
                         .backoff_ms = 50};
    if (th_broker_start(&B, &O)) {
        th_redis_cleanup(&R);
        CHECK(0);
        TEST_MAIN_END();
    }
    RUN(test_dag_and_memo);
    RUN(test_bad_pipeline);
    RUN(test_retries);
    RUN(test_priority_order);
    RUN(test_watch_list_workers);
    RUN(test_memo_store);
    RUN(test_big_job);
    th_broker_stop(&B);
    zmq_ctx_term(Z);
    th_redis_cleanup(&R);
    TEST_MAIN_END();
}
