/* gr_taskdata: the data-selection parameters of train and classify. */
#include "train/gr_taskdata.h"
#include "gr_err.h"

#include <math.h>
#include <string.h>

const char *gr_split_name(gr_split s)
{
    return s == GR_SPLIT_TRAIN ? "train" : s == GR_SPLIT_TEST ? "test" : "all";
}

/* The file, then the part, then the transform. */
static int select_rows(const gr_taskdata *td, gr_split part, const char *who, gr_dataset **out)
{
    int rc;
    gr_dataset *all = gr_dataset_load(td->path);
    if (!all) return gr_adderr(gr_errcode(), "%s: parameter 'data'", who);
    gr_dataset *d = gr_dataset_split(all, part, td->fraction, (uint64_t)td->split_seed);
    gr_dataset_destroy(&all);
    if (!d) return gr_adderr(gr_errcode(), "%s", who);
    if ((rc = gr_dataset_transform(d, td->transform, td->noise, (uint64_t)td->split_seed))) {
        gr_dataset_destroy(&d);
        return gr_adderr(rc, "%s", who);
    }
    *out = d;
    return 0;
}

int gr_taskdata_load(gr_op_ctx *ctx, const char *who, gr_split def_split, gr_taskdata *td,
                     gr_dataset **out)
{
    const char *split, *tf;
    int rc;
    *out = NULL;
    memset(td, 0, sizeof *td);
    if ((rc = gr_op_req_str(ctx, "data", &td->path)) ||
        (rc = gr_op_str(ctx, "split", gr_split_name(def_split), &split)) ||
        (rc = gr_op_num(ctx, "fraction", GR_TASKDATA_FRACTION, &td->fraction)) ||
        (rc = gr_op_int(ctx, "split_seed", 0, &td->split_seed)) ||
        (rc = gr_op_str(ctx, "transform", "identity", &tf)) ||
        (rc = gr_op_num(ctx, "noise", GR_TASKDATA_NOISE, &td->noise)))
        return rc;
    if ((rc = gr_split_parse(split, &td->split)))
        return gr_adderr(rc, "%s: parameter 'split'", who);
    if ((rc = gr_transform_parse(tf, &td->transform)))
        return gr_adderr(rc, "%s: parameter 'transform'", who);
    if (!(td->fraction > 0 && td->fraction < 1))
        return gr_seterr(GR_EINVAL, "%s: parameter 'fraction' must be in (0, 1) (is %g)", who,
                         td->fraction);
    if (td->split_seed < 0)
        return gr_seterr(GR_EINVAL, "%s: parameter 'split_seed' must be >= 0", who);
    if (!isfinite(td->noise) || td->noise < 0)
        return gr_seterr(GR_EINVAL, "%s: parameter 'noise' must be finite and >= 0", who);
    if (gr_json_get(ctx->params, "noise") && td->transform != GR_TF_NOISE)
        return gr_seterr(GR_EINVAL, "%s: parameter 'noise' applies only to transform 'noise'", who);
    return select_rows(td, td->split, who, out);
}

int gr_taskdata_load_other(const gr_taskdata *td, const char *who, gr_dataset **out)
{
    *out = NULL;
    if (td->split == GR_SPLIT_ALL)
        return gr_seterr(GR_EINVAL, "%s: split 'all' has no other part", who);
    return select_rows(td, td->split == GR_SPLIT_TRAIN ? GR_SPLIT_TEST : GR_SPLIT_TRAIN, who, out);
}

int gr_taskdata_json(const gr_taskdata *td, gr_buf *b)
{
    gr_buf_printf(b, "\"split\":\"%s\",\"fraction\":", gr_split_name(td->split));
    gr_buf_json_num(b, td->fraction);
    gr_buf_printf(b, ",\"split_seed\":%lld,\"transform\":\"%s\"", (long long)td->split_seed,
                  gr_transform_name(td->transform));
    if (td->transform == GR_TF_NOISE) {
        gr_buf_puts(b, ",\"noise\":");
        gr_buf_json_num(b, td->noise);
    }
    return b->oom ? gr_seterr(GR_ENOMEM, "out of memory") : 0;
}
