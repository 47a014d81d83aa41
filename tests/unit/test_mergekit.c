/* Tests for gr_mergekit: mergekit YAML configs into merge-op parameters,
 * the same merge as the equivalent pipeline stage, and bad configs named by
 * file, line and key. */
#include "gr_jsonb.h"
#include "gr_mergekit.h"
#include "gr_test.h"
#include "test_surgery_util.h"

static char *tmp;

static gr_json *parse(const char *yaml)
{
    return gr_mergekit_parse(yaml, strlen(yaml), "cfg.yml");
}

static void expect_params(const char *yaml, const char *json)
{
    gr_json *got = parse(yaml), *want = gr_json_parse(json, strlen(json), "want");
    CHECK_MSG(got != NULL, "%s", gr_errmsg());
    CHECK(want != NULL);
    if (got && want) {
        char *a = gr_jsonb_canon(got), *b = gr_jsonb_canon(want);
        CHECK_MSG(gr_jsonb_equal(got, want), "\n got  %s\n want %s", a, b);
        free(a), free(b);
    }
    gr_json_free(got);
    gr_json_free(want);
}

static void test_mapping(void)
{
    expect_params(
        "merge_method: ties\n"
        "base_model: /m/base\n"
        "models:\n"
        "  - model: /m/base\n"
        "  - model: /m/a\n"
        "    parameters:\n"
        "      weight: 1.0\n"
        "      density: [0.2, 0.8]\n"
        "  - model: /m/b\n"
        "    parameters:\n"
        "      weight: 0.5\n"
        "      density:\n"
        "        - filter: mlp\n"
        "          value: 0.5\n"
        "        - value: 0.3\n"
        "parameters:\n"
        "  normalize: true\n"
        "  int8_mask: true\n"
        "  lambda: 1.2\n"
        "dtype: float32\n"
        "out_dtype: bfloat16\n"
        "tokenizer_source: base\n",
        "{\"method\":\"ties\",\"base\":\"/m/base\",\"models\":[\"/m/a\",\"/m/b\"],"
        "\"per_model\":[{\"weight\":1.0,\"density\":[0.2,0.8]},"
        "{\"weight\":0.5,\"density\":[{\"filter\":\"mlp\",\"value\":0.5},{\"value\":0.3}]}],"
        "\"normalize\":true,\"lambda\":1.2,\"dtype\":\"bfloat16\"}");
    /* linear keeps a listed base as one of the averaged models */
    expect_params("merge_method: linear\nbase_model: b\nmodels:\n"
                  "  - {model: b, parameters: {weight: 1}}\n"
                  "  - {model: c, parameters: {weight: 3}}\n"
                  "dtype: float16\ntokenizer_source: c\nseed: 4\n",
                  "{\"method\":\"linear\",\"base\":\"b\",\"models\":[\"b\",\"c\"],"
                  "\"per_model\":[{\"weight\":1},{\"weight\":3}],\"dtype\":\"float16\","
                  "\"tokenizer_source\":\"c\",\"seed\":4}");
    /* slerp with a layer gradient for t; rescale false is none */
    expect_params("merge_method: slerp\nbase_model: x\nmodels:\n  - model: x\n  - model: y\n"
                  "parameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5, 1]\n"
                  "    - value: 0.5\n",
                  "{\"method\":\"slerp\",\"base\":\"x\",\"models\":[\"y\"],\"per_model\":[{}],"
                  "\"t\":[{\"filter\":\"self_attn\",\"value\":[0,0.5,1]},{\"value\":0.5}]}");
    expect_params("merge_method: dare_linear\nbase_model: x\nmodels:\n  - model: y\n"
                  "    parameters: {weight: 1, density: 0.4}\nparameters: {rescale: false}\n",
                  "{\"method\":\"dare_linear\",\"base\":\"x\",\"models\":[\"y\"],"
                  "\"per_model\":[{\"weight\":1,\"density\":0.4}],\"rescale\":\"none\"}");
}

static void expect_error(const char *yaml, const char *msg)
{
    gr_json *j = parse(yaml);
    CHECK_MSG(j == NULL, "accepted: %s", yaml);
    CHECK_CONTAINS(gr_errmsg(), "cfg.yml");
    CHECK_CONTAINS(gr_errmsg(), msg);
    gr_json_free(j);
}

static void test_errors(void)
{
    expect_error("merge_method: passthrough\nmodels:\n  - model: a\n",
                 "cfg.yml:1: merge_method 'passthrough'");
    expect_error("merge_method: ties\nslices:\n  - sources: []\n", "cfg.yml:2: slices");
    expect_error("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\nfoo: 1\n",
                 "cfg.yml:5: unknown key 'foo'");
    expect_error("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n"
                 "      wieght: 1\n",
                 "cfg.yml:6: models[0].parameters: unknown parameter 'wieght'");
    expect_error("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n"
                 "      density: \"0.5\"\n",
                 "cfg.yml:6: models[0].parameters.density");
    expect_error("merge_method: ties\nbase_model: b\nmodels:\n  - model: a+lora\n", "model+lora");
    expect_error(
        "merge_method: ties\nbase_model: b\nmodels:\n  - model: a\ntokenizer_source: union\n",
        "union");
    expect_error("merge_method: ties\nbase_model: b\nmodels: [\n", "cfg.yml:");
    expect_error("merge_method: ties\nmerge_method: linear\n",
                 "cfg.yml:2: key 'merge_method' given twice");
    expect_error("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n---\nx: 1\n",
                 "more than one YAML document");
    expect_error("models:\n  - model: a\n", "missing key 'merge_method'");
    expect_error("merge_method: ties\nbase_model: b\nmodels:\n  - model: b\n", "only the base");
    expect_error("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\nparameters:\n"
                 "  lambda: big\n",
                 "cfg.yml:6: parameters.lambda must be a number");
    expect_error("", "empty config");
    /* a billion laughs: aliases multiply nodes */
    expect_error("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                 "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                 "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                 "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                 "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                 "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
                 "values (aliases?)");
}

/* graft merge CONFIG and the pipeline's merge stage give the same bytes. */
static void test_same_as_pipeline(void)
{
    static const tspec T[] = {
        {"lm_head.weight", GR_DT_BF16, 2, {9, 4}},
        {"model.layers.0.mlp.up_proj.weight", GR_DT_BF16, 2, {5, 4}},
        {"model.layers.1.mlp.up_proj.weight", GR_DT_BF16, 2, {5, 4}},
        {"model.layers.1.self_attn.q_proj.weight", GR_DT_F16, 2, {4, 4}},
        {"model.norm.weight", GR_DT_F32, 1, {4}},
    };
    const char *dirs[3] = {strdup(ts_path(tmp, "base")), strdup(ts_path(tmp, "a")),
                           strdup(ts_path(tmp, "b"))};
    for (int m = 0; m < 3; m++) {
        float *d[5];
        for (int t = 0; t < 5; t++) {
            uint64_t n = ts_nelem(&T[t]);
            d[t] = malloc(n * 4);
            ts_gauss(d[t], n, 1, T[t].name, 0, 1);
            float *e = malloc(n * 4);
            ts_gauss(e, n, 2 + m, T[t].name, 0, m ? 0.1 : 0);
            for (uint64_t k = 0; k < n; k++) d[t][k] += e[k];
            free(e);
        }
        ts_write(dirs[m], T, 5, d, NULL, "{\"model_type\": \"llama\", \"num_hidden_layers\": 2}",
                 0);
        for (int t = 0; t < 5; t++) free(d[t]);
    }
    char yaml[4096], pj[4096];
    snprintf(yaml, sizeof yaml,
             "merge_method: dare_ties\n"
             "base_model: %s\n"
             "models:\n"
             "  - model: %s\n"
             "  - model: %s\n"
             "    parameters:\n"
             "      weight: 1.0\n"
             "      density: [0.3, 0.9]\n"
             "  - model: %s\n"
             "    parameters:\n"
             "      weight: [{filter: q_proj, value: 2}, {value: 0.5}]\n"
             "      density: 0.6\n"
             "parameters:\n"
             "  lambda: 0.9\n"
             "dtype: bfloat16\n"
             "seed: 11\n",
             dirs[0], dirs[0], dirs[1], dirs[2]);
    gr_json *p = gr_mergekit_parse(yaml, strlen(yaml), "same.yml");
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (!p) return;
    char *canon = gr_jsonb_canon(p);
    const char *o1 = strdup(ts_path(tmp, "from-yaml")), *o2 = strdup(ts_path(tmp, "from-stage"));
    int rc = ts_run_op("merge", canon, o1, 2, NULL);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    snprintf(pj, sizeof pj,
             "{\"method\":\"dare_ties\",\"base\":\"%s\",\"models\":[\"%s\",\"%s\"],\"seed\":11,"
             "\"per_model\":[{\"weight\":1,\"density\":[0.3,0.9]},"
             "{\"weight\":[{\"filter\":\"q_proj\",\"value\":2},{\"value\":0.5}],\"density\":0.6}],"
             "\"lambda\":0.9,\"dtype\":\"bfloat16\"}",
             dirs[0], dirs[1], dirs[2]);
    rc = ts_run_op("merge", pj, o2, 3, NULL);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    /* tensor by tensor, bit for bit (what `graft tensors diff` checks) */
    gr_sparse *a = gr_sparse_open(o1), *b = gr_sparse_open(o2);
    CHECK(a && b && gr_sparse_count(a) == 5 && gr_sparse_count(b) == 5);
    for (size_t i = 0; a && b && i < 5; i++) {
        const gr_sparse_tensor *ta = gr_sparse_at(a, i), *tb = gr_sparse_at(b, i);
        const gr_tensor *ra = gr_sparse_dense(a, ta), *rb = gr_sparse_dense(b, tb);
        CHECK(!strcmp(ta->name, tb->name) && ta->dtype == GR_DT_BF16 && ra->nbytes == rb->nbytes &&
              !memcmp(ra->data, rb->data, ra->nbytes));
    }
    gr_sparse_close(&a);
    gr_sparse_close(&b);
    free(canon);
    gr_json_free(p);
    for (int m = 0; m < 3; m++) free((char *)dirs[m]);
    free((char *)o1), free((char *)o2);
}

int main(void)
{
    tmp = ts_tmpdir("graft-test-mergekit-");
    RUN(test_mapping);
    RUN(test_errors);
    RUN(test_same_as_pipeline);
    gr_fs_rmrf(tmp);
    free(tmp);
    TEST_MAIN_END();
}
