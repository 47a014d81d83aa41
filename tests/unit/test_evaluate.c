/* Tests for the evaluate op: perplexity (.jsonl and .bin data against the
 * golden NLLs, strided windows against an independent loop over the
 * reference forward pass), exact joining of shards, multiple choice against
 * reference scores, weight statistics against sums computed here, and the
 * errors bad input gets. */
#include "gr_err.h"
#include "evaluate/gr_evaluate.h"
#include "gr_forward.h"
#include "gr_json.h"
#include "gr_model.h"
#include "gr_op.h"
#include "gr_sparse.h"
#include "gr_st.h"
#include "gr_test.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static char tmp[] = "/tmp/graft-eval-XXXXXX";
static char llama[4096], gpt2[4096], merged[4096];

static const char *tpath(const char *name)
{
    static char p[8][4200];
    static int k;
    char *b = p[k++ & 7];
    snprintf(b, sizeof p[0], "%s/%s", tmp, name);
    return b;
}

/* Runs evaluate with the parameters (JSON text, printf-style) and an output
 * directory out (created); returns the op's code and its metrics (parsed,
 * caller frees) in *metrics. */
static int run_eval(gr_json **metrics, const char *out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int run_eval(gr_json **metrics, const char *out, const char *fmt, ...)
{
    char text[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (metrics) *metrics = NULL;
    gr_json *p = gr_json_parse(text, strlen(text), "params");
    if (!p) return -100;
    int rc = gr_op_check_params(&gr_op_evaluate, p);
    if (!rc) {
        char dir[4300];
        snprintf(dir, sizeof dir, "%s", out ? tpath(out) : tpath("scratch"));
        char cmd[4400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
        if (system(cmd)) return -101;
        gr_op_ctx ctx = {.op = &gr_op_evaluate, .params = p, .outdir = dir, .threads = 2};
        rc = gr_op_evaluate.run(&ctx);
        if (!rc && metrics) *metrics = gr_json_parse(ctx.metrics.data, ctx.metrics.len, "metrics");
        gr_buf_free(&ctx.metrics);
    }
    gr_json_free(p);
    return rc;
}

static gr_json *read_result(const char *out)
{
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", tpath(out), GR_EVAL_RESULT);
    return gr_json_parse_file(p);
}

typedef struct golden {
    int S, T;
    int32_t ids[4][48];
    double nll[4][47], mean;
} golden;

static int load_golden(const char *dir, golden *g)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/golden.json", dir);
    gr_json *j = gr_json_parse_file(p);
    if (!j) return -1;
    const gr_json *ids = gr_json_get(j, "input_ids"), *nll = gr_json_get(j, "token_nll");
    g->S = 4;
    g->T = 48;
    for (int s = 0; s < 4; s++)
        for (int t = 0; t < 48; t++) {
            g->ids[s][t] = (int32_t)ids->items[s]->items[t]->i;
            if (t < 47) g->nll[s][t] = nll->items[s]->items[t]->num;
        }
    g->mean = gr_json_get_num(j, "mean_nll", NAN);
    gr_json_free(j);
    return 0;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* The golden ids as .jsonl (one sequence per line) and as one .bin stream. */
static void write_data(const golden *g)
{
    FILE *f = fopen(tpath("g.jsonl"), "w");
    for (int s = 0; s < g->S; s++) {
        fputc('[', f);
        for (int t = 0; t < g->T; t++) fprintf(f, "%s%d", t ? ", " : "", g->ids[s][t]);
        fputs("]\n", f);
    }
    fclose(f);
    FILE *a = fopen(tpath("g16.bin"), "wb"), *b = fopen(tpath("g32.bin"), "wb");
    for (int s = 0; s < g->S; s++)
        for (int t = 0; t < g->T; t++) {
            unsigned v = (unsigned)g->ids[s][t];
            unsigned char le[4] = {v & 255, (v >> 8) & 255, (v >> 16) & 255, v >> 24};
            fwrite(le, 1, 2, a);
            fwrite(le, 1, 4, b);
        }
    fclose(a);
    fclose(b);
}

static double num(const gr_json *j, const char *key)
{
    return gr_json_get_num(j, key, NAN);
}

static void test_perplexity_golden(void)
{
    golden g;
    CHECK(load_golden(llama, &g) == 0);
    write_data(&g);
    gr_json *m = NULL;
    /* .jsonl: each line one window of 48 → exactly the golden evaluation */
    CHECK(run_eval(&m, "p1",
                   "{\"task\": \"perplexity\", \"model\": \"%s\", \"data\": \"%s\", "
                   "\"seq_len\": 48}",
                   llama, tpath("g.jsonl")) == 0);
    CHECK(m != NULL);
    printf("perplexity jsonl: mean_nll %.9f (golden %.9f), tokens %.0f, %.0f tokens/s\n",
           num(m, "mean_nll"), g.mean, num(m, "tokens"), num(m, "tokens_per_s"));
    CHECK_NEAR(num(m, "mean_nll"), g.mean, 1e-5);
    CHECK_NEAR(num(m, "ppl"), exp(g.mean), 1e-4 * exp(g.mean));
    CHECK(num(m, "tokens") == 4 * 47);
    CHECK(num(m, "tokens_per_s") > 0);
    gr_json_free(m);
    gr_json *r = read_result("p1");
    CHECK(r && !strcmp(gr_json_get_str(r, "task", ""), "perplexity"));
    CHECK(r && gr_json_get(r, "tokens_per_s") == NULL); /* no timings in the output tree */
    gr_json_free(r);
    /* .bin, uint16 and uint32: windows of 48 with stride 48 are the golden
     * sequences again */
    double means[2];
    for (int k = 0; k < 2; k++) {
        CHECK(run_eval(&m, "p2",
                       "{\"task\": \"perplexity\", \"model\": \"%s\", \"data\": \"%s\", "
                       "\"token_dtype\": \"%s\", \"seq_len\": 48, \"batch\": %d}",
                       llama, tpath(k ? "g32.bin" : "g16.bin"), k ? "uint32" : "uint16",
                       3 - k) == 0);
        means[k] = num(m, "mean_nll");
        CHECK_NEAR(means[k], g.mean, 1e-5);
        CHECK(num(m, "tokens") == 4 * 47);
        gr_json_free(m);
    }
    CHECK_NEAR(means[0], means[1], 1e-6);
    /* gpt2 and the LoRA-merged llama through the op as well */
    const char *dirs[] = {gpt2, merged};
    for (int k = 0; k < 2; k++) {
        golden h;
        CHECK(load_golden(dirs[k], &h) == 0);
        FILE *f = fopen(tpath("h.jsonl"), "w");
        for (int s = 0; s < 4; s++) {
            fputc('[', f);
            for (int t = 0; t < 48; t++) fprintf(f, "%s%d", t ? "," : "", h.ids[s][t]);
            fputs("]\n", f);
        }
        fclose(f);
        CHECK(run_eval(&m, "p3", "{\"task\": \"perplexity\", \"model\": \"%s\", \"data\": \"%s\"}",
                       dirs[k], tpath("h.jsonl")) == 0);
        printf("perplexity %s: mean_nll %.9f (golden %.9f)\n", dirs[k], num(m, "mean_nll"), h.mean);
        CHECK_NEAR(num(m, "mean_nll"), h.mean, 1e-5);
        gr_json_free(m);
    }
}

/* Strided windows: the op against a plain loop (HF's sliding-window recipe)
 * over the reference forward pass. */
static void test_perplexity_strided(void)
{
    golden g;
    CHECK(load_golden(llama, &g) == 0);
    const int n = g.S * g.T, seq_len = 40, stride = 15;
    const int32_t *all = &g.ids[0][0];
    gr_model *mod = gr_model_load(llama);
    CHECK(mod != NULL);
    if (!mod) return;
    double sum = 0, lp[64];
    int count = 0, prev_end = 0;
    for (int begin = 0; begin < n; begin += stride) {
        int end = begin + seq_len < n ? begin + seq_len : n;
        CHECK(gr_fwd_ref(mod, all + begin, end - begin, NULL, lp) == 0);
        for (int p = (prev_end > begin + 1 ? prev_end : begin + 1); p < end; p++) {
            sum -= lp[p - begin - 1];
            count++;
        }
        prev_end = end;
        if (end == n) break;
    }
    gr_model_destroy(&mod);
    gr_json *m = NULL;
    CHECK(run_eval(&m, "s0",
                   "{\"task\": \"perplexity\", \"model\": \"%s\", \"data\": \"%s\", "
                   "\"seq_len\": %d, \"stride\": %d, \"batch\": 2}",
                   llama, tpath("g16.bin"), seq_len, stride) == 0);
    printf("strided: mean_nll %.9f, reference loop %.9f over %d tokens\n", num(m, "mean_nll"),
           sum / count, count);
    CHECK(count == n - 1);
    CHECK(num(m, "tokens") == count);
    CHECK_NEAR(num(m, "mean_nll"), sum / count, 1e-5);
    const double whole = num(m, "mean_nll");
    gr_json_free(m);

    /* three shards joined by task combine: bit-identical */
    for (int i = 0; i < 3; i++) {
        char out[16];
        snprintf(out, sizeof out, "s%d", i + 1);
        CHECK(run_eval(NULL, out,
                       "{\"task\": \"perplexity\", \"model\": \"%s\", \"data\": \"%s\", "
                       "\"seq_len\": %d, \"stride\": %d, \"batch\": 2, "
                       "\"shard\": \"%d/3\"}",
                       llama, tpath("g16.bin"), seq_len, stride, i) == 0);
    }
    CHECK(run_eval(&m, "sc", "{\"task\": \"combine\", \"inputs\": [\"%s\", \"%s\", \"%s\"]}",
                   tpath("s3"), tpath("s1"), tpath("s2")) == 0);
    printf("3 shards combined: mean_nll %.17g, unsharded %.17g\n", num(m, "mean_nll"), whole);
    CHECK(num(m, "mean_nll") == whole);
    CHECK(num(m, "tokens") == count && num(m, "shards") == 3);
    gr_json_free(m);
    /* a combined result.json is itself a valid single-shard result */
    CHECK(run_eval(&m, "sc2", "{\"task\": \"combine\", \"inputs\": [\"%s/result.json\"]}",
                   tpath("sc")) == 0);
    CHECK(m && num(m, "mean_nll") == whole);
    gr_json_free(m);

    /* shards that do not make one evaluation */
    CHECK(run_eval(NULL, NULL, "{\"task\": \"combine\", \"inputs\": [\"%s\", \"%s\"]}", tpath("s1"),
                   tpath("s2")) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "is shard 0/3, but 2 shards were given");
    CHECK(run_eval(NULL, NULL, "{\"task\": \"combine\", \"inputs\": [\"%s\", \"%s\", \"%s\"]}",
                   tpath("s1"), tpath("s2"), tpath("s2")) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "given twice");
    CHECK(run_eval(NULL, "o1",
                   "{\"task\": \"perplexity\", \"model\": \"%s\", \"data\": \"%s\", "
                   "\"seq_len\": %d, \"stride\": 20, \"batch\": 2, "
                   "\"shard\": \"1/3\"}",
                   llama, tpath("g16.bin"), seq_len) == 0);
    CHECK(run_eval(NULL, NULL, "{\"task\": \"combine\", \"inputs\": [\"%s\", \"%s\", \"%s\"]}",
                   tpath("s1"), tpath("o1"), tpath("s3")) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "shards of different evaluations");
    CHECK(run_eval(NULL, NULL, "{\"task\": \"combine\", \"inputs\": [\"%s\"]}", tpath("nope")) ==
          GR_ENOTFOUND);
    /* hand-made results: a missing sum, parts that do not match the count */
    write_text(tpath("r1.json"), "{\"task\":\"perplexity\",\"shard\":[0,1],\"units\":\"windows\","
                                 "\"total\":1,\"first\":0,\"count\":1,\"settings\":{},"
                                 "\"sums\":{\"nll\":2.0},\"parts\":{\"nll\":[2.0]}}");
    CHECK(run_eval(NULL, NULL, "{\"task\": \"combine\", \"inputs\": [\"%s\"]}", tpath("r1.json")) ==
          GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "sums.tokens is missing (task 'perplexity' needs it)");
    write_text(tpath("r2.json"), "{\"task\":\"perplexity\",\"shard\":[0,1],\"units\":\"windows\","
                                 "\"total\":2,\"first\":0,\"count\":2,\"settings\":{},"
                                 "\"sums\":{\"nll\":2.0,\"tokens\":4},\"parts\":{\"nll\":[2.0]}}");
    CHECK(run_eval(NULL, NULL, "{\"task\": \"combine\", \"inputs\": [\"%s\"]}", tpath("r2.json")) ==
          GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "parts.nll must list 2 values");
}

/* Multiple choice: contexts are golden prefixes, the right choice the true
 * continuation; expected picks from reference-pass scores. */
static void test_choice(void)
{
    golden g;
    CHECK(load_golden(llama, &g) == 0);
    gr_model *mod = gr_model_load(llama);
    CHECK(mod != NULL);
    if (!mod) return;
    FILE *f = fopen(tpath("c.jsonl"), "w");
    int correct = 0, correct_norm = 0, items = 0;
    for (int s = 0; s < 4; s++)
        for (int cut = 8; cut <= 32; cut += 12) {
            /* choices: true continuation (6 tokens), another sequence's
             * tokens (6), a short one (2) and a long one (9) */
            int len[4] = {6, 6, 2, 9};
            const int32_t *src[4] = {&g.ids[s][cut], &g.ids[(s + 1) % 4][cut],
                                     &g.ids[(s + 2) % 4][5], &g.ids[(s + 3) % 4][30]};
            fprintf(f, "{\"context\": [");
            for (int t = 0; t < cut; t++) fprintf(f, "%s%d", t ? "," : "", g.ids[s][t]);
            fprintf(f, "], \"choices\": [");
            double best = -INFINITY, best_norm = -INFINITY;
            int pick = 0, pick_norm = 0;
            for (int k = 0; k < 4; k++) {
                int32_t seq[64];
                double lp[64];
                memcpy(seq, g.ids[s], sizeof(int32_t) * cut);
                memcpy(seq + cut, src[k], sizeof(int32_t) * len[k]);
                CHECK(gr_fwd_ref(mod, seq, cut + len[k], NULL, lp) == 0);
                double sum = 0;
                for (int t = cut - 1; t < cut + len[k] - 1; t++) sum += lp[t];
                if (sum > best) best = sum, pick = k;
                if (sum / len[k] > best_norm) best_norm = sum / len[k], pick_norm = k;
                fprintf(f, "%s[", k ? ", " : "");
                for (int t = 0; t < len[k]; t++) fprintf(f, "%s%d", t ? "," : "", src[k][t]);
                fputc(']', f);
            }
            /* labels: the sum's pick, the mean's pick, or the true continuation */
            const int label = items % 3 == 0 ? pick : items % 3 == 1 ? pick_norm : 0;
            fprintf(f, "], \"label\": %d}\n", label);
            correct += pick == label;
            correct_norm += pick_norm == label;
            items++;
        }
    fclose(f);
    gr_model_destroy(&mod);
    gr_json *m = NULL;
    CHECK(run_eval(&m, "c1", "{\"task\": \"choice\", \"model\": \"%s\", \"data\": \"%s\"}", llama,
                   tpath("c.jsonl")) == 0);
    printf("choice: acc %.4f acc_norm %.4f n %.0f (reference: %d/%d, %d/%d)\n", num(m, "acc"),
           num(m, "acc_norm"), num(m, "n"), correct, items, correct_norm, items);
    CHECK(num(m, "n") == items);
    CHECK(num(m, "acc") == (double)correct / items);
    CHECK(num(m, "acc_norm") == (double)correct_norm / items);
    CHECK(correct > 0 && correct < items && correct_norm > 0); /* not degenerate */
    gr_json_free(m);
    /* two shards and combine */
    CHECK(run_eval(NULL, "c2",
                   "{\"task\": \"choice\", \"model\": \"%s\", \"data\": \"%s\", "
                   "\"shard\": \"0/2\"}",
                   llama, tpath("c.jsonl")) == 0);
    CHECK(run_eval(NULL, "c3",
                   "{\"task\": \"choice\", \"model\": \"%s\", \"data\": \"%s\", "
                   "\"shard\": \"1/2\"}",
                   llama, tpath("c.jsonl")) == 0);
    CHECK(run_eval(&m, "c4", "{\"task\": \"combine\", \"inputs\": [\"%s\", \"%s\"]}", tpath("c2"),
                   tpath("c3")) == 0);
    CHECK(m && num(m, "acc") == (double)correct / items && num(m, "n") == items);
    gr_json_free(m);
    CHECK(run_eval(&m, "c5",
                   "{\"task\": \"choice\", \"model\": \"%s\", \"data\": \"%s\", "
                   "\"limit\": 5}",
                   llama, tpath("c.jsonl")) == 0);
    CHECK(m && num(m, "n") == 5);
    gr_json_free(m);
}

/* Streamed weights (GRAFT_MODEL_STREAM=1: the fixtures are far below any
 * max_memory_mb) give bit-identical perplexity and choice results; the
 * metrics say which mode ran; bad budgets and bad checkpoints keep their
 * errors. */
static void test_streamed(void)
{
    const char *ppl = "{\"task\": \"perplexity\", \"model\": \"%s\", \"data\": \"%s\", "
                      "\"seq_len\": 40, \"stride\": 15, \"batch\": 2%s}";
    const char *cho = "{\"task\": \"choice\", \"model\": \"%s\", \"data\": \"%s\"%s}";
    double nll[2] = {NAN, NAN}, acc[2] = {NAN, NAN}, accn[2] = {NAN, NAN};
    const char *outer = getenv("GRAFT_MODEL_STREAM"); /* a whole run may stream */
    char saved[16] = "";
    if (outer) snprintf(saved, sizeof saved, "%s", outer);
    for (int k = 0; k < 2; k++) {
        if (k)
            setenv("GRAFT_MODEL_STREAM", "1", 1);
        else
            unsetenv("GRAFT_MODEL_STREAM");
        gr_json *m = NULL;
        CHECK(run_eval(&m, "st1", ppl, llama, tpath("g16.bin"),
                       k ? "" : ", \"max_memory_mb\": 64") == 0);
        nll[k] = num(m, "mean_nll");
        CHECK_MSG(num(m, "weights_streamed") == k, "perplexity: weights_streamed %g, want %d",
                  num(m, "weights_streamed"), k);
        gr_json_free(m);
        CHECK(run_eval(&m, "st2", cho, llama, tpath("c.jsonl"), "") == 0);
        acc[k] = num(m, "acc");
        accn[k] = num(m, "acc_norm");
        CHECK(num(m, "weights_streamed") == k);
        gr_json_free(m);
        /* missing tensors are found at load, before any weight is read */
        CHECK(run_eval(NULL, NULL, ppl, tpath("deep"), tpath("g16.bin"), "") == GR_ENOTFOUND);
        CHECK_CONTAINS(gr_errmsg(), "missing tensor 'model.layers.2.input_layernorm.weight'");
    }
    if (outer)
        setenv("GRAFT_MODEL_STREAM", saved, 1);
    else
        unsetenv("GRAFT_MODEL_STREAM");
    printf("streamed: mean_nll %.17g (resident %.17g), acc %.4f/%.4f (resident %.4f/%.4f)\n",
           nll[1], nll[0], acc[1], accn[1], acc[0], accn[0]);
    CHECK(isfinite(nll[0]) && nll[1] == nll[0]);
    CHECK(acc[1] == acc[0] && accn[1] == accn[0]);
    CHECK(run_eval(NULL, NULL, ppl, llama, tpath("g16.bin"), ", \"max_memory_mb\": -1") ==
          GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "max_memory_mb must be in [0, 2^40]");
    CHECK(run_eval(NULL, NULL, cho, llama, tpath("c.jsonl"), ", \"max_memory_mb\": 1e3") ==
          GR_EINVAL);
}

/* A directory with the golden llama's weights and a modified config. */
static void variant_dir(const char *name, const char *from, const char *to)
{
    char p[4300], cmd[9000];
    snprintf(p, sizeof p, "%s/config.json", llama);
    FILE *f = fopen(p, "r");
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    char out[8192];
    char *at = strstr(text, from);
    if (!at) {
        fprintf(stderr, "variant_dir: '%s' not found\n", from);
        return;
    }
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && ln -sf '%s/model.safetensors' '%s/'", tpath(name),
             llama, tpath(name));
    if (system(cmd)) fprintf(stderr, "variant_dir: %s failed\n", cmd);
    snprintf(p, sizeof p, "%s/config.json", tpath(name));
    write_text(p, out);
}

static void test_errors(void)
{
    write_text(tpath("bad.jsonl"), "[1, 2, 3]\n[4, 160, 5]\n");
    write_text(tpath("empty.jsonl"), "");
    write_text(tpath("empty.bin"), "");
    write_text(tpath("long.jsonl"), "{\"context\": [1], \"choices\": [[2]], \"label\": 0}\n");
    FILE *f = fopen(tpath("long.jsonl"), "a");
    fputs("{\"context\": [", f);
    for (int i = 0; i < 250; i++) fprintf(f, "%s%d", i ? "," : "", i % 100);
    fputs("], \"choices\": [[1], [1,2,3,4,5,6,7]], \"label\": 1}\n", f);
    fclose(f);
    variant_dir("falcon", "\"model_type\": \"llama\"", "\"model_type\": \"falcon\"");
    variant_dir("deep", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    const char *P = "{\"task\": \"perplexity\", \"model\": \"%s\", \"data\": \"%s\"%s}";
    static const struct {
        int which; /* 0 perplexity, 1 choice */
        const char *model, *data, *extra;
        int code;
        const char *msg;
    } bad[] = {
        {0, "L", "bad.jsonl", "", GR_EINVAL,
         "bad.jsonl:2: sequence item 1: token id 160 is >= the vocabulary size 160"},
        {0, "L", "empty.jsonl", "", GR_EINVAL, "empty.jsonl: empty data file"},
        {0, "L", "empty.bin", "", GR_EINVAL, "empty.bin: empty data file"},
        {0, "L", "g.jsonl", ", \"seq_len\": 512", GR_EINVAL,
         "seq_len 512 is longer than max_position_embeddings 256"},
        {0, "L", "g.jsonl", ", \"seq_len\": 48, \"stride\": 49", GR_EINVAL, "stride must be in"},
        {0, "L", "g.jsonl", ", \"shard\": \"3/3\"", GR_EINVAL, "'shard' must be \"i/n\""},
        {0, "L", "g.jsonl", ", \"shard\": \"1/2x\"", GR_EINVAL, "'shard' must be \"i/n\""},
        {0, "L", "g.jsonl", ", \"token_dtype\": \"int8\"", GR_EINVAL, "token_dtype must be"},
        {0, "falcon", "g.jsonl", "", GR_EUNSUP, "model_type 'falcon' is not supported"},
        {0, "deep", "g.jsonl", "", GR_ENOTFOUND,
         "missing tensor 'model.layers.2.input_layernorm.weight'"},
        {0, "L", "missing.bin", "", GR_ENOTFOUND, "missing.bin"},
        {1, "L", "long.jsonl", "", GR_EINVAL,
         "long.jsonl:2: context + choices[1] is 257 tokens, longer than max_position_embeddings "
         "256"},
        {1, "L", "g.jsonl", "", GR_EINVAL, "g.jsonl:1: each line must be an object"},
        {1, "L", "g.jsonl", ", \"seq_len\": 4", GR_EINVAL,
         "parameter 'seq_len' does not apply to task 'choice'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *model = !strcmp(bad[i].model, "L") ? llama : tpath(bad[i].model);
        int rc;
        if (bad[i].which == 0)
            rc = run_eval(NULL, NULL, P, model, tpath(bad[i].data), bad[i].extra);
        else
            rc = run_eval(NULL, NULL,
                          "{\"task\": \"choice\", \"model\": \"%s\", \"data\": \"%s\"%s}", model,
                          tpath(bad[i].data), bad[i].extra);
        CHECK_MSG(rc == bad[i].code, "case %zu: rc %d (%s)", i, rc, gr_errmsg());
        CHECK_CONTAINS(gr_errmsg(), bad[i].msg);
    }
    CHECK(run_eval(NULL, NULL, "{\"task\": \"bleu\"}") == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "unknown task 'bleu' (tasks: perplexity, choice, weights");
    CHECK(run_eval(NULL, NULL, "{\"task\": \"perplexity\", \"data\": \"x\"}") == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "missing required parameter 'model'");
    CHECK(run_eval(NULL, NULL, "{\"task\": \"perplexity\", \"model\": 3}") == GR_EINVAL);
    CHECK(run_eval(NULL, NULL, "{\"task\": \"weights\"}") == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "either 'model' or 'models'");
}

/* ---- weights ---- */

static int write_delta(const char *path, const float *v, int n, int sparse)
{
    gr_stw *w = gr_stw_new(path, 0);
    int64_t shape[1] = {n};
    int nnz = 0;
    for (int i = 0; i < n; i++) nnz += v[i] != 0;
    int rc = !w;
    if (!rc && !sparse) rc = gr_stw_add(w, "w", GR_DT_F32, 1, shape);
    if (!rc && sparse) rc = gr_sparse_declare(w, "w", GR_DT_F32, 1, shape, (uint64_t)nnz);
    if (!rc)
        rc = gr_stw_meta(w, GR_SPARSE_META_KIND,
                         sparse ? GR_SPARSE_KIND_SPARSE : GR_SPARSE_KIND_DELTA);
    if (!rc) rc = gr_stw_begin(w);
    if (!rc && !sparse) rc = gr_stw_write_f32(w, v, (size_t)n);
    if (!rc && sparse) {
        uint8_t mask[64];
        float vals[512];
        uint64_t k = gr_sparse_compress(v, (uint64_t)n, mask, vals);
        rc = gr_sparse_write_shape(w, 1, shape);
        if (!rc) rc = gr_stw_write(w, mask, gr_sparse_mask_bytes((uint64_t)n));
        if (!rc) rc = gr_stw_write_f32(w, vals, (size_t)k);
    }
    if (!rc) rc = gr_stw_finish(w);
    if (rc) fprintf(stderr, "write_delta: %s\n", gr_errmsg());
    gr_stw_destroy(&w);
    return rc;
}

static void test_weights(void)
{
    /* two small deltas with hand-checkable statistics */
    const float d1[4] = {1, -2, 0, 3}, d2[4] = {2, 2, 0, -1};
    CHECK(write_delta(tpath("d1.safetensors"), d1, 4, 0) == 0);
    CHECK(write_delta(tpath("d2.safetensors"), d2, 4, 1) == 0); /* sparse layout */
    gr_json *m = NULL;
    CHECK(run_eval(&m, "w1", "{\"task\": \"weights\", \"model\": \"%s\"}",
                   tpath("d1.safetensors")) == 0);
    CHECK(m != NULL);
    CHECK_NEAR(num(m, "l2"), sqrt(14.0), 1e-12);
    CHECK_NEAR(num(m, "mean"), 0.5, 1e-12);
    CHECK_NEAR(num(m, "var"), 14.0 / 4 - 0.25, 1e-12);
    CHECK_NEAR(num(m, "abs_max"), 3, 0);
    CHECK_NEAR(num(m, "sparsity"), 0.25, 0);
    CHECK(num(m, "numel") == 4 && num(m, "tensors") == 1);
    gr_json_free(m);
    CHECK(run_eval(&m, "w2", "{\"task\": \"weights\", \"models\": [\"%s\", \"%s\"]}",
                   tpath("d1.safetensors"), tpath("d2.safetensors")) == 0);
    const gr_json *pairs = m ? gr_json_get(m, "pairs") : NULL;
    CHECK(pairs && pairs->len == 1);
    if (pairs && pairs->len == 1) {
        /* cos = (2 - 4 + 0 - 3) / (sqrt(14) * 3); both non-zero at 3 places,
         * opposite signs at 2 */
        CHECK_NEAR(num(pairs->items[0], "cosine"), -5.0 / (sqrt(14.0) * 3.0), 1e-12);
        CHECK_NEAR(num(pairs->items[0], "sign_conflict"), 2.0 / 3.0, 1e-12);
        CHECK_NEAR(num(pairs->items[0], "both_nonzero"), 0.75, 1e-12);
    }
    const gr_json *models = m ? gr_json_get(m, "models") : NULL;
    CHECK(models && models->len == 2 && num(models->items[1], "sparsity") == 0.25);
    CHECK(models && models->len == 2 && num(models->items[1], "mean") == 0.75);
    gr_json_free(m);

    /* merged LoRA model minus its base: the delta lives in q, v, o, down only */
    CHECK(run_eval(&m, "w3", "{\"task\": \"weights\", \"model\": \"%s\", \"base\": \"%s\"}", merged,
                   llama) == 0);
    gr_ckpt *a = gr_ckpt_open(merged), *b = gr_ckpt_open(llama);
    double ss = 0, n = 0, nz = 0;
    for (size_t i = 0; a && b && i < gr_ckpt_count(a); i++) {
        const gr_tensor *ta = gr_ckpt_tensor(a, i), *tb = gr_ckpt_find(b, ta->name);
        float *x = malloc(ta->nelem * sizeof(float)), *y = malloc(ta->nelem * sizeof(float));
        CHECK(tb && gr_tensor_read_f32(ta, 0, ta->nelem, x) == 0);
        CHECK(tb && gr_tensor_read_f32(tb, 0, tb->nelem, y) == 0);
        for (uint64_t e = 0; e < ta->nelem; e++) {
            double d = (double)(x[e] - y[e]);
            ss += d * d;
            nz += d != 0;
        }
        n += (double)ta->nelem;
        free(x);
        free(y);
    }
    gr_ckpt_close(&a);
    gr_ckpt_close(&b);
    printf("lora delta: l2 %.9g (expected %.9g), sparsity %.6f (expected %.6f)\n", num(m, "l2"),
           sqrt(ss), num(m, "sparsity"), 1 - nz / n);
    CHECK_NEAR(num(m, "l2"), sqrt(ss), 1e-9 * sqrt(ss));
    CHECK_NEAR(num(m, "sparsity"), 1 - nz / n, 1e-12);
    CHECK(num(m, "sparsity") > 0.3);
    gr_json_free(m);
    gr_json *r = read_result("w3");
    const gr_json *ts = r ? gr_json_get(r, "tensors") : NULL;
    int seen = 0;
    for (size_t i = 0; ts && i < ts->len; i++) {
        const char *name = gr_json_get_str(ts->items[i], "name", "");
        double l2 = num(gr_json_get(ts->items[i], "models")->items[0], "l2");
        if (!strcmp(name, "model.layers.0.self_attn.k_proj.weight")) {
            seen++;
            CHECK(l2 == 0);
        }
        if (!strcmp(name, "model.layers.0.self_attn.q_proj.weight")) {
            seen++;
            CHECK(l2 > 0);
        }
    }
    CHECK(seen == 2);
    gr_json_free(r);
    /* a full model missing a tensor of another is an error; deltas are not */
    CHECK(run_eval(NULL, NULL, "{\"task\": \"weights\", \"models\": [\"%s\", \"%s\"]}", llama,
                   tpath("d1.safetensors")) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "tensor 'w' is missing in models[0]");
}

int main(void)
{
    if (!mkdtemp(tmp)) return 1;
    char cwd[2048] = "";
    if (!getcwd(cwd, sizeof cwd)) return 1;
    const char *names[3] = {"golden/llama-gqa", "golden/gpt2", "golden/lora-llama/merged"};
    char *dst[3] = {llama, gpt2, merged};
    for (int i = 0; i < 3; i++) {
        const char *p = fixture(names[i]);
        if (p[0] == '/')
            snprintf(dst[i], 4096, "%s", p);
        else
            snprintf(dst[i], 4096, "%s/%s", cwd, p);
    }
    RUN(test_perplexity_golden);
    RUN(test_perplexity_strided);
    RUN(test_choice);
    RUN(test_errors);
    RUN(test_streamed);
    RUN(test_weights);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
    TEST_MAIN_END();
}
