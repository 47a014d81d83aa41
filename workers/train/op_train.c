/* train op: trains a small MLP classifier on a CSV data set (or fine-tunes
 * one given by `init`) and writes it as a checkpoint the surgery ops accept:
 * model.safetensors (layers.L.weight [out, in], layers.L.bias) + config.json
 * (model_type graft-mlp), plus the training curve train.csv. */
#include "gr_log.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_mlp.h"
#include "gr_op.h"
#include "train/gr_taskdata.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CURVE_FILE       "train.csv"
#define DEFAULT_HIDDEN   64
#define DEFAULT_EPOCHS   20
#define DEFAULT_BATCH    32
#define DEFAULT_LR_ADAM  1e-3
#define DEFAULT_LR_SGD   0.05
#define DEFAULT_MOMENTUM 0.9
#define MAX_EPOCHS       1000000

static const gr_param train_params[] = {
    {"data", GR_P_INPUT, 1, "CSV data set (.csv or .csv.gz): features, then the label"},
    {"init", GR_P_INPUT, 0, "graft-mlp checkpoint to fine-tune (default: a new network)"},
    {"layers", GR_P_NUMS, 0, "hidden layer widths, e.g. [64] (default [64]; [] = linear)"},
    {"activation", GR_P_STR, 0, "relu (default) | tanh | gelu"},
    {"classes", GR_P_INT, 0, "output classes (default: 1 + the largest label in the file)"},
    {"seed", GR_P_INT, 0, "seed of the initial weights and of the row order (default 0)"},
    {"epochs", GR_P_INT, 0, "passes over the training rows (default 20)"},
    {"batch", GR_P_INT, 0, "rows per minibatch (default 32)"},
    {"optimizer", GR_P_STR, 0, "adam (default) | sgd"},
    {"lr", GR_P_NUM, 0, "learning rate (default 1e-3 for adam, 0.05 for sgd)"},
    {"momentum", GR_P_NUM, 0, "sgd momentum (default 0.9)"},
    {"weight_decay", GR_P_NUM, 0, "decoupled weight decay (default 0)"},
    {"split", GR_P_STR, 0, "rows to train on: train (default) | test | all"},
    {"fraction", GR_P_NUM, 0, "share of the rows in the train part (default 0.8)"},
    {"split_seed", GR_P_INT, 0, "seed of the train/test split and of noise (default 0)"},
    {"transform", GR_P_STR, 0,
     "identity (default) | rot90 | rot180 | rot270 | flip | vflip | invert | noise"},
    {"noise", GR_P_NUM, 0, "transform noise: sd as a fraction of the value range (default 0.25)"},
    {"dtype", GR_P_STR, 0, "weights: float32 (default) | bfloat16 | float16"},
    {NULL, 0, 0, NULL},
};

typedef struct progress {
    gr_op_ctx *ctx;
    int epochs;
    gr_buf *curve;
} progress;

static int on_epoch(void *ud, int e, double loss, double acc)
{
    progress *p = ud;
    gr_buf_printf(p->curve, "%d,%.9g,%.6f\n", e, loss, acc);
    gr_op_progress(p->ctx, e, p->epochs, "epoch %d/%d: loss %.4f, accuracy %.4f", e, p->epochs,
                   loss, acc);
    if (gr_op_cancelled(p->ctx)) return gr_seterr(GR_ECANCEL, "train: cancelled in epoch %d", e);
    return 0;
}

/* Reads `layers` (a number or a list of integers) into sizes[1..]; returns
 * the count of hidden layers, or a negative code. */
static int read_hidden(gr_op_ctx *ctx, int64_t *sizes)
{
    const gr_json *v = gr_json_get(ctx->params, "layers");
    if (!v) {
        sizes[1] = DEFAULT_HIDDEN;
        return 1;
    }
    const gr_json *const *items = v->type == GR_JSON_ARR ? (const gr_json *const *)v->items : &v;
    size_t n = v->type == GR_JSON_ARR ? v->len : 1;
    if (n > GR_MLP_MAX_LAYERS - 1)
        return gr_seterr(GR_EINVAL, "train: parameter 'layers': at most %d hidden layers",
                         GR_MLP_MAX_LAYERS - 1);
    for (size_t i = 0; i < n; i++) {
        const gr_json *e = items[i];
        if (e->type != GR_JSON_NUM || !e->is_int || e->i < 1 || e->i > GR_MLP_MAX_WIDTH)
            return gr_seterr(GR_EINVAL,
                             "train: parameter 'layers': entry %zu must be an integer width in "
                             "[1, %d]",
                             i, GR_MLP_MAX_WIDTH);
        sizes[1 + i] = e->i;
    }
    return (int)n;
}

/* A new network shaped by the parameters, or the init checkpoint checked
 * against them. */
static int make_model(gr_op_ctx *ctx, const gr_dataset *d, gr_mlp **out)
{
    const char *init, *an;
    int64_t classes, seed;
    int rc;
    gr_act act;
    *out = NULL;
    if ((rc = gr_op_str(ctx, "init", NULL, &init)) ||
        (rc = gr_op_str(ctx, "activation", "relu", &an)) ||
        (rc = gr_op_int(ctx, "classes", gr_dataset_classes(d), &classes)) ||
        (rc = gr_op_int(ctx, "seed", 0, &seed)))
        return rc;
    if ((rc = gr_act_parse(an, &act))) return gr_adderr(rc, "train: parameter 'activation'");
    if (seed < 0) return gr_seterr(GR_EINVAL, "train: parameter 'seed' must be >= 0");
    int64_t sizes[GR_MLP_MAX_LAYERS + 1];
    int nh = read_hidden(ctx, sizes);
    if (nh < 0) return nh;
    if (classes < gr_dataset_classes(d) || classes > GR_DATASET_MAX_CLASSES)
        return gr_seterr(GR_EINVAL,
                         "train: parameter 'classes' is %lld but the data hold labels up to %d",
                         (long long)classes, gr_dataset_classes(d) - 1);
    sizes[0] = (int64_t)gr_dataset_features(d);
    sizes[nh + 1] = classes;
    if (!init) {
        gr_mlp *m = gr_mlp_new(sizes, nh + 1, act);
        if (!m) return gr_adderr(gr_errcode(), "train");
        gr_mlp_init(m, (uint64_t)seed);
        /* inputs scaled to [0, 1] by the file's value range; fine-tunes keep
         * the base's scaling (it lives in config.json) */
        double lo = gr_dataset_min(d), hi = gr_dataset_max(d);
        gr_mlp_set_input_norm(m, lo, hi > lo ? 1.0 / (hi - lo) : 1.0);
        *out = m;
        return 0;
    }
    gr_mlp *m = gr_mlp_load(init);
    if (!m) return gr_adderr(gr_errcode(), "train: parameter 'init'");
    const int L = gr_mlp_nlayers(m);
    if (gr_mlp_size(m, 0) != sizes[0]) {
        rc =
            gr_seterr(GR_EINVAL, "train: init %s takes %lld inputs but the data have %lld features",
                      init, (long long)gr_mlp_size(m, 0), (long long)sizes[0]);
        goto fail;
    }
    if (gr_mlp_size(m, L) < gr_dataset_classes(d) ||
        (gr_json_get(ctx->params, "classes") && gr_mlp_size(m, L) != classes)) {
        rc = gr_seterr(
            GR_EINVAL, "train: init %s has %lld classes; the data need %lld", init,
            (long long)gr_mlp_size(m, L),
            (long long)(gr_json_get(ctx->params, "classes") ? classes : gr_dataset_classes(d)));
        goto fail;
    }
    if (gr_json_get(ctx->params, "layers")) {
        int same = L == nh + 1;
        for (int i = 1; same && i < L; i++) same = gr_mlp_size(m, i) == sizes[i];
        if (!same) {
            rc = gr_seterr(GR_EINVAL,
                           "train: parameter 'layers' disagrees with the hidden layers of init "
                           "%s (leave it out when fine-tuning)",
                           init);
            goto fail;
        }
    }
    if (gr_json_get(ctx->params, "activation") && act != gr_mlp_act(m)) {
        rc = gr_seterr(GR_EINVAL, "train: activation '%s' disagrees with init %s ('%s')", an, init,
                       gr_act_name(gr_mlp_act(m)));
        goto fail;
    }
    *out = m;
    return 0;
fail:
    gr_mlp_destroy(&m);
    return rc;
}

static double accuracy_of(gr_mlp *m, const gr_dataset *d, int *rc)
{
    const size_t n = gr_dataset_rows(d);
    int32_t *pred = malloc((n ? n : 1) * sizeof *pred);
    size_t ok = 0;
    if (!pred) {
        *rc = gr_seterr(GR_ENOMEM, "train: out of memory");
        return NAN;
    }
    if ((*rc = gr_mlp_predict(m, gr_dataset_x(d), NULL, n, NULL, pred))) {
        free(pred);
        return NAN;
    }
    for (size_t i = 0; i < n; i++) ok += pred[i] == gr_dataset_y(d)[i];
    free(pred);
    return n ? (double)ok / (double)n : NAN;
}

static int train_run(gr_op_ctx *ctx)
{
    gr_taskdata td;
    gr_dataset *d = NULL, *held = NULL;
    gr_mlp *m = NULL;
    gr_buf curve = {0}, cfg = {0}, met = {0};
    char *curve_path = NULL;
    const char *on, *dtn, *init;
    int64_t epochs, batch, seed;
    double lr, momentum, wd;
    gr_opt opt;
    gr_dtype dt = GR_DT_F32;
    int rc;
    if ((rc = gr_op_str(ctx, "optimizer", "adam", &on)) ||
        (rc = gr_op_int(ctx, "epochs", DEFAULT_EPOCHS, &epochs)) ||
        (rc = gr_op_int(ctx, "batch", DEFAULT_BATCH, &batch)) ||
        (rc = gr_op_int(ctx, "seed", 0, &seed)) ||
        (rc = gr_op_num(ctx, "momentum", DEFAULT_MOMENTUM, &momentum)) ||
        (rc = gr_op_num(ctx, "weight_decay", 0, &wd)) ||
        (rc = gr_op_str(ctx, "dtype", "float32", &dtn)) ||
        (rc = gr_op_str(ctx, "init", NULL, &init)))
        return rc;
    if ((rc = gr_opt_parse(on, &opt))) return gr_adderr(rc, "train: parameter 'optimizer'");
    if ((rc = gr_op_num(ctx, "lr", opt == GR_OPT_ADAM ? DEFAULT_LR_ADAM : DEFAULT_LR_SGD, &lr)))
        return rc;
    if (epochs < 0 || epochs > MAX_EPOCHS)
        return gr_seterr(GR_EINVAL, "train: parameter 'epochs' must be in [0, %d]", MAX_EPOCHS);
    if (batch < 1 || batch > 1000000)
        return gr_seterr(GR_EINVAL, "train: parameter 'batch' must be in [1, 1000000]");
    if (!(lr > 0) || !isfinite(lr))
        return gr_seterr(GR_EINVAL, "train: parameter 'lr' must be finite and > 0");
    if (!(momentum >= 0 && momentum < 1))
        return gr_seterr(GR_EINVAL, "train: parameter 'momentum' must be in [0, 1)");
    if (!(wd >= 0) || !isfinite(wd))
        return gr_seterr(GR_EINVAL, "train: parameter 'weight_decay' must be finite and >= 0");
    if (!strcmp(dtn, "float32"))
        dt = GR_DT_F32;
    else if (!strcmp(dtn, "bfloat16"))
        dt = GR_DT_BF16;
    else if (!strcmp(dtn, "float16"))
        dt = GR_DT_F16;
    else
        return gr_seterr(GR_EINVAL,
                         "train: parameter 'dtype' is '%.40s'; want float32, bfloat16 or float16",
                         dtn);
    if ((rc = gr_taskdata_load(ctx, "train", GR_SPLIT_TRAIN, &td, &d))) return rc;
    if ((rc = make_model(ctx, d, &m))) goto done;
    openblas_set_num_threads(ctx->threads > 0 ? ctx->threads : 1);

    gr_buf_puts(&curve, "epoch,loss,accuracy\n");
    progress pr = {.ctx = ctx, .epochs = (int)epochs, .curve = &curve};
    gr_mlp_train_opts o = {.opt = opt,
                           .lr = lr,
                           .momentum = opt == GR_OPT_SGD ? momentum : 0,
                           .weight_decay = wd,
                           .epochs = (int)epochs,
                           .batch = (size_t)batch,
                           .seed = (uint64_t)seed,
                           .epoch_cb = on_epoch,
                           .ud = &pr};
    const double t0 = gr_now_s();
    if ((rc = gr_mlp_train(m, gr_dataset_x(d), gr_dataset_y(d), gr_dataset_rows(d), &o))) goto done;
    const double secs = gr_now_s() - t0;

    /* final accuracy on the rows trained on, and on the other part */
    double *loss = malloc(gr_dataset_rows(d) * sizeof *loss);
    if (!loss) {
        rc = gr_seterr(GR_ENOMEM, "train: out of memory");
        goto done;
    }
    rc = gr_mlp_predict(m, gr_dataset_x(d), gr_dataset_y(d), gr_dataset_rows(d), loss, NULL);
    double lsum = 0;
    for (size_t i = 0; !rc && i < gr_dataset_rows(d); i++) lsum += loss[i];
    free(loss);
    if (rc) goto done;
    double acc = accuracy_of(m, d, &rc), held_acc = NAN;
    if (rc) goto done;
    if (td.split != GR_SPLIT_ALL) {
        if ((rc = gr_taskdata_load_other(&td, "train", &held))) goto done;
        held_acc = accuracy_of(m, held, &rc);
        if (rc) goto done;
    }

    /* config.json records how the weights were made (deterministic only) */
    gr_buf_printf(&cfg, "\"graft_train\": {\"init\": %s, \"optimizer\": \"%s\", \"lr\": ",
                  init ? "true" : "false", gr_opt_name(opt));
    gr_buf_json_num(&cfg, lr);
    gr_buf_printf(&cfg, ", \"epochs\": %lld, \"batch\": %lld, \"seed\": %lld, ", (long long)epochs,
                  (long long)batch, (long long)seed);
    if ((rc = gr_taskdata_json(&td, &cfg))) goto done;
    gr_buf_printf(&cfg, ", \"rows\": %zu}", gr_dataset_rows(d));
    if (cfg.oom) {
        rc = gr_seterr(GR_ENOMEM, "train: out of memory");
        goto done;
    }
    if ((rc = gr_mlp_save(m, ctx->outdir, dt, cfg.data))) goto done;
    if (curve.oom || !(curve_path = gr_fs_join(ctx->outdir, CURVE_FILE))) {
        rc = gr_seterr(GR_ENOMEM, "train: out of memory");
        goto done;
    }
    if ((rc = gr_fs_write_atomic(curve_path, curve.data, curve.len, 0644))) goto done;

    const double n = (double)gr_dataset_rows(d);
    gr_buf_printf(&met, "{\"train_loss\":");
    gr_buf_json_num(&met, lsum / n);
    gr_buf_puts(&met, ",\"train_acc\":");
    gr_buf_json_num(&met, acc);
    if (!isnan(held_acc)) {
        gr_buf_printf(&met, ",\"%s\":", td.split == GR_SPLIT_TRAIN ? "test_acc" : "heldout_acc");
        gr_buf_json_num(&met, held_acc);
    }
    gr_buf_printf(&met,
                  ",\"rows\":%zu,\"epochs\":%lld,\"params\":%llu,\"seconds\":", gr_dataset_rows(d),
                  (long long)epochs, (unsigned long long)gr_mlp_nparams(m));
    gr_buf_json_num(&met, secs);
    gr_buf_puts(&met, ",\"rows_per_s\":");
    gr_buf_json_num(&met, secs > 0 ? n * (double)epochs / secs : 0);
    gr_buf_putc(&met, '}');
    rc = met.oom ? gr_seterr(GR_ENOMEM, "train: out of memory") : gr_op_set_metrics(ctx, met.data);
done:
    free(curve_path);
    gr_buf_free(&curve);
    gr_buf_free(&cfg);
    gr_buf_free(&met);
    gr_mlp_destroy(&m);
    gr_dataset_destroy(&d);
    gr_dataset_destroy(&held);
    return rc;
}

const gr_op gr_op_train = {
    .name = "train",
    .version = 1,
    .summary = "train (or fine-tune) a small MLP classifier on a CSV data set; writes a "
               "checkpoint (model.safetensors + config.json) and its training curve",
    .params = train_params,
    .open_params = 0,
    .run = train_run,
};
