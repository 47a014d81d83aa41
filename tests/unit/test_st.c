/* Tests for gr_st / gr_ckpt (reader): the golden checkpoints agree with their
 * config.json, and crafted files break each validation rule of
 * reference/formats.md and are rejected with a message naming file, tensor
 * and rule. The writer has its own file, test_st_write.c. */
#include "gr_err.h"
#include "gr_st.h"
#include "gr_test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/graft-test-st-XXXXXX";

static const char *tpath(const char *name)
{
    static char buf[8][512];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/%s", tmpdir, name);
    return b;
}

/* Writes an 8-byte length (hlen, or `len_override` when not ~0), the header
 * text and data_len bytes of data (value i & 0xFF at data offset i). */
static void craft(const char *path, const char *hdr, size_t hlen, uint64_t len_override,
                  size_t data_len)
{
    FILE *f = fopen(path, "wb");
    uint64_t n = len_override != ~0ull ? len_override : hlen;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(hdr, 1, hlen, f);
    for (size_t i = 0; i < data_len; i++) fputc((int)(i & 0xFF), f);
    fclose(f);
}

static void craft_str(const char *path, const char *hdr, size_t data_len)
{
    craft(path, hdr, strlen(hdr), ~0ull, data_len);
}

/* ---- golden checkpoints: names, shapes and dtypes implied by config.json ---- */

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[2];
} expect_t;

static int add_exp(expect_t *e, int n, const char *name, int ndim, int64_t d0, int64_t d1)
{
    snprintf(e[n].name, sizeof e[n].name, "%s", name);
    e[n].ndim = ndim;
    e[n].shape[0] = d0;
    e[n].shape[1] = d1;
    return n + 1;
}

static void check_expected(const gr_ckpt *c, const expect_t *e, int n, gr_dtype dt)
{
    CHECK_EQ_INT(gr_ckpt_count(c), n);
    for (int i = 0; i < n; i++) {
        const gr_tensor *t = gr_ckpt_find(c, e[i].name);
        CHECK_MSG(t != NULL, "missing tensor %s", e[i].name);
        if (!t) continue;
        CHECK_MSG(t->dtype == dt, "%s is %s", e[i].name, gr_dtype_name(t->dtype));
        CHECK_MSG(t->ndim == e[i].ndim && t->shape[0] == e[i].shape[0] &&
                      (t->ndim < 2 || t->shape[1] == e[i].shape[1]),
                  "%s: shape [%lld, %lld] want [%lld, %lld]", e[i].name, (long long)t->shape[0],
                  (long long)(t->ndim > 1 ? t->shape[1] : -1), (long long)e[i].shape[0],
                  (long long)e[i].shape[1]);
        CHECK(t->nbytes == t->nelem * (gr_dtype_bits(dt) / 8));
    }
}

static gr_dtype config_dtype(const gr_json *cfg)
{
    const char *d = gr_json_get_str(cfg, "dtype", gr_json_get_str(cfg, "torch_dtype", "float32"));
    return !strcmp(d, "bfloat16") ? GR_DT_BF16 : !strcmp(d, "float16") ? GR_DT_F16 : GR_DT_F32;
}

static void check_llama(const char *dir)
{
    gr_ckpt *c = gr_ckpt_open(fixture(dir));
    CHECK_MSG(c != NULL, "%s", gr_errmsg());
    if (!c) return;
    const gr_json *cfg = gr_ckpt_config(c);
    CHECK(cfg != NULL);
    CHECK(!strcmp(gr_json_get_str(cfg, "model_type", ""), "llama"));
    int64_t H = gr_json_get_int(cfg, "hidden_size", -1);
    int64_t I = gr_json_get_int(cfg, "intermediate_size", -1);
    int64_t L = gr_json_get_int(cfg, "num_hidden_layers", -1);
    int64_t nh = gr_json_get_int(cfg, "num_attention_heads", -1);
    int64_t nkv = gr_json_get_int(cfg, "num_key_value_heads", nh);
    int64_t V = gr_json_get_int(cfg, "vocab_size", -1);
    int64_t hd = gr_json_get_int(cfg, "head_dim", H / nh);
    int tied = gr_json_get_bool(cfg, "tie_word_embeddings", 0);
    CHECK(H > 0 && I > 0 && L > 0 && nh > 0 && V > 0);
    expect_t e[256];
    int n = 0;
    char b[128];
    n = add_exp(e, n, "model.embed_tokens.weight", 2, V, H);
    n = add_exp(e, n, "model.norm.weight", 1, H, 0);
    if (!tied) n = add_exp(e, n, "lm_head.weight", 2, V, H);
    for (int64_t l = 0; l < L; l++) {
#define L_(suffix, nd, a, bb)                                                                      \
    snprintf(b, sizeof b, "model.layers.%lld." suffix, (long long)l);                              \
    n = add_exp(e, n, b, nd, a, bb)
        L_("input_layernorm.weight", 1, H, 0);
        L_("post_attention_layernorm.weight", 1, H, 0);
        L_("self_attn.q_proj.weight", 2, nh * hd, H);
        L_("self_attn.k_proj.weight", 2, nkv * hd, H);
        L_("self_attn.v_proj.weight", 2, nkv * hd, H);
        L_("self_attn.o_proj.weight", 2, H, nh * hd);
        L_("mlp.gate_proj.weight", 2, I, H);
        L_("mlp.up_proj.weight", 2, I, H);
        L_("mlp.down_proj.weight", 2, H, I);
#undef L_
    }
    check_expected(c, e, n, config_dtype(cfg));
    CHECK_EQ_INT(gr_ckpt_nfiles(c), 1);
    const char *fmt = gr_ckpt_meta_get(c, "format");
    CHECK(fmt && !strcmp(fmt, "pt"));
    /* the same file opened directly gives the same tensors, in name order */
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", fixture(dir));
    gr_ckpt *c2 = gr_ckpt_open(path);
    CHECK(c2 && gr_ckpt_count(c2) == gr_ckpt_count(c) && gr_ckpt_config(c2));
    for (size_t i = 0; c2 && i < gr_ckpt_count(c); i++) {
        CHECK(!strcmp(gr_ckpt_tensor(c, i)->name, gr_ckpt_tensor(c2, i)->name));
        if (i) CHECK(strcmp(gr_ckpt_tensor(c, i - 1)->name, gr_ckpt_tensor(c, i)->name) < 0);
    }
    gr_ckpt_close(&c2);
    gr_ckpt_close(&c);
    CHECK(c == NULL);
}

static void test_golden_llama(void)
{
    check_llama("golden/llama-gqa");
    check_llama("golden/lora-llama/merged");
}

static void test_golden_gpt2(void)
{
    gr_ckpt *c = gr_ckpt_open(fixture("golden/gpt2"));
    CHECK_MSG(c != NULL, "%s", gr_errmsg());
    if (!c) return;
    const gr_json *cfg = gr_ckpt_config(c);
    CHECK(!strcmp(gr_json_get_str(cfg, "model_type", ""), "gpt2"));
    int64_t E = gr_json_get_int(cfg, "n_embd", -1), L = gr_json_get_int(cfg, "n_layer", -1);
    int64_t V = gr_json_get_int(cfg, "vocab_size", -1), P = gr_json_get_int(cfg, "n_positions", -1);
    int64_t inner = gr_json_get_int(cfg, "n_inner", 4 * E); /* null means 4 * n_embd */
    CHECK(E > 0 && L > 0 && V > 0 && P > 0);
    CHECK(gr_json_get_bool(cfg, "tie_word_embeddings", 1)); /* so no lm_head in the file */
    expect_t e[256];
    int n = 0;
    char b[128];
    n = add_exp(e, n, "transformer.wte.weight", 2, V, E);
    n = add_exp(e, n, "transformer.wpe.weight", 2, P, E);
    n = add_exp(e, n, "transformer.ln_f.weight", 1, E, 0);
    n = add_exp(e, n, "transformer.ln_f.bias", 1, E, 0);
    for (int64_t l = 0; l < L; l++) {
#define L_(suffix, nd, a, bb)                                                                      \
    snprintf(b, sizeof b, "transformer.h.%lld." suffix, (long long)l);                             \
    n = add_exp(e, n, b, nd, a, bb)
        L_("ln_1.weight", 1, E, 0);
        L_("ln_1.bias", 1, E, 0);
        L_("ln_2.weight", 1, E, 0);
        L_("ln_2.bias", 1, E, 0);
        /* Conv1D weights are stored [in, out] */
        L_("attn.c_attn.weight", 2, E, 3 * E);
        L_("attn.c_attn.bias", 1, 3 * E, 0);
        L_("attn.c_proj.weight", 2, E, E);
        L_("attn.c_proj.bias", 1, E, 0);
        L_("mlp.c_fc.weight", 2, E, inner);
        L_("mlp.c_fc.bias", 1, inner, 0);
        L_("mlp.c_proj.weight", 2, inner, E);
        L_("mlp.c_proj.bias", 1, E, 0);
#undef L_
    }
    check_expected(c, e, n, config_dtype(cfg));
    /* values: reading through gr_tensor_read_f32 equals the raw little-endian floats */
    const gr_tensor *t = gr_ckpt_find(c, "transformer.h.1.mlp.c_fc.bias");
    float v[8];
    CHECK(t && gr_tensor_read_f32(t, t->nelem - 8, 8, v) == 0);
    for (int i = 0; t && i < 8; i++) {
        float raw;
        memcpy(&raw, (const char *)t->data + 4 * (t->nelem - 8 + (uint64_t)i), 4);
        CHECK(raw == v[i]);
    }
    CHECK(t && gr_tensor_read_f32(t, t->nelem - 7, 8, v) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "transformer.h.1.mlp.c_fc.bias");
    gr_ckpt_close(&c);
}

static void test_adapter_dir(void)
{
    /* a directory with one *.safetensors that is not model.safetensors */
    gr_ckpt *c = gr_ckpt_open(fixture("golden/lora-llama/adapter"));
    CHECK_MSG(c != NULL, "%s", gr_errmsg());
    if (!c) return;
    CHECK(gr_ckpt_config(c) == NULL);
    const gr_tensor *a =
        gr_ckpt_find(c, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    CHECK(a && a->ndim == 2 && a->shape[0] == 4 && a->shape[1] == 64);
    gr_ckpt_close(&c);
}

/* ---- the seven rules (and the JSON-level checks inside rule 4) ---- */

typedef struct {
    const char *label;
    const char *hdr;     /* header text (NULL: use raw) */
    uint64_t len;        /* ~0: strlen(hdr) */
    size_t data;         /* data bytes after the header */
    const char *want[3]; /* substrings the message must hold */
} bad_case;

static void expect_reject(const char *label, const char *path, const char *const *want)
{
    gr_clearerr();
    gr_st *st = gr_st_open(path);
    CHECK_MSG(st == NULL, "%s: accepted", label);
    gr_st_close(&st);
    const char *m = gr_errmsg();
    CHECK_MSG(!strncmp(m, path, strlen(path)), "%s: message does not start with the file: %s",
              label, m);
    CHECK_MSG(strchr(m, '\n') == NULL, "%s: message is not one line", label);
    CHECK_MSG(gr_exit_status(gr_errcode()) == 2, "%s: code %d", label, gr_errcode());
    for (int k = 0; k < 3 && want[k]; k++)
        CHECK_MSG(strstr(m, want[k]) != NULL, "%s: \"%s\" lacks \"%s\"", label, m, want[k]);
}

static void test_rules(void)
{
    static const bad_case cases[] = {
        /* rule 4: JSON and its contents */
        {"bad json", "{\"a\": {\"dtype\": \"F32\",", ~0ull, 0, {"header", "invalid JSON"}},
        {"bad utf8",
         "{\"a\xff\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}",
         ~0ull,
         4,
         {"invalid UTF-8"}},
        {"nul padding", "{}\0\0\0\0\0\0", 8, 0, {"invalid JSON"}},
        {"not object", "[1, 2]", ~0ull, 0, {"not an object"}},
        {"unknown dtype",
         "{\"w\": {\"dtype\": \"F17\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
         ~0ull,
         4,
         {"tensor 'w'", "unknown dtype \"F17\""}},
        {"negative shape",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -1], \"data_offsets\": [0, 4]}}",
         ~0ull,
         4,
         {"tensor 'w'", "shape entry 1", "non-negative integer"}},
        {"fractional shape",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}",
         ~0ull,
         4,
         {"tensor 'w'", "shape entry 0"}},
        {"exponent shape",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [1e0], \"data_offsets\": [0, 4]}}",
         ~0ull,
         4,
         {"tensor 'w'", "shape entry 0"}},
        {"string shape",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": \"1\", \"data_offsets\": [0, 4]}}",
         ~0ull,
         4,
         {"tensor 'w'", "shape is a JSON string"}},
        {"offsets triple",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}",
         ~0ull,
         4,
         {"tensor 'w'", "data_offsets is not a pair"}},
        {"offsets negative",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}",
         ~0ull,
         4,
         {"tensor 'w'", "data_offsets is not a pair"}},
        {"missing dtype",
         "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}",
         ~0ull,
         4,
         {"tensor 'w'", "missing \"dtype\""}},
        {"metadata number",
         "{\"__metadata__\": {\"k\": 1}}",
         ~0ull,
         0,
         {"__metadata__ value of 'k'", "not a string"}},
        {"metadata array",
         "{\"__metadata__\": [\"k\"]}",
         ~0ull,
         0,
         {"__metadata__ is a JSON array"}},
        {"duplicate name",
         "{\"w\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
         " \"w\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}",
         ~0ull,
         2,
         {"tensor 'w'", "appears twice"}},
        /* rule 5: sorted by BEGIN, back to back from 0 */
        {"gap",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
         " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
         ~0ull,
         12,
         {"tensor 'b'", "gap after tensor 'a'", "ends at 4"}},
        {"overlap",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
         " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
         ~0ull,
         12,
         {"tensor 'b'", "overlap tensor 'a'"}},
        {"first not at 0",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
         ~0ull,
         8,
         {"tensor 'a'", "must begin at 0"}},
        {"end before begin",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]},"
         " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}",
         ~0ull,
         4,
         {"tensor 'b'", "end before they begin"}},
        /* rule 6: element count x dtype size */
        {"size mismatch",
         "{\"a.weight\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 10]}}",
         ~0ull,
         10,
         {"tensor 'a.weight': data_offsets [0, 10] span 10 bytes but shape [3] of F32 needs 12"}},
        {"overflow",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 16], \"data_offsets\": "
         "[0, 4]}}",
         ~0ull,
         4,
         {"tensor 'a'", "overflows"}},
        {"byte overflow",
         "{\"a\": {\"dtype\": \"F64\", \"shape\": [4611686018427387904], \"data_offsets\": [0, "
         "4]}}",
         ~0ull,
         4,
         {"tensor 'a'", "overflows"}},
        {"sub-byte",
         "{\"a\": {\"dtype\": \"F4\", \"shape\": [3], \"data_offsets\": [0, 2]}}",
         ~0ull,
         2,
         {"tensor 'a'", "12 bits, not a whole number of bytes"}},
        {"f6 size",
         "{\"a\": {\"dtype\": \"F6_E2M3\", \"shape\": [4], \"data_offsets\": [0, 4]}}",
         ~0ull,
         4,
         {"tensor 'a'", "span 4 bytes but shape [4] of F6_E2M3 needs 3"}},
        /* rule 7: the last END + 8 + N is the file size */
        {"trailing",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
         ~0ull,
         5,
         {"end at data offset 4", "5 data bytes", "trailing bytes"}},
        {"truncated",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
         ~0ull,
         5,
         {"end at data offset 8", "file truncated"}},
        {"empty header trailing", "{}", ~0ull, 1, {"trailing bytes"}},
        /* rules 2 and 3: header length */
        {"header too large",
         "{}",
         100000001ull,
         0,
         {"header length 100000001", "exceeds the limit"}},
        {"header huge", "{}", ~1ull, 0, {"exceeds the limit"}},
        {"header past end", "{}", 100, 0, {"header length 100", "runs past the end", "(10 bytes)"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bad_case *b = &cases[i];
        size_t hl = b->len == ~0ull ? strlen(b->hdr) : b->len;
        const char *p = tpath("bad.safetensors");
        if (b->len == ~0ull || b->len <= 64)
            craft(p, b->hdr, hl, ~0ull, b->data);
        else
            craft(p, b->hdr, strlen(b->hdr), b->len, b->data);
        expect_reject(b->label, p, b->want);
        /* the in-memory path and the header-only check agree */
        FILE *f = fopen(p, "rb");
        unsigned char buf[512];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        gr_st *m = gr_st_open_mem("mem", buf, n);
        CHECK_MSG(m == NULL, "%s: accepted from memory", b->label);
        gr_st_close(&m);
        CHECK_CONTAINS(gr_errmsg(), b->want[0]);
    }
    /* rule 1: shorter than 8 bytes (also an empty file) */
    const char *p = tpath("short.safetensors");
    FILE *f = fopen(p, "wb");
    fwrite("\x02\0\0\0\0", 1, 5, f);
    fclose(f);
    const char *w1[] = {"file is 5 bytes", "shorter than the 8-byte header length", NULL};
    expect_reject("short", p, w1);
    f = fopen(p, "wb");
    fclose(f);
    const char *w0[] = {"file is 0 bytes", NULL, NULL};
    expect_reject("empty", p, w0);
    /* the exact message of the issue */
    craft_str(tpath("x.safetensors"),
              "{\"a.weight\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 10]}}",
              10);
    CHECK(gr_st_open(tpath("x.safetensors")) == NULL);
    char want[700];
    snprintf(
        want, sizeof want,
        "%s: tensor 'a.weight': data_offsets [0, 10] span 10 bytes but shape [3] of F32 needs 12",
        tpath("x.safetensors"));
    CHECK_MSG(!strcmp(gr_errmsg(), want), "%s", gr_errmsg());
    /* gr_st_check_header on its own */
    const char *h = "{\"a\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [0, 4]}}";
    CHECK_EQ_INT(gr_st_check_header("h", h, strlen(h), 4), 0);
    CHECK_EQ_INT(gr_st_check_header("h", h, strlen(h), 6), GR_EFORMAT);
    CHECK_CONTAINS(gr_errmsg(), "h: ");
}

static void test_valid_edge_cases(void)
{
    /* whitespace around the object, a scalar, empty tensors (also at the very
     * end), a sub-byte dtype, a null __metadata__, a name with spaces/UTF-8 */
    const char *h =
        " \t\r\n{\"__metadata__\": null,"
        " \"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]},"
        " \"e\": {\"dtype\": \"BF16\", \"shape\": [0, 5], \"data_offsets\": [4, 4]},"
        " \"q\": {\"dtype\": \"F4\", \"shape\": [2, 3], \"data_offsets\": [4, 7]},"
        " \"caf\xc3\xa9 x\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [7, 8]},"
        " \"z\": {\"dtype\": \"I64\", \"shape\": [0], \"data_offsets\": [8, 8], \"x\": 1}"
        "} \n ";
    const char *p = tpath("edge.safetensors");
    craft_str(p, h, 8);
    gr_st *st = gr_st_open(p);
    CHECK_MSG(st != NULL, "%s", gr_errmsg());
    if (!st) return;
    CHECK_EQ_INT(gr_st_count(st), 5);
    CHECK_EQ_INT(gr_st_meta_count(st), 0);
    CHECK(gr_st_meta_get(st, "format") == NULL);
    const gr_tensor *s = gr_st_find(st, "s");
    CHECK(s && s->ndim == 0 && s->nelem == 1 && s->nbytes == 4);
    const gr_tensor *e = gr_st_find(st, "e");
    CHECK(e && e->ndim == 2 && e->nelem == 0 && e->nbytes == 0);
    const gr_tensor *q = gr_st_find(st, "q");
    CHECK(q && q->nelem == 6 && q->nbytes == 3 && q->dtype == GR_DT_F4);
    CHECK(q && ((const unsigned char *)q->data)[0] == 4); /* data offset 4 holds byte 4 */
    const gr_tensor *u = gr_st_find(st, "caf\xc3\xa9 x");
    CHECK(u && *(const unsigned char *)u->data == 7);
    CHECK(gr_st_find(st, "nope") == NULL);
    /* data order */
    CHECK(!strcmp(gr_st_tensor(st, 0)->name, "s"));
    CHECK(gr_st_tensor(st, 5) == NULL);
    CHECK(!strcmp(gr_st_path(st), p));
    float one;
    CHECK_EQ_INT(gr_tensor_read_f32(u, 0, 1, &one), GR_EUNSUP);
    CHECK_CONTAINS(gr_errmsg(), "U8");
    gr_st_close(&st);
    gr_st_close(&st); /* NULL-safe */

    /* a file with no tensors at all */
    craft_str(tpath("none.safetensors"), "{\"__metadata__\": {\"a\": \"b\"}}", 0);
    st = gr_st_open(tpath("none.safetensors"));
    CHECK(st && gr_st_count(st) == 0 && gr_st_meta_count(st) == 1);
    CHECK(st && !strcmp(gr_st_meta_key(st, 0), "a") && !strcmp(gr_st_meta_get(st, "a"), "b"));
    gr_st_close(&st);
}

static void test_open_errors(void)
{
    gr_st *st = gr_st_open(tpath("does-not-exist.safetensors"));
    CHECK(st == NULL && gr_errcode() == GR_ENOTFOUND);
    CHECK_CONTAINS(gr_errmsg(), "does-not-exist.safetensors");
    st = gr_st_open(tmpdir);
    CHECK(st == NULL);
    CHECK_CONTAINS(gr_errmsg(), "not a regular file");
    gr_ckpt *c = gr_ckpt_open(tpath("nothing-here"));
    CHECK(c == NULL && gr_errcode() == GR_ENOTFOUND);
    mkdir(tpath("emptydir"), 0755);
    c = gr_ckpt_open(tpath("emptydir"));
    CHECK(c == NULL && gr_errcode() == GR_ENOTFOUND);
    CHECK_CONTAINS(gr_errmsg(), "no model.safetensors");
    /* a bad config.json beside good weights is reported */
    mkdir(tpath("badcfg"), 0755);
    craft_str(tpath("badcfg/model.safetensors"), "{}", 0);
    FILE *f = fopen(tpath("badcfg/config.json"), "w");
    fputs("{\"hidden_size\": ", f);
    fclose(f);
    c = gr_ckpt_open(tpath("badcfg"));
    CHECK(c == NULL);
    CHECK_CONTAINS(gr_errmsg(), "config.json");
    /* a corrupt file inside a checkpoint directory is named */
    mkdir(tpath("badmodel"), 0755);
    craft_str(tpath("badmodel/model.safetensors"),
              "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 3);
    c = gr_ckpt_open(tpath("badmodel"));
    CHECK(c == NULL && gr_exit_status(gr_errcode()) == 2);
    CHECK_CONTAINS(gr_errmsg(), "badmodel/model.safetensors: ");
}

/* ---- sharded checkpoints: the index and its rules ---- */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void make_shards(const char *dir)
{
    char p[600];
    mkdir(tpath(dir), 0755);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", tpath(dir));
    craft_str(p,
              "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
              " \"b\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [8, 11]}}",
              11);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", tpath(dir));
    craft_str(p, "{\"c\": {\"dtype\": \"BF16\", \"shape\": [1], \"data_offsets\": [0, 2]}}", 2);
}

/* dup: the second shard also holds tensor 'a' */
static void sharded_case(const char *dir, const char *index, const char *want1, const char *want2,
                         int dup)
{
    char p[600];
    make_shards(dir);
    if (dup) {
        snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", tpath(dir));
        craft_str(p,
                  "{\"c\": {\"dtype\": \"BF16\", \"shape\": [1], \"data_offsets\": [0, 2]},"
                  " \"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [2, 3]}}",
                  3);
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", tpath(dir));
    write_text(p, index);
    gr_ckpt *c = gr_ckpt_open(tpath(dir));
    CHECK_MSG(c == NULL, "%s: accepted", dir);
    gr_ckpt_close(&c);
    CHECK_CONTAINS(gr_errmsg(), want1);
    if (want2) CHECK_CONTAINS(gr_errmsg(), want2);
    CHECK(strchr(gr_errmsg(), '\n') == NULL);
}

static void test_sharded_read(void)
{
    char p[600];
    make_shards("sh_ok");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", tpath("sh_ok"));
    write_text(p, "{\"metadata\": {\"total_size\": 13, \"other\": [1]}, \"weight_map\": {"
                  "\"a\": \"model-00001-of-00002.safetensors\","
                  "\"b\": \"model-00001-of-00002.safetensors\","
                  "\"c\": \"model-00002-of-00002.safetensors\"}}");
    gr_ckpt *c = gr_ckpt_open(tpath("sh_ok"));
    CHECK_MSG(c != NULL, "%s", gr_errmsg());
    if (c) {
        CHECK_EQ_INT(gr_ckpt_count(c), 3);
        CHECK_EQ_INT(gr_ckpt_nfiles(c), 2);
        const gr_tensor *t = gr_ckpt_find(c, "c");
        CHECK(t && strstr(t->file, "model-00002-of-00002.safetensors"));
        CHECK(!strcmp(gr_ckpt_tensor(c, 0)->name, "a") && !strcmp(gr_ckpt_tensor(c, 2)->name, "c"));
        CHECK(!strcmp(gr_ckpt_dir(c), tpath("sh_ok")));
        CHECK(gr_ckpt_file(c, 1) && gr_ckpt_file(c, 2) == NULL);
    }
    gr_ckpt_close(&c);

    sharded_case("sh_missing",
                 "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
                 "\"b\": \"model-00001-of-00002.safetensors\","
                 "\"c\": \"model-00003-of-00003.safetensors\"}}",
                 "model-00003-of-00003.safetensors", "missing", 0);
    sharded_case("sh_wrong",
                 "{\"weight_map\": {\"a\": \"model-00002-of-00002.safetensors\","
                 "\"b\": \"model-00001-of-00002.safetensors\","
                 "\"c\": \"model-00002-of-00002.safetensors\"}}",
                 "tensor 'a'", "does not hold it", 0);
    sharded_case("sh_unlisted",
                 "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
                 "\"c\": \"model-00002-of-00002.safetensors\"}}",
                 "tensor 'b'", "does not list it", 0);
    sharded_case("sh_nomap", "{\"metadata\": {}}", "weight_map", NULL, 0);
    sharded_case("sh_escape",
                 "{\"weight_map\": {\"a\": \"../sh_ok/model-00001-of-00002.safetensors\"}}",
                 "tensor 'a'", "inside the checkpoint directory", 0);
    sharded_case("sh_badjson", "{\"weight_map\": {", "model.safetensors.index.json", "invalid JSON",
                 0);
    /* a tensor in two shards */
    sharded_case("sh_dup",
                 "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
                 "\"b\": \"model-00001-of-00002.safetensors\","
                 "\"c\": \"model-00002-of-00002.safetensors\"}}",
                 "tensor 'a' appears in two shards", NULL, 1);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_golden_llama);
    RUN(test_golden_gpt2);
    RUN(test_adapter_dir);
    RUN(test_rules);
    RUN(test_valid_edge_cases);
    RUN(test_open_errors);
    RUN(test_sharded_read);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    TEST_MAIN_END();
}
