/* test_cas: the content-addressed store — layout and ids checked against
 * sha256sum, round trips of blobs and trees, hostile manifests, concurrent
 * identical puts from two processes, a put killed with SIGKILL, dead
 * temporaries swept only when unlocked, and verify finding a flipped byte. */
#include "gr_cas.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_manifest.h"
#include "gr_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char scratch[256];

static char *path_in(const char *rel)
{
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/%s", scratch, rel);
    return b;
}

static void write_file(const char *path, const void *data, size_t n)
{
    char *dir = strdup(path);
    *strrchr(dir, '/') = 0;
    gr_fs_mkdirs(dir, 0755, 0);
    free(dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, data, n) == (ssize_t)n);
    close(fd);
}

static void write_str(const char *path, const char *s)
{
    write_file(path, s, strlen(s));
}

/* sha256sum's answer for a file, as an id. */
static void sha256sum_id(const char *path, char id[GR_ID_SZ])
{
    char cmd[1200], line[256] = "";
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(line, sizeof line, p)) line[0] = 0;
    if (p) pclose(p);
    snprintf(id, GR_ID_SZ, "sha256:%.64s", line);
}

static int count_files(const char *dir)
{
    char cmd[1200], line[64] = "0";
    snprintf(cmd, sizeof cmd, "find '%s' -type f | wc -l", dir);
    FILE *p = popen(cmd, "r");
    if (p && !fgets(line, sizeof line, p)) strcpy(line, "-1");
    if (p) pclose(p);
    return atoi(line);
}

static int files_equal(const char *a, const char *b)
{
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

static int trees_equal(const char *a, const char *b)
{
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "diff -r '%s' '%s' >/dev/null", a, b);
    return system(cmd) == 0;
}

static unsigned char *random_bytes(size_t n, uint64_t seed)
{
    unsigned char *b = malloc(n);
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b[i] = (unsigned char)(x >> 24);
    }
    return b;
}

static gr_cas *fresh_store(const char *name)
{
    char *root = path_in(name);
    gr_fs_rmrf(root);
    gr_cas *c = gr_cas_open(root);
    CHECK_MSG(c != NULL, "%s", gr_errmsg());
    return c;
}

static void test_blob_roundtrip(void)
{
    gr_cas *c = fresh_store("s1");
    const char *text = "hello, graft\n";
    char id[GR_ID_SZ], id2[GR_ID_SZ], ref[GR_ID_SZ];
    CHECK(gr_cas_put_buf(c, text, strlen(text), id) == 0);
    write_str(path_in("hello.txt"), text);
    sha256sum_id(path_in("hello.txt"), ref);
    CHECK_MSG(!strcmp(id, ref), "%s vs sha256sum %s", id, ref);
    /* layout sha256/ab/cd/<hex>, read-only */
    char want[1024];
    snprintf(want, sizeof want, "%s/sha256/%.2s/%.2s/%s", gr_cas_root(c), id + 7, id + 9, id + 7);
    struct stat st;
    CHECK(stat(want, &st) == 0 && (st.st_mode & 0777) == 0444);
    CHECK(gr_cas_has(c, id) == 1);
    CHECK(gr_cas_has(
              c, "sha256:0000000000000000000000000000000000000000000000000000000000000000") == 0);
    CHECK(gr_cas_has(c, "sha256:xyz") == GR_EINVAL);
    char *p = NULL;
    uint64_t size = 0;
    CHECK(gr_cas_blob_path(c, id, &p, &size) == 0 && p && !strcmp(p, want) && size == strlen(text));
    free(p);
    char *data = NULL;
    size_t len = 0;
    CHECK(gr_cas_read_blob(c, id, 1 << 20, &data, &len) == 0);
    CHECK(len == strlen(text) && data && !memcmp(data, text, len));
    free(data);
    /* put_file and put_fd give the same id; a second put keeps one blob */
    CHECK(gr_cas_put_file(c, path_in("hello.txt"), id2, &size) == 0 && !strcmp(id, id2));
    int fd = open(path_in("hello.txt"), O_RDONLY);
    CHECK(gr_cas_put_fd(c, fd, id2, &size) == 0 && !strcmp(id, id2) && size == strlen(text));
    close(fd);
    CHECK(count_files(gr_cas_root(c)) == 1);
    int kind = 0;
    CHECK(gr_cas_kind(c, id, &kind) == 0 && kind == GR_CAS_BLOB);
    /* empty blob */
    CHECK(gr_cas_put_buf(c, "", 0, id2) == 0);
    CHECK(!strcmp(id2, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    /* export a blob: refuses to overwrite, --force replaces */
    CHECK(gr_cas_export(c, id, path_in("out/hello.txt"), 0) == 0);
    CHECK(files_equal(path_in("out/hello.txt"), path_in("hello.txt")));
    CHECK(gr_cas_export(c, id2, path_in("out/hello.txt"), 0) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "already exists");
    CHECK(gr_cas_export(c, id2, path_in("out/hello.txt"), GR_CAS_FORCE | GR_CAS_COPY) == 0);
    CHECK(stat(path_in("out/hello.txt"), &st) == 0 && st.st_size == 0);
    CHECK(gr_cas_export(c,
                        "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                        path_in("out/none"), 0) == GR_ENOTFOUND);
    CHECK_CONTAINS(gr_errmsg(), "not in the store");
    CHECK(!gr_fs_exists(path_in("out/none")));
    /* writer with the wrong expected id stores nothing */
    gr_cas_writer *w = gr_cas_writer_new(c);
    CHECK(w && gr_cas_writer_write(w, "abc", 3) == 0);
    CHECK(gr_cas_writer_commit(w, id, id2) == GR_EFORMAT);
    CHECK_CONTAINS(gr_errmsg(), "expected sha256:");
    gr_cas_writer_destroy(&w);
    CHECK(count_files(gr_cas_root(c)) == 2);
    gr_cas_destroy(&c);
    CHECK(c == NULL);
}

static const char *manifest_hello =
    "{\"graft_tree\":1,\"entries\":[{\"path\":\"a.txt\",\"id\":\"sha256:"
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\",\"size\":3}]}";

static void test_manifest_rules(void)
{
    /* canonical encoding, order by bytes */
    gr_manifest *m = gr_manifest_new();
    const char *abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    CHECK(gr_manifest_add(m, "b/c.json", abc, 3) == 0);
    CHECK(gr_manifest_add(m, "a.txt", abc, 3) == 0);
    CHECK(gr_manifest_add(m, "b.txt", abc, 12345678901234ull) == 0);
    CHECK(gr_manifest_add(m, "q\"uote", abc, 0) == 0);
    gr_buf b = {0};
    CHECK(gr_manifest_encode(m, &b) == 0);
    char want[2048];
    snprintf(want, sizeof want,
             "{\"graft_tree\":1,\"entries\":[{\"path\":\"a.txt\",\"id\":\"%s\",\"size\":3},"
             "{\"path\":\"b.txt\",\"id\":\"%s\",\"size\":12345678901234},"
             "{\"path\":\"b/c.json\",\"id\":\"%s\",\"size\":3},"
             "{\"path\":\"q\\\"uote\",\"id\":\"%s\",\"size\":0}]}",
             abc, abc, abc, abc);
    CHECK_MSG(b.data && !strcmp(b.data, want), "%s", b.data);
    /* parse(encode(m)) == m, and the canonical bytes round trip */
    gr_manifest *m2 = gr_manifest_parse(b.data, b.len, "t");
    CHECK_MSG(m2 != NULL, "%s", gr_errmsg());
    if (m2) {
        CHECK(gr_manifest_count(m2) == 4);
        CHECK(gr_manifest_find(m2, "b/c.json") && gr_manifest_find(m2, "b/c.json")->size == 3);
        CHECK(gr_manifest_find(m2, "q\"uote") != NULL);
        CHECK(gr_manifest_find(m2, "b") == NULL);
        gr_buf b2 = {0};
        CHECK(gr_manifest_encode(m2, &b2) == 0 && b2.len == b.len &&
              !memcmp(b.data, b2.data, b.len));
        gr_buf_free(&b2);
    }
    gr_manifest_destroy(&m2);
    gr_buf_free(&b);
    gr_manifest_destroy(&m);

    /* bad paths when building */
    static const struct {
        const char *path, *msg;
    } badpaths[] = {
        {"/etc/passwd", "absolute"},
        {"../x", "'..'"},
        {"a/../../x", "'..'"},
        {"a//b", "empty component"},
        {"a/", "empty component"},
        {"./a", "'.'"},
        {"", "empty"},
        {"a\\b", "backslash"},
        {"a\nb", "control character"},
        {"\xff\xfe", "UTF-8"},
        {"\xc0\xaf", "UTF-8"},
        {"\xed\xa0\x80", "UTF-8"},
    };
    m = gr_manifest_new();
    for (size_t i = 0; i < sizeof badpaths / sizeof *badpaths; i++) {
        CHECK_MSG(gr_manifest_add(m, badpaths[i].path, abc, 1) == GR_EINVAL, "accepted %s",
                  badpaths[i].path);
        CHECK_CONTAINS(gr_errmsg(), badpaths[i].msg);
    }
    CHECK(gr_manifest_add(m, "ok", "sha256:nothex", 1) == GR_EINVAL);
    CHECK(gr_manifest_add(m, "d\xc3\xa9j\xc3\xa0 vu/\xe2\x9c\x93", abc, 1) == 0); /* UTF-8 ok */
    /* duplicates and file/directory clashes are found at encode time */
    CHECK(gr_manifest_add(m, "x", abc, 1) == 0);
    CHECK(gr_manifest_add(m, "x", abc, 1) == 0);
    CHECK(gr_manifest_encode(m, &b) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "duplicate tree path 'x'");
    gr_manifest_destroy(&m);
    m = gr_manifest_new();
    CHECK(gr_manifest_add(m, "x", abc, 1) == 0);
    CHECK(gr_manifest_add(m, "x.y", abc, 1) == 0);
    CHECK(gr_manifest_add(m, "x/y/z", abc, 1) == 0);
    CHECK(gr_manifest_encode(m, &b) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "'x' is a file and also the directory of 'x/y/z'");
    gr_manifest_destroy(&m);
    gr_buf_free(&b);

    /* hostile manifests read from disk */
    m = gr_manifest_parse(manifest_hello, strlen(manifest_hello), "good");
    CHECK_MSG(m != NULL, "%s", gr_errmsg());
    gr_manifest_destroy(&m);
#define E(p, s)                                                                                    \
    "{\"path\":\"" p                                                                               \
    "\",\"id\":\"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\","       \
    "\"size\":" s "}"
#define M(...) "{\"graft_tree\":1,\"entries\":[" __VA_ARGS__ "]}"
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {M(E("/etc/passwd", "1")), "absolute"},
        {M(E("../../etc/passwd", "1")), "'..'"},
        {M(E("a/../b", "1")), "'..'"},
        {M(E("a//b", "1")), "empty component"},
        {M(E("", "1")), "empty"},
        {M(E("a", "1") "," E("a", "1")), "duplicate"},
        {M(E("b", "1") "," E("a", "1")), "out of order"},
        {M(E("a", "1") "," E("a/b", "1")), "is a file and also the directory"},
        {M(E("a\\\\b", "1")), "backslash"},
        {M(E("a\\u0000b", "1")), "escape"},
        {M(E("a\\nb", "1")), "escape"},
        {M(E("a\x01", "1")), "control character"},
        {M(E("\xff", "1")), "UTF-8"},
        {M(E("a", "01")), "leading zeros"},
        {M(E("a", "-1")), "non-negative integer"},
        {M(E("a", "1.5")), "entry must end"},
        {M(E("a", "99999999999999999999")), "64 bits"},
        {M(E("a", "1")) " ", "trailing bytes"},
        {M(E("a", "1")) "x", "trailing bytes"},
        {"{\"graft_tree\": 1,\"entries\":[]}", "not a graft tree manifest"},
        {"{\"graft_tree\":2,\"entries\":[]}", "not a graft tree manifest"},
        {"{\"entries\":[],\"graft_tree\":1}", "not a graft tree manifest"},
        {"{\"graft_tree\":1,\"entries\":[{\"id\":\"sha256:"
         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\",\"path\":\"a\","
         "\"size\":1}]}",
         "must start with"},
        {"{\"graft_tree\":1,\"entries\":[{\"path\":\"a\",\"id\":\"sha256:"
         "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD\",\"size\":1}]}",
         "not an artifact id"},
        {"{\"graft_tree\":1,\"entries\":[{\"path\":\"a\",\"id\":\"sha256:ba78\",\"size\":1}]}",
         "id"},
        {"{\"graft_tree\":1,\"entries\":[{\"path\":\"a\",\"id\":\"sha256:"
         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\",\"size\":1,\"x\":1}]}",
         "entry must end"},
        {"{\"graft_tree\":1,\"entries\":[" E("a", "1") ",]}", "must start with"},
        {"{\"graft_tree\":1,\"entries\":[" E("a", "1"), "expected ]"},
        {"{\"graft_tree\":1,\"entries\":[{\"path\":\"a", "unterminated"},
        {"", "not a graft tree manifest"},
    };
#undef E
#undef M
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        gr_clearerr();
        m = gr_manifest_parse(bad[i].text, strlen(bad[i].text), "sha256:test");
        CHECK_MSG(m == NULL, "accepted case %zu: %s", i, bad[i].text);
        CHECK_MSG(strstr(gr_errmsg(), bad[i].msg) && strstr(gr_errmsg(), "sha256:test"),
                  "case %zu: message '%s' lacks '%s'", i, gr_errmsg(), bad[i].msg);
        CHECK(gr_errcode() == GR_EFORMAT);
        gr_manifest_destroy(&m);
    }
    /* empty tree is valid */
    const char *empty = "{\"graft_tree\":1,\"entries\":[]}";
    m = gr_manifest_parse(empty, strlen(empty), "empty");
    CHECK(m && gr_manifest_count(m) == 0);
    gr_manifest_destroy(&m);
}

static void test_tree_roundtrip(void)
{
    gr_cas *c = fresh_store("s2");
    char *src = strdup(path_in("tree"));
    gr_fs_rmrf(src);
    write_str(path_in("tree/config.json"), "{\"model_type\":\"llama\"}\n");
    unsigned char *big = random_bytes(3 << 20, 7);
    write_file(path_in("tree/model.safetensors"), big, 3 << 20);
    write_str(path_in("tree/sub/dir/tokenizer.json"), "{}");
    write_str(path_in("tree/sub/empty.txt"), "");
    mkdir(path_in("tree/emptydir"), 0755);
    CHECK(symlink("config.json", path_in("tree/link.json")) == 0); /* inside: stored as a file */
    char id[GR_ID_SZ], id2[GR_ID_SZ];
    CHECK_MSG(gr_cas_put_tree(c, src, id) == 0, "%s", gr_errmsg());
    int kind = 0;
    CHECK(gr_cas_kind(c, id, &kind) == 0 && kind == GR_CAS_TREE);
    gr_manifest *m = NULL;
    CHECK(gr_cas_load_tree(c, id, &m) == 0);
    CHECK(m && gr_manifest_count(m) == 5);
    char ref[GR_ID_SZ];
    sha256sum_id(path_in("tree/model.safetensors"), ref);
    const gr_manifest_entry *e = m ? gr_manifest_find(m, "model.safetensors") : NULL;
    CHECK(e && !strcmp(e->id, ref) && e->size == (3u << 20));
    CHECK(m && gr_manifest_find(m, "sub/dir/tokenizer.json"));
    CHECK(m && gr_manifest_find(m, "link.json") &&
          !strcmp(gr_manifest_find(m, "link.json")->id, gr_manifest_find(m, "config.json")->id));
    gr_manifest_destroy(&m);
    /* the tree id is the sha256 of the manifest blob */
    char *mp = NULL;
    CHECK(gr_cas_blob_path(c, id, &mp, NULL) == 0);
    sha256sum_id(mp, ref);
    CHECK(!strcmp(ref, id));
    free(mp);
    /* same content → same id; put_path dispatches */
    CHECK(gr_cas_put_path(c, src, id2) == 0 && !strcmp(id, id2));

    /* export: identical tree, read-only files; refuses to overwrite */
    char *out = strdup(path_in("export"));
    gr_fs_rmrf(out);
    CHECK_MSG(gr_cas_export(c, id, out, 0) == 0, "%s", gr_errmsg());
    CHECK(files_equal(path_in("export/model.safetensors"), path_in("tree/model.safetensors")));
    CHECK(files_equal(path_in("export/sub/dir/tokenizer.json"),
                      path_in("tree/sub/dir/tokenizer.json")));
    CHECK(files_equal(path_in("export/link.json"), path_in("tree/config.json")));
    struct stat st;
    CHECK(lstat(path_in("export/link.json"), &st) == 0 && S_ISREG(st.st_mode) &&
          (st.st_mode & 0222) == 0);
    CHECK(gr_cas_export(c, id, out, 0) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "already exists");
    write_str(path_in("export/extra"), "x");
    CHECK(gr_cas_export(c, id, out, GR_CAS_FORCE) == 0);
    CHECK(!gr_fs_exists(path_in("export/extra")));
    CHECK(gr_fs_exists(path_in("export/config.json")));
    /* no temporaries left beside it */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -d %s/export.tmp.* >/dev/null 2>&1", scratch);
    CHECK(system(cmd) != 0);
    /* raw export gives the manifest bytes */
    CHECK(gr_cas_export(c, id, path_in("manifest.json"), GR_CAS_RAW) == 0);
    sha256sum_id(path_in("manifest.json"), ref);
    CHECK(!strcmp(ref, id));

    /* materialise once under trees/<hex>, then reuse */
    char *mat = NULL, *mat2 = NULL;
    CHECK_MSG(gr_cas_materialize(c, id, &mat) == 0, "%s", gr_errmsg());
    char want[1200];
    snprintf(want, sizeof want, "%s/trees/%s", gr_cas_root(c), id + 7);
    CHECK(mat && !strcmp(mat, want));
    CHECK(mat && trees_equal(mat, out));
    CHECK(gr_cas_materialize(c, id, &mat2) == 0 && mat2 && !strcmp(mat, mat2));
    /* hardlinked to the blob */
    char *bp = NULL;
    struct stat sb, sm;
    CHECK(gr_cas_blob_path(
              c, gr_manifest_find(m = (gr_cas_load_tree(c, id, &m), m), "model.safetensors")->id,
              &bp, NULL) == 0);
    gr_manifest_destroy(&m);
    snprintf(want, sizeof want, "%s/model.safetensors", mat);
    CHECK(stat(bp, &sb) == 0 && stat(want, &sm) == 0 && sb.st_ino == sm.st_ino);
    free(bp);
    free(mat);
    free(mat2);
    /* a materialised blob is its file in the store */
    char bid[GR_ID_SZ];
    CHECK(gr_cas_put_buf(c, "x", 1, bid) == 0);
    CHECK(gr_cas_materialize(c, bid, &mat) == 0 && mat && strstr(mat, "/sha256/"));
    free(mat);
    /* verify: all clean */
    gr_cas_report r;
    CHECK(gr_cas_verify(c, 0, &r, NULL, NULL) == 0);
    CHECK(r.corrupt == 0 && r.missing == 0 && r.trees == 1 && r.stray == 0);
    CHECK_EQ_INT(r.blobs, 6); /* 4 distinct files + manifest + "x" */

    /* ingest: files move into the store (no copy), same id as put */
    char *src2 = strdup(path_in("tree2"));
    gr_fs_rmrf(src2);
    snprintf(cmd, sizeof cmd, "cp -a %s/tree %s/tree2", scratch, scratch);
    CHECK(system(cmd) == 0);
    struct stat before;
    CHECK(stat(path_in("tree2/model.safetensors"), &before) == 0);
    CHECK_MSG(gr_cas_ingest_tree(c, src2, id2) == 0, "%s", gr_errmsg());
    CHECK(!strcmp(id, id2));
    CHECK(count_files(src2) == 0);
    CHECK(!gr_fs_exists(path_in("tree2/link.json")));
    free(big);
    free(src);
    free(src2);
    free(out);
    gr_cas_destroy(&c);
}

static void test_ingest_moves(void)
{
    gr_cas *c = fresh_store("s3");
    unsigned char *data = random_bytes(1 << 20, 99);
    write_file(path_in("big.bin"), data, 1 << 20);
    struct stat before, after;
    CHECK(stat(path_in("big.bin"), &before) == 0);
    char id[GR_ID_SZ], ref[GR_ID_SZ];
    sha256sum_id(path_in("big.bin"), ref);
    uint64_t size = 0;
    CHECK(gr_cas_ingest_file(c, path_in("big.bin"), id, &size) == 0);
    CHECK(!strcmp(id, ref) && size == (1u << 20));
    CHECK(!gr_fs_exists(path_in("big.bin")));
    char *bp = NULL;
    CHECK(gr_cas_blob_path(c, id, &bp, NULL) == 0);
    CHECK(bp && stat(bp, &after) == 0 && after.st_ino == before.st_ino); /* moved, not copied */
    CHECK((after.st_mode & 0777) == 0444);
    free(bp);
    /* a file with another hard link is copied: the other name cannot change the blob */
    write_file(path_in("shared.bin"), data, 1000);
    CHECK(link(path_in("shared.bin"), path_in("shared2.bin")) == 0);
    CHECK(stat(path_in("shared.bin"), &before) == 0);
    CHECK(gr_cas_ingest_file(c, path_in("shared.bin"), id, NULL) == 0);
    CHECK(!gr_fs_exists(path_in("shared.bin")) && gr_fs_exists(path_in("shared2.bin")));
    CHECK(gr_cas_blob_path(c, id, &bp, NULL) == 0 && stat(bp, &after) == 0 &&
          after.st_ino != before.st_ino);
    free(bp);
    /* a symlink is refused */
    CHECK(symlink("shared2.bin", path_in("sl")) == 0);
    CHECK(gr_cas_ingest_file(c, path_in("sl"), id, NULL) != 0);
    CHECK_CONTAINS(gr_errmsg(), "symbolic link");
    free(data);
    gr_cas_destroy(&c);
}

static void test_put_tree_rejects(void)
{
    gr_cas *c = fresh_store("s4");
    char id[GR_ID_SZ];
    gr_fs_rmrf(path_in("t3"));
    write_str(path_in("t3/a.txt"), "a");
    CHECK(symlink("/etc/hostname", path_in("t3/escape")) == 0);
    CHECK(gr_cas_put_tree(c, path_in("t3"), id) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "points outside the tree");
    unlink(path_in("t3/escape"));
    CHECK(symlink("../t3/../../x", path_in("t3/escape2")) == 0);
    CHECK(gr_cas_put_tree(c, path_in("t3"), id) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "escape2");
    unlink(path_in("t3/escape2"));
    CHECK(symlink("nowhere", path_in("t3/dangling")) == 0);
    CHECK(gr_cas_put_tree(c, path_in("t3"), id) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "dangling");
    unlink(path_in("t3/dangling"));
    CHECK(mkfifo(path_in("t3/fifo"), 0644) == 0);
    CHECK(gr_cas_put_tree(c, path_in("t3"), id) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "not a regular file");
    unlink(path_in("t3/fifo"));
    write_str(path_in("t3/back\\slash"), "b");
    CHECK(gr_cas_put_tree(c, path_in("t3"), id) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "backslash");
    unlink(path_in("t3/back\\slash"));
    CHECK(gr_cas_put_tree(c, path_in("t3"), id) == 0);
    CHECK(gr_cas_put_tree(c, path_in("nonexistent"), id) == GR_ENOTFOUND);
    /* nothing half-stored: only a.txt's blob and the manifest */
    CHECK_EQ_INT(count_files(path_in("s4/sha256")), 2);

    /* a manifest blob that is hostile is refused on export / materialise */
    const char *evil = "{\"graft_tree\":1,\"entries\":[{\"path\":\"../evil\",\"id\":\"sha256:"
                       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\","
                       "\"size\":3}]}";
    char eid[GR_ID_SZ];
    CHECK(gr_cas_put_buf(c, evil, strlen(evil), eid) == 0);
    CHECK(gr_cas_export(c, eid, path_in("evil-out"), 0) == GR_EFORMAT);
    CHECK_CONTAINS(gr_errmsg(), "'..'");
    char *mat = NULL;
    CHECK(gr_cas_materialize(c, eid, &mat) == GR_EFORMAT && mat == NULL);
    CHECK(!gr_fs_exists(path_in("evil-out")) && !gr_fs_exists(path_in("evil")));
    /* a valid manifest naming an absent blob */
    CHECK(gr_cas_put_buf(c, manifest_hello, strlen(manifest_hello), eid) == 0);
    CHECK(gr_cas_export(c, eid, path_in("missing-out"), 0) == GR_ENOTFOUND);
    CHECK_CONTAINS(gr_errmsg(), "a.txt");
    CHECK(!gr_fs_exists(path_in("missing-out")));
    gr_cas_report r;
    CHECK(gr_cas_verify(c, 0, &r, NULL, NULL) == 0);
    CHECK(r.bad_trees == 1 && r.missing == 1);
    /* put_manifest checks presence */
    gr_manifest *m = gr_manifest_parse(manifest_hello, strlen(manifest_hello), "m");
    CHECK(m && gr_cas_put_manifest(c, m, eid) == GR_ENOTFOUND);
    gr_manifest_destroy(&m);
    gr_cas_destroy(&c);
}

/* Two processes stream the same 8 MB at the same time: both succeed and one
 * blob remains. */
static void test_concurrent_puts(void)
{
    gr_cas *c = fresh_store("s5");
    size_t n = 8u << 20;
    unsigned char *data = random_bytes(n, 1234);
    write_file(path_in("same.bin"), data, n);
    int pipes[2][2];
    pid_t pids[2];
    for (int k = 0; k < 2; k++) {
        CHECK(pipe(pipes[k]) == 0);
        pids[k] = fork();
        if (pids[k] == 0) {
            gr_cas *cc = gr_cas_open(path_in("s5"));
            char id[GR_ID_SZ] = "";
            int fd = open(path_in("same.bin"), O_RDONLY);
            int rc = cc && fd >= 0 ? gr_cas_put_fd(cc, fd, id, NULL) : -1;
            if (rc) fprintf(stderr, "child: %s\n", gr_errmsg());
            if (write(pipes[k][1], id, GR_ID_SZ) != GR_ID_SZ) rc = -1;
            _exit(rc ? 1 : 0);
        }
        close(pipes[k][1]);
    }
    char ids[2][GR_ID_SZ];
    for (int k = 0; k < 2; k++) {
        int status = -1;
        CHECK(read(pipes[k][0], ids[k], GR_ID_SZ) == GR_ID_SZ);
        close(pipes[k][0]);
        CHECK(waitpid(pids[k], &status, 0) == pids[k] && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0);
    }
    char ref[GR_ID_SZ];
    sha256sum_id(path_in("same.bin"), ref);
    CHECK(!strcmp(ids[0], ref) && !strcmp(ids[1], ref));
    CHECK_EQ_INT(count_files(path_in("s5/sha256")), 1);
    CHECK_EQ_INT(count_files(path_in("s5/tmp")), 0);
    free(data);
    gr_cas_destroy(&c);
}

static void set_old(const char *path, int seconds)
{
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= seconds;
    ts[1] = ts[0];
    CHECK(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) == 0);
}

/* A child killed with SIGKILL in the middle of a streaming put leaves no blob
 * under a final name; its dead temporary is swept, a live one is not. */
static void test_killed_put(void)
{
    gr_cas *c = fresh_store("s6");
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        gr_cas *cc = gr_cas_open(path_in("s6"));
        gr_cas_writer *w = cc ? gr_cas_writer_new(cc) : NULL;
        unsigned char *chunk = random_bytes(1 << 20, 5);
        if (!w) _exit(1);
        for (int i = 0;; i++) {
            if (gr_cas_writer_write(w, chunk, 1 << 20)) _exit(1);
            if (i == 4 && write(ready[1], "r", 1) != 1) _exit(1);
            if (i > 4) usleep(1000);
            if (i > 100000) _exit(1);
        }
    }
    close(ready[1]);
    char ch;
    CHECK(read(ready[0], &ch, 1) == 1);
    close(ready[0]);
    CHECK(kill(pid, SIGKILL) == 0);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
    CHECK_EQ_INT(count_files(path_in("s6/sha256")), 0);
    CHECK_EQ_INT(count_files(path_in("s6/tmp")), 1);

    /* a live writer's temporary, also made to look old */
    gr_cas_writer *live = gr_cas_writer_new(c);
    CHECK(live && gr_cas_writer_write(live, "live", 4) == 0);
    DIR *d = opendir(path_in("s6/tmp"));
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char rel[300];
        if (e->d_name[0] == '.') continue;
        snprintf(rel, sizeof rel, "s6/tmp/%s", e->d_name);
        set_old(path_in(rel), 7200);
    }
    if (d) closedir(d);
    /* young-but-unlocked temporaries survive a plain verify; --gc takes only the dead one */
    gr_cas_report r;
    CHECK(gr_cas_verify(c, 0, &r, NULL, NULL) == 0 && r.tmp_removed == 0);
    CHECK_EQ_INT(count_files(path_in("s6/tmp")), 2);
    CHECK(gr_cas_verify(c, GR_CAS_VERIFY_GC, &r, NULL, NULL) == 0);
    CHECK_EQ_INT(r.tmp_removed, 1);
    CHECK_EQ_INT(count_files(path_in("s6/tmp")), 1);
    char id[GR_ID_SZ];
    CHECK(gr_cas_writer_commit(live, NULL, id) == 0);
    gr_cas_writer_destroy(&live);
    CHECK_EQ_INT(count_files(path_in("s6/tmp")), 0);
    CHECK(gr_cas_has(c, id) == 1);
    gr_cas_destroy(&c);
}

static void collect(void *ud, const char *line)
{
    gr_buf *b = ud;
    gr_buf_puts(b, line);
    gr_buf_putc(b, '\n');
}

/* A flipped byte is found, quarantined, and trees that need it reported. */
static void test_verify_flip(void)
{
    gr_cas *c = fresh_store("s7");
    gr_fs_rmrf(path_in("t7"));
    unsigned char *data = random_bytes(100000, 77);
    write_file(path_in("t7/w.bin"), data, 100000);
    write_str(path_in("t7/c.json"), "{}");
    char tid[GR_ID_SZ], *mat = NULL;
    CHECK(gr_cas_put_tree(c, path_in("t7"), tid) == 0);
    CHECK(gr_cas_materialize(c, tid, &mat) == 0);
    gr_manifest *m = NULL;
    CHECK(gr_cas_load_tree(c, tid, &m) == 0);
    const char *wid = gr_manifest_find(m, "w.bin")->id;
    char *bp = NULL;
    CHECK(gr_cas_blob_path(c, wid, &bp, NULL) == 0);
    CHECK(chmod(bp, 0644) == 0);
    int fd = open(bp, O_RDWR);
    unsigned char byte;
    CHECK(pread(fd, &byte, 1, 54321) == 1);
    byte ^= 0x10;
    CHECK(pwrite(fd, &byte, 1, 54321) == 1);
    close(fd);
    gr_cas_report r;
    gr_buf lines = {0};
    CHECK(gr_cas_verify(c, 0, &r, collect, &lines) == 0);
    CHECK_EQ_INT(r.corrupt, 1);
    CHECK_EQ_INT(r.missing, 1);
    CHECK_CONTAINS(lines.data, wid);
    CHECK_CONTAINS(lines.data, "corrupt");
    CHECK_CONTAINS(lines.data, "'w.bin'");
    CHECK(gr_cas_has(c, wid) == 1); /* reported only */
    gr_buf_reset(&lines);
    CHECK(gr_cas_verify(c, GR_CAS_VERIFY_QUARANTINE, &r, collect, &lines) == 0);
    CHECK(r.corrupt == 1 && r.quarantined == 1 && r.trees_removed == 1);
    CHECK(gr_cas_has(c, wid) == 0);
    CHECK(!gr_fs_exists(mat));
    char q[1200];
    snprintf(q, sizeof q, "%s/quarantine/%s", gr_cas_root(c), wid + 7);
    CHECK(gr_fs_exists(q));
    /* afterwards: the tree is reported as missing a blob, nothing corrupt */
    CHECK(gr_cas_verify(c, 0, &r, NULL, NULL) == 0);
    CHECK(r.corrupt == 0 && r.missing == 1);
    /* putting the original content again repairs it */
    char id[GR_ID_SZ];
    CHECK(gr_cas_put_buf(c, data, 100000, id) == 0 && !strcmp(id, wid));
    CHECK(gr_cas_verify(c, 0, &r, NULL, NULL) == 0);
    CHECK(r.corrupt == 0 && r.missing == 0);
    /* a stray file in the layout is reported */
    write_str(path_in("s7/sha256/zz"), "junk");
    CHECK(gr_cas_verify(c, 0, &r, NULL, NULL) == 0 && r.stray == 1);
    gr_buf_free(&lines);
    free(bp);
    free(mat);
    free(data);
    gr_manifest_destroy(&m);
    gr_cas_destroy(&c);
}

static void test_default_root(void)
{
    char *r = gr_cas_default_root("/x/y");
    CHECK(r && !strcmp(r, "/x/y"));
    free(r);
    setenv("GRAFT_STORE", "/from/env", 1);
    r = gr_cas_default_root(NULL);
    CHECK(r && !strcmp(r, "/from/env"));
    free(r);
    unsetenv("GRAFT_STORE");
    setenv("XDG_DATA_HOME", "/xdg", 1);
    r = gr_cas_default_root("");
    CHECK(r && !strcmp(r, "/xdg/graft/store"));
    free(r);
    unsetenv("XDG_DATA_HOME");
    setenv("HOME", "/home/u", 1);
    r = gr_cas_default_root(NULL);
    CHECK(r && !strcmp(r, "/home/u/.local/share/graft/store"));
    free(r);
    /* a store root that is a file */
    write_str(path_in("notadir"), "x");
    gr_cas *c = gr_cas_open(path_in("notadir"));
    CHECK(c == NULL);
    CHECK_CONTAINS(gr_errmsg(), "not a directory");
}

int main(void)
{
    snprintf(scratch, sizeof scratch, "/tmp/graft-test-cas-XXXXXX");
    if (!mkdtemp(scratch)) return 1;
    RUN(test_blob_roundtrip);
    RUN(test_manifest_rules);
    RUN(test_tree_roundtrip);
    RUN(test_ingest_moves);
    RUN(test_put_tree_rejects);
    RUN(test_concurrent_puts);
    RUN(test_killed_put);
    RUN(test_verify_flip);
    RUN(test_default_root);
    if (!gr_test_failed) gr_fs_rmrf(scratch);
    TEST_MAIN_END();
}
