/* gr_mergekit: mergekit YAML merge configurations into merge-op parameters. */
#include "gr_mergekit.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_jsonb.h"
#include "gr_mparam.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct mk {
    yaml_document_t *doc;
    const char *what;
    size_t nodes;
} mk;

static int line_of(const yaml_node_t *n)
{
    return n ? (int)n->start_mark.line + 1 : 0;
}

static int err_at(const mk *m, const yaml_node_t *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int err_at(const mk *m, const yaml_node_t *n, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gr_seterr(code, "%s:%d: %s", m->what, line_of(n), msg);
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int plain(const yaml_node_t *n)
{
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ||
           n->data.scalar.style == YAML_ANY_SCALAR_STYLE;
}

/* A YAML node as JSON (plain scalars typed the way PyYAML reads them). */
static gr_json *to_json(mk *m, yaml_node_t *n, int depth)
{
    if (++m->nodes > GR_MERGEKIT_MAX_NODES) {
        err_at(m, n, GR_EINVAL, "more than %d values (aliases?)", GR_MERGEKIT_MAX_NODES);
        return NULL;
    }
    if (depth > GR_MERGEKIT_MAX_DEPTH) {
        err_at(m, n, GR_EINVAL, "nested deeper than %d", GR_MERGEKIT_MAX_DEPTH);
        return NULL;
    }
    gr_json *j = NULL;
    if (n->type == YAML_SCALAR_NODE) {
        const char *s = (const char *)n->data.scalar.value;
        size_t len = n->data.scalar.length;
        if (strlen(s) != len) {
            err_at(m, n, GR_EINVAL, "NUL byte in a value");
            return NULL;
        }
        if (!plain(n)) {
            j = gr_jsonb_str(s);
        } else if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
                   !strcmp(s, "NULL")) {
            j = gr_jsonb_null();
        } else if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE") ||
                   !strcmp(s, "yes") || !strcmp(s, "Yes") || !strcmp(s, "on") || !strcmp(s, "On")) {
            j = gr_jsonb_bool(1);
        } else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE") ||
                   !strcmp(s, "no") || !strcmp(s, "No") || !strcmp(s, "off") || !strcmp(s, "Off")) {
            j = gr_jsonb_bool(0);
        } else {
            char *end = NULL;
            errno = 0;
            double v = strtod(s, &end);
            int numeric = end && end != s && !*end && strspn(s, "+-0123456789.eE") == len;
            if (numeric && (!isfinite(v) || errno == ERANGE)) {
                err_at(m, n, GR_EINVAL, "number '%s' out of range", s);
                return NULL;
            }
            if (numeric && !strpbrk(s, ".eE")) {
                errno = 0;
                long long iv = strtoll(s, &end, 10);
                j = errno == 0 && !*end ? gr_jsonb_int(iv) : gr_jsonb_num(v);
            } else {
                j = numeric ? gr_jsonb_num(v) : gr_jsonb_str(s);
            }
        }
    } else if (n->type == YAML_SEQUENCE_NODE) {
        j = gr_jsonb_arr();
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             j && it < n->data.sequence.items.top; it++) {
            gr_json *v = to_json(m, yaml_document_get_node(m->doc, *it), depth + 1);
            if (!v || gr_jsonb_push(j, v)) {
                gr_json_free(j);
                return NULL;
            }
        }
    } else if (n->type == YAML_MAPPING_NODE) {
        j = gr_jsonb_obj();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; j && p < n->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(m->doc, p->key);
            const char *ks = scalar(k);
            if (!ks) {
                err_at(m, k, GR_EINVAL, "keys must be plain strings");
                gr_json_free(j);
                return NULL;
            }
            if (gr_json_get(j, ks)) {
                err_at(m, k, GR_EINVAL, "key '%s' given twice", ks);
                gr_json_free(j);
                return NULL;
            }
            gr_json *v = to_json(m, yaml_document_get_node(m->doc, p->value), depth + 1);
            if (v) v->line = line_of(k); /* messages point at the key */
            if (!v || gr_jsonb_set(j, ks, v)) {
                gr_json_free(j);
                return NULL;
            }
        }
    } else {
        err_at(m, n, GR_EINVAL, "empty node");
        return NULL;
    }
    if (!j) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    j->line = line_of(n);
    return j;
}

/* Checks a merge parameter value with the parser the op uses. */
static int check_mparam(const mk *m, const gr_json *v, const char *key)
{
    char what[512];
    snprintf(what, sizeof what, "%s:%d: %s", m->what, v->line, key);
    gr_mparam *p = gr_mparam_from_json(v, what);
    if (!p) return gr_errcode();
    gr_mparam_destroy(&p);
    return 0;
}

static const char *const MODEL_KEYS[] = {"weight", "density", "gamma", "epsilon", NULL};
static const char *const METHODS[] = {
    "linear",      "task_arithmetic",  "ties",  "dare_ties",    "dare_linear",
    "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "slerp",
    "pcb",         "model_stock",      NULL};

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (!strcmp(*list, s)) return 1;
    return 0;
}

static int set(gr_json *o, const char *key, gr_json *v)
{
    if (!v) return gr_seterr(GR_ENOMEM, "out of memory");
    return gr_jsonb_set(o, key, v);
}

/* A model reference: a path or hub name string. */
static int model_ref(const mk *m, const gr_json *v, const char *where, const char **out)
{
    if (!v || v->type != GR_JSON_STR || !*v->str)
        return gr_seterr(GR_EINVAL, "%s:%d: %s must be a model path or name", m->what,
                         v ? v->line : 0, where);
    if (strchr(v->str, '+'))
        return gr_seterr(GR_EUNSUP,
                         "%s:%d: %s: 'model+lora' references are not supported; list the LoRA "
                         "adapter directory as a model of its own",
                         m->what, v->line, where);
    *out = v->str;
    return 0;
}

/* Copies the per-model or global merge parameters of src into dst. */
static int copy_params(const mk *m, const gr_json *src, gr_json *dst, int global, const char *where)
{
    if (src->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "%s:%d: %s must be a mapping", m->what, src->line, where);
    for (size_t i = 0; i < src->len; i++) {
        const char *k = src->keys[i];
        const gr_json *v = src->items[i];
        char key[600];
        snprintf(key, sizeof key, "%s.%s", where, k);
        int rc = 0;
        if (in_list(MODEL_KEYS, k) || (global && !strcmp(k, "t"))) {
            if (!(rc = check_mparam(m, v, key))) rc = set(dst, k, gr_jsonb_copy(v));
        } else if (global && (!strcmp(k, "lambda") || !strcmp(k, "pcb_ratio"))) {
            if (v->type != GR_JSON_NUM)
                return gr_seterr(GR_EINVAL, "%s:%d: %s must be a number", m->what, v->line, key);
            rc = set(dst, k, gr_jsonb_copy(v));
        } else if (global && !strcmp(k, "normalize")) {
            if (v->type != GR_JSON_BOOL)
                return gr_seterr(GR_EINVAL, "%s:%d: %s must be true or false", m->what, v->line,
                                 key);
            rc = set(dst, k, gr_jsonb_copy(v));
        } else if (global && !strcmp(k, "rescale")) {
            if (v->type == GR_JSON_BOOL) {
                if (!v->boolean) rc = set(dst, k, gr_jsonb_str("none"));
            } else if (v->type == GR_JSON_STR) {
                rc = set(dst, k, gr_jsonb_copy(v));
            } else {
                return gr_seterr(GR_EINVAL, "%s:%d: %s must be true, false or a rescale name",
                                 m->what, v->line, key);
            }
        } else if (global && !strcmp(k, "int8_mask")) {
            continue; /* a memory saving of mergekit's; graft's masks are bitmaps already */
        } else if (global && !strcmp(k, "consensus")) {
            if (v->type != GR_JSON_STR)
                return gr_seterr(GR_EINVAL, "%s:%d: %s must be sum or count", m->what, v->line,
                                 key);
            rc = set(dst, k, gr_jsonb_copy(v));
        } else {
            return gr_seterr(GR_EINVAL, "%s:%d: %s: unknown parameter '%s'", m->what, v->line,
                             where, k);
        }
        if (rc) return rc;
    }
    return 0;
}

static int convert(const mk *m, const gr_json *c, gr_json *out)
{
    static const char *const TOP[] = {
        "merge_method",     "base_model", "models", "parameters", "dtype", "out_dtype",
        "tokenizer_source", "seed",       "scope",  "name",       NULL};
    int rc;
    if (c->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "%s:%d: a merge config must be a mapping", m->what, c->line);
    for (size_t i = 0; i < c->len; i++) {
        const char *k = c->keys[i];
        if (!strcmp(k, "slices"))
            return gr_seterr(GR_EUNSUP,
                             "%s:%d: slices (layer ranges) are not supported; list whole models "
                             "under 'models'",
                             m->what, c->items[i]->line);
        if (!strcmp(k, "tokenizer") || !strcmp(k, "chat_template"))
            return gr_seterr(GR_EUNSUP, "%s:%d: '%s' is not supported (use tokenizer_source)",
                             m->what, c->items[i]->line, k);
        if (!in_list(TOP, k))
            return gr_seterr(GR_EINVAL, "%s:%d: unknown key '%s'", m->what, c->items[i]->line, k);
    }
    const gr_json *mm = gr_json_get(c, "merge_method");
    if (!mm) return gr_seterr(GR_EINVAL, "%s: missing key 'merge_method'", m->what);
    if (mm->type != GR_JSON_STR || !in_list(METHODS, mm->str))
        return gr_seterr(GR_EUNSUP,
                         "%s:%d: merge_method '%s' is not supported (linear, task_arithmetic, "
                         "ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, della, "
                         "della_linear, slerp, pcb, model_stock)",
                         m->what, mm->line, mm->type == GR_JSON_STR ? mm->str : "?");
    const char *method = mm->str;
    if ((rc = set(out, "method", gr_jsonb_str(method)))) return rc;
    const char *base = NULL;
    const gr_json *bm = gr_json_get(c, "base_model");
    if (bm && bm->type != GR_JSON_NULL) {
        if ((rc = model_ref(m, bm, "base_model", &base))) return rc;
        if ((rc = set(out, "base", gr_jsonb_str(base)))) return rc;
    }
    const gr_json *models = gr_json_get(c, "models");
    if (!models || models->type != GR_JSON_ARR || !models->len)
        return gr_seterr(GR_EINVAL, "%s:%d: 'models' must be a non-empty list", m->what,
                         models ? models->line : 0);
    gr_json *ml = gr_jsonb_arr(), *pm = gr_jsonb_arr();
    if ((rc = set(out, "models", ml)) || (rc = set(out, "per_model", pm))) return rc;
    ml = (gr_json *)gr_json_get(out, "models");
    pm = (gr_json *)gr_json_get(out, "per_model");
    int keep_base = !strcmp(method, "linear");
    for (size_t i = 0; i < models->len; i++) {
        const gr_json *e = models->items[i];
        char where[64];
        snprintf(where, sizeof where, "models[%zu]", i);
        if (e->type != GR_JSON_OBJ)
            return gr_seterr(GR_EINVAL, "%s:%d: %s must be a mapping with 'model'", m->what,
                             e->line, where);
        for (size_t k = 0; k < e->len; k++)
            if (strcmp(e->keys[k], "model") && strcmp(e->keys[k], "parameters"))
                return gr_seterr(GR_EINVAL, "%s:%d: %s: unknown key '%s'", m->what,
                                 e->items[k]->line, where, e->keys[k]);
        const char *ref = NULL;
        char mwhere[80];
        snprintf(mwhere, sizeof mwhere, "%s.model", where);
        if ((rc = model_ref(m, gr_json_get(e, "model"), mwhere, &ref))) return rc;
        if (base && !strcmp(ref, base) && !keep_base) continue; /* the base itself */
        gr_json *po = gr_jsonb_obj();
        if (!po) return gr_seterr(GR_ENOMEM, "out of memory");
        const gr_json *pp = gr_json_get(e, "parameters");
        char pwhere[96];
        snprintf(pwhere, sizeof pwhere, "%s.parameters", where);
        if (pp && pp->type != GR_JSON_NULL && (rc = copy_params(m, pp, po, 0, pwhere))) {
            gr_json_free(po);
            return rc;
        }
        if ((rc = gr_jsonb_push(ml, gr_jsonb_str(ref))) || (rc = gr_jsonb_push(pm, po))) return rc;
    }
    if (!ml->len)
        return gr_seterr(GR_EINVAL, "%s:%d: 'models' lists only the base model", m->what,
                         models->line);
    const gr_json *gp = gr_json_get(c, "parameters");
    if (gp && gp->type != GR_JSON_NULL && (rc = copy_params(m, gp, out, 1, "parameters")))
        return rc;
    const gr_json *dt = gr_json_get(c, "out_dtype");
    if (!dt || dt->type == GR_JSON_NULL) dt = gr_json_get(c, "dtype");
    if (dt && dt->type != GR_JSON_NULL) {
        if (dt->type != GR_JSON_STR)
            return gr_seterr(GR_EINVAL, "%s:%d: dtype must be a name such as bfloat16", m->what,
                             dt->line);
        if ((rc = set(out, "dtype", gr_jsonb_str(dt->str)))) return rc;
    }
    const gr_json *ts = gr_json_get(c, "tokenizer_source");
    if (ts && ts->type != GR_JSON_NULL) {
        if (ts->type != GR_JSON_STR)
            return gr_seterr(GR_EUNSUP, "%s:%d: tokenizer_source must be 'base' or a model",
                             m->what, ts->line);
        if (!strcmp(ts->str, "union"))
            return gr_seterr(GR_EUNSUP,
                             "%s:%d: tokenizer_source 'union' (merged vocabularies) is not "
                             "supported",
                             m->what, ts->line);
        if (strcmp(ts->str, "base")) {
            const char *ref = NULL;
            if ((rc = model_ref(m, ts, "tokenizer_source", &ref))) return rc;
            if ((rc = set(out, "tokenizer_source", gr_jsonb_str(ref)))) return rc;
        }
    }
    const gr_json *seed = gr_json_get(c, "seed");
    if (seed) {
        if (seed->type != GR_JSON_NUM || !seed->is_int || seed->i < 0)
            return gr_seterr(GR_EINVAL, "%s:%d: seed must be a non-negative integer", m->what,
                             seed->line);
        if ((rc = set(out, "seed", gr_jsonb_copy(seed)))) return rc;
    }
    const gr_json *scope = gr_json_get(c, "scope");
    if (scope) {
        if (scope->type != GR_JSON_STR)
            return gr_seterr(GR_EINVAL, "%s:%d: scope must be tensor or global", m->what,
                             scope->line);
        if ((rc = set(out, "scope", gr_jsonb_copy(scope)))) return rc;
    }
    return 0;
}

gr_json *gr_mergekit_parse(const char *text, size_t len, const char *what)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    gr_json *cfg = NULL, *out = NULL;
    mk m = {&doc, what ? what : "config", 0};
    if (len > GR_MERGEKIT_MAX_BYTES) {
        gr_seterr(GR_EINVAL, "%s: larger than %u bytes", m.what, GR_MERGEKIT_MAX_BYTES);
        return NULL;
    }
    if (!yaml_parser_initialize(&parser)) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        gr_seterr(GR_EINVAL, "%s:%zu: %s%s%s", m.what, parser.problem_mark.line + 1,
                  parser.problem ? parser.problem : "YAML error", parser.context ? " " : "",
                  parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        gr_seterr(GR_EINVAL, "%s: empty config", m.what);
        goto out;
    }
    if (!(cfg = to_json(&m, root, 0))) goto out;
    yaml_document_t more;
    if (!yaml_parser_load(&parser, &more)) {
        gr_seterr(GR_EINVAL, "%s:%zu: %s", m.what, parser.problem_mark.line + 1,
                  parser.problem ? parser.problem : "YAML error");
        goto out;
    }
    int extra = yaml_document_get_root_node(&more) != NULL;
    yaml_document_delete(&more);
    if (extra) {
        gr_seterr(GR_EINVAL, "%s: more than one YAML document", m.what);
        goto out;
    }
    if (!(out = gr_jsonb_obj())) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto out;
    }
    if (convert(&m, cfg, out)) {
        gr_json_free(out);
        out = NULL;
    }
out:
    gr_json_free(cfg);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return out;
}

gr_json *gr_mergekit_load(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    if (gr_fs_read_file(path, GR_MERGEKIT_MAX_BYTES, &text, &len)) return NULL;
    gr_json *j = gr_mergekit_parse(text, len, path);
    free(text);
    return j;
}
