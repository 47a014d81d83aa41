/* gr_worker: the worker runtime — an I/O thread that speaks the wire protocol
 * and compute threads that run op handlers (see gr_worker.h). */
#include "gr_worker.h"
#include "gr_cas.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_jsonb.h"
#include "gr_log.h"
#include "gr_pipeline.h"
#include "gr_wire.h"

#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define WK_MAX_BACKOFF_MS 30000
#define WK_MIN_BACKOFF_MS 1000
#define WK_METRICS_MAX    (1u << 20) /* bytes of metrics JSON a handler may set */
#define WK_SNDHWM         64         /* messages queued toward the broker at most */
#define WK_ID_MAX         GR_WIRE_MAX_ID

static const char *const comp = "worker";

/* ------------------------------------------------------------- helpers */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
    fclose(f);
    return (int64_t)res * sysconf(_SC_PAGESIZE);
}

int gr_worker_set_threads(int n)
{
    if (n <= 0) {
        cpu_set_t set;
        n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
        if (n <= 0) n = 1;
    }
    openblas_set_num_threads(n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    return n;
}

/* ----------------------------------------------------------- exec (local) */

static int strip_reserved(const gr_json *params, gr_json **out)
{
    *out = gr_jsonb_copy(params);
    if (!*out) return GR_ENOMEM;
    for (size_t i = 0; i < (*out)->len;) {
        if ((*out)->keys[i][0] == '_')
            gr_jsonb_del(*out, (*out)->keys[i]);
        else
            i++;
    }
    return 0;
}

int gr_worker_exec(const gr_exec *e, char **metrics)
{
    *metrics = NULL;
    if (!e->op || !e->params || e->params->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "%s: parameters must be an object", e->op ? e->op->name : "op");
    gr_json *checked = NULL, *params = NULL, *mj = NULL;
    int rc = strip_reserved(e->params, &checked);
    if (rc) return rc;
    rc = gr_op_check_params(e->op, checked);
    gr_json_free(checked);
    if (rc) return rc;
    if (!(params = gr_jsonb_copy(e->params))) return GR_ENOMEM;
    if ((rc = gr_jsonb_set(params, "_attempt", gr_jsonb_int(e->attempt > 0 ? e->attempt : 1))))
        goto out;
    volatile int never = 0;
    gr_op_ctx ctx = {
        .op = e->op,
        .params = params,
        .outdir = e->outdir,
        .workdir = e->workdir,
        .store = e->store,
        .threads = e->threads > 0 ? e->threads : 1,
        .cancel = e->cancel ? e->cancel : &never,
        .progress_cb = e->progress_cb,
        .progress_ud = e->progress_ud,
    };
    gr_clearerr();
    rc = e->op->run(&ctx);
    if (rc) {
        if (rc > 0) rc = GR_EIO; /* a handler returning a positive value is a bug */
        if (!gr_errcode() || !*gr_errmsg())
            gr_seterr(rc, "%s: failed (%s) without saying why", e->op->name, gr_errname(rc));
        goto out;
    }
    if (ctx.metrics.oom) {
        rc = gr_seterr(GR_ENOMEM, "%s: out of memory building metrics", e->op->name);
        goto out;
    }
    if (ctx.metrics.len > WK_METRICS_MAX) {
        rc = gr_seterr(GR_EINVAL, "%s: metrics larger than %u bytes", e->op->name, WK_METRICS_MAX);
        goto out;
    }
    if (ctx.metrics.len) {
        mj = gr_json_parse(ctx.metrics.data, ctx.metrics.len, e->op->name);
        if (!mj || mj->type != GR_JSON_OBJ) {
            rc = gr_seterr(GR_EINVAL, "%s: metrics are not a JSON object (handler bug): %s",
                           e->op->name, mj ? "not an object" : gr_errmsg());
            goto out;
        }
        if (!(*metrics = gr_jsonb_canon(mj))) rc = gr_errcode() ? gr_errcode() : GR_ENOMEM;
    } else if (!(*metrics = strdup("{}")))
        rc = gr_seterr(GR_ENOMEM, "out of memory");
out:
    gr_buf_free(&ctx.metrics);
    gr_json_free(mj);
    gr_json_free(params);
    return rc;
}

/* ------------------------------------------------------------- the worker */

typedef struct task {
    char id[WK_ID_MAX + 1];
    int64_t attempt;
    const gr_op *op;
    gr_json *params; /* owned; input parameters hold artifact ids */
    double timeout;  /* seconds, 0 = none */
    int64_t started; /* mono ms */
} task;

struct gr_worker {
    char *broker, *store, *id;
    char host[256];
    const gr_op **ops;
    size_t nops;
    int threads, hb_ms, liveness;
    gr_cas *cas;
    void *zctx, *sock;
    int wake[2]; /* compute thread -> I/O thread: one byte when a task ends */
    gr_wire_stats stats;
    volatile sig_atomic_t stop;

    /* the running task (I/O thread), its thread and shared progress */
    int busy;
    task cur;
    pthread_t th;
    volatile int cancel;
    const char *cancel_why; /* "cancelled", "timeout", "handed back" */
    pthread_mutex_t mu;
    double p_done, p_total;
    char p_msg[256];
    int p_dirty;
    int64_t p_last;

    /* written by the compute thread before it wakes the I/O thread */
    int r_rc, r_retryable;
    char *r_err;
    char r_out[GR_ID_SZ], r_metrics_id[GR_ID_SZ];
    char *r_metrics;
    int64_t r_elapsed;

    /* the last report, kept until the next TASK */
    gr_buf report;
    int report_cmd;
    char report_task[WK_ID_MAX + 1];
    int64_t report_attempt;
    int has_report;

    int64_t last_rx, last_hb, silence_ms;
};

const char *gr_worker_id(const gr_worker *w)
{
    return w ? w->id : "";
}

void gr_worker_stop(gr_worker *w, int how)
{
    if (w && how > w->stop) w->stop = how;
}

static void *open_socket(gr_worker *w)
{
    void *s = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!s) {
        gr_seterr(GR_EIO, "zmq DEALER socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    /* a bounded queue toward a broker that is away (no unbounded growth);
     * a result that could not be sent stays in w->report and goes out again
     * after the next READY */
    int linger = 0, ivl = 100, ivl_max = 2000, hwm = WK_SNDHWM;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_connect(s, w->broker) < 0) {
        gr_seterr(GR_EINVAL, "%s: cannot connect: %s", w->broker, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* Removes work directories that workers on this host left when they died
 * (named <host>-<pid>-XXXXXX under <store>/work; the pid is no longer
 * alive). Other hosts' directories on a shared store are left alone. */
static void sweep_work(gr_worker *w)
{
    char *root = gr_fs_join(gr_cas_root(w->cas), "work");
    DIR *d = root ? opendir(root) : NULL;
    size_t hl = strlen(w->host);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, w->host, hl) || e->d_name[hl] != '-') continue;
        char *end;
        long pid = strtol(e->d_name + hl + 1, &end, 10);
        if (pid <= 0 || *end != '-' || pid == getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char *dead = gr_fs_join(root, e->d_name);
        if (dead) {
            GR_INFO(comp, "removing %s, left by a worker that died", dead);
            gr_fs_rmrf(dead);
        }
        free(dead);
    }
    if (d) closedir(d);
    free(root);
}

gr_worker *gr_worker_new(const gr_worker_opts *o)
{
    if (!o || !o->broker || !*o->broker) {
        gr_seterr(GR_EINVAL, "graft-worker: --broker ENDPOINT is required");
        return NULL;
    }
    gr_worker *w = calloc(1, sizeof *w);
    if (!w) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    w->wake[0] = w->wake[1] = -1;
    pthread_mutex_init(&w->mu, NULL);
    w->hb_ms = o->heartbeat_ms > 0 ? o->heartbeat_ms : GR_WORKER_HEARTBEAT_MS;
    w->liveness = o->liveness > 0 ? o->liveness : GR_WORKER_LIVENESS;
    if (!(w->broker = strdup(o->broker))) goto oom;
    /* ops */
    size_t all = 0;
    while (gr_ops[all]) all++;
    if (!(w->ops = calloc(all + 1, sizeof *w->ops))) goto oom;
    if (!o->ops || !o->nops) {
        for (size_t i = 0; i < all; i++) w->ops[w->nops++] = gr_ops[i];
    } else {
        for (size_t i = 0; i < o->nops; i++) {
            const gr_op *op = gr_op_find(o->ops[i]);
            if (!op) {
                gr_buf known = {0};
                for (size_t k = 0; k < all; k++)
                    gr_buf_printf(&known, "%s%s", k ? "," : "", gr_ops[k]->name);
                gr_seterr(GR_EINVAL, "--ops: unknown op '%s' (this build serves: %s)", o->ops[i],
                          known.data ? known.data : "none");
                gr_buf_free(&known);
                goto fail;
            }
            int dup = 0;
            for (size_t k = 0; k < w->nops; k++) dup |= w->ops[k] == op;
            if (!dup && w->nops < all) w->ops[w->nops++] = op;
        }
    }
    if (!w->nops) {
        gr_seterr(GR_EINVAL, "graft-worker: no ops to serve");
        goto fail;
    }
    /* identity */
    if (gethostname(w->host, sizeof w->host - 1)) snprintf(w->host, sizeof w->host, "localhost");
    if (o->id && *o->id) {
        if (strlen(o->id) > 100 || strpbrk(o->id, " \t\r\n")) {
            gr_seterr(GR_EINVAL, "--id '%s': 1 to 100 characters without spaces", o->id);
            goto fail;
        }
        if (!(w->id = strdup(o->id))) goto oom;
    } else {
        char buf[400];
        unsigned r = (unsigned)(mono_ms() ^ ((int64_t)getpid() << 16)) * 2654435761u;
        snprintf(buf, sizeof buf, "%.200s-%d-%04x", w->host, (int)getpid(), (r >> 16) & 0xffff);
        if (!(w->id = strdup(buf))) goto oom;
    }
    /* store */
    if (!(w->store = gr_cas_default_root(o->store))) goto fail;
    if (!(w->cas = gr_cas_open(w->store))) goto fail;
    sweep_work(w);
    w->threads = gr_worker_set_threads(o->threads);
    if (pipe2(w->wake, O_CLOEXEC | O_NONBLOCK)) {
        gr_seterr(GR_EIO, "pipe: %s", strerror(errno));
        goto fail;
    }
    if (!(w->zctx = zmq_ctx_new())) {
        gr_seterr(GR_EIO, "zmq context: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    return w;
oom:
    gr_seterr(GR_ENOMEM, "out of memory");
fail:
    gr_worker_destroy(&w);
    return NULL;
}

void gr_worker_destroy(gr_worker **pw)
{
    if (!pw || !*pw) return;
    gr_worker *w = *pw;
    if (w->busy) {
        w->cancel = 1;
        pthread_join(w->th, NULL);
        free(w->r_err);
        free(w->r_metrics);
        gr_json_free(w->cur.params);
    }
    if (w->sock) zmq_close(w->sock);
    if (w->zctx) zmq_ctx_term(w->zctx);
    if (w->wake[0] >= 0) close(w->wake[0]);
    if (w->wake[1] >= 0) close(w->wake[1]);
    gr_cas_destroy(&w->cas);
    gr_buf_free(&w->report);
    pthread_mutex_destroy(&w->mu);
    free(w->ops);
    free(w->broker);
    free(w->store);
    free(w->id);
    free(w);
    *pw = NULL;
}

/* ------------------------------------------------------------ sending */

static int send_body(gr_worker *w, int cmd, gr_buf *b)
{
    if (b->oom) return gr_seterr(GR_ENOMEM, "out of memory building a message");
    int rc = gr_wire_send(w->sock, NULL, 0, cmd, b->data, b->len, &w->stats);
    if (rc && rc != GR_ENET) GR_WARN(comp, "send %s: %s", gr_wire_cmd_name(cmd), gr_errmsg());
    return rc;
}

static void send_ready(gr_worker *w)
{
    gr_buf b = {0};
    const char *task = NULL;
    int64_t attempt = 0;
    if (w->busy)
        task = w->cur.id, attempt = w->cur.attempt;
    else if (w->has_report)
        task = w->report_task, attempt = w->report_attempt;
    gr_wire_pk_map(&b, task ? 8 : 6);
    gr_wire_pk_kv_str(&b, "worker", w->id);
    gr_wire_pk_kv_str(&b, "host", w->host);
    gr_wire_pk_kv_int(&b, "pid", getpid());
    gr_wire_pk_str(&b, "ops");
    gr_wire_pk_arr(&b, (uint32_t)w->nops);
    for (size_t i = 0; i < w->nops; i++) gr_wire_pk_str(&b, w->ops[i]->name);
    gr_wire_pk_kv_str(&b, "version", GRAFT_VERSION);
    gr_wire_pk_kv_int(&b, "threads", w->threads);
    if (task) {
        gr_wire_pk_kv_str(&b, "task", task);
        gr_wire_pk_kv_int(&b, "attempt", attempt);
    }
    send_body(w, GR_CMD_READY, &b);
    gr_buf_free(&b);
    /* a result the broker may not have seen goes out again after READY */
    if (w->has_report && !w->busy)
        gr_wire_send(w->sock, NULL, 0, w->report_cmd, w->report.data, w->report.len, &w->stats);
    w->last_hb = mono_ms();
}

static void send_heartbeat(gr_worker *w)
{
    gr_buf b = {0};
    gr_wire_pk_map(&b, w->busy ? 3 : 1);
    if (w->busy) {
        gr_wire_pk_kv_str(&b, "task", w->cur.id);
        gr_wire_pk_kv_int(&b, "attempt", w->cur.attempt);
    }
    gr_wire_pk_kv_int(&b, "rss", rss_bytes());
    send_body(w, GR_CMD_HEARTBEAT, &b);
    gr_buf_free(&b);
    w->last_hb = mono_ms();
}

static void send_progress(gr_worker *w, int force)
{
    int64_t now = mono_ms();
    if (!w->busy || (!force && now - w->p_last < GR_WORKER_PROGRESS_MS)) return;
    double done, total;
    char msg[256];
    pthread_mutex_lock(&w->mu);
    int dirty = w->p_dirty;
    done = w->p_done, total = w->p_total;
    memcpy(msg, w->p_msg, sizeof msg);
    w->p_dirty = 0;
    pthread_mutex_unlock(&w->mu);
    if (!dirty) return;
    gr_buf b = {0};
    gr_wire_pk_map(&b, 5);
    gr_wire_pk_kv_str(&b, "task", w->cur.id);
    gr_wire_pk_kv_int(&b, "attempt", w->cur.attempt);
    gr_wire_pk_kv_double(&b, "done", done);
    gr_wire_pk_kv_double(&b, "total", total);
    gr_wire_pk_kv_str(&b, "message", msg);
    send_body(w, GR_CMD_PROGRESS, &b);
    gr_buf_free(&b);
    w->p_last = now;
}

/* Builds, keeps and sends a FAIL for (task, attempt). */
static void report_fail(gr_worker *w, const char *task, int64_t attempt, const char *err,
                        int retryable)
{
    gr_buf b = {0};
    gr_wire_pk_map(&b, 4);
    gr_wire_pk_kv_str(&b, "task", task);
    gr_wire_pk_kv_int(&b, "attempt", attempt);
    gr_wire_pk_kv_str(&b, "error", err);
    gr_wire_pk_kv_bool(&b, "retryable", retryable);
    send_body(w, GR_CMD_FAIL, &b);
    gr_buf_free(&b);
}

static void keep_report(gr_worker *w, int cmd, gr_buf *b)
{
    gr_buf_free(&w->report);
    w->report = *b;
    *b = (gr_buf){0};
    w->report_cmd = cmd;
    snprintf(w->report_task, sizeof w->report_task, "%s", w->cur.id);
    w->report_attempt = w->cur.attempt;
    w->has_report = !w->report.oom;
}

/* ------------------------------------------------------- compute thread */

static void progress_cb(void *ud, double done, double total, const char *msg)
{
    gr_worker *w = ud;
    pthread_mutex_lock(&w->mu);
    w->p_done = done;
    w->p_total = total;
    snprintf(w->p_msg, sizeof w->p_msg, "%s", msg ? msg : "");
    w->p_dirty = 1;
    pthread_mutex_unlock(&w->mu);
}

static int materialize_cb(void *ud, const char *param, const char *ref, char **repl)
{
    gr_worker *w = ud;
    if (!gr_is_artifact_id(ref))
        return gr_seterr(GR_EINVAL,
                         "parameter '%s': '%s' is not an artifact id (the broker "
                         "must resolve stage references)",
                         param, ref);
    int rc = gr_cas_materialize(w->cas, ref, repl);
    if (rc) return gr_adderr(rc, "parameter '%s'", param);
    return 0;
}

/* Puts a small blob unless it is already there (metrics repeat a lot: the
 * same op with the same result) — saves the fsyncs of a put. */
static int put_small_blob(gr_cas *cas, const char *text, char id[GR_ID_SZ])
{
    uint8_t d[GR_SHA256_LEN];
    int rc = gr_sha256_buf(text, strlen(text), d);
    if (rc) return rc;
    gr_sha256_id(d, id);
    if (gr_cas_has(cas, id) == 1) return 0;
    return gr_cas_put_buf(cas, text, strlen(text), id);
}

static void *compute_main(void *arg)
{
    gr_worker *w = arg;
    task *t = &w->cur;
    int64_t t0 = mono_ms();
    gr_json *local = NULL;
    char *base = NULL, *outdir = NULL, *scratch = NULL, *metrics = NULL, *workroot = NULL;
    int rc;
    /* block signals here: the I/O thread handles them */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    if (!(local = gr_params_map_inputs(t->op, t->params, materialize_cb, w))) {
        rc = gr_errcode() ? gr_errcode() : GR_ENOMEM;
        goto out;
    }
    /* the work directory lives in the store so outputs are moved, not copied */
    rc = GR_ENOMEM;
    if (!(workroot = gr_fs_join(gr_cas_root(w->cas), "work"))) goto out;
    if ((rc = gr_fs_mkdirs(workroot, 0755, 0))) goto out;
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%.200s-%d-", w->host, (int)getpid());
    if ((rc = gr_fs_mkdtemp(workroot, prefix, &base))) goto out;
    rc = GR_ENOMEM;
    if (!(outdir = gr_fs_join(base, "out")) || !(scratch = gr_fs_join(base, "scratch"))) goto out;
    if (mkdir(outdir, 0755) || mkdir(scratch, 0755)) {
        rc = gr_seterr(GR_EIO, "%s: cannot make the task directories: %s", base, strerror(errno));
        goto out;
    }
    gr_exec e = {
        .op = t->op,
        .params = local,
        .outdir = outdir,
        .workdir = scratch,
        .store = gr_cas_root(w->cas),
        .threads = w->threads,
        .attempt = (int)t->attempt,
        .cancel = &w->cancel,
        .progress_cb = progress_cb,
        .progress_ud = w,
    };
    if ((rc = gr_worker_exec(&e, &metrics))) goto out;
    if ((rc = gr_cas_ingest_tree(w->cas, outdir, w->r_out))) goto out;
    if ((rc = put_small_blob(w->cas, metrics, w->r_metrics_id))) goto out;
out:
    w->r_rc = rc;
    if (rc) {
        w->r_err = strdup(gr_errmsg());
        w->r_retryable = gr_err_retryable(rc);
    } else {
        w->r_metrics = metrics;
        metrics = NULL;
    }
    w->r_elapsed = mono_ms() - t0;
    if (base) gr_fs_rmrf(base);
    free(base);
    free(outdir);
    free(scratch);
    free(workroot);
    free(metrics);
    gr_json_free(local);
    char one = 1;
    while (write(w->wake[1], &one, 1) < 0 && errno == EINTR) {
    }
    return NULL;
}

/* ------------------------------------------------------------ I/O thread */

static void start_task(gr_worker *w, const gr_json *b)
{
    const char *tid = gr_json_get_str(b, "task", "");
    int64_t attempt = gr_json_get_int(b, "attempt", 0);
    const char *opname = gr_json_get_str(b, "op", "");
    const gr_json *params = gr_json_get(b, "params");
    if (w->busy) {
        if (!strcmp(tid, w->cur.id) && attempt == w->cur.attempt) return; /* duplicate */
        char e[600];
        snprintf(e, sizeof e, "worker %s is busy with %s", w->id, w->cur.id);
        report_fail(w, tid, attempt, e, 1);
        return;
    }
    w->has_report = 0; /* the broker moved on: it has our last result */
    if (w->stop) {
        report_fail(w, tid, attempt, "worker is shutting down (task handed back)", 1);
        return;
    }
    const gr_op *op = NULL;
    for (size_t i = 0; i < w->nops; i++)
        if (!strcmp(w->ops[i]->name, opname)) op = w->ops[i];
    if (!op || !params || params->type != GR_JSON_OBJ || attempt < 1 || !*tid ||
        strlen(tid) > WK_ID_MAX) {
        char e[600];
        snprintf(e, sizeof e, "worker %s: %s", w->id,
                 !op ? "does not serve this op" : "malformed TASK (params, attempt or task)");
        if (*tid && strlen(tid) <= WK_ID_MAX) report_fail(w, tid, attempt, e, !op);
        GR_WARN(comp, "rejected task %s: %s (op '%s')", tid, e, opname);
        return;
    }
    memset(&w->cur, 0, sizeof w->cur);
    snprintf(w->cur.id, sizeof w->cur.id, "%s", tid);
    w->cur.attempt = attempt;
    w->cur.op = op;
    w->cur.timeout = gr_json_get_num(b, "timeout", 0);
    w->cur.started = mono_ms();
    if (!(w->cur.params = gr_jsonb_copy(params))) {
        report_fail(w, tid, attempt, "worker out of memory", 1);
        return;
    }
    w->cancel = 0;
    w->cancel_why = NULL;
    w->p_dirty = 0;
    w->p_last = 0;
    free(w->r_err);
    free(w->r_metrics);
    w->r_err = w->r_metrics = NULL;
    w->r_rc = 0;
    if (pthread_create(&w->th, NULL, compute_main, w)) {
        report_fail(w, tid, attempt, "worker cannot start a thread", 1);
        gr_json_free(w->cur.params);
        w->cur.params = NULL;
        return;
    }
    w->busy = 1;
    GR_INFO(comp, "task %s attempt %lld: %s", tid, (long long)attempt, opname);
}

static void finish_task(gr_worker *w)
{
    char c;
    while (read(w->wake[0], &c, 1) > 0) {
    }
    if (!w->busy) return;
    pthread_join(w->th, NULL);
    send_progress(w, 1); /* the last progress note before the result */
    gr_buf b = {0};
    int cmd;
    if (!w->r_rc) {
        gr_wire_pk_map(&b, 5);
        gr_wire_pk_kv_str(&b, "task", w->cur.id);
        gr_wire_pk_kv_int(&b, "attempt", w->cur.attempt);
        gr_wire_pk_str(&b, "outputs");
        gr_wire_pk_map(&b, 2);
        gr_wire_pk_kv_str(&b, "out", w->r_out);
        gr_wire_pk_kv_str(&b, "metrics", w->r_metrics_id);
        gr_wire_pk_str(&b, "metrics");
        gr_wire_pk_json_text(&b, w->r_metrics, strlen(w->r_metrics));
        gr_wire_pk_kv_int(&b, "elapsed_ms", w->r_elapsed);
        cmd = GR_CMD_DONE;
        GR_INFO(comp, "task %s attempt %lld done in %lld ms: %s", w->cur.id,
                (long long)w->cur.attempt, (long long)w->r_elapsed, w->r_out);
    } else {
        char err[1200];
        int retryable = w->r_retryable;
        if (w->cancel_why && w->r_rc == GR_ECANCEL) {
            /* a timeout may help on retry; a handback must be retried elsewhere */
            retryable = strcmp(w->cancel_why, "cancelled") != 0;
            snprintf(err, sizeof err, "%s: %s", w->cancel_why, w->r_err ? w->r_err : "stopped");
        } else
            snprintf(err, sizeof err, "%s", w->r_err ? w->r_err : "failed");
        gr_wire_pk_map(&b, 4);
        gr_wire_pk_kv_str(&b, "task", w->cur.id);
        gr_wire_pk_kv_int(&b, "attempt", w->cur.attempt);
        gr_wire_pk_kv_str(&b, "error", err);
        gr_wire_pk_kv_bool(&b, "retryable", retryable);
        cmd = GR_CMD_FAIL;
        GR_INFO(comp, "task %s attempt %lld failed (%s): %s", w->cur.id, (long long)w->cur.attempt,
                retryable ? "retryable" : "final", err);
    }
    send_body(w, cmd, &b);
    keep_report(w, cmd, &b);
    gr_buf_free(&b);
    gr_json_free(w->cur.params);
    w->cur.params = NULL;
    free(w->r_err);
    free(w->r_metrics);
    w->r_err = w->r_metrics = NULL;
    w->busy = 0;
}

static void handle(gr_worker *w, gr_wire_msg *m)
{
    switch (m->cmd) {
    case GR_CMD_TASK:
        start_task(w, m->body);
        break;
    case GR_CMD_ABORT: {
        const char *tid = gr_json_get_str(m->body, "task", "");
        int64_t attempt = gr_json_get_int(m->body, "attempt", -1);
        if (w->busy && !strcmp(tid, w->cur.id) && (attempt < 0 || attempt == w->cur.attempt)) {
            if (!w->cancel_why) w->cancel_why = "cancelled";
            w->cancel = 1;
            GR_INFO(comp, "task %s: cancel requested (%s)", tid,
                    gr_json_get_str(m->body, "reason", "no reason given"));
        }
        break;
    }
    case GR_CMD_HEARTBEAT: {
        int64_t iv = gr_json_get_int(m->body, "interval_ms", 0);
        int64_t lv = gr_json_get_int(m->body, "liveness", 0);
        if (iv >= 10 && iv <= 600000) w->hb_ms = (int)iv;
        if (lv >= 1 && lv <= 100) w->liveness = (int)lv;
        break;
    }
    case GR_CMD_DISCONNECT:
        GR_INFO(comp, "broker asked to re-register (%s)",
                gr_json_get_str(m->body, "reason", "no reason"));
        send_ready(w);
        break;
    default:
        break;
    }
}

static int reconnect(gr_worker *w)
{
    if (w->sock) zmq_close(w->sock);
    w->sock = open_socket(w);
    if (!w->sock) return gr_errcode();
    send_ready(w);
    return 0;
}

int gr_worker_run(gr_worker *w)
{
    int rc = reconnect(w);
    if (rc) return rc;
    GR_INFO(comp, "%s serving %zu ops at %s, store %s, %d threads", w->id, w->nops, w->broker,
            w->store, w->threads);
    w->last_rx = mono_ms();
    w->silence_ms = (int64_t)w->hb_ms * w->liveness;
    int stopping_logged = 0;
    for (;;) {
        if (w->stop && !stopping_logged) {
            GR_INFO(comp, "stopping: %s",
                    w->busy ? (w->stop == GR_WORKER_HANDBACK ? "handing the running task back"
                                                             : "finishing the running task")
                            : "idle");
            stopping_logged = 1;
        }
        if (w->stop == GR_WORKER_HANDBACK && w->busy && !w->cancel) {
            w->cancel_why = "handed back (worker stopping)";
            w->cancel = 1;
        }
        if (w->stop && !w->busy) break;
        int64_t now = mono_ms();
        int64_t wait = w->last_hb + w->hb_ms - now;
        if (w->busy && wait > GR_WORKER_PROGRESS_MS) wait = GR_WORKER_PROGRESS_MS;
        if (w->stop && wait > 100) wait = 100;
        if (wait < 0) wait = 0;
        zmq_pollitem_t items[2] = {{w->sock, 0, ZMQ_POLLIN, 0}, {NULL, w->wake[0], ZMQ_POLLIN, 0}};
        int n = zmq_poll(items, 2, (long)wait);
        if (n < 0 && zmq_errno() != EINTR) {
            rc = gr_seterr(GR_EIO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
            break;
        }
        if (n > 0 && (items[0].revents & ZMQ_POLLIN)) {
            for (int k = 0; k < 1000; k++) {
                gr_wire_msg m = {0};
                int r = gr_wire_recv(w->sock, GR_WIRE_TO_WORKER, 0, GR_WIRE_NOWAIT, &m, &w->stats);
                if (r == 1) break;
                if (r == GR_EIO) {
                    gr_wire_msg_clear(&m);
                    break;
                }
                w->last_rx = mono_ms();
                w->silence_ms = (int64_t)w->hb_ms * w->liveness;
                if (r == 0)
                    handle(w, &m);
                else
                    GR_DEBUG(comp, "dropped a message from the broker: %s", gr_errmsg());
                gr_wire_msg_clear(&m);
            }
        }
        if (n > 0 && (items[1].revents & ZMQ_POLLIN)) finish_task(w);
        now = mono_ms();
        if (w->busy) {
            send_progress(w, 0);
            if (w->cur.timeout > 0 && !w->cancel &&
                now - w->cur.started > (int64_t)(w->cur.timeout * 1000)) {
                w->cancel_why = "timeout";
                w->cancel = 1;
                GR_INFO(comp, "task %s: timeout after %g s, stopping it", w->cur.id,
                        w->cur.timeout);
            }
        }
        if (now - w->last_hb >= w->hb_ms) send_heartbeat(w);
        if (now - w->last_rx > w->silence_ms) {
            GR_WARN(comp, "no word from the broker at %s for %lld ms: reconnecting", w->broker,
                    (long long)(now - w->last_rx));
            if ((rc = reconnect(w))) break;
            w->last_rx = now;
            w->silence_ms *= 2;
            if (w->silence_ms > WK_MAX_BACKOFF_MS) w->silence_ms = WK_MAX_BACKOFF_MS;
            if (w->silence_ms < WK_MIN_BACKOFF_MS) w->silence_ms = WK_MIN_BACKOFF_MS;
        }
    }
    if (w->sock) {
        /* let the last result leave before the socket closes */
        int linger = 2000;
        zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
    }
    return rc;
}
