/* test_fetch: the fetch op against real HTTP servers on loopback (a scripted
 * Hub look-alike, tests/integration/fetch_server.py, started here): listing
 * and include patterns, HEAD metadata and sha256 checks, Authorization kept
 * off the CDN, a cut connection resumed with Range, a server ignoring Range,
 * corrupted content, errors by name (RepoNotFound, RevisionNotFound,
 * EntryNotFound, GatedRepo, 401, 403), retries, cancellation, offline mode
 * from the store, plain http(s) and file:// URLs, bad parameters. */
#include "gr_cas.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_http.h"
#include "gr_json.h"
#include "gr_op.h"
#include "gr_test.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define COMMIT "0123456789abcdef0123456789abcdef01234567"

extern const gr_op gr_op_fetch;

static char scratch[256], srvdir[300], store[300];
static int hub_port, cdn_port;
static pid_t server_pid = -1;
static int server_stdin = -1;
static char endpoint[64];

static int start_server(void)
{
    int in[2], out[2];
    if (pipe(in) || pipe(out)) return -1;
    server_pid = fork();
    if (server_pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execl("/usr/bin/python3", "python3", GRAFT_SOURCE_DIR "/tests/integration/fetch_server.py",
              srvdir, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    server_stdin = in[1];
    FILE *f = fdopen(out[0], "r");
    char line[128] = "";
    int ok =
        f && fgets(line, sizeof line, f) && sscanf(line, "PORTS %d %d", &hub_port, &cdn_port) == 2;
    if (f) fclose(f);
    return ok ? 0 : -1;
}

static void stop_server(void)
{
    if (server_stdin >= 0) close(server_stdin);
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
    }
}

static int collect_body(void *ud, const void *p, size_t n)
{
    return gr_buf_append(ud, p, n);
}

/* GET on the hub's control routes. */
static gr_json *hub_get(const char *path)
{
    char url[256];
    gr_buf b = {0};
    gr_http_resp rs = {0};
    snprintf(url, sizeof url, "%s%s", endpoint, path);
    gr_http_req rq = {.method = "GET", .url = url, .on_body = collect_body, .ud = &b};
    gr_json *j = NULL;
    if (!gr_http_do(&rq, &rs) && rs.status == 200 && b.data && path[1] == '_' && path[2] == 's')
        j = gr_json_parse(b.data, b.len, "stats");
    gr_buf_free(&b);
    gr_http_resp_free(&rs);
    return j;
}

static void reset_stats(void)
{
    gr_json_free(hub_get("/_reset"));
}

/* Requests seen since the last reset matching server/method (NULL: any)
 * and whose path contains sub. */
static int count_requests(const char *server, const char *method, const char *sub, int *with_auth,
                          const char **last_range)
{
    static char range_buf[64];
    gr_json *j = hub_get("/_stats");
    int n = 0;
    if (with_auth) *with_auth = 0;
    if (last_range) *last_range = NULL;
    for (size_t i = 0; j && i < j->len; i++) {
        const gr_json *r = j->items[i];
        const char *srv = gr_json_get_str(r, "server", ""), *m = gr_json_get_str(r, "method", "");
        const char *path = gr_json_get_str(r, "path", "");
        if (!strcmp(path, "/_stats") || !strcmp(path, "/_reset")) continue;
        if ((server && strcmp(srv, server)) || (method && strcmp(m, method))) continue;
        if (sub && !strstr(path, sub)) continue;
        n++;
        const gr_json *a = gr_json_get(r, "auth");
        if (with_auth && a && a->type == GR_JSON_STR) (*with_auth)++;
        const char *rg = gr_json_get_str(r, "range", NULL);
        if (last_range) {
            snprintf(range_buf, sizeof range_buf, "%s", rg ? rg : "");
            *last_range = rg ? range_buf : NULL;
        }
    }
    gr_json_free(j);
    return n;
}

typedef struct run_result {
    int rc;
    char err[1024];
    gr_json *metrics;
    double last_done, last_total;
    int progress_calls;
} run_result;

static volatile int cancel_flag;
static double cancel_after; /* bytes; 0 = never */

static void on_progress(void *ud, double done, double total, const char *msg)
{
    run_result *r = ud;
    r->progress_calls++;
    r->last_done = done;
    r->last_total = total;
    if (cancel_after > 0 && done >= cancel_after) cancel_flag = 1;
}

/* Runs fetch with params (JSON text) into a fresh outdir; with_store uses
 * the test store. */
static run_result run_fetch(const char *params_json, const char *outdir, int with_store)
{
    run_result r;
    memset(&r, 0, sizeof r);
    char work[400];
    snprintf(work, sizeof work, "%s/work", scratch);
    gr_fs_rmrf(outdir);
    gr_fs_rmrf(work);
    gr_fs_mkdirs(outdir, 0755, 0);
    gr_fs_mkdirs(work, 0755, 0);
    gr_json *params = gr_json_parse(params_json, strlen(params_json), "params");
    if (!params) {
        r.rc = -100;
        return r;
    }
    cancel_flag = 0;
    gr_op_ctx ctx = {.op = &gr_op_fetch,
                     .params = params,
                     .outdir = outdir,
                     .workdir = work,
                     .store = with_store ? store : NULL,
                     .threads = 1,
                     .cancel = &cancel_flag,
                     .progress_cb = on_progress,
                     .progress_ud = &r};
    r.rc = gr_op_check_params(&gr_op_fetch, params);
    if (!r.rc) r.rc = gr_op_fetch.run(&ctx);
    snprintf(r.err, sizeof r.err, "%s", r.rc ? gr_errmsg() : "");
    if (!r.rc && ctx.metrics.data)
        r.metrics = gr_json_parse(ctx.metrics.data, ctx.metrics.len, "metrics");
    gr_buf_free(&ctx.metrics);
    gr_json_free(params);
    /* nothing may be left in the scratch space */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", work);
    CHECK_MSG(system(cmd) == 0, "partial files left in %s", work);
    return r;
}

static int same_file(const char *a, const char *b)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

static int nfiles(const char *dir)
{
    char cmd[600], line[32] = "-1";
    snprintf(cmd, sizeof cmd, "find '%s' -type f 2>/dev/null | wc -l", dir);
    FILE *p = popen(cmd, "r");
    if (p && !fgets(line, sizeof line, p)) strcpy(line, "-1");
    if (p) pclose(p);
    return atoi(line);
}

static char *outp(const char *rel)
{
    static char b[4][600];
    static int k;
    char *s = b[k++ & 3];
    snprintf(s, sizeof b[0], "%s/out/%s", scratch, rel);
    return s;
}

static char *srvp(const char *rel)
{
    static char b[4][600];
    static int k;
    char *s = b[k++ & 3];
    snprintf(s, sizeof b[0], "%s/%s", srvdir, rel);
    return s;
}

static int64_t fsize(const char *path)
{
    struct stat st;
    return stat(path, &st) ? -1 : (int64_t)st.st_size;
}

static int64_t metric(const run_result *r, const char *k)
{
    return gr_json_get_int(r->metrics, k, -1);
}

static void clear_token_env(void)
{
    unsetenv("HF_TOKEN");
    unsetenv("HUGGING_FACE_HUB_TOKEN");
    unsetenv("HF_HUB_OFFLINE");
}

static void test_repo_download(void)
{
    char out[400];
    snprintf(out, sizeof out, "%s/out", scratch);
    clear_token_env();
    setenv("HF_TOKEN", "secret-token", 1);
    reset_stats();
    run_result r = run_fetch("{\"url\":\"hf://org/model\"}", out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    /* default include: safetensors, json, tokenizer*; not README.md */
    CHECK(same_file(outp("config.json"), srvp("org/model/config.json")));
    CHECK(same_file(outp("model.safetensors"), srvp("org/model/model.safetensors")));
    CHECK(same_file(outp("tokenizer.json"), srvp("org/model/tokenizer.json")));
    CHECK(same_file(outp("sub/weights.safetensors"), srvp("org/model/sub/weights.safetensors")));
    CHECK(!gr_fs_exists(outp("README.md")));
    CHECK_EQ_INT(nfiles(out), 4);
    CHECK(r.metrics && !strcmp(gr_json_get_str(r.metrics, "commit", ""), COMMIT));
    CHECK_EQ_INT(metric(&r, "files"), 4);
    int64_t want = fsize(srvp("org/model/config.json")) + fsize(srvp("org/model/tokenizer.json")) +
                   fsize(srvp("org/model/model.safetensors")) +
                   fsize(srvp("org/model/sub/weights.safetensors"));
    CHECK_EQ_INT(metric(&r, "bytes"), want);
    /* progress in bytes, ending at the total */
    CHECK(r.progress_calls > 3);
    CHECK_NEAR(r.last_done, want, 0);
    CHECK_NEAR(r.last_total, r.last_done, 0);
    /* the protocol: listing, HEAD per file at the resolved commit, token to
     * the Hub only — never to the CDN the LFS files redirect to */
    int auth = 0;
    CHECK_EQ_INT(count_requests("hub", "GET", "/api/models/org/model/revision/main", &auth, NULL),
                 1);
    CHECK_EQ_INT(auth, 1);
    CHECK_EQ_INT(count_requests("hub", "HEAD", "/org/model/resolve/" COMMIT "/", &auth, NULL), 4);
    CHECK_EQ_INT(auth, 4);
    CHECK_EQ_INT(count_requests("cdn", "GET", "/blob/org/model/", &auth, NULL), 2);
    CHECK_EQ_INT(auth, 0);
    CHECK_EQ_INT(count_requests("hub", "GET", "/org/model/resolve/", &auth, NULL), 4);
    CHECK_EQ_INT(auth, 4);
    gr_json_free(r.metrics);

    /* include patterns: a list, and a comma-separated string */
    r = run_fetch("{\"url\":\"hf://org/model\",\"include\":[\"*.md\"]}", out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK(same_file(outp("README.md"), srvp("org/model/README.md")) && nfiles(out) == 1);
    gr_json_free(r.metrics);
    r = run_fetch("{\"url\":\"hf://org/model\",\"include\":\"config.json, tokenizer*\"}", out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK(nfiles(out) == 2 && gr_fs_exists(outp("tokenizer.json")));
    gr_json_free(r.metrics);
    r = run_fetch("{\"url\":\"hf://org/model\",\"include\":\"*.bin\"}", out, 0);
    CHECK(r.rc == GR_ENOTFOUND);
    CHECK_CONTAINS(r.err, "none of its 5 files matches the include patterns (*.bin)");

    /* a single file, and a revision that needs quoting */
    reset_stats();
    r = run_fetch("{\"url\":\"hf://org/model@refs/pr/1/sub/weights.safetensors\"}", out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK(same_file(outp("sub/weights.safetensors"), srvp("org/model/sub/weights.safetensors")));
    CHECK_EQ_INT(nfiles(out), 1);
    CHECK_EQ_INT(
        count_requests("hub", "HEAD", "/resolve/refs%2Fpr%2F1/sub/weights.safetensors", NULL, NULL),
        1);
    CHECK_EQ_INT(count_requests("hub", "GET", "/api/", NULL, NULL), 0);
    gr_json_free(r.metrics);
    /* revision as a parameter; conflicting with the URL is an error */
    r = run_fetch("{\"url\":\"hf://org/model/config.json\",\"revision\":\"" COMMIT "\"}", out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    gr_json_free(r.metrics);
    r = run_fetch("{\"url\":\"hf://org/model@main/config.json\",\"revision\":\"v2\"}", out, 0);
    CHECK(r.rc == GR_EINVAL);
    CHECK_CONTAINS(r.err, "differ");
    clear_token_env();
}

static void test_resume_and_corruption(void)
{
    char out[400];
    snprintf(out, sizeof out, "%s/out", scratch);
    clear_token_env();
    /* the CDN cuts the first transfer at 700000 bytes: resumed with Range */
    reset_stats();
    run_result r = run_fetch("{\"url\":\"hf://org/cut\",\"backoff\":0.01}", out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK(same_file(outp("model.safetensors"), srvp("org/cut/model.safetensors")));
    const char *range = NULL;
    CHECK_EQ_INT(count_requests("cdn", "GET", "/blob/org/cut/", NULL, &range), 2);
    CHECK_MSG(range && !strcmp(range, "bytes=700000-"), "range %s", range ? range : "(none)");
    CHECK_EQ_INT(metric(&r, "resumed"), 1);
    CHECK_EQ_INT(metric(&r, "downloaded_bytes"), 2 * 1024 * 1024);
    gr_json_free(r.metrics);

    /* a cut, then a server that answers the range request with 200: start over */
    reset_stats();
    r = run_fetch("{\"url\":\"hf://org/norange\",\"backoff\":0.01}", out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK(same_file(outp("model.safetensors"), srvp("org/norange/model.safetensors")));
    CHECK_EQ_INT(metric(&r, "restarts"), 1);
    CHECK_EQ_INT(metric(&r, "downloaded_bytes"), 300000 + 1024 * 1024 + 1);
    gr_json_free(r.metrics);

    /* content that does not match X-Linked-Etag: refused, nothing kept */
    r = run_fetch("{\"url\":\"hf://org/corrupt\",\"backoff\":0.01}", out, 0);
    CHECK(r.rc == GR_EFORMAT);
    CHECK_CONTAINS(r.err, "hf://org/corrupt/model.safetensors: corrupt download");
    CHECK_CONTAINS(r.err, "X-Linked-Etag");
    CHECK_EQ_INT(nfiles(out), 0);

    /* more bytes than X-Linked-Size announced */
    r = run_fetch("{\"url\":\"hf://org/badsize\",\"backoff\":0.01}", out, 0);
    CHECK(r.rc == GR_EFORMAT);
    CHECK_CONTAINS(r.err, "more than the announced 9000 bytes");
    CHECK_EQ_INT(nfiles(out), 0);

    /* 503 (twice) on the listing and 429 on a HEAD are retried */
    reset_stats();
    r = run_fetch("{\"url\":\"hf://org/flaky\",\"backoff\":0.01}", out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK_EQ_INT(metric(&r, "retries"), 3);
    CHECK(same_file(outp("model.safetensors"), srvp("org/flaky/model.safetensors")));
    gr_json_free(r.metrics);
    /* ... but not beyond the budget */
    reset_stats();
    r = run_fetch("{\"url\":\"hf://org/flaky\",\"backoff\":0.01,\"http_retries\":1}", out, 0);
    CHECK(r.rc == GR_ENET);
    CHECK_CONTAINS(r.err, "HTTP 503");
    CHECK(gr_err_retryable(r.rc));
}

static void test_errors_by_name(void)
{
    char out[400];
    snprintf(out, sizeof out, "%s/out", scratch);
    clear_token_env();
    run_result r = run_fetch("{\"url\":\"hf://org/nothere\"}", out, 0);
    CHECK(r.rc == GR_ENOTFOUND);
    CHECK_CONTAINS(r.err, "hf://org/nothere: repository not found (RepoNotFound)");
    CHECK(!gr_err_retryable(r.rc));
    r = run_fetch("{\"url\":\"hf://org/model@nope\"}", out, 0);
    CHECK(r.rc == GR_ENOTFOUND);
    CHECK_CONTAINS(r.err, "hf://org/model@nope: revision not found (RevisionNotFound)");
    r = run_fetch("{\"url\":\"hf://org/model/nothere.json\"}", out, 0);
    CHECK(r.rc == GR_ENOTFOUND);
    CHECK_CONTAINS(r.err, "hf://org/model/nothere.json: file not found (EntryNotFound)");
    r = run_fetch("{\"url\":\"hf://org/gated\"}", out, 0);
    CHECK(r.rc == GR_EINVAL);
    CHECK_CONTAINS(r.err, "hf://org/gated: gated repository");
    CHECK_CONTAINS(r.err, "(GatedRepo)");
    /* private: no token → 401, wrong token → 403, named as such */
    r = run_fetch("{\"url\":\"hf://org/private\"}", out, 0);
    CHECK(r.rc == GR_EINVAL);
    CHECK_CONTAINS(r.err, "HTTP 401");
    CHECK_CONTAINS(r.err, "token is needed");
    setenv("HF_TOKEN", "wrong", 1);
    r = run_fetch("{\"url\":\"hf://org/private\"}", out, 0);
    CHECK(r.rc == GR_EINVAL);
    CHECK_CONTAINS(r.err, "HTTP 403");
    CHECK_CONTAINS(r.err, "insufficient permissions");
    CHECK_EQ_INT(nfiles(out), 0);
    /* the right token, from each source in turn */
    setenv("HF_TOKEN", "secret-token", 1);
    r = run_fetch("{\"url\":\"hf://org/private\"}", out, 0);
    CHECK_MSG(r.rc == 0, "HF_TOKEN: %s", r.err);
    gr_json_free(r.metrics);
    unsetenv("HF_TOKEN");
    setenv("HUGGING_FACE_HUB_TOKEN", "secret-token", 1);
    r = run_fetch("{\"url\":\"hf://org/private\"}", out, 0);
    CHECK_MSG(r.rc == 0, "HUGGING_FACE_HUB_TOKEN: %s", r.err);
    gr_json_free(r.metrics);
    unsetenv("HUGGING_FACE_HUB_TOKEN");
    char tok[400];
    snprintf(tok, sizeof tok, "%s/hfhome", scratch);
    gr_fs_mkdirs(tok, 0755, 0);
    snprintf(tok, sizeof tok, "%s/hfhome/token", scratch);
    CHECK(gr_fs_write_atomic(tok, "secret-token\n", 13, 0600) == 0);
    r = run_fetch("{\"url\":\"hf://org/private\"}", out, 0);
    CHECK_MSG(r.rc == 0, "$HF_HOME/token: %s", r.err);
    CHECK(same_file(outp("model.safetensors"), srvp("org/private/model.safetensors")));
    gr_json_free(r.metrics);
    unlink(tok);

    /* nothing listening: a retryable network error after the retries */
    snprintf(tok, sizeof tok, "http://127.0.0.1:%d", 1);
    setenv("HF_ENDPOINT", tok, 1);
    r = run_fetch("{\"url\":\"hf://org/model\",\"http_retries\":1,\"backoff\":0.01}", out, 0);
    CHECK(r.rc == GR_ENET);
    CHECK_CONTAINS(r.err, "127.0.0.1");
    setenv("HF_ENDPOINT", endpoint, 1);
}

static void test_cancel(void)
{
    char out[400];
    snprintf(out, sizeof out, "%s/out", scratch);
    clear_token_env();
    cancel_after = 500000;
    run_result r = run_fetch("{\"url\":\"hf://org/slow\"}", out, 0);
    cancel_after = 0;
    CHECK(r.rc == GR_ECANCEL);
    CHECK_CONTAINS(r.err, "cancelled");
    CHECK(r.last_done < 4 * 1024 * 1024);
    CHECK_EQ_INT(nfiles(out), 0);
}

static void test_offline_and_store(void)
{
    char out[400], out2[400], id[GR_ID_SZ];
    snprintf(out, sizeof out, "%s/out", scratch);
    snprintf(out2, sizeof out2, "%s/out2", scratch);
    clear_token_env();
    gr_fs_rmrf(store);
    gr_cas *c = gr_cas_open(store);
    CHECK(c != NULL);
    run_result r = run_fetch("{\"url\":\"hf://org/model\"}", out, 1);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    gr_json_free(r.metrics);
    /* what the worker runtime does with an op's output */
    CHECK(gr_cas_put_tree(c, out, id) == 0);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s.ref'", out, out);
    CHECK(system(cmd) == 0);

    /* online again: LFS files whose sha256 is already stored are not downloaded */
    reset_stats();
    r = run_fetch("{\"url\":\"hf://org/model\"}", out, 1);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK_EQ_INT(metric(&r, "from_store"), 2);
    CHECK_EQ_INT(count_requests("cdn", NULL, NULL, NULL, NULL), 0);
    gr_json_free(r.metrics);

    /* offline: no request at all, the same tree from the store */
    setenv("HF_HUB_OFFLINE", "1", 1);
    setenv("HF_ENDPOINT", "http://127.0.0.1:1", 1);
    r = run_fetch("{\"url\":\"hf://org/model\"}", out2, 1);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    snprintf(cmd, sizeof cmd, "diff -r '%s.ref' '%s'", out, out2);
    CHECK(system(cmd) == 0);
    CHECK_EQ_INT(metric(&r, "from_store"), 4);
    CHECK(r.metrics && !strcmp(gr_json_get_str(r.metrics, "commit", ""), COMMIT));
    gr_json_free(r.metrics);
    /* ... also by the resolved commit */
    r = run_fetch("{\"url\":\"hf://org/model@" COMMIT "\"}", out2, 1);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    gr_json_free(r.metrics);
    /* never fetched: a clear error */
    r = run_fetch("{\"url\":\"hf://org/cut\"}", out2, 1);
    CHECK(r.rc == GR_ENOTFOUND);
    CHECK_CONTAINS(r.err, "hf://org/cut: HF_HUB_OFFLINE is set");
    CHECK_EQ_INT(nfiles(out2), 0);
    /* a blob gone from the store: refused, nothing half-built */
    gr_manifest *m = NULL;
    CHECK(gr_cas_load_tree(c, id, &m) == 0);
    char *bp = NULL;
    CHECK(gr_cas_blob_path(c, gr_manifest_find(m, "tokenizer.json")->id, &bp, NULL) == 0);
    CHECK(unlink(bp) == 0);
    r = run_fetch("{\"url\":\"hf://org/model\"}", out2, 1);
    CHECK(r.rc == GR_ENOTFOUND);
    CHECK_CONTAINS(r.err, "lacks 'tokenizer.json'");
    CHECK_EQ_INT(nfiles(out2), 0);
    free(bp);
    gr_manifest_destroy(&m);
    /* no store at all */
    r = run_fetch("{\"url\":\"hf://org/model\"}", out2, 0);
    CHECK(r.rc == GR_ENOTFOUND);
    CHECK_CONTAINS(r.err, "no store");
    unsetenv("HF_HUB_OFFLINE");
    setenv("HF_ENDPOINT", endpoint, 1);
    gr_cas_destroy(&c);
}

static void test_plain_and_file(void)
{
    char out[400], url[600], p[600];
    snprintf(out, sizeof out, "%s/out", scratch);
    clear_token_env();
    /* plain http with the expected sha256 (computed by sha256sum) */
    char sum[128] = "", params[1200];
    snprintf(p, sizeof p, "sha256sum '%s'", srvp("plain/data.bin"));
    FILE *f = popen(p, "r");
    CHECK(f && fgets(sum, sizeof sum, f));
    if (f) pclose(f);
    sum[64] = 0;
    snprintf(params, sizeof params, "{\"url\":\"%s/plain/data.bin\",\"sha256\":\"sha256:%s\"}",
             endpoint, sum);
    reset_stats();
    run_result r = run_fetch(params, out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK(same_file(outp("data.bin"), srvp("plain/data.bin")));
    int auth = 1;
    CHECK(count_requests("hub", NULL, "/plain/", &auth, NULL) == 2 && auth == 0);
    gr_json_free(r.metrics);
    /* a wrong sha256: refused */
    sum[0] = sum[0] == '0' ? '1' : '0';
    snprintf(params, sizeof params, "{\"url\":\"%s/plain/data.bin\",\"sha256\":\"%s\"}", endpoint,
             sum);
    r = run_fetch(params, out, 0);
    CHECK(r.rc == GR_EFORMAT);
    CHECK_CONTAINS(r.err, "corrupt download");
    CHECK_EQ_INT(nfiles(out), 0);
    /* cut and resumed; HEAD refused by the server is fine */
    snprintf(params, sizeof params, "{\"url\":\"%s/plain/cut.bin\",\"backoff\":0.01}", endpoint);
    r = run_fetch(params, out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK(same_file(outp("cut.bin"), srvp("plain/cut.bin")));
    CHECK_EQ_INT(metric(&r, "resumed"), 1);
    gr_json_free(r.metrics);
    snprintf(params, sizeof params, "{\"url\":\"%s/plain/nohead.bin?x=1\"}", endpoint);
    r = run_fetch(params, out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK(same_file(outp("nohead.bin"), srvp("plain/data.bin")));
    gr_json_free(r.metrics);
    snprintf(params, sizeof params, "{\"url\":\"%s/plain/missing.bin\"}", endpoint);
    r = run_fetch(params, out, 0);
    CHECK(r.rc == GR_ENOTFOUND);
    CHECK_CONTAINS(r.err, "/plain/missing.bin: not found (HTTP 404)");

    /* file:// — a file, a directory with include patterns */
    snprintf(params, sizeof params, "{\"url\":\"file://%s\"}", srvp("org/model/config.json"));
    r = run_fetch(params, out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK(same_file(outp("config.json"), srvp("org/model/config.json")) && nfiles(out) == 1);
    gr_json_free(r.metrics);
    snprintf(params, sizeof params, "{\"url\":\"file://%s\"}", srvp("org/model"));
    r = run_fetch(params, out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK_EQ_INT(nfiles(out), 5);
    CHECK(same_file(outp("sub/weights.safetensors"), srvp("org/model/sub/weights.safetensors")));
    gr_json_free(r.metrics);
    snprintf(params, sizeof params, "{\"url\":\"file://%s\",\"include\":\"*.safetensors\"}",
             srvp("org/model"));
    r = run_fetch(params, out, 0);
    CHECK_MSG(r.rc == 0, "%s", r.err);
    CHECK_EQ_INT(nfiles(out), 2);
    gr_json_free(r.metrics);
    snprintf(url, sizeof url, "file://%s", srvp("org/model/nothere"));
    snprintf(params, sizeof params, "{\"url\":\"%s\"}", url);
    r = run_fetch(params, out, 0);
    CHECK(r.rc == GR_ENOTFOUND);
    CHECK_CONTAINS(r.err, url);
    snprintf(params, sizeof params, "{\"url\":\"file://%s\",\"sha256\":\"%064d\"}",
             srvp("org/model/config.json"), 0);
    r = run_fetch(params, out, 0);
    CHECK(r.rc == GR_EFORMAT);
    CHECK_CONTAINS(r.err, "expected 0000");
    CHECK_EQ_INT(nfiles(out), 0);
    /* a symlink escaping a directory */
    snprintf(p, sizeof p, "%s/linkdir", scratch);
    gr_fs_mkdirs(p, 0755, 0);
    snprintf(url, sizeof url, "%s/linkdir/escape", scratch);
    CHECK(symlink("/etc/hostname", url) == 0);
    snprintf(params, sizeof params, "{\"url\":\"file://%s\"}", p);
    r = run_fetch(params, out, 0);
    CHECK(r.rc == GR_EINVAL);
    CHECK_CONTAINS(r.err, "symbolic link 'escape'");
}

static void test_bad_params(void)
{
    char out[400];
    snprintf(out, sizeof out, "%s/out", scratch);
    static const struct {
        const char *params, *msg;
        int rc;
    } bad[] = {
        {"{\"url\":\"ftp://x/y\"}", "want file://, http://, https:// or hf://", GR_EINVAL},
        {"{\"url\":\"hf://org\"}", "want hf://ORG/NAME", GR_EINVAL},
        {"{\"url\":\"hf://org/na..me\"}", "repository name", GR_EINVAL},
        {"{\"url\":\"hf://org/name/../../etc\"}", "'..'", GR_EINVAL},
        {"{\"url\":\"hf://org/name@\"}", "revision", GR_EINVAL},
        {"{\"url\":\"hf://org/model\",\"sha256\":\"xyz\"}", "want 64 hex digits", GR_EINVAL},
        {"{\"url\":\"hf://org/model\",\"sha256\":\"" COMMIT COMMIT "\"}", "64 hex", GR_EINVAL},
        {"{\"url\":\"hf://org/model\",\"include\":5}", "'include' must be", GR_EINVAL},
        {"{\"url\":\"hf://org/model\",\"include\":[]}", "names no pattern", GR_EINVAL},
        {"{\"url\":\"hf://org/model\",\"http_retries\":-1}", "'http_retries'", GR_EINVAL},
        {"{\"url\":\"hf://org/model\",\"color\":1}", "unknown parameter 'color'", GR_EINVAL},
        {"{}", "missing required parameter 'url'", GR_EINVAL},
        {"{\"url\":\"file://relative/x\"}", "absolute path", GR_EINVAL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        run_result r = run_fetch(bad[i].params, out, 0);
        CHECK_MSG(r.rc == bad[i].rc, "case %zu: rc %d (%s)", i, r.rc, r.err);
        CHECK_MSG(strstr(r.err, bad[i].msg), "case %zu: '%s' lacks '%s'", i, r.err, bad[i].msg);
        gr_json_free(r.metrics);
    }
}

int main(void)
{
    snprintf(scratch, sizeof scratch, "/tmp/graft-test-fetch-XXXXXX");
    if (!mkdtemp(scratch)) return 1;
    snprintf(srvdir, sizeof srvdir, "%s/srv", scratch);
    snprintf(store, sizeof store, "%s/store", scratch);
    if (access("/usr/bin/python3", X_OK)) {
        printf("test_fetch: skipped (no /usr/bin/python3 for the test server)\n");
        return 0;
    }
    if (start_server()) {
        fprintf(stderr, "test_fetch: cannot start the test server\n");
        stop_server();
        return 1;
    }
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", hub_port);
    setenv("HF_ENDPOINT", endpoint, 1);
    char hfhome[400];
    snprintf(hfhome, sizeof hfhome, "%s/hfhome", scratch);
    setenv("HF_HOME", hfhome, 1);
    RUN(test_repo_download);
    RUN(test_resume_and_corruption);
    RUN(test_errors_by_name);
    RUN(test_cancel);
    RUN(test_offline_and_store);
    RUN(test_plain_and_file);
    RUN(test_bad_params);
    stop_server();
    if (!gr_test_failed) gr_fs_rmrf(scratch);
    TEST_MAIN_END();
}
