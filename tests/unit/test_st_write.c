/* Tests for gr_stw (the streaming writer): write -> read round trips of every
 * dtype, scalars, empty tensors and metadata; the file layout checked by an
 * independent Python reader; sharding with an index; errors; and a writer
 * killed or destroyed half way leaving no file under a final name. */
#include "gr_err.h"
#include "gr_st.h"
#include "gr_test.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/graft-test-stw-XXXXXX";

static const char *tpath(const char *name)
{
    static char buf[8][512];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/%s", tmpdir, name);
    return b;
}

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Names of the entries of dir (excluding . and ..), joined by spaces, sorted;
 * visible_only: without hidden (temporary) files. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *listdir_(const char *dir, int visible_only)
{
    static char out[4096];
    char *names[256];
    int n = 0;
    out[0] = 0;
    DIR *d = opendir(dir);
    if (!d) return "(none)";
    struct dirent *de;
    while ((de = readdir(d)) && n < 256)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            (!visible_only || de->d_name[0] != '.'))
            names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        if (i) strncat(out, " ", sizeof out - strlen(out) - 1);
        strncat(out, names[i], sizeof out - strlen(out) - 1);
        free(names[i]);
    }
    return out;
}

static const char *listdir(const char *dir)
{
    return listdir_(dir, 0);
}

static int have_python(void)
{
    return system("/usr/bin/python3 -c 'import json, struct' >/dev/null 2>&1") == 0;
}

/* An independent reader (Python's json + struct) checks the layout rules of
 * formats.md on a written file and prints the tensor count. */
static int py_check(const char *path)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c '\n"
             "import json, struct, sys, os\n"
             "b = open(sys.argv[1], \"rb\").read()\n"
             "n = struct.unpack(\"<Q\", b[:8])[0]\n"
             "assert (8 + n) %% 8 == 0, \"data start not 8-aligned\"\n"
             "h = b[8:8 + n].decode(\"utf-8\")\n"
             "assert h.rstrip(\" \") == h.strip(), \"padding is not trailing spaces\"\n"
             "j = json.loads(h)\n"
             "meta = j.pop(\"__metadata__\", {})\n"
             "assert all(isinstance(v, str) for v in meta.values())\n"
             "size = {\"BOOL\":8,\"U8\":8,\"I8\":8,\"F8_E5M2\":8,\"F8_E4M3\":8,\"F8_E8M0\":8,"
             "\"F6_E2M3\":6,\"F6_E3M2\":6,\"F4\":4,\"I16\":16,\"U16\":16,\"F16\":16,\"BF16\":16,"
             "\"I32\":32,\"U32\":32,\"F32\":32,\"I64\":64,\"U64\":64,\"F64\":64,\"C64\":64}\n"
             "end = 0\n"
             "for k, v in sorted(j.items(), key=lambda kv: tuple(kv[1][\"data_offsets\"])):\n"
             "    s, e = v[\"data_offsets\"]\n"
             "    assert s == end, k\n"
             "    ne = 1\n"
             "    for d in v[\"shape\"]: ne *= d\n"
             "    assert e - s == ne * size[v[\"dtype\"]] // 8, k\n"
             "    end = e\n"
             "assert 8 + n + end == len(b), \"file size\"\n"
             "print(len(j))\n"
             "' '%s'",
             path);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    int count = -1;
    if (fscanf(p, "%d", &count) != 1) count = -1;
    return pclose(p) == 0 ? count : -1;
}

/* ---- round trip of every dtype ---- */

typedef struct {
    const char *name;
    gr_dtype dt;
    int ndim;
    int64_t shape[3];
} decl;

static void test_roundtrip_all_dtypes(void)
{
    decl d[GR_DT_COUNT + 4];
    int n = 0;
    for (int i = 0; i < GR_DT_COUNT; i++) {
        static char names[GR_DT_COUNT][32];
        snprintf(names[i], sizeof names[i], "t.%s", gr_dtype_name((gr_dtype)i));
        d[n++] =
            (decl){names[i], (gr_dtype)i, 2, {3, 8, 0}}; /* 24 elements: whole bytes for F4/F6 */
    }
    d[n++] = (decl){"scalar", GR_DT_F32, 0, {0}};
    d[n++] = (decl){"empty", GR_DT_BF16, 1, {0}};
    d[n++] = (decl){"empty2d", GR_DT_I64, 3, {4, 0, 2}};
    d[n++] = (decl){"name with \"quotes\" and caf\xc3\xa9", GR_DT_U8, 1, {5}};

    const char *path = tpath("all.safetensors");
    gr_stw *w = gr_stw_new(path, 0);
    CHECK(w != NULL);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        CHECK_EQ_INT(gr_stw_add(w, d[i].name, d[i].dt, d[i].ndim, d[i].shape), 0);
        uint64_t ne = 1;
        for (int k = 0; k < d[i].ndim; k++) ne *= (uint64_t)d[i].shape[k];
        total += ne * gr_dtype_bits(d[i].dt) / 8;
    }
    CHECK_EQ_INT(gr_stw_meta(w, "format", "pt"), 0);
    CHECK_EQ_INT(gr_stw_meta(w, "note", "line\nbreak \"q\" \xe2\x82\xac"), 0);
    CHECK_EQ_INT(gr_stw_meta(w, "format", "graft"), 0); /* last value wins */
    CHECK_EQ_INT(gr_stw_begin(w), 0);
    unsigned char *data = malloc(total);
    uint64_t seed = 11;
    for (uint64_t i = 0; i < total; i++) data[i] = (unsigned char)mix(&seed);
    /* in pieces of odd sizes that straddle tensors */
    for (uint64_t off = 0; off < total;) {
        size_t k = 1 + (size_t)(mix(&seed) % 29);
        if (k > total - off) k = (size_t)(total - off);
        CHECK_EQ_INT(gr_stw_write(w, data + off, k), 0);
        off += k;
    }
    CHECK_EQ_INT(gr_stw_finish(w), 0);
    gr_stw_destroy(&w);
    CHECK(w == NULL);
    CHECK(!strcmp(listdir(tmpdir), "all.safetensors"));

    gr_st *st = gr_st_open(path);
    CHECK_MSG(st != NULL, "%s", gr_errmsg());
    if (!st) goto done;
    CHECK_EQ_INT(gr_st_count(st), n);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const gr_tensor *t = gr_st_tensor(st, (size_t)i); /* data order = declaration order */
        CHECK(t && !strcmp(t->name, d[i].name) && t->dtype == d[i].dt && t->ndim == d[i].ndim);
        if (!t) continue;
        for (int k = 0; k < t->ndim; k++) CHECK(t->shape[k] == d[i].shape[k]);
        CHECK(!memcmp(t->data, data + off, t->nbytes));
        CHECK(gr_st_find(st, d[i].name) == t);
        off += t->nbytes;
    }
    CHECK(off == total);
    CHECK(!strcmp(gr_st_meta_get(st, "format"), "graft"));
    CHECK(!strcmp(gr_st_meta_get(st, "note"), "line\nbreak \"q\" \xe2\x82\xac"));
    CHECK_EQ_INT(gr_st_meta_count(st), 2);
    gr_st_close(&st);
    if (have_python())
        CHECK_EQ_INT(py_check(path), n);
    else
        printf("SKIP python layout check: no /usr/bin/python3\n");
done:
    free(data);
    unlink(path);
}

static void test_write_f32(void)
{
    /* one write_f32 call running through F32, BF16, F16 and F64 tensors */
    const char *path = tpath("f32.safetensors");
    gr_stw *w = gr_stw_new(path, 0);
    int64_t s1[] = {5}, s2[] = {7}, s3[] = {2, 3}, s4[] = {4};
    gr_stw_add(w, "a", GR_DT_F32, 1, s1);
    gr_stw_add(w, "b", GR_DT_BF16, 1, s2);
    gr_stw_add(w, "c", GR_DT_F16, 2, s3);
    gr_stw_add(w, "d", GR_DT_F64, 1, s4);
    CHECK_EQ_INT(gr_stw_begin(w), 0);
    float v[22];
    for (int i = 0; i < 22; i++) v[i] = (float)(i - 7) * 0.3337f + (i == 9 ? 70000.f : 0.f);
    CHECK_EQ_INT(gr_stw_write_f32(w, v, 3), 0);
    CHECK_EQ_INT(gr_stw_write_f32(w, v + 3, 19), 0);
    CHECK_EQ_INT(gr_stw_finish(w), 0);
    gr_stw_destroy(&w);
    gr_st *st = gr_st_open(path);
    CHECK_MSG(st != NULL, "%s", gr_errmsg());
    if (!st) return;
    float back[22];
    int k = 0;
    for (size_t i = 0; i < 4; i++) {
        const gr_tensor *t = gr_st_tensor(st, i);
        CHECK_EQ_INT(gr_tensor_read_f32(t, 0, t->nelem, back + k), 0);
        k += (int)t->nelem;
    }
    for (int i = 0; i < 22; i++) {
        float want = i < 5    ? v[i]
                     : i < 12 ? gr_bf16_to_f32(gr_f32_to_bf16(v[i]))
                     : i < 18 ? gr_f16_to_f32(gr_f32_to_f16(v[i]))
                              : v[i];
        CHECK_MSG(memcmp(&back[i], &want, 4) == 0, "element %d: %g vs %g", i, back[i], want);
    }
    CHECK(isinf(back[9]) == 0 && back[9] != v[9]); /* bf16 rounds 70000 */
    gr_st_close(&st);
    unlink(path);
}

/* ---- sharding ---- */

static void test_sharded_write(void)
{
    const char *dir = tpath("sharded");
    gr_stw *w = gr_stw_new(dir, 1000);
    CHECK(w != NULL);
    /* a 400 + b 400 | c 300 | d 2000 (over the limit: alone) | e 100 + f 0 */
    struct {
        const char *name;
        gr_dtype dt;
        int64_t n;
    } t[] = {{"a", GR_DT_F32, 100}, {"b", GR_DT_BF16, 200}, {"c", GR_DT_U8, 300},
             {"d", GR_DT_F64, 250}, {"e", GR_DT_I32, 25},   {"f", GR_DT_F16, 0}};
    const int nt = 6;
    uint64_t total = 0;
    for (int i = 0; i < nt; i++) {
        CHECK_EQ_INT(gr_stw_add(w, t[i].name, t[i].dt, 1, &t[i].n), 0);
        total += (uint64_t)t[i].n * gr_dtype_bits(t[i].dt) / 8;
    }
    CHECK(total == 3200);
    gr_stw_meta(w, "format", "pt");
    CHECK_EQ_INT(gr_stw_begin(w), 0);
    unsigned char *data = malloc(total);
    uint64_t seed = 5;
    for (uint64_t i = 0; i < total; i++) data[i] = (unsigned char)mix(&seed);
    CHECK_EQ_INT(gr_stw_write(w, data, 1234), 0);
    CHECK_EQ_INT(gr_stw_write(w, data + 1234, total - 1234), 0);
    /* nothing under a final name before finish */
    CHECK_MSG(!strcmp(listdir_(dir, 1), ""), "visible: %s", listdir_(dir, 1));
    CHECK(strstr(listdir(dir), ".model-00001-of-00004.safetensors.tmp."));
    CHECK_EQ_INT(gr_stw_finish(w), 0);
    gr_stw_destroy(&w);
    CHECK_MSG(!strcmp(listdir(dir), "model-00001-of-00004.safetensors "
                                    "model-00002-of-00004.safetensors "
                                    "model-00003-of-00004.safetensors "
                                    "model-00004-of-00004.safetensors "
                                    "model.safetensors.index.json"),
              "%s", listdir(dir));

    /* the index */
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    gr_json *idx = gr_json_parse_file(p);
    CHECK(idx != NULL);
    const gr_json *md = gr_json_get(idx, "metadata");
    CHECK(gr_json_get_int(md, "total_size", -1) == 3200);
    const gr_json *wm = gr_json_get(idx, "weight_map");
    const char *want_shard[] = {"00001", "00001", "00002", "00003", "00004", "00004"};
    for (int i = 0; i < nt; i++) {
        const char *s = gr_json_get_str(wm, t[i].name, "");
        CHECK_MSG(strstr(s, want_shard[i]) != NULL, "%s in %s", t[i].name, s);
    }
    CHECK(wm && wm->len == (size_t)nt);
    gr_json_free(idx);
    for (int s = 1; s <= 4; s++) {
        snprintf(p, sizeof p, "%s/model-%05d-of-00004.safetensors", dir, s);
        if (have_python()) CHECK_MSG(py_check(p) == (s == 1 || s == 4 ? 2 : 1), "shard %d", s);
        gr_st *st = gr_st_open(p);
        CHECK(st && !strcmp(gr_st_meta_get(st, "format"), "pt"));
        gr_st_close(&st);
    }

    /* read back equal */
    gr_ckpt *c = gr_ckpt_open(dir);
    CHECK_MSG(c != NULL, "%s", gr_errmsg());
    if (c) {
        CHECK_EQ_INT(gr_ckpt_count(c), nt);
        CHECK_EQ_INT(gr_ckpt_nfiles(c), 4);
        uint64_t off = 0;
        for (int i = 0; i < nt; i++) {
            const gr_tensor *x = gr_ckpt_find(c, t[i].name);
            CHECK(x && x->dtype == t[i].dt && x->shape[0] == t[i].n);
            if (x) CHECK(!memcmp(x->data, data + off, x->nbytes));
            off += x ? x->nbytes : 0;
        }
        CHECK(!strcmp(gr_ckpt_meta_get(c, "format"), "pt"));
    }
    gr_ckpt_close(&c);

    /* rewriting the directory as one shard replaces the index */
    w = gr_stw_new(dir, 0);
    int64_t one = 1;
    gr_stw_add(w, "z", GR_DT_U8, 1, &one);
    CHECK_EQ_INT(gr_stw_begin(w), 0);
    CHECK_EQ_INT(gr_stw_write(w, "Z", 1), 0);
    CHECK_EQ_INT(gr_stw_finish(w), 0);
    gr_stw_destroy(&w);
    CHECK(strstr(listdir(dir), "index") == NULL && strstr(listdir(dir), "model.safetensors"));
    c = gr_ckpt_open(dir);
    CHECK(c && gr_ckpt_count(c) == 1 && gr_ckpt_find(c, "z"));
    gr_ckpt_close(&c);
    /* ...and sharded again removes the single file (it would shadow the index) */
    w = gr_stw_new(dir, 1);
    gr_stw_add(w, "x", GR_DT_U8, 1, &one);
    gr_stw_add(w, "y", GR_DT_U8, 1, &one);
    CHECK_EQ_INT(gr_stw_begin(w), 0);
    CHECK_EQ_INT(gr_stw_write(w, "XY", 2), 0);
    CHECK_EQ_INT(gr_stw_finish(w), 0);
    gr_stw_destroy(&w);
    c = gr_ckpt_open(dir);
    CHECK(c && gr_ckpt_count(c) == 2 && gr_ckpt_nfiles(c) == 2 && !gr_ckpt_find(c, "z"));
    gr_ckpt_close(&c);
    free(data);
}

static void test_single_shard_dir(void)
{
    /* under the limit: model.safetensors, no index; the directory is created */
    const char *dir = tpath("one/two");
    gr_stw *w = gr_stw_new(dir, 0);
    int64_t s = 3;
    gr_stw_add(w, "w", GR_DT_I16, 1, &s);
    CHECK_EQ_INT(gr_stw_begin(w), 0);
    CHECK_EQ_INT(gr_stw_write(w, "abcdef", 6), 0);
    CHECK_EQ_INT(gr_stw_finish(w), 0);
    gr_stw_destroy(&w);
    CHECK_MSG(!strcmp(listdir(dir), "model.safetensors"), "%s", listdir(dir));
    /* no tensors at all is a valid (empty) checkpoint */
    w = gr_stw_new(tpath("empty.safetensors"), 0);
    CHECK_EQ_INT(gr_stw_begin(w), 0);
    CHECK_EQ_INT(gr_stw_finish(w), 0);
    gr_stw_destroy(&w);
    gr_st *st = gr_st_open(tpath("empty.safetensors"));
    CHECK(st && gr_st_count(st) == 0);
    gr_st_close(&st);
}

/* ---- errors and crash safety ---- */

static void test_writer_errors(void)
{
    mkdir(tpath("err"), 0755);
    const char *path = tpath("err/x.safetensors");
    int64_t s4 = 4, neg = -1, f4odd = 3;
    gr_stw *w = gr_stw_new(path, 0);
    CHECK_EQ_INT(gr_stw_add(w, "__metadata__", GR_DT_U8, 1, &s4), GR_EINVAL);
    CHECK_EQ_INT(gr_stw_add(w, "n", GR_DT_U8, 1, &neg), GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "tensor 'n'");
    CHECK_EQ_INT(gr_stw_add(w, "q", GR_DT_F4, 1, &f4odd), GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "whole number of bytes");
    CHECK_EQ_INT(gr_stw_add(w, "m", GR_DT_U8, GR_ST_MAX_DIMS + 1, &s4), GR_EINVAL);
    CHECK_EQ_INT(gr_stw_write(w, "x", 1), GR_ESTATE); /* before begin */
    CHECK_EQ_INT(gr_stw_add(w, "a", GR_DT_U8, 1, &s4), 0);
    CHECK_EQ_INT(gr_stw_add(w, "i", GR_DT_I8, 1, &s4), 0);
    CHECK_EQ_INT(gr_stw_begin(w), 0);
    CHECK_EQ_INT(gr_stw_add(w, "late", GR_DT_U8, 1, &s4), GR_ESTATE);
    CHECK_EQ_INT(gr_stw_write(w, "abc", 3), 0);
    /* too many bytes: refused at write, and the writer is dead */
    CHECK_EQ_INT(gr_stw_write(w, "0123456", 7), GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "only 5 of the declared 8 remain");
    CHECK_EQ_INT(gr_stw_finish(w), GR_ESTATE);
    gr_stw_destroy(&w);
    CHECK_MSG(!strcmp(listdir(tpath("err")), ""), "left: %s", listdir(tpath("err")));

    /* too few bytes: refused at finish, nothing left */
    w = gr_stw_new(path, 0);
    gr_stw_add(w, "a", GR_DT_U8, 1, &s4);
    gr_stw_begin(w);
    CHECK_EQ_INT(gr_stw_write(w, "ab", 2), 0);
    CHECK_EQ_INT(gr_stw_finish(w), GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "2 of the declared 4 bytes");
    CHECK_CONTAINS(gr_errmsg(), "tensor 'a'");
    gr_stw_destroy(&w);
    CHECK_MSG(!strcmp(listdir(tpath("err")), ""), "left: %s", listdir(tpath("err")));

    /* write_f32 into an integer tensor; duplicate names */
    w = gr_stw_new(path, 0);
    gr_stw_add(w, "i", GR_DT_I8, 1, &s4);
    gr_stw_begin(w);
    float f[4] = {0};
    CHECK_EQ_INT(gr_stw_write_f32(w, f, 4), GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "tensor 'i' is I8");
    gr_stw_destroy(&w);
    w = gr_stw_new(tpath("err/dir"), 0);
    gr_stw_add(w, "d", GR_DT_U8, 1, &s4);
    gr_stw_add(w, "d", GR_DT_U8, 1, &s4);
    CHECK_EQ_INT(gr_stw_begin(w), GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "tensor 'd' declared twice");
    gr_stw_destroy(&w);

    /* destroy half way (sharded): no final names, no temporaries */
    w = gr_stw_new(tpath("err/half"), 4);
    gr_stw_add(w, "a", GR_DT_U8, 1, &s4);
    gr_stw_add(w, "b", GR_DT_U8, 1, &s4);
    gr_stw_begin(w);
    CHECK_EQ_INT(gr_stw_write(w, "abcdef", 6), 0);
    gr_stw_destroy(&w);
    CHECK_MSG(!strcmp(listdir(tpath("err/half")), ""), "left: %s", listdir(tpath("err/half")));
    CHECK(gr_stw_new("", 0) == NULL);
}

static void test_killed_writer(void)
{
    /* a child writes half of a 16 MB tensor and is SIGKILLed: no file may
     * appear under the final name (a hidden temporary may remain) */
    const char *dir = tpath("killed");
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        gr_stw *w = gr_stw_new(dir, 0);
        int64_t n = 4 << 20;
        gr_stw_add(w, "big", GR_DT_F32, 1, &n);
        if (gr_stw_begin(w)) _exit(3);
        static float buf[1 << 20];
        for (int i = 0; i < 2; i++)
            if (gr_stw_write_f32(w, buf, 1 << 20)) _exit(4);
        if (write(ready[1], "x", 1) != 1) _exit(5);
        for (;;) pause();
    }
    close(ready[1]);
    char c;
    CHECK(read(ready[0], &c, 1) == 1);
    close(ready[0]);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    const char *left = listdir(dir);
    CHECK_MSG(strncmp(left, ".model.safetensors.tmp.", 23) == 0 && !strchr(left, ' '), "left: %s",
              left);
    gr_ckpt *ck = gr_ckpt_open(dir);
    CHECK(ck == NULL && gr_errcode() == GR_ENOTFOUND);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_roundtrip_all_dtypes);
    RUN(test_write_f32);
    RUN(test_sharded_write);
    RUN(test_single_shard_dir);
    RUN(test_writer_errors);
    RUN(test_killed_writer);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    TEST_MAIN_END();
}
