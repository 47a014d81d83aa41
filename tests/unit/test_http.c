/* test_http: the HTTP response parsers (header lines, Content-Range, ETags,
 * origins, quoting) and the Hub helpers (hf:// URLs, file and listing URLs,
 * tokens, include patterns, listing JSON, errors by name). */
#include "gr_err.h"
#include "gr_fs.h"
#include "fetch/gr_hf.h"
#include "gr_http.h"
#include "gr_test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void feed(gr_http_headers *h, const char *line)
{
    CHECK_MSG(gr_http_headers_feed(h, line, strlen(line)) == 0, "%s: %s", line, gr_errmsg());
}

static void test_headers(void)
{
    gr_http_headers h = {0};
    feed(&h, "HTTP/1.1 302 Found\r\n");
    feed(&h, "X-Linked-Size: 123\r\n");
    CHECK(h.status == 302 && h.n == 1);
    /* a new status line (after a redirect or 100 Continue) starts over */
    feed(&h, "HTTP/2 200\r\n");
    feed(&h, "x-repo-commit:   abc  \r\n");
    feed(&h, "ETag: \"deadbeef\"\r\n");
    feed(&h, "Empty:\r\n");
    feed(&h, "\r\n");
    CHECK(h.status == 200 && h.n == 3);
    CHECK(gr_http_header(&h, "X-Linked-Size") == NULL);
    CHECK(gr_http_header(&h, "X-Repo-Commit") &&
          !strcmp(gr_http_header(&h, "X-REPO-COMMIT"), "abc"));
    CHECK(gr_http_header(&h, "empty") && !strcmp(gr_http_header(&h, "empty"), ""));
    static const char *bad[] = {
        "HTTP/1.1 20 OK", "HTTP/1.1 999 Odd", "HTTP/ 200",   "HTTP/1.1 200OK",
        "no colon here",  ": no name",        "Bad Name: x", " folded: x",
        "\tfolded: x",    "Ctl: a\x01z",      "Del: a\x7fz",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(gr_http_headers_feed(&h, bad[i], strlen(bad[i])) == GR_EFORMAT, "accepted '%s'",
                  bad[i]);
    }
    CHECK(gr_http_headers_feed(&h, "A: b\0c", 6) == GR_EFORMAT);
    CHECK_CONTAINS(gr_errmsg(), "NUL");
    /* caps: line length and header count */
    char *long_line = malloc(GR_HTTP_MAX_LINE + 10);
    memset(long_line, 'a', GR_HTTP_MAX_LINE + 10);
    long_line[0] = 'X', long_line[1] = ':';
    CHECK(gr_http_headers_feed(&h, long_line, GR_HTTP_MAX_LINE + 10) == GR_EFORMAT);
    free(long_line);
    gr_http_headers_clear(&h);
    int rc = 0;
    for (int i = 0; i <= GR_HTTP_MAX_HEADERS && !rc; i++) rc = gr_http_headers_feed(&h, "A: b", 4);
    CHECK(rc == GR_EFORMAT && h.n == GR_HTTP_MAX_HEADERS);
    CHECK_CONTAINS(gr_errmsg(), "more than");
    gr_http_headers_clear(&h);
    CHECK(h.n == 0);
}

static void test_values(void)
{
    uint64_t a, b, c;
    CHECK(gr_http_parse_content_range("bytes 100-199/200", &a, &b, &c) == 0);
    CHECK(a == 100 && b == 199 && c == 200);
    CHECK(gr_http_parse_content_range("bytes 0-0/*", &a, &b, &c) == 0 && c == UINT64_MAX);
    static const char *badcr[] = {"bytes 5-4/10",
                                  "bytes 0-10/10",
                                  "bytes -1-2/3",
                                  "bytes 1-2",
                                  "items 1-2/3",
                                  "bytes 1-2/3x",
                                  "bytes 1-2/",
                                  "",
                                  "bytes 99999999999999999999-1/2"};
    for (size_t i = 0; i < sizeof badcr / sizeof *badcr; i++)
        CHECK_MSG(gr_http_parse_content_range(badcr[i], &a, &b, &c) == GR_EFORMAT, "accepted '%s'",
                  badcr[i]);
    CHECK(gr_http_parse_content_range(NULL, &a, &b, &c) == GR_EFORMAT);
    CHECK(gr_http_parse_u64("18446744073709551615", &a) == 0 && a == UINT64_MAX);
    CHECK(gr_http_parse_u64("18446744073709551616", &a) == GR_EFORMAT);
    CHECK(gr_http_parse_u64("-1", &a) == GR_EFORMAT);
    CHECK(gr_http_parse_u64("12 ", &a) == GR_EFORMAT);
    CHECK(gr_http_parse_u64("", &a) == GR_EFORMAT);

    char hex[65];
    const char *sha = "A1B2C3D4E5F60718293A4B5C6D7E8F90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    char q[80];
    snprintf(q, sizeof q, "\"%s\"", sha);
    CHECK(gr_http_etag_sha256(q, hex) == 1);
    CHECK(!strcmp(hex, "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"));
    snprintf(q, sizeof q, "W/\"%s\"", sha);
    CHECK(gr_http_etag_sha256(q, hex) == 1);
    CHECK(gr_http_etag_sha256(sha, hex) == 1);
    CHECK(gr_http_etag_sha256("\"0123456789abcdef0123456789abcdef01234567\"", hex) == 0); /* sha1 */
    CHECK(gr_http_etag_sha256(NULL, hex) == 0);
    snprintf(q, sizeof q, "\"%.63sg\"", sha);
    CHECK(gr_http_etag_sha256(q, hex) == 0);
    char *s = gr_http_etag_strip("W/\"abc\"");
    CHECK(s && !strcmp(s, "abc"));
    free(s);

    CHECK(gr_http_same_origin("http://a.example/x", "http://A.example:80/y?z") == 1);
    CHECK(gr_http_same_origin("http://a.example/x", "https://a.example/x") == 0);
    CHECK(gr_http_same_origin("http://127.0.0.1:8000/", "http://localhost:8000/") == 0);
    CHECK(gr_http_same_origin("http://h:1/", "http://h:2/") == 0);
    CHECK(gr_http_same_origin("not a url", "http://h/") == 0);

    char *qs = gr_http_quote("refs/pr/1", "");
    CHECK(qs && !strcmp(qs, "refs%2Fpr%2F1"));
    free(qs);
    qs = gr_http_quote("dir/a b+c~d.json", "/");
    CHECK(qs && !strcmp(qs, "dir/a%20b%2Bc~d.json"));
    free(qs);
}

static void test_hf_urls(void)
{
    gr_hf_url u;
    CHECK(gr_hf_url_parse("hf://org/name", &u) == 0);
    CHECK(!strcmp(u.repo, "org/name") && !u.revision && !u.path && !u.dataset);
    gr_hf_url_free(&u);
    CHECK(gr_hf_url_parse("hf://meta-llama/Llama-3.2-1B@v1.0/sub/model.safetensors", &u) == 0);
    CHECK(!strcmp(u.repo, "meta-llama/Llama-3.2-1B") && !strcmp(u.revision, "v1.0") &&
          !strcmp(u.path, "sub/model.safetensors"));
    gr_hf_url_free(&u);
    CHECK(gr_hf_url_parse("hf://datasets/org/data@refs/pr/12/train.txt", &u) == 0);
    CHECK(u.dataset && !strcmp(u.repo, "org/data") && !strcmp(u.revision, "refs/pr/12") &&
          !strcmp(u.path, "train.txt"));
    char *url = gr_hf_file_url("https://hub.example", &u, u.revision, u.path);
    CHECK(url &&
          !strcmp(url, "https://hub.example/datasets/org/data/resolve/refs%2Fpr%2F12/train.txt"));
    free(url);
    url = gr_hf_listing_url("https://hub.example", &u, "main");
    CHECK(url && !strcmp(url, "https://hub.example/api/datasets/org/data/revision/main"));
    free(url);
    gr_hf_url_free(&u);
    CHECK(gr_hf_url_parse("hf://models/org/m_1.x@abc", &u) == 0);
    CHECK(!u.dataset && !strcmp(u.repo, "org/m_1.x") && !strcmp(u.revision, "abc") && !u.path);
    url = gr_hf_listing_url("http://h", &u, u.revision);
    CHECK(url && !strcmp(url, "http://h/api/models/org/m_1.x/revision/abc"));
    free(url);
    gr_hf_url_free(&u);
    static const struct {
        const char *url, *msg;
    } bad[] = {
        {"https://x", "not an hf:// URL"},
        {"hf://", "want hf://ORG/NAME"},
        {"hf://org", "want hf://ORG/NAME"},
        {"hf://org/", "repository name"},
        {"hf://-org/name", "want hf://ORG/NAME"},
        {"hf://org/na--me", "repository name"},
        {"hf://org/name.", "repository name"},
        {"hf://org/na me", "repository name"},
        {"hf://org/name@", "revision"},
        {"hf://org/name@refs/pr/", "revision"},
        {"hf://org/name@a b", "revision"},
        {"hf://org/name/../x", "'..'"},
        {"hf://org/name//x", "empty component"},
        {"hf://org/name/a/", "empty component"},
        {"hf://org/name/", "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(gr_hf_url_parse(bad[i].url, &u) == GR_EINVAL, "accepted %s", bad[i].url);
        CHECK_MSG(strstr(gr_errmsg(), bad[i].msg), "%s: '%s' lacks '%s'", bad[i].url, gr_errmsg(),
                  bad[i].msg);
        CHECK(u.repo == NULL);
    }
}

static void test_settings(void)
{
    char dir[] = "/tmp/graft-test-http-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    setenv("HF_ENDPOINT", "http://mirror.example/", 1);
    char *e = gr_hf_endpoint();
    CHECK(e && !strcmp(e, "http://mirror.example"));
    free(e);
    unsetenv("HF_ENDPOINT");
    e = gr_hf_endpoint();
    CHECK(e && !strcmp(e, "https://huggingface.co"));
    free(e);
    /* token sources in order */
    setenv("HF_HOME", dir, 1);
    unsetenv("HF_TOKEN");
    unsetenv("HUGGING_FACE_HUB_TOKEN");
    CHECK(gr_hf_token() == NULL);
    char path[300];
    snprintf(path, sizeof path, "%s/token", dir);
    CHECK(gr_fs_write_atomic(path, "  hf_file\n", 10, 0600) == 0);
    char *t = gr_hf_token();
    CHECK(t && !strcmp(t, "hf_file"));
    free(t);
    setenv("HUGGING_FACE_HUB_TOKEN", "hf_old", 1);
    t = gr_hf_token();
    CHECK(t && !strcmp(t, "hf_old"));
    free(t);
    setenv("HF_TOKEN", "hf_new", 1);
    t = gr_hf_token();
    CHECK(t && !strcmp(t, "hf_new"));
    free(t);
    unsetenv("HF_TOKEN");
    unsetenv("HUGGING_FACE_HUB_TOKEN");
    unlink(path);
    rmdir(dir);
    unsetenv("HF_HUB_OFFLINE");
    CHECK(gr_hf_offline() == 0);
    setenv("HF_HUB_OFFLINE", "1", 1);
    CHECK(gr_hf_offline() == 1);
    setenv("HF_HUB_OFFLINE", "TRUE", 1);
    CHECK(gr_hf_offline() == 1);
    setenv("HF_HUB_OFFLINE", "0", 1);
    CHECK(gr_hf_offline() == 0);
    unsetenv("HF_HUB_OFFLINE");

    const char *const *d = gr_hf_default_include;
    CHECK(gr_hf_match("model-00001-of-00002.safetensors", d));
    CHECK(gr_hf_match("sub/dir/config.json", d));
    CHECK(gr_hf_match("tokenizer_config.json", d));
    CHECK(gr_hf_match("tokenizer.model", d));
    CHECK(gr_hf_match("merges.txt", d));
    CHECK(!gr_hf_match("pytorch_model.bin", d));
    CHECK(!gr_hf_match("README.md", d));
    CHECK(!gr_hf_match(".gitattributes", d));
    const char *mine[] = {"sub/*", NULL};
    CHECK(gr_hf_match("sub/a/b.bin", mine) && !gr_hf_match("other/a", mine));
}

static void test_listing(void)
{
    const char *ok = "{\"id\":\"o/n\",\"sha\":\"abc123\",\"siblings\":[{\"rfilename\":\"a.json\"},"
                     "{\"rfilename\":\"sub/b.safetensors\",\"size\":3}],\"extra\":[1,2]}";
    gr_hf_listing l;
    CHECK(gr_hf_listing_parse(ok, strlen(ok), "hf://o/n", &l) == 0);
    CHECK(l.n == 2 && !strcmp(l.files[1], "sub/b.safetensors") && !strcmp(l.commit, "abc123"));
    gr_hf_listing_free(&l);
    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"[]", "not a JSON object"},
        {"{\"sha\":\"x\"}", "no 'siblings'"},
        {"{\"siblings\":[{\"rfilename\":1}]}", "no string 'rfilename'"},
        {"{\"siblings\":[{}]}", "no string 'rfilename'"},
        {"{\"siblings\":[{\"rfilename\":\"../etc/passwd\"}]}", "'..'"},
        {"{\"siblings\":[{\"rfilename\":\"/abs\"}]}", "absolute"},
        {"{\"siblings\":[{\"rfilename\":\"a\"},{\"rfilename\":\"a\"}]}", "twice"},
        {"{\"siblings\":[{\"rfilename\":\"a\\u0000b\"}]}", "no string 'rfilename'"},
        {"{\"sha\":\"a b\",\"siblings\":[]}", "commit"},
        {"{\"siblings\":[", "listing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(gr_hf_listing_parse(bad[i].json, strlen(bad[i].json), "hf://o/n", &l) ==
                      GR_EFORMAT,
                  "accepted %s", bad[i].json);
        CHECK_MSG(strstr(gr_errmsg(), bad[i].msg) && strstr(gr_errmsg(), "hf://o/n"),
                  "'%s' lacks '%s'", gr_errmsg(), bad[i].msg);
        CHECK(l.files == NULL && l.n == 0);
    }
}

static void test_errors(void)
{
    gr_http_resp rs = {0};
    rs.status = 404;
    feed(&rs.h, "HTTP/1.1 404 Not Found");
    feed(&rs.h, "X-Error-Code: RepoNotFound");
    CHECK(gr_hf_error("hf://o/x", &rs, 0) == GR_ENOTFOUND);
    CHECK(!strcmp(gr_errmsg(), "hf://o/x: repository not found (RepoNotFound)"));
    gr_http_headers_clear(&rs.h);
    rs.status = 401;
    feed(&rs.h, "X-Error-Code: RepoNotFound");
    CHECK(gr_hf_error("hf://o/x", &rs, 0) == GR_ENOTFOUND);
    CHECK_CONTAINS(gr_errmsg(), "if it is private, set HF_TOKEN");
    gr_http_headers_clear(&rs.h);
    rs.status = 403;
    feed(&rs.h, "X-Error-Code: GatedRepo");
    feed(&rs.h, "X-Error-Message: Access to model o/x is restricted.");
    CHECK(gr_hf_error("hf://o/x", &rs, 1) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "(GatedRepo): Access to model o/x is restricted.");
    gr_http_headers_clear(&rs.h);
    feed(&rs.h, "X-Error-Code: EntryNotFound");
    rs.status = 404;
    CHECK(gr_hf_error("hf://o/x/f", &rs, 1) == GR_ENOTFOUND);
    CHECK_CONTAINS(gr_errmsg(), "file not found (EntryNotFound)");
    gr_http_headers_clear(&rs.h);
    feed(&rs.h, "X-Error-Code: RevisionNotFound");
    CHECK(gr_hf_error("hf://o/x@v", &rs, 1) == GR_ENOTFOUND);
    CHECK_CONTAINS(gr_errmsg(), "revision not found (RevisionNotFound)");
    gr_http_headers_clear(&rs.h);
    rs.status = 401;
    CHECK(gr_hf_error("u", &rs, 1) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "token was rejected");
    rs.status = 403;
    CHECK(gr_hf_error("u", &rs, 1) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "insufficient");
    static const int retry[] = {408, 429, 500, 502, 503, 504};
    for (size_t i = 0; i < sizeof retry / sizeof *retry; i++) {
        rs.status = retry[i];
        CHECK(gr_hf_retryable_status(retry[i]));
        CHECK(gr_hf_error("u", &rs, 0) == GR_ENET);
    }
    rs.status = 400;
    CHECK(!gr_hf_retryable_status(400) && gr_hf_error("u", &rs, 0) == GR_EINVAL);
    gr_http_resp_free(&rs);
}

/* Requests that fail before any server answers. */
static void test_request_errors(void)
{
    gr_http_resp rs = {0};
    gr_http_req rq = {.method = "GET", .url = "ftp://example/x"};
    CHECK(gr_http_do(&rq, &rs) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "only http:// and https://");
    rq.url = "http://127.0.0.1:1/x?secret=1";
    CHECK(gr_http_do(&rq, &rs) == GR_ENET);
    CHECK_CONTAINS(gr_errmsg(), "http://127.0.0.1:1/x?...");
    CHECK(strstr(gr_errmsg(), "secret") == NULL); /* signed query strings stay out of logs */
    volatile int cancel = 1;
    rq.cancel = &cancel;
    rq.url = "http://127.0.0.1:1/y";
    int rc = gr_http_do(&rq, &rs);
    CHECK(rc == GR_ECANCEL || rc == GR_ENET);
    gr_http_resp_free(&rs);
}

int main(void)
{
    RUN(test_headers);
    RUN(test_values);
    RUN(test_hf_urls);
    RUN(test_settings);
    RUN(test_listing);
    RUN(test_errors);
    RUN(test_request_errors);
    TEST_MAIN_END();
}
