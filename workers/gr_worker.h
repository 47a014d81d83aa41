/* gr_worker: the generic worker runtime (graft-worker) and the in-process op
 * runner it shares with `graft exec`.
 *
 * Threads: the caller's thread of gr_worker_run is the I/O thread. It owns
 * the DEALER socket: READY, heartbeats every interval (also while an op
 * computes), rate-limited PROGRESS, DONE/FAIL, CANCEL, reconnection. Each
 * task runs on its own compute thread, one at a time: inputs (artifact ids in
 * the op's input parameters) are materialised from the store as local paths
 * (a tree as a directory, a blob as a file); the op writes into an empty
 * directory; on success everything in it is moved into the store as one tree
 * (output `out`) and the metrics object is stored as a blob of canonical JSON
 * (output `metrics`). Metrics are deliberately NOT written into the `out`
 * tree: they hold timings, and `out` must depend only on the inputs so that
 * a re-run produces the same id and dependants stay memoised.
 *
 * Reserved parameters: keys starting with '_' come from the runtime or the
 * broker and are passed to handlers unchecked. The runtime sets `_attempt`
 * (integer, 1-based attempt number; 1 under `graft exec`).
 *
 * Delivery: the last DONE/FAIL is kept until the broker sends a new TASK;
 * after every READY (a reconnect, a DISCONNECT from a restarted broker) it is
 * sent again, and READY names it (task, attempt), so a result sent while the
 * broker was down is not lost (at-least-once; the broker ignores duplicates
 * by attempt). READY also names a task still running so the broker re-adopts
 * it. The worker reconnects with a fresh socket when it has heard nothing from
 * the broker for liveness heartbeat intervals, backing off up to 30 s.
 *
 * Stopping (gr_worker_stop, e.g. from SIGTERM): GR_WORKER_FINISH waits for
 * the running task, reports it and returns; GR_WORKER_HANDBACK (a second
 * SIGTERM) cancels the running op and reports it as a retryable failure
 * ("handed back") so the broker runs it elsewhere, then returns. */
#ifndef GR_WORKER_H
#define GR_WORKER_H

#include <stddef.h>

#include "gr_json.h"
#include "gr_op.h"

#define GR_WORKER_HEARTBEAT_MS 1000
#define GR_WORKER_LIVENESS     3
#define GR_WORKER_PROGRESS_MS  250 /* at most one PROGRESS per this many ms */

typedef struct gr_worker_opts {
    const char *broker;     /* endpoint, e.g. tcp://127.0.0.1:5555 (required) */
    const char *store;      /* store root (NULL: gr_cas_default_root) */
    const char *const *ops; /* names of the ops to serve; NULL/0 = all */
    size_t nops;
    const char *id;   /* worker id; NULL: <host>-<pid>-<4 hex> */
    int threads;      /* thread budget; 0 = the CPUs this process may use */
    int heartbeat_ms; /* 0 = GR_WORKER_HEARTBEAT_MS */
    int liveness;     /* 0 = GR_WORKER_LIVENESS */
} gr_worker_opts;

typedef struct gr_worker gr_worker;

/* Checks the options (unknown op names are GR_EINVAL naming them), opens the
 * store and sets the thread budget (gr_worker_set_threads). Nothing is sent
 * yet. NULL with gr_errmsg() on failure. */
gr_worker *gr_worker_new(const gr_worker_opts *o);
/* Runs until gr_worker_stop; returns 0, or a GR_E* code if the socket layer
 * failed. */
int gr_worker_run(gr_worker *w);
enum { GR_WORKER_FINISH = 1, GR_WORKER_HANDBACK = 2 };
/* Asks the worker to stop (async-signal-safe; a stronger `how` wins). */
void gr_worker_stop(gr_worker *w, int how);
/* The worker's id (for logs). */
const char *gr_worker_id(const gr_worker *w);
void gr_worker_destroy(gr_worker **w);

/* Sets OpenBLAS's and OpenMP's thread counts to n (n <= 0: the CPUs this
 * process may use); returns the count applied. Call once per process: graft
 * keeps one budget, never one pool on top of another. */
int gr_worker_set_threads(int n);

/* ---- running one op in-process ---- */
typedef struct gr_exec {
    const gr_op *op;
    const gr_json *params; /* object; input parameters already hold local paths */
    const char *outdir;    /* existing empty directory */
    const char *workdir;   /* existing scratch directory */
    const char *store;     /* may be NULL */
    int threads;
    int attempt;          /* passed as _attempt (0 is taken as 1) */
    volatile int *cancel; /* may be NULL */
    void (*progress_cb)(void *ud, double done, double total, const char *msg);
    void *progress_ud;
} gr_exec;

/* Checks params against the op (keys starting with '_' are passed through
 * unchecked), adds _attempt, runs the handler and checks its metrics. On
 * success *metrics gets the metrics object as canonical JSON (caller frees;
 * "{}" when the handler set none). Returns 0 or the handler's GR_E* code
 * with gr_errmsg() set (a handler that fails without a message gets one
 * naming the op). */
int gr_worker_exec(const gr_exec *e, char **metrics);

#endif
