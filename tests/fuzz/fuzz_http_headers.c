/* fuzz_http_headers: hostile server responses. Byte 0 picks the parser:
 * 0 — the rest is header lines (split at '\n') fed to gr_http_headers_feed,
 * then the values the fetch op reads are parsed (Content-Range, sizes,
 * ETags); 1 — an hf:// URL; 2 — a repository listing (JSON). Accepted
 * results are checked against the rules they promise. */
#include "gr_err.h"
#include "fetch/gr_hf.h"
#include "gr_http.h"
#include "gr_manifest.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void headers(const char *p, size_t n)
{
    gr_http_headers h = {0};
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != '\n') continue;
        gr_http_headers_feed(&h, p + start, i - start + (i < n));
        start = i + 1;
    }
    if (h.n > GR_HTTP_MAX_HEADERS) abort();
    for (size_t i = 0; i < h.n; i++) {
        const char *v = h.value[i];
        size_t len = strlen(v);
        if (len && (v[0] == ' ' || v[len - 1] == ' ')) abort(); /* trimmed */
        if (strchr(h.name[i], ':')) abort();
        uint64_t a, b, c;
        if (!gr_http_parse_content_range(v, &a, &b, &c) && (a > b || (c != UINT64_MAX && b >= c)))
            abort();
        gr_http_parse_u64(v, &a);
        char hex[65];
        if (gr_http_etag_sha256(v, hex) && strlen(hex) != 64) abort();
        free(gr_http_etag_strip(v));
    }
    gr_http_header(&h, "X-Error-Code");
    gr_http_headers_clear(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    char *s = malloc(n + 1);
    if (!s) return 0;
    memcpy(s, p, n);
    s[n] = 0;
    switch (data[0] % 3) {
    case 0:
        headers(p, n);
        break;
    case 1: {
        gr_hf_url u;
        if (!gr_hf_url_parse(s, &u)) {
            if (!u.repo || !strchr(u.repo, '/')) abort();
            if (u.path && gr_manifest_check_path(u.path)) abort();
            gr_hf_url_free(&u);
        }
        break;
    }
    case 2: {
        gr_hf_listing l;
        if (!gr_hf_listing_parse(p, n, "fuzz", &l)) {
            for (size_t i = 0; i < l.n; i++)
                if (gr_manifest_check_path(l.files[i])) abort();
            gr_hf_listing_free(&l);
        }
        break;
    }
    }
    free(s);
    return 0;
}
