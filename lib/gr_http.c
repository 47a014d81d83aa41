/* gr_http: libcurl requests with manual redirects, and strict parsers for
 * response headers, Content-Range and ETags. */
#include "gr_http.h"
#include "gr_err.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_CONNECT_TIMEOUT_S 30
#define DEFAULT_STALL_TIMEOUT_S   60

/* ---- parsers ---- */

void gr_http_headers_clear(gr_http_headers *h)
{
    for (size_t i = 0; i < h->n; i++) free(h->name[i]), free(h->value[i]);
    h->n = 0;
    h->status = 0;
}

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int status_line(gr_http_headers *h, const char *s, size_t n)
{
    /* HTTP/<digits and dots> SP <3 digits> [SP reason] */
    size_t i = 5;
    while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) i++;
    if (i == 5 || i + 4 > n || s[i] != ' ') goto bad;
    int code = 0;
    for (size_t k = i + 1; k < i + 4; k++) {
        if (s[k] < '0' || s[k] > '9') goto bad;
        code = code * 10 + (s[k] - '0');
    }
    if (i + 4 < n && s[i + 4] != ' ') goto bad;
    if (code < 100 || code > 599) goto bad;
    for (size_t k = i + 4; k < n; k++)
        if ((unsigned char)s[k] < 0x20 && s[k] != '\t') goto bad;
    gr_http_headers_clear(h);
    h->status = code;
    return 0;
bad:
    return gr_seterr(GR_EFORMAT, "malformed HTTP status line '%.80s'", s);
}

int gr_http_headers_feed(gr_http_headers *h, const char *line, size_t len)
{
    if (len > GR_HTTP_MAX_LINE)
        return gr_seterr(GR_EFORMAT, "HTTP header line longer than %d bytes", GR_HTTP_MAX_LINE);
    if (len && line[len - 1] == '\n') len--;
    if (len && line[len - 1] == '\r') len--;
    if (len == 0) return 0; /* end of the header block */
    if (memchr(line, 0, len)) return gr_seterr(GR_EFORMAT, "NUL byte in an HTTP header line");
    if (len >= 5 && !memcmp(line, "HTTP/", 5)) {
        char buf[GR_HTTP_MAX_LINE + 1];
        memcpy(buf, line, len);
        buf[len] = 0;
        return status_line(h, buf, len);
    }
    if (line[0] == ' ' || line[0] == '\t')
        return gr_seterr(GR_EFORMAT, "folded HTTP header line (obsolete line folding)");
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line)
        return gr_seterr(GR_EFORMAT, "HTTP header line without a name and colon: '%.*s'",
                         (int)(len > 80 ? 80 : len), line);
    size_t nlen = (size_t)(colon - line);
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar((unsigned char)line[i]))
            return gr_seterr(GR_EFORMAT, "bad character in HTTP header name '%.*s'",
                             (int)(nlen > 80 ? 80 : nlen), line);
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
    for (const char *p = v; p < end; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            return gr_seterr(GR_EFORMAT, "control character in HTTP header '%.*s'",
                             (int)(nlen > 80 ? 80 : nlen), line);
    if (h->n >= GR_HTTP_MAX_HEADERS)
        return gr_seterr(GR_EFORMAT, "more than %d HTTP headers in one response",
                         GR_HTTP_MAX_HEADERS);
    char *name = strndup(line, nlen), *value = strndup(v, (size_t)(end - v));
    if (!name || !value) {
        free(name);
        free(value);
        return gr_seterr(GR_ENOMEM, "out of memory");
    }
    h->name[h->n] = name;
    h->value[h->n] = value;
    h->n++;
    return 0;
}

const char *gr_http_header(const gr_http_headers *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (!strcasecmp(h->name[i], name)) return h->value[i];
    return NULL;
}

/* Strict decimal at s; *end receives the first byte after the digits. */
static int parse_u64_prefix(const char *s, uint64_t *v, const char **end)
{
    uint64_t x = 0;
    const char *p = s;
    while (*p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (x > (UINT64_MAX - d) / 10) return gr_seterr(GR_EFORMAT, "number too large");
        x = x * 10 + d;
        p++;
    }
    if (p == s) return gr_seterr(GR_EFORMAT, "expected a decimal number");
    *v = x;
    *end = p;
    return 0;
}

int gr_http_parse_u64(const char *s, uint64_t *v)
{
    const char *end = NULL;
    if (!s) return gr_seterr(GR_EFORMAT, "missing number");
    int rc = parse_u64_prefix(s, v, &end);
    if (rc) return gr_seterr(rc, "'%.40s' is not a decimal byte count", s);
    if (*end) return gr_seterr(GR_EFORMAT, "'%.40s' is not a decimal byte count", s);
    return 0;
}

int gr_http_parse_content_range(const char *v, uint64_t *first, uint64_t *last, uint64_t *total)
{
    const char *p = v, *e = NULL;
    if (!v || strncmp(v, "bytes ", 6)) goto bad;
    p = v + 6;
    if (parse_u64_prefix(p, first, &e) || *e != '-') goto bad;
    if (parse_u64_prefix(e + 1, last, &e) || *e != '/') goto bad;
    p = e + 1;
    if (!strcmp(p, "*"))
        *total = UINT64_MAX;
    else if (parse_u64_prefix(p, total, &e) || *e)
        goto bad;
    if (*first > *last || (*total != UINT64_MAX && *last >= *total)) goto bad;
    return 0;
bad:
    return gr_seterr(GR_EFORMAT, "malformed Content-Range '%.80s'", v ? v : "");
}

char *gr_http_etag_strip(const char *etag)
{
    if (!etag) return NULL;
    const char *s = etag;
    if (!strncmp(s, "W/", 2)) s += 2;
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') s++, n -= 2;
    char *r = strndup(s, n);
    if (!r) gr_seterr(GR_ENOMEM, "out of memory");
    return r;
}

int gr_http_etag_sha256(const char *etag, char hex[65])
{
    if (!etag) return 0;
    const char *s = etag;
    if (!strncmp(s, "W/", 2)) s += 2;
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') s++, n -= 2;
    if (n != 64) return 0;
    for (size_t i = 0; i < 64; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F') c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
        hex[i] = c;
    }
    hex[64] = 0;
    return 1;
}

char *gr_http_quote(const char *s, const char *keep)
{
    static const char digits[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *r = malloc(3 * n + 1), *o = r;
    if (!r) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || (c && keep && strchr(keep, c))) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = digits[c >> 4];
            *o++ = digits[c & 15];
        }
    }
    *o = 0;
    return r;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* scheme, host and port of an absolute URL (port defaulted); 0 or -1. */
static int origin_of(const char *url, char **scheme, char **host, char **port)
{
    *scheme = *host = *port = NULL;
    CURLU *u = curl_url();
    if (!u) return -1;
    int ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_SCHEME, scheme, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, host, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PORT, port, CURLU_DEFAULT_PORT) == CURLUE_OK;
    curl_url_cleanup(u);
    if (ok) return 0;
    curl_free(*scheme), curl_free(*host), curl_free(*port);
    *scheme = *host = *port = NULL;
    return -1;
}

int gr_http_same_origin(const char *a, const char *b)
{
    pthread_once(&curl_once, curl_init_once);
    char *s1, *h1, *p1, *s2, *h2, *p2;
    if (origin_of(a, &s1, &h1, &p1)) return 0;
    if (origin_of(b, &s2, &h2, &p2)) {
        curl_free(s1), curl_free(h1), curl_free(p1);
        return 0;
    }
    int same = !strcasecmp(s1, s2) && !strcasecmp(h1, h2) && !strcmp(p1, p2);
    curl_free(s1), curl_free(h1), curl_free(p1);
    curl_free(s2), curl_free(h2), curl_free(p2);
    return same;
}

/* ---- requests ---- */

typedef struct xfer {
    const gr_http_req *rq;
    gr_http_resp *rs;
    int rc; /* error raised inside a callback */
} xfer;

static int is_redirect(int status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* URL without its query (pre-signed URLs carry credentials there). */
static const char *shown_url(const char *url, char buf[512])
{
    size_t n = strcspn(url, "?#");
    snprintf(buf, 512, "%.*s%s", (int)(n > 400 ? 400 : n), url, url[n] ? "?..." : "");
    return buf;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    xfer *x = ud;
    size_t n = size * nmemb;
    int rc = gr_http_headers_feed(&x->rs->h, p, n);
    if (rc) {
        x->rc = rc;
        return 0;
    }
    x->rs->status = x->rs->h.status;
    return n;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    xfer *x = ud;
    size_t n = size * nmemb;
    int st = x->rs->h.status;
    if (is_redirect(st)) return n;
    if (st >= 200 && st < 300) {
        if (x->rq->on_body) {
            int rc = x->rq->on_body(x->rq->ud, p, n);
            if (rc) {
                x->rc = rc;
                return 0;
            }
        }
        x->rs->body_bytes += n;
        return n;
    }
    gr_buf *eb = &x->rs->errbody;
    if (eb->len < GR_HTTP_ERRBODY_MAX) {
        size_t k = GR_HTTP_ERRBODY_MAX - eb->len;
        gr_buf_append(eb, p, n < k ? n : k);
    }
    return n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    xfer *x = ud;
    (void)dt, (void)dn, (void)ut, (void)un;
    return x->rq->cancel && *x->rq->cancel ? 1 : 0;
}

void gr_http_resp_free(gr_http_resp *rs)
{
    if (!rs) return;
    gr_http_headers_clear(&rs->h);
    free(rs->url);
    free(rs->location);
    gr_buf_free(&rs->errbody);
    memset(rs, 0, sizeof *rs);
}

int gr_http_do(const gr_http_req *rq, gr_http_resp *rs)
{
    pthread_once(&curl_once, curl_init_once);
    gr_http_resp_free(rs);
    char errbuf[CURL_ERROR_SIZE], sb[512];
    char *url = strdup(rq->url);
    struct curl_slist *hdrs = NULL;
    CURL *e = curl_easy_init();
    int rc = 0;
    if (!url || !e) {
        rc = gr_seterr(GR_ENOMEM, "out of memory starting an HTTP request");
        goto done;
    }
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
        rc = gr_seterr(GR_EINVAL, "%s: only http:// and https:// URLs can be requested",
                       shown_url(url, sb));
        goto done;
    }
    int head = !strcmp(rq->method, "HEAD");
    for (int hop = 0;; hop++) {
        xfer x = {rq, rs, 0};
        gr_http_headers_clear(&rs->h);
        gr_buf_reset(&rs->errbody);
        rs->status = 0;
        curl_slist_free_all(hdrs);
        hdrs = NULL;
        int auth = rq->token && *rq->token && gr_http_same_origin(url, rq->url);
        char line[4200], range[64];
        /* Exact sizes matter (X-Linked-Size, Content-Length): no compression. */
        hdrs = curl_slist_append(hdrs, "Accept-Encoding: identity");
        if (auth) {
            snprintf(line, sizeof line, "Authorization: Bearer %.4096s", rq->token);
            struct curl_slist *t = curl_slist_append(hdrs, line);
            if (t)
                hdrs = t;
            else
                auth = 0;
        }
        rs->auth_sent = auth;
        curl_easy_reset(e);
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(e, CURLOPT_USERAGENT, "graft/" GRAFT_VERSION);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, &x);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &x);
        curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(e, CURLOPT_XFERINFODATA, &x);
        curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT,
                         rq->connect_timeout_s > 0 ? rq->connect_timeout_s
                                                   : (long)DEFAULT_CONNECT_TIMEOUT_S);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                         rq->stall_timeout_s > 0 ? rq->stall_timeout_s
                                                 : (long)DEFAULT_STALL_TIMEOUT_S);
        if (head) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        if (rq->range_from > 0) {
            snprintf(range, sizeof range, "%llu-", (unsigned long long)rq->range_from);
            curl_easy_setopt(e, CURLOPT_RANGE, range);
        }
        errbuf[0] = 0;
        CURLcode cc = curl_easy_perform(e);
        free(rs->url);
        rs->url = strdup(url);
        if (x.rc) {
            rc = x.rc;
            goto done;
        }
        if (cc == CURLE_ABORTED_BY_CALLBACK) {
            rc = gr_seterr(GR_ECANCEL, "%s: cancelled", shown_url(url, sb));
            goto done;
        }
        if (cc != CURLE_OK) {
            const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);
            if (cc == CURLE_PARTIAL_FILE)
                rc = gr_seterr(GR_ENET, "%s: connection cut after %llu bytes (%s)",
                               shown_url(url, sb), (unsigned long long)rs->body_bytes, why);
            else
                rc = gr_seterr(GR_ENET, "%s: %s", shown_url(url, sb), why);
            goto done;
        }
        if (!is_redirect(rs->status)) break;
        char *loc = NULL;
        if (curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &loc) != CURLE_OK || !loc) {
            rc = gr_seterr(GR_EFORMAT, "%s: HTTP %d redirect without a usable Location",
                           shown_url(url, sb), rs->status);
            goto done;
        }
        if (strncmp(loc, "http://", 7) && strncmp(loc, "https://", 8)) {
            rc = gr_seterr(GR_EFORMAT, "%s: redirect to a non-HTTP URL", shown_url(url, sb));
            goto done;
        }
        int same = gr_http_same_origin(loc, url);
        if (rq->follow == GR_HTTP_FOLLOW_NONE ||
            (rq->follow == GR_HTTP_FOLLOW_SAME_ORIGIN && !same)) {
            if (!(rs->location = strdup(loc))) rc = gr_seterr(GR_ENOMEM, "out of memory");
            break;
        }
        if (hop + 1 > GR_HTTP_MAX_REDIRECTS) {
            rc = gr_seterr(GR_ENET, "%s: more than %d redirects", shown_url(rq->url, sb),
                           GR_HTTP_MAX_REDIRECTS);
            goto done;
        }
        char *next = strdup(loc);
        if (!next) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            goto done;
        }
        free(url);
        url = next;
        rs->redirects++;
    }
done:
    curl_slist_free_all(hdrs);
    if (e) curl_easy_cleanup(e);
    free(url);
    return rc;
}
