/* Tests for gr_mparam: gradients and filters against values worked out by
 * hand from the formulas in merge-methods.md, layer positions from tensor
 * names, and rejection of malformed parameter values. */
#include "gr_err.h"
#include "gr_json.h"
#include "gr_mparam.h"
#include "gr_test.h"

static gr_mparam *from(const char *json)
{
    gr_json *j = gr_json_parse(json, strlen(json), "test");
    if (!j) return NULL;
    gr_mparam *p = gr_mparam_from_json(j, "models[0].parameters.weight");
    gr_json_free(j);
    return p;
}

static void test_interp(void)
{
    const double two[2] = {0, 1}, three[3] = {1, 2, 4}, one[1] = {7};
    CHECK_NEAR(gr_mparam_interp(two, 2, 0.25), 0.25, 1e-15);
    /* s = 0.75 * 2 = 1.5, i = 1, f = 0.5: 0.5 * 2 + 0.5 * 4 = 3 */
    CHECK_NEAR(gr_mparam_interp(three, 3, 0.75), 3.0, 1e-15);
    /* s = 0.2, i = 0, f = 0.2: 0.8 * 1 + 0.2 * 2 = 1.2 */
    CHECK_NEAR(gr_mparam_interp(three, 3, 0.1), 1.2, 1e-15);
    CHECK_NEAR(gr_mparam_interp(three, 3, 1.0), 4.0, 0);
    CHECK_NEAR(gr_mparam_interp(three, 3, 0.0), 1.0, 0);
    CHECK_NEAR(gr_mparam_interp(three, 3, 0.5), 2.0, 0);
    CHECK_NEAR(gr_mparam_interp(one, 1, 0.6), 7.0, 0);
    CHECK_NEAR(gr_mparam_interp(three, 3, -1), 1.0, 0);
    CHECK_NEAR(gr_mparam_interp(three, 3, 2), 4.0, 0);
}

static void test_layers(void)
{
    long l = -1;
    CHECK(gr_mparam_layer("model.layers.12.mlp.up_proj.weight", &l) == 1 && l == 12);
    CHECK(gr_mparam_layer("transformer.h.3.attn.c_attn.weight", &l) == 1 && l == 3);
    CHECK(gr_mparam_layer("bert.encoder.layer.0.attention.self.query.weight", &l) == 1 && l == 0);
    CHECK(gr_mparam_layer("blocks.7", &l) == 1 && l == 7);
    CHECK(gr_mparam_layer("model.embed_tokens.weight", &l) == 0);
    CHECK(gr_mparam_layer("lm_head.weight", &l) == 0);
    CHECK(gr_mparam_layer("model.norm.weight", &l) == 0);
    CHECK(gr_mparam_layer("model.layers.x1.mlp", &l) == 0);
    CHECK(gr_mparam_layer("model.layers.1234567890.mlp", &l) == 0);
    CHECK(gr_mparam_layer("model.mm_projector.0.weight", &l) == 0);
    CHECK(gr_mparam_layer("", &l) == 0);
    CHECK(gr_mparam_layer("layers.", &l) == 0);

    CHECK_NEAR(gr_mparam_t("model.layers.0.self_attn.q_proj.weight", 32), 0.0, 0);
    CHECK_NEAR(gr_mparam_t("model.layers.31.self_attn.q_proj.weight", 32), 1.0, 0);
    CHECK_NEAR(gr_mparam_t("model.layers.8.self_attn.q_proj.weight", 32), 8.0 / 31.0, 1e-15);
    CHECK_NEAR(gr_mparam_t("model.embed_tokens.weight", 32), 0.0, 0);
    CHECK_NEAR(gr_mparam_t("model.layers.0.mlp.weight", 1), 1.0, 0);

    const char *names[] = {"model.embed_tokens.weight", "model.layers.0.mlp.w",
                           "model.layers.27.mlp.w", "model.layers.3.mlp.w", "lm_head.weight"};
    CHECK_EQ_INT(gr_mparam_count_layers(names, 5), 28);
    CHECK_EQ_INT(gr_mparam_count_layers(names, 1), 0);
}

static void test_json_values(void)
{
    double v;
    gr_mparam *p = from("0.3");
    CHECK(p && gr_mparam_eval(p, "anything", 0.9, &v) == 0 && v == 0.3);
    gr_mparam_destroy(&p);
    CHECK(p == NULL);

    /* gradient over 32 layers, layer 12: t = 12/31, s = 4t = 1.5483871,
     * i = 1, f = 0.5483871: 0.4516129 * 0.5 + 0.5483871 * 0.3 = 0.39032258 */
    const char *slerp_t = "[{\"filter\": \"self_attn\", \"value\": [0, 0.5, 0.3, 0.7, 1]},"
                          " {\"filter\": \"mlp\", \"value\": [1, 0.5, 0.7, 0.3, 0]},"
                          " {\"value\": 0.5}]";
    p = from(slerp_t);
    CHECK(p != NULL);
    CHECK(gr_mparam_eval_tensor(p, "model.layers.12.self_attn.o_proj.weight", 32, &v) == 0);
    CHECK_NEAR(v, 0.3903225806, 1e-9);
    /* mlp at layer 12: 0.4516129 * 0.5 + 0.5483871 * 0.7 = 0.60967742 */
    CHECK(gr_mparam_eval_tensor(p, "model.layers.12.mlp.down_proj.weight", 32, &v) == 0);
    CHECK_NEAR(v, 0.6096774194, 1e-9);
    /* outside the layers: the mlp filter does not match the embedding; the
     * catch-all entry gives 0.5 */
    CHECK(gr_mparam_eval_tensor(p, "model.embed_tokens.weight", 32, &v) == 0 && v == 0.5);
    /* first match wins: a name holding both substrings takes self_attn's */
    CHECK(gr_mparam_eval(p, "x.self_attn.mlp", 1.0, &v) == 0 && v == 1.0);
    gr_mparam_destroy(&p);

    p = from("[{\"filter\": \"q_proj\", \"value\": 2}, {\"filter\": \"*\", \"value\": 3}]");
    CHECK(p && gr_mparam_eval(p, "a.k_proj", 0, &v) == 0 && v == 3);
    gr_mparam_destroy(&p);

    p = from("[{\"filter\": \"q_proj\", \"value\": 2}]");
    CHECK(p && gr_mparam_eval(p, "a.k_proj", 0, &v) == GR_ENOTFOUND);
    gr_mparam_destroy(&p);

    /* builders */
    p = gr_mparam_filters();
    const double g[2] = {1, 3};
    CHECK(gr_mparam_filters_add(p, "lm_head", gr_mparam_scalar(0)) == 0);
    CHECK(gr_mparam_filters_add(p, NULL, gr_mparam_gradient(g, 2)) == 0);
    CHECK(gr_mparam_eval(p, "lm_head.weight", 0.5, &v) == 0 && v == 0);
    CHECK(gr_mparam_eval(p, "model.layers.1.mlp", 0.5, &v) == 0 && v == 2);
    CHECK(gr_mparam_filters_add(p, "x", gr_mparam_filters()) == GR_EINVAL);
    gr_mparam_destroy(&p);
}

static void test_json_errors(void)
{
    struct {
        const char *json, *msg;
    } bad[] = {
        {"true", "expected a number or a non-empty list of numbers, got bool"},
        {"\"0.5\"", "got string"},
        {"[]", "got an empty list"},
        {"[1, \"2\"]", "[1]: expected a number, got string"},
        {"[1, {\"value\": 1}]", "[1]: expected a number, got object"},
        {"[{\"value\": 1}, 2]", "[1]: a list of {filter, value} entries cannot mix in number"},
        {"[{\"filter\": \"mlp\"}]", "[0]: missing 'value'"},
        {"[{\"filter\": 3, \"value\": 1}]", "[0].filter: expected a string, got number"},
        {"[{\"value\": 1, \"weight\": 2}]", "[0]: unknown key 'weight'"},
        {"[{\"value\": [{\"value\": 1}]}]", "[0].value[0]: expected a number, got object"},
        {"[{\"value\": []}]", "[0].value: expected a number or a non-empty list"},
        {"{\"value\": 1}", "got object"},
        {"null", "got null"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        gr_mparam *p = from(bad[i].json);
        CHECK_MSG(p == NULL, "accepted %s", bad[i].json);
        CHECK_CONTAINS(gr_errmsg(), bad[i].msg);
        CHECK_CONTAINS(gr_errmsg(), "models[0].parameters.weight");
        gr_mparam_destroy(&p);
    }
}

int main(void)
{
    RUN(test_interp);
    RUN(test_layers);
    RUN(test_json_values);
    RUN(test_json_errors);
    TEST_MAIN_END();
}
