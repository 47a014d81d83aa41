/* Tests for gr_model: config.json parsing (llama, mistral, qwen2, gpt2; both
 * forms of the rotary settings; llama3 inverse frequencies against the numpy
 * reference), the fp32 weight layout (fused q/k/v and gate/up, transposed
 * Conv1D), and clear errors for unsupported or inconsistent checkpoints. */
#include "gr_err.h"
#include "gr_json.h"
#include "gr_model.h"
#include "gr_st.h"
#include "gr_test.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = calloc(1, 1 << 16);
    size_t n = fread(s, 1, (1 << 16) - 1, f);
    s[n] = 0;
    fclose(f);
    return s;
}

/* Replaces the first occurrence of a by b in s (heap string). */
static char *replace(char *s, const char *a, const char *b)
{
    char *p = strstr(s, a);
    if (!p) {
        fprintf(stderr, "replace: '%s' not found\n", a);
        return s;
    }
    size_t la = strlen(a), lb = strlen(b), ls = strlen(s);
    char *r = malloc(ls - la + lb + 1);
    memcpy(r, s, (size_t)(p - s));
    memcpy(r + (p - s), b, lb);
    memcpy(r + (p - s) + lb, p + la, ls - (size_t)(p - s) - la + 1);
    free(s);
    return r;
}

static int parse_str(const char *text, gr_model_cfg *c)
{
    gr_json *j = gr_json_parse(text, strlen(text), "config.json");
    if (!j) return -100;
    int rc = gr_model_cfg_parse(j, "m/config.json", c);
    gr_json_free(j);
    return rc;
}

static void test_golden_configs(void)
{
    gr_model_cfg c;
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", fixture("golden/llama-gqa"));
    char *t = read_text(p);
    CHECK(t && parse_str(t, &c) == 0);
    CHECK(!strcmp(c.model_type, "llama") && c.family == GR_FAMILY_LLAMA);
    CHECK(c.vocab == 160 && c.hidden == 64 && c.inter == 176 && c.layers == 2);
    CHECK(c.heads == 4 && c.kv_heads == 2 && c.head_dim == 16 && c.max_pos == 256);
    CHECK(c.norm_eps == 1e-5 && c.rope == GR_ROPE_DEFAULT && c.rope_theta == 10000.0);
    CHECK(!c.tie && !c.qkv_bias && !c.o_bias && !c.mlp_bias && c.act == GR_ACT_SILU);
    CHECK(c.sliding_window == 0);
    free(t);
    snprintf(p, sizeof p, "%s/config.json", fixture("golden/gpt2"));
    t = read_text(p);
    CHECK(t && parse_str(t, &c) == 0);
    CHECK(c.family == GR_FAMILY_GPT2 && c.hidden == 64 && c.inter == 256 && c.heads == 4);
    CHECK(c.kv_heads == 4 && c.head_dim == 16 && c.max_pos == 128 && c.tie);
    CHECK(c.act == GR_ACT_GELU_TANH && c.rope == GR_ROPE_NONE && c.scale_attn && !c.scale_by_layer);
    CHECK(c.qkv_bias && c.o_bias && c.mlp_bias);
    free(t);
}

#define LLAMA_BASE                                                                                 \
    "\"model_type\": \"llama\", \"vocab_size\": 1000, \"hidden_size\": 4096, "                     \
    "\"intermediate_size\": 14336, \"num_hidden_layers\": 32, \"num_attention_heads\": 32, "       \
    "\"num_key_value_heads\": 8, \"max_position_embeddings\": 131072, \"rms_norm_eps\": 1e-05"

static void test_rope_forms(void)
{
    /* Llama 3.1's settings, in the three spellings transformers has used */
    const char *newer = "{" LLAMA_BASE ", \"rope_parameters\": {\"rope_type\": \"llama3\", "
                        "\"rope_theta\": 500000.0, \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                        "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}";
    const char *older = "{" LLAMA_BASE ", \"rope_theta\": 500000.0, \"rope_scaling\": {"
                        "\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                        "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}";
    const char *oldest = "{" LLAMA_BASE ", \"rope_theta\": 500000.0, \"rope_scaling\": {"
                         "\"type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                         "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}";
    gr_model_cfg a, b, c;
    CHECK(parse_str(newer, &a) == 0);
    CHECK(parse_str(older, &b) == 0);
    CHECK(parse_str(oldest, &c) == 0);
    CHECK(a.rope == GR_ROPE_LLAMA3 && a.rope_theta == 500000.0 && a.rope_factor == 8.0);
    CHECK(a.rope_low_freq == 1.0 && a.rope_high_freq == 4.0 && a.rope_orig_max_pos == 8192);
    CHECK(a.head_dim == 128);
    CHECK(memcmp(&a, &b, sizeof a) == 0 && memcmp(&a, &c, sizeof a) == 0);
    /* rope_scaling: null is the default rotation */
    const char *none = "{" LLAMA_BASE ", \"rope_theta\": 1e6, \"rope_scaling\": null}";
    CHECK(parse_str(none, &a) == 0 && a.rope == GR_ROPE_DEFAULT && a.rope_theta == 1e6);
    const char *lin = "{" LLAMA_BASE ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}}";
    CHECK(parse_str(lin, &a) == 0 && a.rope == GR_ROPE_LINEAR && a.rope_factor == 2.0);
    float inv[64], inv0[64];
    gr_model_rope_inv_freq(&a, inv);
    a.rope = GR_ROPE_DEFAULT;
    gr_model_rope_inv_freq(&a, inv0);
    CHECK(inv[0] == 0.5f && fabs(inv[63] - inv0[63] / 2) < 1e-12);
}

/* The llama3 inverse frequencies against forward_ref.py's independent
 * implementation, and the three regimes of the rule. */
static void test_llama3_inv_freq(void)
{
    const char *cfg = "{" LLAMA_BASE ", \"rope_parameters\": {\"rope_type\": \"llama3\", "
                      "\"rope_theta\": 500000.0, \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                      "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}";
    gr_model_cfg c;
    CHECK(parse_str(cfg, &c) == 0);
    float inv[64], def[64];
    gr_model_rope_inv_freq(&c, inv);
    gr_model_cfg d = c;
    d.rope = GR_ROPE_DEFAULT;
    gr_model_rope_inv_freq(&d, def);
    /* high frequencies (wavelength < 8192/4) unchanged, low ones (> 8192/1)
     * divided by 8, the ones in between strictly between the two */
    int n_hi = 0, n_lo = 0, n_mid = 0;
    for (int i = 0; i < 64; i++) {
        double wl = 2 * M_PI / def[i];
        if (wl < 2048)
            n_hi += inv[i] == def[i];
        else if (wl > 8192)
            n_lo += fabs(inv[i] - def[i] / 8) <= 1e-7 * def[i];
        else
            n_mid += inv[i] < def[i] && inv[i] > def[i] / 8;
    }
    CHECK(n_hi > 0 && n_lo > 0 && n_mid > 0 && n_hi + n_lo + n_mid == 64);
    if (system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1")) {
        printf("skip: /usr/bin/python3 has no numpy\n");
        return;
    }
    char tmp[] = "/tmp/graft-model-XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    char p[4096], cmd[8192];
    snprintf(p, sizeof p, "%s/config.json", tmp);
    FILE *f = fopen(p, "w");
    fputs(cfg, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/ref/forward_ref.py invfreq %s",
             GRAFT_SOURCE_DIR, p);
    FILE *pp = popen(cmd, "r");
    char buf[8192] = "";
    size_t n = pp ? fread(buf, 1, sizeof buf - 1, pp) : 0;
    buf[n] = 0;
    if (pp) pclose(pp);
    gr_json *j = gr_json_parse(buf, n, "invfreq");
    CHECK(j && j->type == GR_JSON_ARR && j->len == 64);
    double worst = 0;
    for (size_t i = 0; j && i < j->len && i < 64; i++)
        worst = fmax(worst, fabs(inv[i] - j->items[i]->num) / j->items[i]->num);
    printf("llama3 inv_freq vs numpy reference: max relative error %.3g (%d high, %d medium, "
           "%d low frequencies)\n",
           worst, n_hi, n_mid, n_lo);
    CHECK(worst < 1e-6);
    gr_json_free(j);
    unlink(p);
    rmdir(tmp);
}

static void test_family_defaults(void)
{
    gr_model_cfg c;
    const char *q = "{\"model_type\": \"qwen2\", \"vocab_size\": 10, \"hidden_size\": 8, "
                    "\"intermediate_size\": 16, \"num_hidden_layers\": 4, "
                    "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
                    "\"use_sliding_window\": true, \"sliding_window\": 32, "
                    "\"max_window_layers\": 2, \"rope_theta\": 1000000.0}";
    CHECK(parse_str(q, &c) == 0);
    CHECK(c.qkv_bias && !c.o_bias && !c.mlp_bias && c.head_dim == 4 && !c.tie);
    CHECK(c.sliding_window == 32 && c.sliding_from == 2 && c.rope_theta == 1e6);
    char *q2 = replace(strdup(q), "\"use_sliding_window\": true", "\"use_sliding_window\": false");
    CHECK(parse_str(q2, &c) == 0 && c.sliding_window == 0);
    free(q2);
    const char *m = "{\"model_type\": \"mistral\", \"vocab_size\": 10, \"hidden_size\": 8, "
                    "\"intermediate_size\": 16, \"num_hidden_layers\": 1, "
                    "\"num_attention_heads\": 2, \"num_key_value_heads\": 2, "
                    "\"sliding_window\": null, \"head_dim\": 6}";
    CHECK(parse_str(m, &c) == 0 && c.sliding_window == 0 && c.head_dim == 6 && !c.qkv_bias);
    const char *l = "{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 8, "
                    "\"intermediate_size\": 16, \"num_hidden_layers\": 1, "
                    "\"num_attention_heads\": 2, \"attention_bias\": true, \"mlp_bias\": true, "
                    "\"tie_word_embeddings\": true, \"hidden_act\": \"gelu_pytorch_tanh\"}";
    CHECK(parse_str(l, &c) == 0 && c.qkv_bias && c.o_bias && c.mlp_bias && c.tie);
    CHECK(c.kv_heads == 2 && c.act == GR_ACT_GELU_TANH && c.max_pos == 2048);
    CHECK(c.norm_eps == 1e-6 && c.rope_theta == 10000.0);
}

static void test_config_errors(void)
{
    static const struct {
        const char *json;
        int code;
        const char *msg;
    } bad[] = {
        {"{\"model_type\": \"falcon\"}", GR_EUNSUP, "model_type 'falcon' is not supported"},
        {"{\"vocab_size\": 3}", GR_EINVAL, "missing field 'model_type'"},
        {"[1]", GR_EINVAL, "must be a JSON object"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10}", GR_EINVAL,
         "missing field 'hidden_size'"},
        {"{" LLAMA_BASE ", \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
         GR_EUNSUP, "rope_type 'yarn' is not supported"},
        {"{" LLAMA_BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}}",
         GR_EINVAL, "missing field 'low_freq_factor'"},
        {"{" LLAMA_BASE ", \"rope_scaling\": {\"factor\": 8}}", GR_EINVAL, "rope_type"},
        {"{" LLAMA_BASE ", \"rope_parameters\": {\"rope_type\": \"llama3\", \"factor\": 8, "
         "\"low_freq_factor\": 4, \"high_freq_factor\": 1, "
         "\"original_max_position_embeddings\": 8192}}",
         GR_EINVAL, "low_freq_factor < high_freq_factor"},
        {"{" LLAMA_BASE ", \"hidden_act\": \"tanh\"}", GR_EUNSUP, "hidden_act 'tanh'"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 8, "
         "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
         "\"num_key_value_heads\": 3}",
         GR_EINVAL, "not a multiple of num_key_value_heads"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 9, "
         "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2}",
         GR_EINVAL, "not a multiple of num_attention_heads"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 8, "
         "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
         "\"head_dim\": 5}",
         GR_EINVAL, "head_dim 5 must be even"},
        {"{\"model_type\": \"llama\", \"vocab_size\": \"10\"}", GR_EINVAL,
         "'vocab_size' must be an integer"},
        {"{\"model_type\": \"llama\", \"vocab_size\": -4}", GR_EINVAL, "outside"},
        {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 99999999999}", GR_EINVAL,
         "'hidden_size' is 99999999999, outside"},
        {"{\"model_type\": \"gpt2\", \"vocab_size\": 10, \"n_embd\": 10, \"n_layer\": 1, "
         "\"n_head\": 3}",
         GR_EINVAL, "n_embd 10 is not a multiple of n_head 3"},
        {"{\"model_type\": \"gpt2\", \"vocab_size\": 10, \"n_embd\": 12, \"n_layer\": 1, "
         "\"n_head\": 3, \"activation_function\": \"swiglu\"}",
         GR_EUNSUP, "activation_function 'swiglu'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gr_model_cfg c;
        int rc = parse_str(bad[i].json, &c);
        CHECK_MSG(rc == bad[i].code, "case %zu: rc %d", i, rc);
        CHECK_CONTAINS(gr_errmsg(), bad[i].msg);
        CHECK_CONTAINS(gr_errmsg(), "m/config.json");
    }
}

/* A directory holding the golden llama's weights under a modified config. */
static int make_dir(char *tmp, const char *golden, const char *from, const char *to)
{
    char p[4096], q[4096];
    snprintf(p, sizeof p, "%s/config.json", fixture(golden));
    char *t = read_text(p);
    if (!t) return -1;
    if (from) t = replace(t, from, to);
    snprintf(q, sizeof q, "%s/config.json", tmp);
    FILE *f = fopen(q, "w");
    fputs(t, f);
    fclose(f);
    free(t);
    snprintf(p, sizeof p, "%s/model.safetensors", fixture(golden));
    snprintf(q, sizeof q, "%s/model.safetensors", tmp);
    unlink(q);
    if (p[0] != '/') {
        char cwd[2048];
        char abs[6200];
        if (!getcwd(cwd, sizeof cwd)) return -1;
        snprintf(abs, sizeof abs, "%s/%s", cwd, p);
        return symlink(abs, q);
    }
    return symlink(p, q);
}

static void cleanup(const char *tmp)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", tmp);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", tmp);
    unlink(p);
    rmdir(tmp);
}

static void test_load_errors(void)
{
    char tmp[] = "/tmp/graft-model-XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    static const struct {
        const char *golden, *from, *to;
        int code;
        const char *msg;
    } bad[] = {
        {"golden/llama-gqa", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3", GR_ENOTFOUND,
         "missing tensor 'model.layers.2.input_layernorm.weight'"},
        {"golden/llama-gqa", "\"intermediate_size\": 176", "\"intermediate_size\": 100", GR_EFORMAT,
         "'model.layers.0.mlp.gate_proj.weight' has shape [176, 64], config.json "
         "implies [100, 64]"},
        {"golden/llama-gqa", "\"model_type\": \"llama\"", "\"model_type\": \"qwen2\"", GR_ENOTFOUND,
         "missing tensor 'model.layers.0.self_attn.q_proj.bias'"},
        {"golden/llama-gqa", "\"model_type\": \"llama\"", "\"model_type\": \"gemma\"", GR_EUNSUP,
         "model_type 'gemma' is not supported"},
        {"golden/gpt2", "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false",
         GR_ENOTFOUND, "missing tensor 'lm_head.weight'"},
        {"golden/gpt2", "\"n_positions\": 128", "\"n_positions\": 64", GR_EFORMAT,
         "'transformer.wpe.weight' has shape [128, 64], config.json implies [64, 64]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(make_dir(tmp, bad[i].golden, bad[i].from, bad[i].to) == 0);
        gr_model *m = gr_model_load(tmp);
        CHECK_MSG(m == NULL && gr_errcode() == bad[i].code, "case %zu: code %d", i, gr_errcode());
        CHECK_CONTAINS(gr_errmsg(), bad[i].msg);
        gr_model_destroy(&m);
    }
    cleanup(tmp);
    strcpy(tmp, "/tmp/graft-model-XXXXXX");
    CHECK(mkdtemp(tmp) != NULL);
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", tmp);
    CHECK(make_dir(tmp, "golden/llama-gqa", NULL, NULL) == 0);
    unlink(p); /* weights without config.json */
    gr_model *m = gr_model_load(tmp);
    CHECK(m == NULL);
    CHECK_CONTAINS(gr_errmsg(), "config.json");
    cleanup(tmp);
}

/* The fp32 layout: fused q|k|v and gate|up rows equal the file's tensors;
 * gpt2's Conv1D [in, out] is transposed. */
static void test_layout(void)
{
    /* resident whatever GRAFT_MODEL_STREAM says: this reads the fp32 arena */
    const gr_model_opts res = {.mode = GR_MODEL_RESIDENT};
    gr_model *m = gr_model_load_opts(fixture("golden/llama-gqa"), &res);
    gr_ckpt *ck = gr_ckpt_open(fixture("golden/llama-gqa"));
    CHECK(m && ck);
    if (!m || !ck) goto gpt2;
    const gr_layer_w *L = &gr_model_weights(m)->layer[1];
    static const struct {
        const char *name;
        size_t off;
    } parts[] = {{"model.layers.1.self_attn.q_proj.weight", 0},
                 {"model.layers.1.self_attn.k_proj.weight", 64 * 64},
                 {"model.layers.1.self_attn.v_proj.weight", 64 * 64 + 32 * 64}};
    for (size_t k = 0; k < 3; k++) {
        const gr_tensor *t = gr_ckpt_find(ck, parts[k].name);
        float *buf = malloc(t->nelem * sizeof(float));
        CHECK(gr_tensor_read_f32(t, 0, t->nelem, buf) == 0);
        CHECK(!memcmp(buf, L->wqkv + parts[k].off, t->nelem * sizeof(float)));
        free(buf);
    }
    const gr_tensor *up = gr_ckpt_find(ck, "model.layers.1.mlp.up_proj.weight");
    float *buf = malloc(up->nelem * sizeof(float));
    CHECK(gr_tensor_read_f32(up, 0, up->nelem, buf) == 0);
    CHECK(!memcmp(buf, L->wup + 176 * 64, up->nelem * sizeof(float)));
    free(buf);
    /* embed + lm_head + final norm + 2 layers */
    uint64_t per_layer = 64 + (64 + 32 + 32) * 64 + 64 * 64 + 64 + 3 * 176 * 64;
    CHECK_EQ_INT(gr_model_nparams(m), 2 * 160 * 64 + 64 + 2 * per_layer);
gpt2:
    gr_model_destroy(&m);
    gr_ckpt_close(&ck);
    m = gr_model_load_opts(fixture("golden/gpt2"), &res);
    ck = gr_ckpt_open(fixture("golden/gpt2"));
    CHECK(m && ck);
    if (!m || !ck) goto done;
    const gr_tensor *t = gr_ckpt_find(ck, "transformer.h.0.attn.c_attn.weight"); /* [64, 192] */
    buf = malloc(t->nelem * sizeof(float));
    CHECK(gr_tensor_read_f32(t, 0, t->nelem, buf) == 0);
    const float *w = gr_model_weights(m)->layer[0].wqkv; /* (192, 64) */
    int same = 1;
    for (int i = 0; i < 64; i++)
        for (int o = 0; o < 192; o++) same &= w[o * 64 + i] == buf[i * 192 + o];
    CHECK(same);
    free(buf);
    CHECK(gr_model_weights(m)->lm_head == gr_model_weights(m)->embed); /* tied */
done:
    gr_model_destroy(&m);
    gr_model_destroy(&m);
    gr_ckpt_close(&ck);
}

int main(void)
{
    RUN(test_golden_configs);
    RUN(test_rope_forms);
    RUN(test_llama3_inv_freq);
    RUN(test_family_defaults);
    RUN(test_config_errors);
    RUN(test_load_errors);
    RUN(test_layout);
    TEST_MAIN_END();
}
