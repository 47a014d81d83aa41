/* gr_sparse: sparse deltas (a bitmask and the kept values, stored as plain
 * safetensors tensors) and the one reader every op uses for deltas and
 * checkpoints, dense or sparse. Layout: schemas/sparse-delta.md. */
#ifndef GR_SPARSE_H
#define GR_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "gr_dtype.h"
#include "gr_st.h"

/* A sparse tensor NAME is stored as three tensors, in this order:
 *   NAME::shape   I64 [ndim]         the logical shape ([0] for a scalar)
 *   NAME::mask    U8  [ceil(n/8)]    bit j of byte i (LSB first): element 8i+j stored
 *   NAME::values  D   [nnz]          the stored elements, in element order
 * Elements not stored are zero. Names holding "::" are reserved. */
#define GR_SPARSE_SEP        "::"
#define GR_SPARSE_SHAPE_SFX  "::shape"
#define GR_SPARSE_MASK_SFX   "::mask"
#define GR_SPARSE_VALUES_SFX "::values"
/* __metadata__ written into every delta graft produces. */
#define GR_SPARSE_META_KIND   "graft.kind"
#define GR_SPARSE_KIND_DELTA  "delta"        /* dense delta: absent tensor = zero */
#define GR_SPARSE_KIND_SPARSE "sparse-delta" /* sparse delta: absent tensor = zero */
#define GR_SPARSE_META_FORMAT "graft.format"
#define GR_SPARSE_FORMAT      "sparse-delta/1"

/* One logical tensor of an open gr_sparse. Borrowed: valid until close. */
typedef struct gr_sparse_tensor {
    const char *name;
    gr_dtype dtype; /* of the stored values (or of the dense tensor) */
    int ndim;
    int64_t shape[GR_ST_MAX_DIMS];
    uint64_t nelem; /* product of shape (1 for a scalar) */
    uint64_t nnz;   /* stored elements: nelem when dense */
    int is_sparse;
    const char *file; /* file holding the data (the values for a sparse one) */
} gr_sparse_tensor;

typedef struct gr_sparse gr_sparse;

/* Opens a checkpoint (a .safetensors file or a checkpoint directory, see
 * gr_ckpt_open) whose tensors may be dense or sparse. The stored names of a
 * sparse tensor are folded into one logical tensor; the layout is checked
 * (all three parts present, shape tensor consistent with the mask length,
 * values of a float dtype, no clash with a dense tensor of the same name,
 * no unknown "::" suffix). The mask's popcount and padding bits are checked
 * on the first read of each tensor. NULL with gr_errmsg() naming the file,
 * the tensor and the rule on failure. */
gr_sparse *gr_sparse_open(const char *path);
/* Takes ownership of an open checkpoint (closed with the gr_sparse, also on
 * failure). */
gr_sparse *gr_sparse_wrap(gr_ckpt *ck);
void gr_sparse_close(gr_sparse **s);
/* The underlying checkpoint (borrowed). */
const gr_ckpt *gr_sparse_ckpt(const gr_sparse *s);
/* Number of logical tensors; tensors sorted by name. */
size_t gr_sparse_count(const gr_sparse *s);
const gr_sparse_tensor *gr_sparse_at(const gr_sparse *s, size_t i);
const gr_sparse_tensor *gr_sparse_find(const gr_sparse *s, const char *name);
/* Tensors in the order their data are stored (file by file, by offset). */
const gr_sparse_tensor *gr_sparse_stored(const gr_sparse *s, size_t i);
/* Whether at least one tensor is stored sparse. */
int gr_sparse_has_sparse(const gr_sparse *s);
/* Whether the file says it is a delta (graft.kind is delta or sparse-delta,
 * or a sparse tensor is present): absent tensors then mean zero. */
int gr_sparse_is_delta(const gr_sparse *s);
/* The stored dense tensor (NULL for a sparse one). Borrowed. */
const gr_tensor *gr_sparse_dense(const gr_sparse *s, const gr_sparse_tensor *t);

/* Reads elements [off, off+n) of t as fp32 (zeros where nothing is stored).
 * Safe to call from several threads at once on the same tensor. Returns 0,
 * GR_EINVAL for a range outside the tensor, GR_EFORMAT for a corrupt mask,
 * GR_EUNSUP for values of a non-float dtype. */
int gr_sparse_read_f32(gr_sparse *s, const gr_sparse_tensor *t, uint64_t off, uint64_t n,
                       float *dst);
/* Tells the kernel the mapped pages of t, and of the tensors stored before
 * it in its file, are no longer needed, so a pass over a model in storage
 * order keeps only the tensor in use resident. Harmless if they are read
 * again (the pages come back from the page cache). */
void gr_sparse_release(gr_sparse *s, const gr_sparse_tensor *t);
/* The same for the pages holding only elements [off, off+n) of a dense
 * tensor (no-op for sparse ones), for passes that stream a tensor. */
void gr_sparse_release_range(gr_sparse *s, const gr_sparse_tensor *t, uint64_t off, uint64_t n);

/* ---- writing ---- */
/* Bytes of the mask of an n-element tensor. */
uint64_t gr_sparse_mask_bytes(uint64_t n);
/* Declares the three stored tensors of a sparse tensor on a writer. */
int gr_sparse_declare(gr_stw *w, const char *name, gr_dtype dt, int ndim, const int64_t *shape,
                      uint64_t nnz);
/* Writes the NAME::shape tensor's bytes; the caller then writes the mask
 * bytes (gr_stw_write) and the values (gr_stw_write or gr_stw_write_f32). */
int gr_sparse_write_shape(gr_stw *w, int ndim, const int64_t *shape);
/* Compresses x[0..n): mask (gr_sparse_mask_bytes(n) bytes, all written) gets
 * a bit for each non-zero element, vals[0..nnz) the non-zero elements in
 * order (vals may alias x: compaction never overtakes reading). -0.0 counts
 * as zero. Returns nnz. */
uint64_t gr_sparse_compress(const float *x, uint64_t n, uint8_t *mask, float *vals);
/* Expands: dst[i] = vals[k++] where bit i of mask is set, else 0. */
void gr_sparse_expand(const uint8_t *mask, const float *vals, uint64_t n, float *dst);

#endif
