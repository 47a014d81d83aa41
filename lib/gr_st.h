/* gr_st: safetensors files and checkpoints — validating mmap reader and a
 * streaming, sharding, crash-safe writer. */
#ifndef GR_ST_H
#define GR_ST_H

#include <stddef.h>
#include <stdint.h>

#include "gr_dtype.h"
#include "gr_json.h"

#define GR_ST_MAX_DIMS        8
#define GR_ST_MAX_HEADER      100000000ULL
#define GR_ST_DEFAULT_SHARD   5000000000ULL /* 5 GB, decimal, like transformers */

/* One tensor of an open file or checkpoint. Borrowed from its gr_st/gr_ckpt:
 * valid until that is closed. data points into the read-only mapping. */
typedef struct gr_tensor {
    const char *name;
    gr_dtype dtype;
    int ndim;
    int64_t shape[GR_ST_MAX_DIMS];
    uint64_t nelem;  /* product of shape (1 for a scalar) */
    uint64_t nbytes; /* data_offsets[1] - data_offsets[0] */
    const void *data;
    const char *file; /* path of the file holding it */
} gr_tensor;

/* ---- one file ---- */
typedef struct gr_st gr_st;

/* Maps and validates a safetensors file (all rules of reference/formats.md).
 * Returns NULL with gr_errmsg() naming the file, the tensor and the rule. */
gr_st *gr_st_open(const char *path);
void gr_st_close(gr_st **st);
size_t gr_st_count(const gr_st *st);
/* Tensors in data order (by offset). */
const gr_tensor *gr_st_tensor(const gr_st *st, size_t i);
const gr_tensor *gr_st_find(const gr_st *st, const char *name);
/* __metadata__ entries (NULL when absent). */
size_t gr_st_meta_count(const gr_st *st);
const char *gr_st_meta_key(const gr_st *st, size_t i);
const char *gr_st_meta_get(const gr_st *st, const char *key);
const char *gr_st_path(const gr_st *st);
/* Validates a whole file image held in memory (buf[0..len), borrowed: it must
 * outlive the gr_st). `what` names it in messages and as the tensors' file. */
gr_st *gr_st_open_mem(const char *what, const void *buf, size_t len);
/* Validates a header buffer on its own (the fuzz target's entry point):
 * hdr/hlen is the JSON text, data_len the bytes after it. */
int gr_st_check_header(const char *what, const char *hdr, size_t hlen, uint64_t data_len);

/* ---- a checkpoint: a .safetensors file, or a directory holding
 * model.safetensors or model.safetensors.index.json + shards ---- */
typedef struct gr_ckpt gr_ckpt;

gr_ckpt *gr_ckpt_open(const char *path);
void gr_ckpt_close(gr_ckpt **c);
size_t gr_ckpt_count(const gr_ckpt *c);
/* Tensors sorted by name. */
const gr_tensor *gr_ckpt_tensor(const gr_ckpt *c, size_t i);
const gr_tensor *gr_ckpt_find(const gr_ckpt *c, const char *name);
/* Directory of the checkpoint (the file's directory for a single file). */
const char *gr_ckpt_dir(const gr_ckpt *c);
/* Parsed config.json beside the weights, or NULL if there is none. */
const gr_json *gr_ckpt_config(const gr_ckpt *c);
/* Metadata of the first file (for single-file checkpoints this is all). */
const char *gr_ckpt_meta_get(const gr_ckpt *c, const char *key);
size_t gr_ckpt_nfiles(const gr_ckpt *c);
const gr_st *gr_ckpt_file(const gr_ckpt *c, size_t i);

/* Writes a shape as "[3, 4]" into buf (cap bytes; truncated if it does not
 * fit) for messages; returns buf. */
const char *gr_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);

/* Converts elements [off, off+n) of a F32/F16/BF16/F64 tensor to fp32. */
int gr_tensor_read_f32(const gr_tensor *t, uint64_t off, uint64_t n, float *dst);

/* ---- streaming writer ----
 * Usage: new → add (declare every tensor, in the order data will be written)
 * → meta (optional) → begin → write/write_f32 (all bytes of every tensor, in
 * declaration order, in as many calls as wanted) → finish. Data goes to
 * temporary files beside the destination; finish fsyncs and renames them into
 * place (and writes model.safetensors.index.json when sharded). destroy before
 * finish removes the temporaries: nothing is ever left under a final name. */
typedef struct gr_stw gr_stw;

/* dest: a path ending in ".safetensors" writes exactly that one file (no
 * sharding); otherwise dest is a directory (created if needed) that receives
 * model.safetensors, or model-0000i-of-0000n.safetensors + index when the
 * data exceed max_shard_bytes (0 = GR_ST_DEFAULT_SHARD). */
gr_stw *gr_stw_new(const char *dest, uint64_t max_shard_bytes);
int gr_stw_add(gr_stw *w, const char *name, gr_dtype dt, int ndim, const int64_t *shape);
int gr_stw_meta(gr_stw *w, const char *key, const char *value);
int gr_stw_begin(gr_stw *w);
int gr_stw_write(gr_stw *w, const void *bytes, size_t n);
/* Converts n fp32 values to the dtype of the tensor being written (which must
 * be F32/F16/BF16/F64; a call may not straddle two tensors of other dtypes). */
int gr_stw_write_f32(gr_stw *w, const float *src, size_t n);
int gr_stw_finish(gr_stw *w);
void gr_stw_destroy(gr_stw **w);

#endif
