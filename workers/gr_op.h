/* gr_op: the interface between the worker runtime (or `graft exec`) and op
 * handlers. An op is a name, a version, a parameter list and a run function.
 * Handlers are thin adapters from parameters to the numeric libraries in lib/;
 * they know nothing of queues, brokers or Redis. */
#ifndef GR_OP_H
#define GR_OP_H

#include <stdint.h>

#include "gr_buf.h"
#include "gr_json.h"

typedef enum {
    GR_P_ANY,    /* any JSON value */
    GR_P_NUM,    /* number */
    GR_P_INT,    /* integer */
    GR_P_BOOL,   /* boolean */
    GR_P_STR,    /* string */
    GR_P_NUMS,   /* number or list of numbers (e.g. layer gradients) */
    GR_P_INPUT,  /* one artifact: another stage's id or a URI (file://, hf://, sha256:) */
    GR_P_INPUTS, /* a list of artifacts */
} gr_ptype;

typedef struct gr_param {
    const char *name;
    gr_ptype type;
    int required;
    const char *help;
} gr_param;

typedef struct gr_op_ctx gr_op_ctx;

typedef struct gr_op {
    const char *name;
    int version;     /* bump when outputs for the same inputs change (memo key) */
    const char *summary;
    const gr_param *params; /* terminated by {NULL} */
    /* Parameters not listed are rejected unless open_params is set (ops such
     * as `echo` or `merge` with per-model parameters). */
    int open_params;
    /* Runs the op. Returns 0, or a GR_E* code with gr_errmsg() set; the
     * runtime reports GR_EINVAL/GR_EFORMAT/GR_ENOTFOUND/GR_EUNSUP as not
     * retryable and the others as retryable (gr_err_retryable). */
    int (*run)(gr_op_ctx *ctx);
} gr_op;

/* What a handler gets. Input parameters (GR_P_INPUT/GR_P_INPUTS) arrive as
 * local paths: a file for a blob artifact, a directory for a tree. */
struct gr_op_ctx {
    const gr_op *op;
    const gr_json *params; /* object; borrowed */
    const char *outdir;    /* empty directory: everything written here becomes
                              the stage's output tree `out` */
    const char *workdir;   /* scratch space, removed afterwards */
    const char *store;     /* root of the content-addressed store (may be NULL) */
    int threads;           /* thread budget for this op (graft's and OpenBLAS's) */
    gr_buf metrics;        /* a JSON object the handler fills (gr_op_set_metrics) */
    volatile int *cancel;  /* set to 1 when the task is cancelled */
    void (*progress_cb)(void *ud, double done, double total, const char *msg);
    void *progress_ud;
};

/* Reports progress (rate-limited by the runtime; cheap to call often). */
void gr_op_progress(gr_op_ctx *ctx, double done, double total, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Nonzero once the task was cancelled; handlers poll it between chunks and
 * return gr_seterr(GR_ECANCEL, ...). */
int gr_op_cancelled(const gr_op_ctx *ctx);
/* Sets the metrics JSON object (text is copied). */
int gr_op_set_metrics(gr_op_ctx *ctx, const char *json_object);

/* Typed parameter access with defaults; a present value of the wrong type is
 * an error (GR_EINVAL naming the op and parameter). */
int gr_op_num(const gr_op_ctx *ctx, const char *name, double def, double *out);
int gr_op_int(const gr_op_ctx *ctx, const char *name, int64_t def, int64_t *out);
int gr_op_bool(const gr_op_ctx *ctx, const char *name, int def, int *out);
int gr_op_str(const gr_op_ctx *ctx, const char *name, const char *def, const char **out);
/* A required string parameter (e.g. an input path). */
int gr_op_req_str(const gr_op_ctx *ctx, const char *name, const char **out);

/* ---- registry ---- */
/* NULL-terminated table of every op this build knows (workers/gr_ops.c). */
extern const gr_op *const gr_ops[];
const gr_op *gr_op_find(const char *name);
/* Checks a parameter object against op->params: unknown names, missing
 * required ones and wrong types are GR_EINVAL naming op and parameter. */
int gr_op_check_params(const gr_op *op, const gr_json *params);

#endif
