/* gr_nbrl: the reinforcement-learning time-step problem of
 * reference/nbody-rl.md on top of gr_nbody and gr_dqn: state, actions and
 * reward, chunked runs under a fixed or learnt mu, DQN training, and the
 * policy artifact (model.safetensors + config.json). */
#include "gr_nbrl.h"
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_json.h"
#include "gr_rng.h"
#include "gr_st.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR_FLOOR      1e-20 /* |dE| floor in the state and the reward */
#define REWARD_REF_ERR 1e-10 /* error at which the accuracy term is zero */
#define CONFIG_MAX     (1u << 20)
#define MODEL_FILE     "model.safetensors"
#define CONFIG_FILE    "config.json"

static const char *const feature_names[GR_NBRL_NSTATE] = {
    "x0", "y0", "x1", "y1", "x2", "y2", "vx0", "vy0", "vx1", "vy1", "vx2", "vy2", "neg_log10_dE"};

void gr_nbrl_default_actions(double mu[GR_NBRL_NACTIONS])
{
    for (int k = 0; k < GR_NBRL_NACTIONS; k++)
        mu[k] = pow(10.0, -4.0 + 3.0 * k / (GR_NBRL_NACTIONS - 1));
}

const char *gr_nbrl_feature_name(int i)
{
    return i >= 0 && i < GR_NBRL_NSTATE ? feature_names[i] : NULL;
}

void gr_nbrl_default_scale(float scale[GR_NBRL_NSTATE])
{
    for (int i = 0; i < GR_NBRL_NSTATE; i++) scale[i] = i < 6 ? 0.1f : 1.0f;
}

int gr_nbrl_integrator_parse(const char *what, const char *name, gr_nb_integrator *out)
{
    if (name && !strcmp(name, "hermite")) return *out = GR_NB_HERMITE, 0;
    if (name && !strcmp(name, "aarseth")) return *out = GR_NB_AARSETH, 0;
    return gr_seterr(GR_EINVAL, "%s: parameter 'integrator' = '%s': must be hermite or aarseth",
                     what, name ? name : "");
}

const char *gr_nbrl_integrator_name(gr_nb_integrator kind)
{
    return kind == GR_NB_AARSETH ? "aarseth" : "hermite";
}

int gr_nbrl_state(const gr_nbody *nb, double de, const float scale[GR_NBRL_NSTATE],
                  float out[GR_NBRL_NSTATE])
{
    if (gr_nbody_n(nb) != 3)
        return gr_seterr(GR_EINVAL, "nbody: the RL state needs 3 bodies, the system has %zu",
                         gr_nbody_n(nb));
    const double *x = gr_nbody_positions(nb), *v = gr_nbody_velocities(nb);
    for (int b = 0; b < 3; b++) {
        out[2 * b] = (float)(x[3 * b] * scale[2 * b]);
        out[2 * b + 1] = (float)(x[3 * b + 1] * scale[2 * b + 1]);
        out[6 + 2 * b] = (float)(v[3 * b] * scale[6 + 2 * b]);
        out[6 + 2 * b + 1] = (float)(v[3 * b + 1] * scale[6 + 2 * b + 1]);
    }
    out[12] = (float)(-log10(fabs(de) + ERR_FLOOR) * scale[12]);
    return 0;
}

double gr_nbrl_reward_of(const gr_nbrl_reward *w, double de, double mu, int i)
{
    double e = fmax(fabs(de), ERR_FLOOR);
    if (!isfinite(e)) e = 1;
    double l = fmax(fabs(log10(e)), 1.0);
    double acc = -w->w1 * log10(e / REWARD_REF_ERR) / (l * l * l * (i < 1 ? 1 : i));
    return acc + w->w3 / fabs(log10(mu));
}

/* ---- policy artifact ---- */

struct gr_nbrl_policy {
    gr_qnet_shape shape; /* from config.json */
    gr_qnet *net;        /* created once the weights match the shape */
    double actions[GR_NBRL_MAX_ACTIONS];
    int n_actions;
    float scale[GR_NBRL_NSTATE];
    double chunk;
    float q[GR_NBRL_MAX_ACTIONS];
};

static void json_nums(gr_buf *b, const double *v, int n)
{
    gr_buf_putc(b, '[');
    for (int i = 0; i < n; i++) {
        if (i) gr_buf_putc(b, ',');
        gr_buf_json_num(b, v[i]);
    }
    gr_buf_putc(b, ']');
}

/* The architecture as text, stored in the weights' metadata so that a
 * config.json edited to another architecture with the same tensor shapes
 * (repeat) is caught. */
static void arch_text(char *buf, size_t n, const gr_qnet_shape *s)
{
    snprintf(buf, n, "inputs=%d,hidden=%d,repeat=%d,outputs=%d", s->inputs, s->hidden, s->repeat,
             s->outputs);
}

int gr_nbrl_policy_save(const gr_qnet *net, const gr_nbrl_policy_info *info, const char *dir)
{
    gr_qnet_shape s = gr_qnet_get_shape(net);
    if (s.inputs != GR_NBRL_NSTATE || s.outputs != info->n_actions)
        return gr_seterr(GR_EINVAL,
                         "policy: network %d -> %d does not fit %d state features -> %d "
                         "actions",
                         s.inputs, s.outputs, GR_NBRL_NSTATE, info->n_actions);
    int rc = gr_fs_mkdirs(dir, 0755, 1);
    if (rc) return rc;
    char *mpath = gr_fs_join(dir, MODEL_FILE), *cpath = gr_fs_join(dir, CONFIG_FILE);
    gr_stw *w = NULL;
    gr_buf b = {0};
    if (!mpath || !cpath) {
        rc = gr_seterr(GR_ENOMEM, "policy: out of memory");
        goto done;
    }
    if (!(w = gr_stw_new(mpath, 0))) {
        rc = gr_errcode();
        goto done;
    }
    for (int i = 0; i < GR_QNET_NTENSORS; i++) {
        gr_qnet_tensor t = gr_qnet_tensor_info(net, i);
        if ((rc = gr_stw_add(w, t.name, GR_DT_F32, t.ndim, t.shape))) goto done;
    }
    char arch[128];
    arch_text(arch, sizeof arch, &s);
    if ((rc = gr_stw_meta(w, "format", GR_NBRL_FORMAT)) ||
        (rc = gr_stw_meta(w, "architecture", arch)) || (rc = gr_stw_begin(w)))
        goto done;
    const float *p = gr_qnet_params_c(net);
    for (int i = 0; i < GR_QNET_NTENSORS; i++) {
        gr_qnet_tensor t = gr_qnet_tensor_info(net, i);
        if ((rc = gr_stw_write_f32(w, p + t.offset, t.count))) goto done;
    }
    if ((rc = gr_stw_finish(w))) goto done;

    gr_buf_printf(&b,
                  "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"architecture\": {\"type\": "
                  "\"mlp-shared-hidden\", \"inputs\": %d, \"hidden\": %d, \"repeat\": %d, "
                  "\"outputs\": %d, \"activation\": \"relu\"},\n  \"actions\": ",
                  GR_NBRL_FORMAT, GR_NBRL_VERSION, s.inputs, s.hidden, s.repeat, s.outputs);
    json_nums(&b, info->actions, info->n_actions);
    gr_buf_puts(&b, ",\n  \"state\": {\"features\": [");
    for (int i = 0; i < GR_NBRL_NSTATE; i++)
        gr_buf_printf(&b, "%s\"%s\"", i ? ", " : "", feature_names[i]);
    gr_buf_puts(&b, "], \"scale\": [");
    for (int i = 0; i < GR_NBRL_NSTATE; i++) {
        /* the shortest decimal that reads back as the same float */
        char t[32];
        for (int prec = 6; prec <= 9; prec++) {
            snprintf(t, sizeof t, "%.*g", prec, (double)info->scale[i]);
            if (strtof(t, NULL) == info->scale[i]) break;
        }
        gr_buf_printf(&b, "%s%s", i ? "," : "", t);
    }
    gr_buf_putc(&b, ']');
    gr_buf_puts(&b, "},\n  \"chunk\": ");
    gr_buf_json_num(&b, info->chunk);
    gr_buf_puts(&b, ",\n  \"reward\": {\"w1\": ");
    gr_buf_json_num(&b, info->reward.w1);
    gr_buf_puts(&b, ", \"w3\": ");
    gr_buf_json_num(&b, info->reward.w3);
    gr_buf_puts(&b, "},\n  \"integrator\": ");
    gr_buf_json_str(&b, info->integrator, strlen(info->integrator));
    gr_buf_puts(&b, ",\n  \"tensors\": {");
    for (int i = 0; i < GR_QNET_NTENSORS; i++) {
        gr_qnet_tensor t = gr_qnet_tensor_info(net, i);
        gr_buf_printf(&b, "%s\"%s\": [%lld", i ? ", " : "", t.name, (long long)t.shape[0]);
        if (t.ndim == 2) gr_buf_printf(&b, ", %lld", (long long)t.shape[1]);
        gr_buf_putc(&b, ']');
    }
    gr_buf_putc(&b, '}');
    if (info->training_json) gr_buf_printf(&b, ",\n  \"training\": %s", info->training_json);
    gr_buf_puts(&b, "\n}\n");
    if (b.oom) {
        rc = gr_seterr(GR_ENOMEM, "policy: out of memory");
        goto done;
    }
    rc = gr_fs_write_atomic(cpath, b.data, b.len, 0644);
done:
    gr_stw_destroy(&w);
    gr_buf_free(&b);
    free(mpath);
    free(cpath);
    return rc;
}

/* Integer field `key` of object o within lo..hi. */
static int cfg_int(const char *file, const gr_json *o, const char *path, const char *key, int lo,
                   int hi, int *out)
{
    const gr_json *v = gr_json_get(o, key);
    if (!v || v->type != GR_JSON_NUM || !v->is_int || v->i < lo || v->i > hi)
        return gr_seterr(GR_EINVAL, "policy: %s: '%s%s' must be an integer in %d..%d", file, path,
                         key, lo, hi);
    *out = (int)v->i;
    return 0;
}

/* Checks config.json (parsed) and fills p (all but the network). */
static int check_config(const char *file, const gr_json *cfg, gr_nbrl_policy *p)
{
    if (!cfg || cfg->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "policy: %s: must hold a JSON object", file);
    const char *fmt = gr_json_get_str(cfg, "format", NULL);
    if (!fmt || strcmp(fmt, GR_NBRL_FORMAT))
        return gr_seterr(GR_EINVAL,
                         "policy: %s: 'format' must be \"%s\" (is this an nbody-train "
                         "output?)",
                         file, GR_NBRL_FORMAT);
    int ver, rc;
    if ((rc = cfg_int(file, cfg, "", "version", GR_NBRL_VERSION, GR_NBRL_VERSION, &ver))) return rc;
    const gr_json *arch = gr_json_get(cfg, "architecture");
    if (!arch || arch->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "policy: %s: 'architecture' must be an object", file);
    const char *type = gr_json_get_str(arch, "type", NULL),
               *act = gr_json_get_str(arch, "activation", NULL);
    if (!type || strcmp(type, "mlp-shared-hidden") || !act || strcmp(act, "relu"))
        return gr_seterr(GR_EINVAL,
                         "policy: %s: 'architecture' must be type "
                         "\"mlp-shared-hidden\" with activation \"relu\"",
                         file);
    gr_qnet_shape s;
    if ((rc = cfg_int(file, arch, "architecture.", "inputs", 1, GR_QNET_MAX_WIDTH, &s.inputs)) ||
        (rc = cfg_int(file, arch, "architecture.", "hidden", 1, GR_QNET_MAX_WIDTH, &s.hidden)) ||
        (rc = cfg_int(file, arch, "architecture.", "repeat", 0, GR_QNET_MAX_REPEAT, &s.repeat)) ||
        (rc = cfg_int(file, arch, "architecture.", "outputs", 1, GR_QNET_MAX_WIDTH, &s.outputs)))
        return rc;
    if (s.inputs != GR_NBRL_NSTATE)
        return gr_seterr(GR_EINVAL,
                         "policy: %s: 'architecture.inputs' = %d but the nbody state has %d "
                         "features",
                         file, s.inputs, GR_NBRL_NSTATE);
    const gr_json *acts = gr_json_get(cfg, "actions");
    if (!acts || acts->type != GR_JSON_ARR || acts->len < 1 || acts->len > GR_NBRL_MAX_ACTIONS)
        return gr_seterr(GR_EINVAL, "policy: %s: 'actions' must be a list of 1..%d values of mu",
                         file, GR_NBRL_MAX_ACTIONS);
    if ((int)acts->len != s.outputs)
        return gr_seterr(GR_EINVAL,
                         "policy: %s: %zu 'actions' but 'architecture.outputs' = %d: they must "
                         "match",
                         file, acts->len, s.outputs);
    for (size_t i = 0; i < acts->len; i++) {
        const gr_json *a = acts->items[i];
        if (a->type != GR_JSON_NUM || !isfinite(a->num) || !(a->num > 0) || !(a->num < 1))
            return gr_seterr(GR_EINVAL, "policy: %s: 'actions[%zu]' must be a mu in (0, 1)", file,
                             i);
        p->actions[i] = a->num;
    }
    p->n_actions = (int)acts->len;
    const gr_json *st = gr_json_get(cfg, "state");
    const gr_json *feat = gr_json_get(st, "features"), *scale = gr_json_get(st, "scale");
    if (!feat || feat->type != GR_JSON_ARR || feat->len != GR_NBRL_NSTATE)
        return gr_seterr(GR_EINVAL, "policy: %s: 'state.features' must list the %d features", file,
                         GR_NBRL_NSTATE);
    for (int i = 0; i < GR_NBRL_NSTATE; i++)
        if (feat->items[i]->type != GR_JSON_STR || strcmp(feat->items[i]->str, feature_names[i]))
            return gr_seterr(GR_EINVAL, "policy: %s: 'state.features[%d]' must be \"%s\"", file, i,
                             feature_names[i]);
    if (!scale || scale->type != GR_JSON_ARR || scale->len != GR_NBRL_NSTATE)
        return gr_seterr(GR_EINVAL, "policy: %s: 'state.scale' must hold %d numbers", file,
                         GR_NBRL_NSTATE);
    for (int i = 0; i < GR_NBRL_NSTATE; i++) {
        const gr_json *v = scale->items[i];
        if (v->type != GR_JSON_NUM || !isfinite(v->num) || fabs(v->num) > 1e6)
            return gr_seterr(GR_EINVAL, "policy: %s: 'state.scale[%d]' must be a finite number",
                             file, i);
        p->scale[i] = (float)v->num;
    }
    const gr_json *ch = gr_json_get(cfg, "chunk");
    if (!ch || ch->type != GR_JSON_NUM || !isfinite(ch->num) || !(ch->num > 0))
        return gr_seterr(GR_EINVAL, "policy: %s: 'chunk' must be a number > 0", file);
    p->chunk = ch->num;
    p->shape = s;
    return 0;
}

static void shape_text(char *buf, size_t n, int ndim, const int64_t *shape)
{
    if (ndim == 1)
        snprintf(buf, n, "[%lld]", (long long)shape[0]);
    else if (ndim == 2)
        snprintf(buf, n, "[%lld, %lld]", (long long)shape[0], (long long)shape[1]);
    else
        snprintf(buf, n, "(%d dims)", ndim);
}

/* Checks every tensor against the config's shape, then creates the network
 * and loads the weights. */
static int load_weights(gr_nbrl_policy *p, const gr_st *st, const char *file)
{
    for (size_t i = 0; i < gr_st_count(st); i++) {
        const char *name = gr_st_tensor(st, i)->name;
        int known = 0;
        for (int k = 0; k < GR_QNET_NTENSORS; k++)
            if (!strcmp(name, gr_qnet_shape_tensor(&p->shape, k).name)) known = 1;
        if (!known) return gr_seterr(GR_EINVAL, "policy: %s: unexpected tensor '%s'", file, name);
    }
    for (int k = 0; k < GR_QNET_NTENSORS; k++) {
        gr_qnet_tensor want = gr_qnet_shape_tensor(&p->shape, k);
        char ws[64], hs[64];
        shape_text(ws, sizeof ws, want.ndim, want.shape);
        const gr_tensor *t = gr_st_find(st, want.name);
        if (!t)
            return gr_seterr(GR_EINVAL,
                             "policy: %s: tensor '%s' missing (the config's architecture needs %s)",
                             file, want.name, ws);
        int same = t->ndim == want.ndim;
        for (int d = 0; same && d < want.ndim; d++) same = t->shape[d] == want.shape[d];
        if (!same) {
            shape_text(hs, sizeof hs, t->ndim, t->shape);
            return gr_seterr(GR_EINVAL,
                             "policy: %s: tensor '%s' has shape %s but the config's architecture "
                             "needs %s",
                             file, want.name, hs, ws);
        }
        if (!gr_dtype_is_float(t->dtype))
            return gr_seterr(GR_EINVAL, "policy: %s: tensor '%s' has dtype %s, need a float dtype",
                             file, want.name, gr_dtype_name(t->dtype));
    }
    char arch[128];
    arch_text(arch, sizeof arch, &p->shape);
    const char *meta = gr_st_meta_get(st, "architecture");
    if (!meta || strcmp(meta, arch))
        return gr_seterr(GR_EINVAL,
                         "policy: %s: metadata 'architecture' = '%s' but config.json describes "
                         "'%s'",
                         file, meta ? meta : "(missing)", arch);
    if (!(p->net = gr_qnet_new(&p->shape, 0))) return gr_errcode();
    float *params = gr_qnet_params(p->net);
    for (int k = 0; k < GR_QNET_NTENSORS; k++) {
        gr_qnet_tensor want = gr_qnet_shape_tensor(&p->shape, k);
        int rc = gr_tensor_read_f32(gr_st_find(st, want.name), 0, want.count, params + want.offset);
        if (rc) return rc;
    }
    for (size_t i = 0; i < gr_qnet_nparams(p->net); i++)
        if (!isfinite(params[i]))
            return gr_seterr(GR_EINVAL, "policy: %s: weights hold a non-finite value", file);
    return 0;
}

gr_nbrl_policy *gr_nbrl_policy_load(const char *dir)
{
    gr_nbrl_policy *p = calloc(1, sizeof *p);
    char *cpath = gr_fs_join(dir, CONFIG_FILE), *mpath = gr_fs_join(dir, MODEL_FILE);
    char *text = NULL;
    size_t len = 0;
    gr_json *cfg = NULL;
    gr_st *st = NULL;
    int rc = 0;
    if (!p || !cpath || !mpath) {
        rc = gr_seterr(GR_ENOMEM, "policy: out of memory");
        goto fail;
    }
    if (!gr_fs_is_dir(dir)) {
        rc = gr_seterr(GR_EINVAL, "policy: %s is not a directory holding %s and %s", dir,
                       CONFIG_FILE, MODEL_FILE);
        goto fail;
    }
    if ((rc = gr_fs_read_file(cpath, CONFIG_MAX, &text, &len))) goto fail;
    if (!(cfg = gr_json_parse(text, len, cpath))) {
        rc = gr_errcode();
        goto fail;
    }
    if ((rc = check_config(cpath, cfg, p))) goto fail;
    if (!(st = gr_st_open(mpath))) {
        rc = gr_errcode();
        goto fail;
    }
    if ((rc = load_weights(p, st, mpath))) goto fail;
    gr_st_close(&st);
    gr_json_free(cfg);
    free(text);
    free(cpath);
    free(mpath);
    return p;
fail:
    (void)rc;
    gr_st_close(&st);
    gr_json_free(cfg);
    free(text);
    free(cpath);
    free(mpath);
    gr_nbrl_policy_destroy(&p);
    return NULL;
}

gr_nbrl_policy *gr_nbrl_policy_load_mem(const char *what, const char *config, size_t config_len,
                                        const void *weights, size_t weights_len)
{
    char cname[512], wname[512];
    snprintf(cname, sizeof cname, "%s/%s", what, CONFIG_FILE);
    snprintf(wname, sizeof wname, "%s/%s", what, MODEL_FILE);
    gr_nbrl_policy *p = calloc(1, sizeof *p);
    gr_json *cfg = NULL;
    gr_st *st = NULL;
    if (!p) {
        gr_seterr(GR_ENOMEM, "policy: out of memory");
        return NULL;
    }
    if (!(cfg = gr_json_parse(config, config_len, cname)) || check_config(cname, cfg, p) ||
        !(st = gr_st_open_mem(wname, weights, weights_len)) || load_weights(p, st, wname))
        gr_nbrl_policy_destroy(&p);
    gr_st_close(&st);
    gr_json_free(cfg);
    return p;
}

void gr_nbrl_policy_destroy(gr_nbrl_policy **pp)
{
    if (!pp || !*pp) return;
    gr_qnet_destroy(&(*pp)->net);
    free(*pp);
    *pp = NULL;
}

int gr_nbrl_policy_act(gr_nbrl_policy *p, const float state[GR_NBRL_NSTATE])
{
    int rc = gr_qnet_forward(p->net, state, 1, p->q);
    if (rc) return rc;
    return gr_argmax(p->q, p->n_actions);
}

const double *gr_nbrl_policy_actions(const gr_nbrl_policy *p, int *n)
{
    *n = p->n_actions;
    return p->actions;
}

const float *gr_nbrl_policy_scale(const gr_nbrl_policy *p)
{
    return p->scale;
}

double gr_nbrl_policy_chunk(const gr_nbrl_policy *p)
{
    return p->chunk;
}

gr_qnet *gr_nbrl_policy_net(gr_nbrl_policy *p)
{
    return p->net;
}

/* ---- chunked runs ---- */

int gr_nbrl_run(gr_nbody *nb, const gr_nbrl_run_cfg *c, gr_nbrl_run_result *res)
{
    memset(res, 0, sizeof *res);
    if (!isfinite(c->chunk) || !(c->chunk > 0))
        return gr_seterr(GR_EINVAL, "nbody: chunk = %g must be > 0", c->chunk);
    if (!c->policy && (!isfinite(c->mu) || !(c->mu > 0)))
        return gr_seterr(GR_EINVAL, "nbody: mu = %g: the time-step parameter must be > 0", c->mu);
    if (c->policy && gr_nbody_n(nb) != 3)
        return gr_seterr(GR_EINVAL, "nbody: an RL policy steers 3 bodies, the system has %zu",
                         gr_nbody_n(nb));
    double t0 = gr_nbody_time(nb);
    int nchunks = c->chunks;
    if (c->t_end > 0) {
        if (!isfinite(c->t_end) || c->t_end <= t0)
            return gr_seterr(GR_EINVAL, "nbody: t_end = %g must be after the start %g", c->t_end,
                             t0);
        double n = ceil((c->t_end - t0) / c->chunk - 1e-9);
        if (n > 1e8) return gr_seterr(GR_EINVAL, "nbody: t_end / chunk = %g chunks (limit 1e8)", n);
        nchunks = (int)fmax(1, n);
    }
    if (nchunks < 1) return gr_seterr(GR_EINVAL, "nbody: chunks = %d must be >= 1", nchunks);
    double e0 = gr_nbody_energy(nb), de = 0;
    res->e0 = e0;
    for (int i = 1; i <= nchunks; i++) {
        double target = t0 + i * c->chunk;
        if (c->t_end > 0 && (i == nchunks || target > c->t_end)) target = c->t_end;
        double mu = c->mu;
        int action = -1;
        if (c->policy) {
            float s[GR_NBRL_NSTATE];
            int rc = gr_nbrl_state(nb, de, c->policy->scale, s);
            if (rc) return rc;
            if ((action = gr_nbrl_policy_act(c->policy, s)) < 0) return action;
            mu = c->policy->actions[action];
            res->action_count[action]++;
        }
        int rc = gr_nbody_evolve(nb, target, mu);
        if (rc == GR_ESTATE)
            res->collapsed = 1;
        else if (rc)
            return rc;
        de = (gr_nbody_energy(nb) - e0) / e0;
        res->chunks = i;
        res->de_final = fabs(de);
        if (fabs(de) > res->de_max) res->de_max = fabs(de);
        gr_nbrl_chunk row = {i, gr_nbody_time(nb), de, mu, action, gr_nbody_steps(nb)};
        if (c->on_chunk && c->on_chunk(c->ud, nb, &row)) {
            res->stopped = 1;
            break;
        }
        if (res->collapsed) break;
        if (c->stop_error > 0 && fabs(de) > c->stop_error) {
            res->stopped = 1;
            break;
        }
    }
    return 0;
}

/* ---- training ---- */

void gr_nbrl_train_default(gr_nbrl_train_cfg *c)
{
    memset(c, 0, sizeof *c);
    gr_dqn_config_default(&c->dqn);
    c->dqn.shape.inputs = GR_NBRL_NSTATE;
    c->dqn.shape.outputs = GR_NBRL_NACTIONS;
    c->episodes = 2000;
    c->chunks = 100;
    c->chunk = gr_nbody_default_chunk();
    c->stop_error = 0.1;
    c->reward = (gr_nbrl_reward){GR_NBRL_W1, GR_NBRL_W3};
    c->integrator = GR_NB_HERMITE;
    c->train_every = 1;
    gr_nbrl_default_actions(c->actions);
    c->n_actions = GR_NBRL_NACTIONS;
    gr_nbrl_default_scale(c->scale);
}

int gr_nbrl_train_check(const gr_nbrl_train_cfg *c)
{
    if (c->episodes < 1 || c->episodes > 10000000)
        return gr_seterr(GR_EINVAL, "nbody-train: episodes = %d outside 1..10000000", c->episodes);
    if (c->chunks < 1 || c->chunks > 1000000)
        return gr_seterr(GR_EINVAL, "nbody-train: chunks = %d outside 1..1000000", c->chunks);
    if (!isfinite(c->chunk) || !(c->chunk > 0))
        return gr_seterr(GR_EINVAL, "nbody-train: chunk = %g must be > 0", c->chunk);
    if (!isfinite(c->stop_error) || !(c->stop_error > 0))
        return gr_seterr(GR_EINVAL, "nbody-train: stop_error = %g must be > 0", c->stop_error);
    if (!isfinite(c->reward.w1) || !isfinite(c->reward.w3))
        return gr_seterr(GR_EINVAL, "nbody-train: reward weights w1, w3 must be finite");
    if (c->train_every < 1)
        return gr_seterr(GR_EINVAL, "nbody-train: train_every = %d must be >= 1", c->train_every);
    if (c->n_actions < 1 || c->n_actions > GR_NBRL_MAX_ACTIONS)
        return gr_seterr(GR_EINVAL, "nbody-train: %d actions, need 1..%d", c->n_actions,
                         GR_NBRL_MAX_ACTIONS);
    for (int i = 0; i < c->n_actions; i++)
        if (!isfinite(c->actions[i]) || !(c->actions[i] > 0) || !(c->actions[i] < 1))
            return gr_seterr(GR_EINVAL, "nbody-train: actions[%d] = %g: mu must be in (0, 1)", i,
                             c->actions[i]);
    if (c->dqn.shape.inputs != GR_NBRL_NSTATE || c->dqn.shape.outputs != c->n_actions)
        return gr_seterr(GR_EINVAL, "nbody-train: the network must map %d inputs to %d actions",
                         GR_NBRL_NSTATE, c->n_actions);
    return gr_dqn_config_check(&c->dqn);
}

int gr_nbrl_train(const gr_nbrl_train_cfg *c, gr_nbrl_episode_fn on_episode, void *ud,
                  gr_dqn **agent_out)
{
    *agent_out = NULL;
    int rc = gr_nbrl_train_check(c);
    if (rc) return rc;
    gr_dqn *agent = gr_dqn_new(&c->dqn);
    if (!agent) return gr_errcode();
    uint64_t env_steps = 0;
    for (int e = 0; e < c->episodes; e++) {
        if (c->cancel && *c->cancel) {
            rc = gr_seterr(GR_ECANCEL, "nbody-train: cancelled at episode %d", e);
            goto fail;
        }
        gr_nbrl_episode ep = {.episode = e, .loss = NAN};
        ep.ic_seed = gr_rng_key(c->seed, "nbody-train.episode", (uint64_t)e);
        gr_nbody *nb = gr_nbody_random3(ep.ic_seed);
        if (!nb) {
            rc = gr_errcode();
            goto fail;
        }
        gr_nbody_set_integrator(nb, c->integrator);
        gr_nbody_set_cancel(nb, c->cancel);
        double e0 = gr_nbody_energy(nb), de = 0, loss_sum = 0;
        int nloss = 0;
        float s[GR_NBRL_NSTATE], s2[GR_NBRL_NSTATE];
        gr_nbrl_state(nb, 0, c->scale, s);
        for (int i = 1; i <= c->chunks; i++) {
            int a = gr_dqn_act(agent, s);
            if (a < 0) {
                rc = a;
                gr_nbody_destroy(&nb);
                goto fail;
            }
            double mu = c->actions[a];
            int erc = gr_nbody_evolve(nb, i * c->chunk, mu);
            int collapsed = erc == GR_ESTATE;
            if (erc && !collapsed) {
                rc = erc;
                gr_nbody_destroy(&nb);
                goto fail;
            }
            de = collapsed ? 1.0 : (gr_nbody_energy(nb) - e0) / e0;
            if (!isfinite(de)) de = 1.0, collapsed = 1;
            double r = gr_nbrl_reward_of(&c->reward, de, mu, i);
            int done = collapsed || fabs(de) > c->stop_error;
            gr_nbrl_state(nb, de, c->scale, s2);
            if ((rc = gr_dqn_remember(agent, s, a, (float)r, s2, done))) {
                gr_nbody_destroy(&nb);
                goto fail;
            }
            env_steps++;
            if (env_steps % (uint64_t)c->train_every == 0) {
                double loss;
                int t = gr_dqn_train(agent, &loss);
                if (t < 0) {
                    rc = t;
                    gr_nbody_destroy(&nb);
                    goto fail;
                }
                if (t) loss_sum += loss, nloss++;
            }
            ep.chunks = i;
            ep.reward += r;
            ep.log_mu_mean += log10(mu);
            memcpy(s, s2, sizeof s);
            if (done) {
                ep.ended_early = 1;
                break;
            }
        }
        ep.de_final = fabs(de);
        ep.log_mu_mean /= ep.chunks;
        ep.steps = gr_nbody_steps(nb);
        ep.loss = nloss ? loss_sum / nloss : NAN;
        ep.epsilon = gr_dqn_epsilon(agent);
        gr_nbody_destroy(&nb);
        if (on_episode && on_episode(ud, &ep)) {
            rc = gr_seterr(GR_ECANCEL, "nbody-train: cancelled after episode %d", e);
            goto fail;
        }
    }
    *agent_out = agent;
    return 0;
fail:
    gr_dqn_destroy(&agent);
    return rc;
}
