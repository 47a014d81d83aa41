/* test_pipeline: pipeline files (DESIGN.md section 7) -> expanded DAGs: DAG
 * order, matrix fan-out, map, zip, fan-in, after, overrides, variables, and
 * one-line errors naming the stage and line; plus the JSON builder. */
#include "gr_test.h"

#include "gr_err.h"
#include "gr_jsonb.h"
#include "gr_pipeline.h"

#include <time.h>

static gr_pipeline *parse(const char *y)
{
    return gr_pipeline_parse(y, strlen(y), "t.yaml", NULL, 0);
}

static gr_pipeline *parse_set(const char *y, const char *const *sets, size_t n)
{
    return gr_pipeline_parse(y, strlen(y), "t.yaml", sets, n);
}

static long index_of(const gr_pipeline *p, const char *id)
{
    for (size_t i = 0; i < p->nstages; i++)
        if (!strcmp(p->stages[i].id, id)) return (long)i;
    return -1;
}

static int has_dep(const gr_stage *s, const char *id)
{
    for (size_t i = 0; i < s->ndeps; i++)
        if (!strcmp(s->deps[i], id)) return 1;
    return 0;
}

/* Every dependency exists and comes earlier; ids are unique. */
static int topo_ok(const gr_pipeline *p)
{
    for (size_t i = 0; i < p->nstages; i++) {
        for (size_t d = 0; d < p->stages[i].ndeps; d++) {
            long at = index_of(p, p->stages[i].deps[d]);
            if (at < 0 || (size_t)at >= i) return 0;
        }
        for (size_t k = 0; k < i; k++)
            if (!strcmp(p->stages[k].id, p->stages[i].id)) return 0;
    }
    return 1;
}

/* The failure message for y (or "" when it parsed). */
static const char *err_of(const char *y)
{
    static char msg[2048];
    gr_pipeline *p = parse(y);
    if (p) {
        gr_pipeline_free(&p);
        return "";
    }
    snprintf(msg, sizeof msg, "%s", gr_errmsg());
    return msg;
}

static const char *set_err(const char *y, const char *set)
{
    static char msg[2048];
    const char *sets[] = {set};
    gr_pipeline *p = parse_set(y, sets, 1);
    if (p) {
        gr_pipeline_free(&p);
        return "";
    }
    snprintf(msg, sizeof msg, "%s", gr_errmsg());
    return msg;
}

static void test_dag_order(void)
{
    /* written consumers first: the parser must reorder */
    const char *y = "name: diamond\n"
                    "stages:\n"
                    "  d: {op: noop, inputs: [b, c]}\n"
                    "  b: {op: echo, input: a, k: 1}\n"
                    "  c: {op: sleep, seconds: 0.5, inputs: [a], retries: 0, timeout: 30, "
                    "priority: 7}\n"
                    "  a: {op: echo}\n"
                    "  e: {op: noop, after: d}\n";
    gr_pipeline *p = parse(y);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (!p) return;
    CHECK(!strcmp(p->name, "diamond"));
    CHECK_EQ_INT(p->nstages, 5);
    CHECK(topo_ok(p));
    long a = index_of(p, "a"), b = index_of(p, "b"), c = index_of(p, "c"), d = index_of(p, "d"),
         e = index_of(p, "e");
    CHECK(a >= 0 && b > a && c > a && d > b && d > c && e > d);
    const gr_stage *sb = &p->stages[b], *sc = &p->stages[c], *sd = &p->stages[d];
    CHECK_EQ_INT(sb->ndeps, 1);
    CHECK(has_dep(sb, "a"));
    CHECK(has_dep(sd, "b") && has_dep(sd, "c") && sd->ndeps == 2);
    CHECK(has_dep(&p->stages[e], "d") && p->stages[e].ndeps == 1);
    CHECK_EQ_INT(sb->retries, GR_STAGE_DEFAULT_RETRIES);
    CHECK_EQ_INT(sc->retries, 0);
    CHECK_NEAR(sc->timeout, 30, 0);
    CHECK_EQ_INT(sc->priority, 7);
    CHECK_EQ_INT(sb->priority, 0);
    CHECK_EQ_INT(sd->line, 3);
    CHECK_EQ_INT(sc->line, 5);
    CHECK(!strcmp(sb->op, "echo"));
    CHECK(!strcmp(gr_json_get_str(sb->params, "input", ""), "a"));
    CHECK_EQ_INT(gr_json_get_int(sb->params, "k", 0), 1);
    CHECK(gr_pipeline_find(p, "c") == sc);
    CHECK(gr_pipeline_find(p, "zz") == NULL);
    /* the canonical JSON form parses and has the stages in order */
    gr_buf j = {0};
    CHECK(gr_pipeline_to_json(p, &j) == 0);
    gr_json *t = gr_json_parse(j.data, j.len, "to_json");
    CHECK_MSG(t != NULL, "%s", gr_errmsg());
    const gr_json *st = gr_json_get(t, "stages");
    CHECK(st && st->len == 5);
    if (st && st->len == 5) {
        CHECK(!strcmp(gr_json_get_str(st->items[d], "id", ""), "d"));
        CHECK_EQ_INT(gr_json_get_int(st->items[c], "retries", -1), 0);
        CHECK_NEAR(gr_json_get_num(st->items[c], "timeout", -1), 30, 0);
    }
    gr_json_free(t);
    gr_buf_free(&j);
    gr_pipeline_free(&p);
    CHECK(p == NULL);
    gr_pipeline_free(&p); /* NULL is fine */
}

static void test_matrix_map_reduce(void)
{
    /* DESIGN.md section 7's shape with the test ops: fan-out, map, fan-in */
    const char *y = "stages:\n"
                    "  base: {op: echo}\n"
                    "  p:\n"
                    "    op: echo\n"
                    "    input: base\n"
                    "    seed: 1\n"
                    "    matrix: {density: [0.5, 0.1, 0.01], method: [dare, ties]}\n"
                    "  q: {op: echo, input: p}\n"
                    "  table: {op: echo, inputs: [q, base]}\n";
    gr_pipeline *p = parse(y);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (!p) return;
    CHECK(!strcmp(p->name, "t")); /* from the file name */
    CHECK_EQ_INT(p->nstages, 1 + 6 + 6 + 1);
    CHECK(topo_ok(p));
    long v = index_of(p, "p[density=0.1,method=ties]");
    CHECK(v >= 0);
    if (v >= 0) {
        const gr_stage *s = &p->stages[v];
        CHECK_NEAR(gr_json_get_num(s->params, "density", 0), 0.1, 0);
        CHECK(!strcmp(gr_json_get_str(s->params, "method", ""), "ties"));
        CHECK_EQ_INT(gr_json_get_int(s->params, "seed", 0), 1);
        CHECK(!gr_json_get(s->params, "matrix"));
        CHECK(has_dep(s, "base"));
    }
    CHECK(index_of(p, "p[density=0.01,method=dare]") >= 0);
    /* map: q has one variant per p variant, wired one to one */
    long q = index_of(p, "q[density=0.01,method=dare]");
    CHECK(q >= 0);
    if (q >= 0) {
        CHECK(!strcmp(gr_json_get_str(p->stages[q].params, "input", ""),
                      "p[density=0.01,method=dare]"));
        CHECK(p->stages[q].ndeps == 1 && has_dep(&p->stages[q], "p[density=0.01,method=dare]"));
    }
    /* reduce: the list names all six q variants, then base */
    long t = index_of(p, "table");
    CHECK(t >= 0);
    if (t >= 0) {
        const gr_json *in = gr_json_get(p->stages[t].params, "inputs");
        CHECK(in && in->len == 7);
        CHECK_EQ_INT(p->stages[t].ndeps, 7);
        if (in && in->len == 7) {
            CHECK(!strcmp(in->items[0]->str, "q[density=0.5,method=dare]"));
            CHECK(!strcmp(in->items[1]->str, "q[density=0.5,method=ties]"));
            CHECK(!strcmp(in->items[6]->str, "base"));
        }
    }
    gr_pipeline_free(&p);
}

static void test_zip_and_partial_reduce(void)
{
    /* two mapped upstreams that share variable x are matched on it (zip) */
    const char *y = "stages:\n"
                    "  a: {op: echo, matrix: {x: [1, 2, 3]}}\n"
                    "  b: {op: echo, input: a, matrix: {y: [u, v]}}\n"
                    "  c: {op: echo, input: a}\n"
                    "  z: {op: echo, input: b, other: c}\n"
                    "  r: {op: echo, input: c, inputs: [b]}\n";
    gr_pipeline *p = parse(y);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (!p) return;
    CHECK(topo_ok(p));
    /* a:3  b:6  c:3  z: b joined with... z maps only over b (other is not an
     * input of echo): 6; r maps over c (3), its list takes the 2 b variants
     * with the same x */
    CHECK_EQ_INT(p->nstages, 3 + 6 + 3 + 6 + 3);
    long r = index_of(p, "r[x=2]");
    CHECK(r >= 0);
    if (r >= 0) {
        const gr_json *in = gr_json_get(p->stages[r].params, "inputs");
        CHECK(in && in->len == 2);
        if (in && in->len == 2) {
            CHECK(!strcmp(in->items[0]->str, "b[x=2,y=u]"));
            CHECK(!strcmp(in->items[1]->str, "b[x=2,y=v]"));
        }
        CHECK(has_dep(&p->stages[r], "c[x=2]"));
        CHECK_EQ_INT(p->stages[r].ndeps, 3);
    }
    gr_pipeline_free(&p);

    /* a stage mapping over two stages that share x gets |x| variants, not |x|^2 */
    const char *y2 = "stages:\n"
                     "  a: {op: echo, matrix: {x: [1, 2, 3]}}\n"
                     "  c: {op: echo, input: a}\n"
                     "  m: {op: echo, input: a, inputs: [c]}\n"
                     "  j: {op: echo, input: c, matrix: {x: [2, 3, 4]}}\n";
    p = parse(y2);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (!p) return;
    /* j's own x is matched with c's x: only 2 and 3 exist */
    CHECK(index_of(p, "j[x=2]") >= 0 && index_of(p, "j[x=3]") >= 0);
    CHECK(index_of(p, "j[x=4]") < 0);
    long m = index_of(p, "m[x=1]");
    CHECK(m >= 0 && p->stages[m].ndeps == 2);
    gr_pipeline_free(&p);
}

static void test_matrix_over_inputs_and_after(void)
{
    const char *y = "stages:\n"
                    "  m1: {op: echo}\n"
                    "  m2: {op: echo}\n"
                    "  d: {op: echo, matrix: {input: [m1, m2]}}\n"
                    "  w: {op: sleep, seconds: 0, after: [d]}\n"
                    "  a: {op: echo, matrix: {k: [1, 2]}}\n"
                    "  f: {op: echo, input: a, after: [d, m1]}\n";
    gr_pipeline *p = parse(y);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (!p) return;
    CHECK(topo_ok(p));
    long d1 = index_of(p, "d[input=m1]");
    CHECK(d1 >= 0 && has_dep(&p->stages[d1], "m1") && p->stages[d1].ndeps == 1);
    long w = index_of(p, "w");
    CHECK(w >= 0 && p->stages[w].ndeps == 2 && has_dep(&p->stages[w], "d[input=m2]"));
    /* after: waits without data: no parameter names d */
    CHECK(w >= 0 && !gr_json_get(p->stages[w].params, "after"));
    long f = index_of(p, "f[k=2]");
    CHECK(f >= 0 && p->stages[f].ndeps == 4);
    gr_pipeline_free(&p);
}

static void test_artifacts_and_uris(void)
{
    const char *id = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
    char y[1024];
    snprintf(y, sizeof y, "stages:\n  a: {op: echo, input: \"%s\", inputs: [\"%s\"]}\n", id, id);
    gr_pipeline *p = parse(y);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (p) {
        CHECK_EQ_INT(p->nstages, 1);
        CHECK_EQ_INT(p->stages[0].ndeps, 0);
        CHECK(!strcmp(gr_json_get_str(p->stages[0].params, "input", ""), id));
    }
    gr_pipeline_free(&p);
    CHECK(gr_is_artifact_id(id));
    CHECK(!gr_is_artifact_id(
        "sha256:4F53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"));
    CHECK(!gr_is_artifact_id("sha256:4f53"));
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo, input: \"sha256:abc\"}\n"),
                   "t.yaml:2: stage 'a': parameter 'input': 'sha256:abc' is not an artifact id");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo, input: \"s3://b/k\"}\n"), "unsupported URI");

    const char *uy = "stages:\n"
                     "  a: {op: echo, input: \"hf://org/model@main\"}\n"
                     "  b: {op: echo, inputs: [\"file://data/x.bin\", \"hf://org/model@main\"]}\n";
    if (!gr_op_find("fetch")) {
        /* this build has no fetch op yet: the implied stage must be refused clearly */
        CHECK_CONTAINS(err_of(uy), "t.yaml:2: stage 'a': parameter 'input': 'hf://org/model@main' "
                                   "needs the op 'fetch'");
        printf("note: fetch op not built; implied-fetch expansion checked only for its error\n");
        return;
    }
    p = gr_pipeline_parse(uy, strlen(uy), "/srv/pipes/t.yaml", NULL, 0);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (!p) return;
    CHECK_EQ_INT(p->nstages, 4); /* two distinct URIs -> two fetch stages */
    CHECK(topo_ok(p));
    const gr_stage *a = gr_pipeline_find(p, "a");
    const char *fid = a ? gr_json_get_str(a->params, "input", "") : "";
    CHECK(!strncmp(fid, "fetch:", 6) && strlen(fid) == 18);
    const gr_stage *f = gr_pipeline_find(p, fid);
    CHECK(f && !strcmp(f->op, "fetch"));
    if (f) CHECK(!strcmp(gr_json_get_str(f->params, "url", ""), "hf://org/model@main"));
    const gr_stage *b = gr_pipeline_find(p, "b");
    const gr_json *in = b ? gr_json_get(b->params, "inputs") : NULL;
    CHECK(in && in->len == 2);
    if (in && in->len == 2) {
        CHECK(!strcmp(in->items[1]->str, fid));
        const gr_stage *fx = gr_pipeline_find(p, in->items[0]->str);
        CHECK(fx &&
              !strcmp(gr_json_get_str(fx->params, "url", ""), "file:///srv/pipes/data/x.bin"));
    }
    gr_pipeline_free(&p);
}

static void test_errors(void)
{
    /* unknown op, with the line of op: and the known ops */
    const char *e = err_of("stages:\n  a: {op: echo}\n  b:\n    op: nop\n");
    CHECK_CONTAINS(e, "t.yaml:4: stage 'b': unknown op 'nop'");
    CHECK_CONTAINS(e, "noop");
    /* unknown parameter: the line of the parameter */
    CHECK_CONTAINS(err_of("stages:\n  s:\n    op: sleep\n    seconds: 1\n    secs: 2\n"),
                   "t.yaml:5: stage 's': sleep: unknown parameter 'secs'");
    /* wrong type */
    CHECK_CONTAINS(err_of("stages:\n  s: {op: sleep, seconds: soon}\n"),
                   "t.yaml:2: stage 's': sleep: parameter 'seconds' must be a number");
    CHECK_CONTAINS(err_of("stages:\n  s: {op: fail, times: 1.5}\n"),
                   "parameter 'times' must be an integer");
    CHECK_CONTAINS(err_of("stages:\n  s: {op: echo, inputs: a}\n"),
                   "t.yaml:2: stage 's': echo: parameter 'inputs' must be a list");
    /* missing required parameter (fetch needs url) */
    if (gr_op_find("fetch"))
        CHECK_CONTAINS(err_of("stages:\n  f: {op: fetch}\n"),
                       "t.yaml:2: stage 'f': fetch: missing required parameter 'url'");
    /* missing reference */
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo}\n  b: {op: echo, inputs: [a, c]}\n"),
                   "t.yaml:3: stage 'b': parameter 'inputs' names 'c', which is neither a stage");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo, after: [x]}\n"),
                   "t.yaml:2: stage 'a': after: 'x' is not a stage");
    /* cycles, including a self-reference */
    e = err_of("stages:\n  a: {op: echo, input: c}\n  b: {op: echo, input: a}\n"
               "  c: {op: echo, inputs: [b]}\n");
    CHECK_CONTAINS(e, "dependency cycle");
    CHECK_CONTAINS(e, "a -> c -> b -> a");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo, input: a}\n"), "dependency cycle: a -> a");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: noop, after: [b]}\n  b: {op: noop, after: [a]}\n"),
                   "dependency cycle");
    /* structure */
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo\n"), "t.yaml:");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo\n"), "YAML syntax");
    CHECK_CONTAINS(err_of(""), "empty file");
    CHECK_CONTAINS(err_of("name: x\n"), "missing 'stages:'");
    CHECK_CONTAINS(err_of("stages: []\n"), "'stages' must be a non-empty mapping");
    CHECK_CONTAINS(err_of("- a\n- b\n"), "a pipeline file is a mapping");
    CHECK_CONTAINS(err_of("stagez: {}\n"), "t.yaml:1: unknown top-level key 'stagez'");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo}\n  a: {op: noop}\n"),
                   "t.yaml:3: duplicate key 'a'");
    CHECK_CONTAINS(err_of("stages:\n  a.b: {op: echo}\n"), "stage id 'a.b' must be");
    CHECK_CONTAINS(err_of("stages:\n  a: echo\n"), "stage 'a': a stage must be a mapping");
    CHECK_CONTAINS(err_of("stages:\n  a: {seconds: 1}\n"), "stage 'a': missing 'op:'");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: noop, retries: -1}\n"),
                   "t.yaml:2: stage 'a': retries must be an integer from 0 to 100");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: noop, timeout: -5}\n"), "timeout must be");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: noop, priority: x}\n"), "priority must be");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo, _inputs: 1}\n"), "reserved");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo, x: .nan}\n"), "no JSON form");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: noop}\n---\nstages: {}\n"),
                   "t.yaml:4: more than one YAML document");
    CHECK_CONTAINS(err_of("base: &b {op: noop}\nstages:\n  a:\n    <<: *b\n"),
                   "merge keys (<<) are not supported");
    /* matrices */
    CHECK_CONTAINS(err_of("stages:\n  a: {op: sleep, matrix: {seconds: 1}}\n"),
                   "t.yaml:2: stage 'a': matrix variable 'seconds' must be a non-empty list");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: sleep, matrix: {secs: [1]}}\n"),
                   "matrix variable 'secs' is not a parameter");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: sleep, seconds: 1, matrix: {seconds: [1]}}\n"),
                   "'seconds' is both a parameter and a matrix variable");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: sleep, matrix: {seconds: [1, 1.0]}}\n"),
                   "two variants are both named 'a[seconds=1]'");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: sleep, matrix: {seconds: [1, x]}}\n"),
                   "stage 'a[seconds=x]': sleep: parameter 'seconds' must be a number");
    CHECK_CONTAINS(
        err_of("stages:\n  a: {op: echo, matrix: {x: [1, 2]}}\n  b: {op: echo, input: a, "
               "matrix: {x: [3]}}\n"),
        "t.yaml:3: stage 'b': its inputs' matrix variables never agree");
    /* a matrix too large is refused before anything is built */
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo, matrix: {a: [1,2,3,4,5,6,7,8,9,10], b: "
                          "[1,2,3,4,5,6,7,8,9,10], c: [1,2,3,4,5,6,7,8,9,10], d: "
                          "[1,2,3,4,5,6,7,8,9,10], e: [1,2,3,4,5,6,7,8,9,10], f: [1,2]}}\n"),
                   "more than 100000 combinations");
    /* without a file name, messages still have a place */
    gr_pipeline *p = gr_pipeline_parse("stages: 1\n", 10, NULL, NULL, 0);
    CHECK(!p);
    CHECK_CONTAINS(gr_errmsg(), "pipeline:1:");
    CHECK_EQ_INT(gr_errcode(), GR_EINVAL);
    p = gr_pipeline_load("/nonexistent/p.yaml", NULL, 0);
    CHECK(!p && gr_errcode() == GR_ENOTFOUND);
    CHECK_CONTAINS(gr_errmsg(), "/nonexistent/p.yaml");
}

static void test_aliases(void)
{
    /* anchors and aliases are expanded */
    const char *y = "defaults: &d {seconds: 0.25}\n";
    (void)y;
    const char *ok = "stages:\n"
                     "  a: &s {op: sleep, seconds: 0.25}\n"
                     "  b: *s\n";
    gr_pipeline *p = parse(ok);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (p) {
        CHECK_EQ_INT(p->nstages, 2);
        const gr_stage *b = gr_pipeline_find(p, "b");
        CHECK(b && gr_json_get_num(b->params, "seconds", 0) == 0.25);
    }
    gr_pipeline_free(&p);
    /* a billion laughs is stopped by the node budget, quickly */
    gr_buf b = {0};
    gr_buf_puts(&b, "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 10; i++)
        gr_buf_printf(&b,
                      "l%d: &l%d [*l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d]\n", i,
                      i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
    gr_buf_puts(&b, "stages:\n  a: {op: echo, big: *l9}\n");
    p = parse(b.data);
    CHECK(!p);
    CHECK_CONTAINS(gr_errmsg(), "more than 1000000 nodes");
    gr_pipeline_free(&p);
    gr_buf_free(&b);
}

static void test_scalars(void)
{
    const char *y = "stages:\n"
                    "  a:\n"
                    "    op: echo\n"
                    "    i: 42\n"
                    "    neg: -7\n"
                    "    hex: 0x1F\n"
                    "    f: 1.0\n"
                    "    e: 1e-3\n"
                    "    t: true\n"
                    "    n: ~\n"
                    "    s: \"42\"\n"
                    "    y: yes\n"
                    "    big: 123456789012345678901234\n"
                    "    list: [1, two, 3.5]\n";
    gr_pipeline *p = parse(y);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (!p) return;
    const gr_json *q = p->stages[0].params;
    const gr_json *v;
    CHECK((v = gr_json_get(q, "i")) && v->type == GR_JSON_NUM && v->is_int && v->i == 42);
    CHECK((v = gr_json_get(q, "neg")) && v->is_int && v->i == -7);
    CHECK((v = gr_json_get(q, "hex")) && v->is_int && v->i == 31);
    CHECK((v = gr_json_get(q, "f")) && v->type == GR_JSON_NUM && !v->is_int && v->num == 1.0);
    CHECK((v = gr_json_get(q, "e")) && v->num == 1e-3);
    CHECK((v = gr_json_get(q, "t")) && v->type == GR_JSON_BOOL && v->boolean);
    CHECK((v = gr_json_get(q, "n")) && v->type == GR_JSON_NULL);
    CHECK((v = gr_json_get(q, "s")) && v->type == GR_JSON_STR && !strcmp(v->str, "42"));
    CHECK((v = gr_json_get(q, "y")) && v->type == GR_JSON_STR && !strcmp(v->str, "yes"));
    CHECK((v = gr_json_get(q, "big")) && v->type == GR_JSON_NUM && !v->is_int &&
          fabs(v->num - 1.23456789012345678901234e23) < 1e8);
    CHECK((v = gr_json_get(q, "list")) && v->len == 3 && v->items[1]->type == GR_JSON_STR);
    CHECK((v = gr_json_get(q, "i")) && v->line == 4);
    gr_pipeline_free(&p);
}

static void test_sets_and_vars(void)
{
    const char *y = "name: sweep\n"
                    "vars: {secs: 0.5, tag: run, list: [1, 2]}\n"
                    "stages:\n"
                    "  a: {op: sleep, seconds: \"${secs}\"}\n"
                    "  b: {op: echo, label: \"${tag}-${secs}\", keep: \"$${x}\", l: \"${list}\"}\n"
                    "  c: {op: sleep, matrix: {seconds: [1, 2, 3]}}\n";
    gr_pipeline *p = parse(y);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (p) {
        const gr_stage *a = gr_pipeline_find(p, "a"), *b = gr_pipeline_find(p, "b");
        CHECK(a && gr_json_get_num(a->params, "seconds", 0) == 0.5);
        CHECK(b && !strcmp(gr_json_get_str(b->params, "label", ""), "run-0.5"));
        CHECK(b && !strcmp(gr_json_get_str(b->params, "keep", ""), "${x}"));
        const gr_json *l = b ? gr_json_get(b->params, "l") : NULL;
        CHECK(l && l->type == GR_JSON_ARR && l->len == 2);
        CHECK_EQ_INT(p->nstages, 5);
    }
    gr_pipeline_free(&p);

    const char *sets[] = {"secs=2",     "b.label=hello", "c.seconds=9",
                          "name=other", "a.retries=5",   "b.matrix.z=[1,2]"};
    p = parse_set(y, sets, 6);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (p) {
        CHECK(!strcmp(p->name, "other"));
        const gr_stage *a = gr_pipeline_find(p, "a");
        CHECK(a && gr_json_get_num(a->params, "seconds", 0) == 2 && a->retries == 5);
        /* c's matrix variable is pinned: one stage, plain id */
        const gr_stage *c = gr_pipeline_find(p, "c");
        CHECK(c && gr_json_get_int(c->params, "seconds", 0) == 9);
        CHECK(gr_pipeline_find(p, "c[seconds=1]") == NULL);
        const gr_stage *b2 = gr_pipeline_find(p, "b[z=2]");
        CHECK(b2 && !strcmp(gr_json_get_str(b2->params, "label", ""), "hello"));
        CHECK_EQ_INT(p->nstages, 4);
    }
    gr_pipeline_free(&p);

    CHECK_CONTAINS(set_err(y, "nosuch=1"), "--set nosuch=1: no variable 'nosuch'");
    CHECK_CONTAINS(set_err(y, "zz.x=1"), "--set zz.x=1: no stage 'zz'");
    CHECK_CONTAINS(set_err(y, "novalue"), "--set novalue: expected KEY=VALUE");
    CHECK_CONTAINS(set_err(y, "a.seconds=soon"),
                   "stage 'a': sleep: parameter 'seconds' must be a number");
    CHECK_CONTAINS(set_err(y, "a.bogus=1"), "sleep: unknown parameter 'bogus'");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo, x: \"${nope}\"}\n"),
                   "t.yaml:2: stage 'a': unknown variable '${nope}'");
    CHECK_CONTAINS(err_of("vars: {l: [1]}\nstages:\n  a: {op: echo, x: \"v${l}\"}\n"),
                   "variable 'l' is a array");
    CHECK_CONTAINS(err_of("stages:\n  a: {op: echo, x: \"${open\"}\n"), "unterminated");
}

static int to_path(void *ud, const char *param, const char *ref, char **repl)
{
    int *n = ud;
    (*n)++;
    if (!strcmp(ref, "bad")) return gr_seterr(GR_ENOTFOUND, "%s: %s missing", param, ref);
    char buf[128];
    snprintf(buf, sizeof buf, "/store/%s", ref);
    *repl = strdup(buf);
    return 0;
}

static void test_map_inputs(void)
{
    const gr_op *echo = gr_op_find("echo");
    CHECK(echo != NULL);
    if (!echo) return;
    CHECK_EQ_INT(gr_param_input_kind(echo, "input"), GR_P_INPUT);
    CHECK_EQ_INT(gr_param_input_kind(echo, "inputs"), GR_P_INPUTS);
    CHECK_EQ_INT(gr_param_input_kind(echo, "label"), 0);
    const char *js = "{\"input\":\"x\",\"inputs\":[\"y\",\"z\"],\"label\":\"w\"}";
    gr_json *pj = gr_json_parse(js, strlen(js), NULL);
    int n = 0;
    gr_json *m = gr_params_map_inputs(echo, pj, to_path, &n);
    CHECK(m != NULL);
    CHECK_EQ_INT(n, 3);
    char *c = gr_jsonb_canon(m);
    CHECK(c && !strcmp(c, "{\"input\":\"/store/x\",\"inputs\":[\"/store/y\",\"/store/z\"],"
                          "\"label\":\"w\"}"));
    free(c);
    /* the original is untouched */
    CHECK(!strcmp(gr_json_get_str(pj, "input", ""), "x"));
    gr_json_free(m);
    const char *bad = "{\"inputs\":[\"y\",\"bad\"]}";
    gr_json *pb = gr_json_parse(bad, strlen(bad), NULL);
    CHECK(gr_params_map_inputs(echo, pb, to_path, &n) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "inputs: bad missing");
    gr_json_free(pb);
    gr_json_free(pj);
}

static void test_jsonb(void)
{
    const char *a = "{\"b\":[1,2.5,\"x\\u0001\"],\"a\":{\"z\":null,\"y\":true},\"c\":-0.0,"
                    "\"d\":1e300,\"e\":3.0}";
    const char *b = "{ \"a\" : {\"y\":true, \"z\":null}, \"e\":3, \"d\":1e300, \"c\":0,"
                    "\"b\":[1, 2.5, \"x\\u0001\"] }";
    gr_json *ja = gr_json_parse(a, strlen(a), NULL), *jb = gr_json_parse(b, strlen(b), NULL);
    CHECK(ja && jb);
    CHECK(gr_jsonb_equal(ja, jb));
    char *ca = gr_jsonb_canon(ja), *cb = gr_jsonb_canon(jb);
    CHECK(ca && cb && !strcmp(ca, cb));
    CHECK_MSG(ca && !strcmp(ca, "{\"a\":{\"y\":true,\"z\":null},\"b\":[1,2.5,\"x\\u0001\"],\"c\":0,"
                                "\"d\":1e+300,\"e\":3}"),
              "%s", ca ? ca : "(null)");
    /* the canonical form parses back to an equal tree */
    gr_json *back = ca ? gr_json_parse(ca, strlen(ca), NULL) : NULL;
    CHECK(back && gr_jsonb_equal(back, ja));
    gr_json *cp = gr_jsonb_copy(ja);
    CHECK(cp && gr_jsonb_equal(cp, ja));
    CHECK(gr_jsonb_set(cp, "a", gr_jsonb_int(5)) == 0);
    CHECK(!gr_jsonb_equal(cp, ja));
    CHECK(!strcmp(cp->keys[1], "a")); /* replaced in place */
    CHECK(gr_jsonb_del(cp, "b") == 1 && gr_jsonb_del(cp, "b") == 0);
    CHECK(gr_jsonb_set(cp, "new", gr_jsonb_str("v")) == 0);
    char *cc = gr_jsonb_canon(cp);
    CHECK(cc && !strcmp(cc, "{\"a\":5,\"c\":0,\"d\":1e+300,\"e\":3,\"new\":\"v\"}"));
    /* builders */
    gr_json *arr = gr_jsonb_arr();
    CHECK(gr_jsonb_push(arr, gr_jsonb_num(0.1)) == 0 && gr_jsonb_push(arr, gr_jsonb_bool(0)) == 0);
    CHECK(gr_jsonb_push(arr, gr_jsonb_null()) == 0);
    CHECK(gr_jsonb_push(arr, gr_jsonb_strn("a\0b", 3)) == 0);
    CHECK(gr_jsonb_push(cp, gr_jsonb_null()) == GR_EINVAL); /* not an array: value freed */
    char *carr = gr_jsonb_canon(arr);
    CHECK(carr && !strcmp(carr, "[0.1,false,null,\"a\\u0000b\"]"));
    gr_json *nan = gr_jsonb_num(NAN);
    gr_buf nb = {0};
    CHECK(gr_jsonb_write(&nb, nan) == GR_EINVAL);
    gr_buf_free(&nb);
    gr_json_free(nan);
    free(carr);
    free(cc);
    free(ca);
    free(cb);
    gr_json_free(arr);
    gr_json_free(cp);
    gr_json_free(back);
    gr_json_free(ja);
    gr_json_free(jb);
}

/* The schema file is JSON, names every stage key the parser reserves, and
 * every example pipeline in the repository parses (when its ops are built). */
static void test_schema_and_examples(void)
{
    gr_json *sc = gr_json_parse_file(GRAFT_SOURCE_DIR "/schemas/pipeline.schema.json");
    CHECK_MSG(sc != NULL, "%s", gr_errmsg());
    const gr_json *props =
        gr_json_get(gr_json_get(gr_json_get(sc, "definitions"), "stage"), "properties");
    static const char *const keys[] = {"op", "retries", "timeout", "priority", "after", "matrix"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        CHECK_MSG(gr_json_get(props, keys[i]) != NULL, "schema lacks stage key %s", keys[i]);
    const gr_json *en = gr_json_get(
        gr_json_get(gr_json_get(gr_json_get(props, "matrix"), "propertyNames"), "not"), "enum");
    CHECK(en && en->len == 6);
    /* the keys the schema reserves are refused as matrix variables by the parser */
    for (size_t i = 0; en && i < en->len; i++) {
        char y[256];
        snprintf(y, sizeof y, "stages:\n  a: {op: echo, matrix: {%s: [1]}}\n", en->items[i]->str);
        const char *e = err_of(y);
        CHECK_MSG(*e, "matrix variable %s accepted", en->items[i]->str);
    }
    gr_json_free(sc);

    FILE *ls = popen("ls " GRAFT_SOURCE_DIR "/examples/*.yaml 2>/dev/null", "r");
    char path[4096];
    int n = 0;
    while (ls && fgets(path, sizeof path, ls)) {
        path[strcspn(path, "\n")] = 0;
        gr_pipeline *p = gr_pipeline_load(path, NULL, 0);
        if (!p && strstr(gr_errmsg(), "unknown op")) {
            printf("note: %s uses an op this build lacks: %s\n", path, gr_errmsg());
            continue;
        }
        CHECK_MSG(p != NULL, "%s", gr_errmsg());
        if (p) CHECK(topo_ok(p));
        gr_pipeline_free(&p);
        n++;
    }
    if (ls) pclose(ls);
    CHECK(n >= 2); /* at least the test-op examples */
}

/* Pipeline text with n explicit stages s0..s(n-1) (s_i maps over s_(i-1)
 * for odd i, the rest are roots) and a fan-in z over all of them, by
 * input list and by after:. */
static char *explicit_stages(size_t n)
{
    gr_buf b = {0};
    gr_buf_puts(&b, "stages:\n");
    for (size_t i = 0; i < n; i++) {
        if (i % 2)
            gr_buf_printf(&b, "  s%zu: {op: echo, input: s%zu, k: %zu}\n", i, i - 1, i);
        else
            gr_buf_printf(&b, "  s%zu: {op: echo, k: %zu}\n", i, i);
    }
    gr_buf_puts(&b, "  z: {op: noop, inputs: [");
    for (size_t i = 0; i < n; i++) gr_buf_printf(&b, "%ss%zu", i ? ", " : "", i);
    gr_buf_puts(&b, "]}\n  y: {op: noop, after: [");
    for (size_t i = n; i-- > 0;) gr_buf_printf(&b, "s%zu, ", i);
    gr_buf_puts(&b, "z]}\n");
    return gr_buf_take(&b);
}

/* A matrix of n values, a stage mapped over it (n variants), one reducing
 * it and one mapping over the map with the reduce in its list (zip + fan-in
 * per variant). */
static char *matrix_stages(size_t n)
{
    gr_buf b = {0};
    gr_buf_puts(&b, "stages:\n  a: {op: echo, matrix: {k: [");
    for (size_t i = 0; i < n; i++) gr_buf_printf(&b, "%s%zu", i ? ", " : "", i);
    gr_buf_puts(&b, "]}}\n"
                    "  b: {op: echo, input: a}\n"
                    "  c: {op: noop, inputs: [b]}\n"
                    "  d: {op: echo, input: b, inputs: [c, a]}\n");
    return gr_buf_take(&b);
}

static double parse_seconds(const char *y, gr_pipeline **out)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    *out = parse(y);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}

/* The explicit pipeline of n stages, checked stage by stage. */
static void check_explicit(const gr_pipeline *p, size_t n)
{
    CHECK_EQ_INT(p->nstages, n + 2);
    if (p->nstages != n + 2) return;
    /* file order is already topological: kept as is */
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        char id[32], up[32];
        snprintf(id, sizeof id, "s%zu", i);
        snprintf(up, sizeof up, "s%zu", i - 1);
        const gr_stage *s = &p->stages[i];
        ok = !strcmp(s->id, id) && s->ndeps == (i % 2) &&
             (!(i % 2) ||
              (!strcmp(s->deps[0], up) && !strcmp(gr_json_get_str(s->params, "input", ""), up))) &&
             gr_json_get_int(s->params, "k", -1) == (int64_t)i;
        CHECK_MSG(ok, "stage %zu is %s", i, s->id);
    }
    const gr_stage *z = &p->stages[n], *y = &p->stages[n + 1];
    const gr_json *in = gr_json_get(z->params, "inputs");
    CHECK(!strcmp(z->id, "z") && z->ndeps == n && in && in->len == n);
    CHECK(!strcmp(y->id, "y") && y->ndeps == n + 1);
    for (size_t i = 0; ok && in && in->len == n && z->ndeps == n && y->ndeps == n + 1 && i < n;
         i++) {
        char id[32];
        snprintf(id, sizeof id, "s%zu", i);
        ok = !strcmp(in->items[i]->str, id) && !strcmp(z->deps[i], id) &&
             !strcmp(y->deps[n - 1 - i], id);
        CHECK_MSG(ok, "fan-in item %zu", i);
    }
    if (y->ndeps == n + 1) CHECK(!strcmp(y->deps[n], "z"));
}

/* The matrix pipeline of n values: a[k=i], b[k=i], c, d[k=i]. */
static void check_matrix(const gr_pipeline *p, size_t n)
{
    CHECK_EQ_INT(p->nstages, 3 * n + 1);
    if (p->nstages != 3 * n + 1) return;
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        char a[48], b[48], d[48];
        snprintf(a, sizeof a, "a[k=%zu]", i);
        snprintf(b, sizeof b, "b[k=%zu]", i);
        snprintf(d, sizeof d, "d[k=%zu]", i);
        const gr_stage *sa = &p->stages[i], *sb = &p->stages[n + i],
                       *sd = &p->stages[2 * n + 1 + i];
        const gr_json *din = gr_json_get(sd->params, "inputs");
        ok = !strcmp(sa->id, a) && sa->ndeps == 0 && !strcmp(sb->id, b) && sb->ndeps == 1 &&
             !strcmp(sb->deps[0], a) && !strcmp(sd->id, d) && sd->ndeps == 3 &&
             !strcmp(gr_json_get_str(sd->params, "input", ""), b) && din && din->len == 2 &&
             !strcmp(din->items[0]->str, "c") && !strcmp(din->items[1]->str, a);
        CHECK_MSG(ok, "variant %zu", i);
    }
    const gr_stage *c = &p->stages[2 * n];
    const gr_json *cin = gr_json_get(c->params, "inputs");
    CHECK(!strcmp(c->id, "c") && c->ndeps == n && cin && cin->len == n);
    for (size_t i = 0; ok && cin && cin->len == n && i < n; i++) {
        char b[48];
        snprintf(b, sizeof b, "b[k=%zu]", i);
        ok = !strcmp(cin->items[i]->str, b) && !strcmp(c->deps[i], b);
        CHECK_MSG(ok, "reduce item %zu", i);
    }
}

/* 20,000 stages (or matrix values) parse as they should, in time near
 * linear in their number: the broker parses on its event loop, and parsing
 * used to be quadratic (20,000 explicit stages took 3.5 s, a 6,000-value
 * matrix with a map 20 s, in a RelWithDebInfo build). The bound is loose,
 * 10x the size may take 50x the time (quadratic would be 100x), so a busy
 * machine does not fail it; the best of a few runs is compared. */
static void test_scaling(void)
{
    char *(*gen[])(size_t) = {explicit_stages, matrix_stages};
    void (*check[])(const gr_pipeline *, size_t) = {check_explicit, check_matrix};
    const char *what[] = {"explicit stages", "matrix values"};
    for (size_t g = 0; g < 2; g++) {
        double best[2] = {1e9, 1e9};
        size_t sizes[2] = {2000, 20000};
        for (size_t s = 0; s < 2; s++) {
            char *y = gen[g](sizes[s]);
            CHECK(y != NULL);
            if (!y) return;
            for (int rep = 0; rep < 3; rep++) {
                gr_pipeline *p;
                double t = parse_seconds(y, &p);
                CHECK_MSG(p != NULL, "%s", gr_errmsg());
                if (!p) break;
                if (t < best[s]) best[s] = t;
                if (rep == 0) check[g](p, sizes[s]);
                gr_pipeline_free(&p);
                if (s == 0) continue;
                if (best[1] < 50 * best[0] + 0.05) break; /* no need for more runs */
            }
            free(y);
        }
        printf("%s: 2,000 in %.4f s, 20,000 in %.4f s (x%.1f)\n", what[g], best[0], best[1],
               best[1] / best[0]);
        CHECK_MSG(best[1] < 50 * best[0] + 0.05, "%s: 20,000 took %.3f s, 2,000 %.3f s", what[g],
                  best[1], best[0]);
    }
}

/* Whole nodes from prebuilt arrays: members in order, lookups and the
 * canonical form as for nodes built one member at a time. */
static void test_jsonb_take(void)
{
    gr_json **items = calloc(3, sizeof *items);
    char **keys = calloc(3, sizeof *keys);
    CHECK(items && keys);
    if (!items || !keys) return;
    items[0] = gr_jsonb_int(1);
    items[1] = gr_jsonb_str("x");
    items[2] = gr_jsonb_arr_take(NULL, 0);
    keys[0] = strdup("b");
    keys[1] = strdup("a");
    keys[2] = strdup("long key");
    gr_json *o = gr_jsonb_obj_take(keys, items, 3);
    CHECK(o && o->type == GR_JSON_OBJ && o->len == 3);
    if (!o) return;
    CHECK(!strcmp(o->keys[0], "b") && o->keylens[2] == 8);
    CHECK_EQ_INT(gr_json_get_int(o, "b", 0), 1);
    const gr_json *e = gr_json_get(o, "long key");
    CHECK(e && e->type == GR_JSON_ARR && e->len == 0);
    CHECK(gr_jsonb_set(o, "c", gr_jsonb_null()) == 0 && o->len == 4); /* grows as usual */
    char *c = gr_jsonb_canon(o);
    CHECK(c && !strcmp(c, "{\"a\":\"x\",\"b\":1,\"c\":null,\"long key\":[]}"));
    free(c);
    gr_json_free(o);
}

/* A mapping of many keys (found by hash rather than a scan) still reports
 * a repeated key with its line, and an empty input list is a list of none. */
static void test_large_mappings(void)
{
    gr_buf b = {0};
    gr_buf_puts(&b, "stages:\n");
    for (int i = 0; i < 40; i++) gr_buf_printf(&b, "  s%d: {op: echo}\n", i % 30);
    CHECK_CONTAINS(err_of(b.data), "t.yaml:32: duplicate key 's0'");
    gr_buf_free(&b);
    gr_buf_puts(&b, "stages:\n  a: {op: echo, ");
    for (int i = 0; i < 20; i++) gr_buf_printf(&b, "p%d: %d, ", i, i);
    gr_buf_puts(&b, "p7: 1}\n");
    CHECK_CONTAINS(err_of(b.data), "t.yaml:2: duplicate key 'p7'");
    gr_buf_free(&b);
    /* many variables (looked up by hash) */
    gr_buf_puts(&b, "vars: {");
    for (int i = 0; i < 30; i++) gr_buf_printf(&b, "%sv%d: %d", i ? ", " : "", i, 100 + i);
    gr_buf_puts(&b, "}\nstages:\n  a: {op: echo, k: \"${v17}\", s: \"x${v3}y${v29}\"}\n");
    gr_pipeline *p = parse(b.data);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (p) {
        CHECK_EQ_INT(gr_json_get_int(p->stages[0].params, "k", 0), 117);
        CHECK(!strcmp(gr_json_get_str(p->stages[0].params, "s", ""), "x103y129"));
    }
    gr_pipeline_free(&p);
    gr_buf_puts(&b, "  b: {op: echo, k: \"${v30}\"}\n");
    CHECK_CONTAINS(err_of(b.data),
                   "t.yaml:4: stage 'b': unknown variable '${v30}' (declare it under vars:)");
    gr_buf_free(&b);
    p = parse("stages:\n  a: {op: echo}\n  z: {op: noop, inputs: []}\n");
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (p) {
        const gr_stage *z = gr_pipeline_find(p, "z");
        const gr_json *in = z ? gr_json_get(z->params, "inputs") : NULL;
        CHECK(in && in->type == GR_JSON_ARR && in->len == 0 && z->ndeps == 0);
    }
    gr_pipeline_free(&p);
}

int main(void)
{
    RUN(test_dag_order);
    RUN(test_matrix_map_reduce);
    RUN(test_zip_and_partial_reduce);
    RUN(test_matrix_over_inputs_and_after);
    RUN(test_artifacts_and_uris);
    RUN(test_errors);
    RUN(test_aliases);
    RUN(test_scalars);
    RUN(test_sets_and_vars);
    RUN(test_map_inputs);
    RUN(test_jsonb);
    RUN(test_schema_and_examples);
    RUN(test_jsonb_take);
    RUN(test_large_mappings);
    RUN(test_scaling);
    TEST_MAIN_END();
}
