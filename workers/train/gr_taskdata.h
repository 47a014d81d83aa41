/* gr_taskdata: what the train op and evaluate's classify task share — one
 * reading of the data-selection parameters (data, split, fraction,
 * split_seed, transform, noise) into a data set, and a canonical JSON form of
 * that selection for result files and configs. */
#ifndef GR_TASKDATA_H
#define GR_TASKDATA_H

#include "gr_buf.h"
#include "gr_dataset.h"
#include "gr_op.h"

/* Defaults of the data-selection parameters. */
#define GR_TASKDATA_FRACTION 0.8  /* share of the rows in the train part */
#define GR_TASKDATA_NOISE    0.25 /* noise: sd as a fraction of the value range */

/* The parameters as read (strings borrowed from the op's params). */
typedef struct gr_taskdata {
    const char *path;
    gr_split split;
    double fraction;
    int64_t split_seed;
    gr_transform transform;
    double noise;
} gr_taskdata;

/* Reads and checks the parameters (def_split when `split` is absent) and
 * loads the selected rows, transformed: the file, then the split, then the
 * transform (noise keyed by split_seed). who names the op in messages.
 * *out (caller destroys) on success. */
int gr_taskdata_load(gr_op_ctx *ctx, const char *who, gr_split def_split, gr_taskdata *td,
                     gr_dataset **out);
/* The other part of td's split (test for train, train for test), with the
 * same transform: for held-out figures. */
int gr_taskdata_load_other(const gr_taskdata *td, const char *who, gr_dataset **out);
/* Appends the selection as JSON object members without braces:
 * "split":"test","fraction":0.8,"split_seed":0,"transform":"rot90"[,"noise":0.25]. */
int gr_taskdata_json(const gr_taskdata *td, gr_buf *b);
const char *gr_split_name(gr_split s);

#endif
