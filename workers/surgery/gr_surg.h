/* gr_surg: what the model-surgery ops (delta, prune, merge, apply,
 * extract-lora) share: inputs opened as per-tensor sources (checkpoint,
 * dense or sparse delta, PEFT LoRA adapter), output-directory housekeeping,
 * warnings, dtype names, tensor-name patterns and a spool for outputs whose
 * shapes are known only after the work. */
#ifndef GR_SURG_H
#define GR_SURG_H

#include <stddef.h>
#include <stdint.h>

#include "gr_buf.h"
#include "gr_dtype.h"
#include "gr_json.h"
#include "gr_op.h"
#include "gr_st.h"

/* ---- inputs ---- */
typedef enum {
    GR_SRC_MODEL, /* a checkpoint: tensors are θ; a missing tensor is a warning */
    GR_SRC_DELTA, /* a delta (dense or sparse): tensors are δ; missing = zero */
    GR_SRC_LORA,  /* a PEFT LoRA adapter: δ = s·B·A; missing = zero */
} gr_src_kind;

typedef struct gr_src_tensor {
    const char *name;
    gr_dtype dtype; /* stored dtype (F32 for LoRA products) */
    int ndim;
    int64_t shape[GR_ST_MAX_DIMS];
    uint64_t nelem;
    int theta; /* the value is a full tensor θ (a model's, or a LoRA adapter's
                  modules_to_save copy), not a delta */
} gr_src_tensor;

typedef struct gr_src gr_src;

/* Opens path as a LoRA adapter (a directory with adapter_config.json), a
 * delta (graft.kind metadata or sparse tensors) or a model checkpoint. role
 * names it in messages ("model 2 (/path)"). NULL with gr_errmsg() set. */
gr_src *gr_src_open(const char *path, const char *role);
void gr_src_close(gr_src **s);
gr_src_kind gr_src_kind_of(const gr_src *s);
const char *gr_src_kind_name(gr_src_kind k);
const char *gr_src_path(const gr_src *s);
const char *gr_src_role(const gr_src *s);
/* Directory of the checkpoint or adapter. */
const char *gr_src_dir(const gr_src *s);
/* config.json beside the weights (NULL for adapters or when absent). */
const gr_json *gr_src_config(const gr_src *s);
/* Threads used to convert large tensors (default 1). */
void gr_src_set_threads(gr_src *s, int threads);
/* Tensors sorted by name. */
size_t gr_src_count(const gr_src *s);
const gr_src_tensor *gr_src_at(const gr_src *s, size_t i);
const gr_src_tensor *gr_src_find(const gr_src *s, const char *name);
/* Tensors in the order their data are stored (read in this order, a pass
 * keeps only the tensor in use resident; see gr_sparse_release). */
const gr_src_tensor *gr_src_stored(const gr_src *s, size_t i);
/* Reads the stored value of t (θ or δ, see t->theta) as fp32: elements
 * [0, n) with n <= t->nelem (a prefix: the first rows, for cropping
 * embeddings). LoRA products are computed whole (n must be t->nelem). */
int gr_src_read(gr_src *s, const gr_src_tensor *t, uint64_t n, float *dst);
/* Reads t as a delta: the stored value minus base[0..n) when t->theta. */
int gr_src_read_delta(gr_src *s, const gr_src_tensor *t, const float *base, uint64_t n, float *dst);
/* Reads t as a model tensor: the stored value plus base[0..n) when it is a
 * delta. */
int gr_src_read_theta(gr_src *s, const gr_src_tensor *t, const float *base, uint64_t n, float *dst);
/* The stored tensor of a dense source (to copy bytes of any dtype), or NULL
 * for sparse and LoRA tensors. */
const gr_tensor *gr_src_raw(const gr_src *s, const gr_src_tensor *t);
/* The same for elements [off, off+n); base (when given) holds the base's
 * elements [off, off+n). */
int gr_src_read_range(gr_src *s, const gr_src_tensor *t, uint64_t off, uint64_t n, float *dst);
int gr_src_read_delta_range(gr_src *s, const gr_src_tensor *t, const float *base, uint64_t off,
                            uint64_t n, float *dst);
int gr_src_read_theta_range(gr_src *s, const gr_src_tensor *t, const float *base, uint64_t off,
                            uint64_t n, float *dst);
/* Whether t can be read in ranges (a LoRA product is computed whole). */
int gr_src_streamable(const gr_src *s, const gr_src_tensor *t);
/* Drops t's pages from memory after use (see gr_sparse_release). */
void gr_src_release(gr_src *s, const gr_src_tensor *t);

/* Whether name looks like a token embedding or output head (rows = vocab),
 * whose extra rows (added tokens) are cropped to the base's. */
int gr_surg_is_vocab_tensor(const char *name);
/* Whether fine-tune shape b can be cropped to base shape a: same rank, same
 * trailing dimensions, at least as many rows. */
int gr_surg_croppable(const int64_t *a, const int64_t *b, int ndim);

/* ---- warnings (kept for the metrics, also logged) ---- */
typedef struct gr_warns {
    gr_buf json; /* items of a JSON array, without the brackets */
    size_t n;    /* warnings raised (only the first GR_WARNS_KEEP are kept) */
} gr_warns;
#define GR_WARNS_KEEP 500
void gr_warns_add(gr_warns *w, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Appends "\"warnings\":[...],\"warning_count\":N" to b. */
void gr_warns_json(const gr_warns *w, gr_buf *b);
void gr_warns_free(gr_warns *w);

/* ---- parameters ---- */
/* Output dtype by name: float32 / fp32 / F32, bfloat16 / bf16 / BF16,
 * float16 / fp16 / half / F16, float64 / F64. GR_EINVAL naming `what`. */
int gr_surg_dtype_parse(const char *name, const char *what, gr_dtype *out);
/* Tensor-name patterns: a pattern holding '*', '?' or '[' is a glob over
 * the whole name (fnmatch, '*' crosses dots); any other is a substring. */
int gr_surg_pattern_match(const char *pattern, const char *name);
/* Parses a string or a list of strings into *out (NULL-terminated, caller
 * frees with gr_surg_strv_free). A missing value gives an empty list. */
int gr_surg_patterns(const gr_json *v, const char *what, char ***out);
void gr_surg_strv_free(char ***v);
/* include (empty = all) and not exclude. */
int gr_surg_selected(char *const *include, char *const *exclude, const char *name);
/* Thread budget of the op: ctx->threads, or the online CPUs; also sets
 * OpenBLAS's thread count to it. */
int gr_surg_threads(const gr_op_ctx *ctx);
/* Layers of the model for gradients: config's num_hidden_layers / n_layer,
 * else counted from the tensor names. */
long gr_surg_num_layers(const gr_json *config, const char *const *names, size_t n);

/* ---- outputs ---- */
enum {
    GR_SURG_COPY_CONFIG = 1,    /* config.json, generation_config.json */
    GR_SURG_COPY_TOKENIZER = 2, /* tokenizer*, vocab.*, merges.txt, *.model, chat templates, ... */
    GR_SURG_COPY_ALL = 3,
};
/* Copies the model files of a directory named by what (GR_SURG_COPY_*)
 * into outdir, each through a temporary name and a rename (replacing a file
 * of the same name). Missing files are skipped. */
int gr_surg_copy_model_files(const char *from_dir, const char *outdir, int what);
/* Removes everything inside outdir (an op's failure path: nothing may stay
 * under a final name). */
void gr_surg_clean_outdir(const char *outdir);

/* ---- spool: an unlinked scratch file for outputs written in two phases ---- */
typedef struct gr_spool gr_spool;
/* A new spool file in dir (NULL or "" = the system temporary directory). */
gr_spool *gr_spool_new(const char *dir);
void gr_spool_destroy(gr_spool **s);
/* Appends n bytes; *off receives their offset. */
int gr_spool_write(gr_spool *s, const void *p, size_t n, uint64_t *off);
/* Streams [off, off+len) into the tensor being written on w. */
int gr_spool_copy(gr_spool *s, uint64_t off, uint64_t len, gr_stw *w);
/* Reads [off, off+len) into dst. */
int gr_spool_read(gr_spool *s, uint64_t off, uint64_t len, void *dst);

#endif
