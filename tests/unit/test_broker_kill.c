/* test_broker_kill: the graft-broker binary SIGKILLed in the middle of a job,
 * again and again, at random points (while a stage runs, right after a
 * result): each time it is started again, workers re-register, and the job
 * finishes with every stage done and none run twice while its first run was
 * still being reported. Needs GRAFT_BIN (set by CTest). */
#include "gr_test.h"
#include "test_broker_util.h"

static th_redis R;
static char broker_bin[512], endpoint[64];
static pid_t bpid;

static void broker_up(void)
{
    bpid = fork();
    if (bpid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0 && !getenv("GRAFT_TEST_LOG")) dup2(devnull, 2);
        execl(broker_bin, "graft-broker", "--bind", endpoint, "--redis", R.url, "--prefix",
              "graft-k:", "--heartbeat-ms", "100", "--liveness", "5", (char *)NULL);
        _exit(127);
    }
}

static void broker_kill(void)
{
    kill(bpid, SIGKILL);
    int st;
    waitpid(bpid, &st, 0);
}

static void test_kill_loop(void)
{
    void *z = zmq_ctx_new();
    th_peer cl = th_connect(z, endpoint), w = th_connect(z, endpoint);
    th_ready(&w, "w-kill", "[\"noop\",\"sleep\"]", NULL, 0);
    /* a chain of 12 stages plus 4 independent ones */
    gr_buf y = {0};
    gr_buf_puts(&y, "name: kill\nstages:\n  c0: {op: sleep}\n");
    for (int i = 1; i < 12; i++) gr_buf_printf(&y, "  c%d: {op: sleep, inputs: [c%d]}\n", i, i - 1);
    for (int i = 0; i < 4; i++) gr_buf_printf(&y, "  x%d: {op: noop}\n", i);
    char err[512], jid[64] = "";
    const char *j = NULL;
    for (int tries = 0; tries < 50 && !j; tries++) { /* the broker may still be starting */
        j = th_submit(&cl, y.data, 1, err, sizeof err);
        if (!j) th_sleep_ms(100);
    }
    CHECK_MSG(j != NULL, "submit: %s", err);
    if (!j) return;
    snprintf(jid, sizeof jid, "%s", j);
    gr_buf_free(&y);

    int kills = 0, tasks = 0, adopted_done = 0;
    char seen[64][96];
    int nseen = 0, dup = 0;
    char held_task[96] = "";
    int64_t held_attempt = 0;
    gr_wire_msg m = {0}, held = {0};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int64_t end = th_now_ms() + 60000;
    int finished = 0;
    while (!finished && th_now_ms() < end) {
        if (th_recv(&w, GR_WIRE_TO_WORKER, &m, 150) == 0) {
            if (m.cmd == GR_CMD_DISCONNECT) {
                /* re-register, naming the task still held */
                th_ready(&w, "w-kill", "[\"noop\",\"sleep\"]", held_task[0] ? held_task : NULL,
                         held_attempt);
                continue;
            }
            if (m.cmd == GR_CMD_ABORT) {
                if (held_task[0] && !strcmp(gr_json_get_str(m.body, "task", ""), held_task)) {
                    th_fail(&w, &held, "cancelled", 0);
                    held_task[0] = 0;
                }
                continue;
            }
            if (m.cmd != GR_CMD_TASK) continue;
            tasks++;
            const char *t = gr_json_get_str(m.body, "task", "");
            /* a task held across a kill is re-adopted, never dispatched again
             * (a result lost with a killed broker may legitimately run twice) */
            for (int i = 0; i < nseen; i++)
                if (!strcmp(seen[i], t)) dup++;
            /* hold the task while the broker is killed half of the time */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (x % 2 == 0 && kills < 8) {
                snprintf(held_task, sizeof held_task, "%s", t);
                if (nseen < 64) snprintf(seen[nseen++], sizeof seen[0], "%s", t);
                held_attempt = gr_json_get_int(m.body, "attempt", 0);
                gr_wire_msg_clear(&held);
                held.body = gr_wire_json_dup(m.body);
                broker_kill();
                kills++;
                th_idle(&w, 100 + (int)(x % 300));
                broker_up();
                continue;
            }
            th_done(&w, &m, NULL, NULL);
            if (x % 3 == 0 && kills < 8) { /* killed right after a result */
                th_sleep_ms((int)(x % 5));
                broker_kill();
                kills++;
                th_idle(&w, 100);
                broker_up();
            }
            continue;
        }
        /* nothing arrived: finish a held task (it was re-adopted by now) */
        if (held_task[0]) {
            th_done(&w, &held, NULL, NULL);
            held_task[0] = 0;
            adopted_done++;
            continue;
        }
        gr_json *s = th_status(&cl, jid);
        const char *st = gr_json_get_str(s, "state", "");
        finished = !strcmp(st, "done") || !strcmp(st, "failed");
        gr_json_free(s);
        th_send_json(&w, GR_CMD_HEARTBEAT, "{}");
    }
    CHECK_MSG(finished, "job did not finish after %d kills", kills);
    gr_json *s = th_status(&cl, jid);
    CHECK(s && !strcmp(gr_json_get_str(s, "state", ""), "done"));
    const gr_json *st = gr_json_get(s, "stages");
    CHECK(st && st->len == 16);
    for (size_t i = 0; st && i < st->len; i++)
        CHECK_MSG(!strcmp(gr_json_get_str(st->items[i], "state", ""), "done"), "stage %s is %s",
                  gr_json_get_str(st->items[i], "id", ""),
                  gr_json_get_str(st->items[i], "state", ""));
    gr_json_free(s);
    CHECK(kills >= 3);
    /* a held task re-adopted is never dispatched again */
    CHECK_MSG(dup == 0, "%d task(s) dispatched twice", dup);
    printf("%d kills, %d tasks, %d finished after re-adoption\n", kills, tasks, adopted_done);
    gr_wire_msg_clear(&m);
    gr_wire_msg_clear(&held);
    th_close(&w);
    th_close(&cl);
    zmq_ctx_term(z);
}

int main(void)
{
    gr_log_set_level(GR_LOG_ERROR);
    const char *bin = getenv("GRAFT_BIN");
    if (!bin) {
        printf("GRAFT_BIN not set: skipping (run under CTest)\n");
        return 0;
    }
    snprintf(broker_bin, sizeof broker_bin, "%s/graft-broker", bin);
    if (access(broker_bin, X_OK)) {
        printf("%s not built: skipping\n", broker_bin);
        return 0;
    }
    if (th_redis_start(&R)) {
        printf("redis-server not available: skipping\n");
        return 0;
    }
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", th_free_port());
    broker_up();
    RUN(test_kill_loop);
    broker_kill();
    th_redis_cleanup(&R);
    TEST_MAIN_END();
}
