/* gr_http: HTTP(S) requests over libcurl for downloads (manual redirects so
 * credentials never leave their origin, Range, stall timeouts, cancellation)
 * and the strict parsers for what servers send back (header lines,
 * Content-Range, sha256 ETags). */
#ifndef GR_HTTP_H
#define GR_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "gr_buf.h"

#define GR_HTTP_MAX_HEADERS   128   /* per response; more is GR_EFORMAT */
#define GR_HTTP_MAX_LINE      16384 /* bytes per header line */
#define GR_HTTP_MAX_REDIRECTS 10
#define GR_HTTP_ERRBODY_MAX   4096 /* bytes of an error response body kept */

/* Response headers of one response (the last one of a request). Names are
 * kept as sent; lookups ignore case. Values have surrounding blanks removed. */
typedef struct gr_http_headers {
    int status; /* from the status line, 0 before one was seen */
    size_t n;
    char *name[GR_HTTP_MAX_HEADERS];
    char *value[GR_HTTP_MAX_HEADERS];
} gr_http_headers;

void gr_http_headers_clear(gr_http_headers *h);
/* Feeds one raw header line as received (with or without CRLF). A status
 * line ("HTTP/1.1 302 Found", "HTTP/2 200") starts a new response and drops
 * earlier headers; the blank line ending the block is ignored. A malformed
 * line (no colon, bad name characters, NUL, obsolete folding, over-long, too
 * many headers, bad status line) is GR_EFORMAT with a message naming it. */
int gr_http_headers_feed(gr_http_headers *h, const char *line, size_t len);
/* The value of the first header with this name (ASCII case-insensitive), or NULL. */
const char *gr_http_header(const gr_http_headers *h, const char *name);

/* Strict decimal u64 ("0", "123"; no sign, blanks, or overflow). 0 or GR_EFORMAT. */
int gr_http_parse_u64(const char *s, uint64_t *v);
/* Parses a Content-Range value "bytes FIRST-LAST/TOTAL" (TOTAL may be "*",
 * giving UINT64_MAX). Requires FIRST <= LAST < TOTAL. 0 or GR_EFORMAT. */
int gr_http_parse_content_range(const char *v, uint64_t *first, uint64_t *last, uint64_t *total);
/* 1 when an ETag value (optionally W/ and quoted) is exactly 64 hex digits —
 * the form the Hugging Face Hub uses for the sha256 of LFS files — with the
 * lowercased digits copied to hex; 0 otherwise. */
int gr_http_etag_sha256(const char *etag, char hex[65]);
/* The ETag value without W/ and quotes, in a new string (caller frees). */
char *gr_http_etag_strip(const char *etag);
/* 1 when both absolute URLs have the same scheme, host (case-insensitive)
 * and port; 0 otherwise (also when either does not parse). */
int gr_http_same_origin(const char *a, const char *b);
/* Percent-encodes s except unreserved characters and those in keep (e.g. "/")
 * (caller frees), or NULL on ENOMEM. */
char *gr_http_quote(const char *s, const char *keep);

enum {
    GR_HTTP_FOLLOW_NONE = 0,
    GR_HTTP_FOLLOW_SAME_ORIGIN = 1, /* follow only redirects that stay on the origin */
    GR_HTTP_FOLLOW_ALL = 2,
};

typedef struct gr_http_req {
    const char *method;     /* "GET" or "HEAD" */
    const char *url;        /* http:// or https:// */
    const char *token;      /* sent as "Authorization: Bearer ..." to the first
                               URL's origin only; may be NULL */
    uint64_t range_from;    /* > 0: "Range: bytes=N-" */
    int follow;             /* GR_HTTP_FOLLOW_* */
    long connect_timeout_s; /* default 30 */
    long stall_timeout_s;   /* abort when no byte arrives for this long (default 60) */
    /* Receives the body of a final 2xx response, in order. A non-zero return
     * aborts the transfer and becomes gr_http_do's result (set gr_errmsg). */
    int (*on_body)(void *ud, const void *p, size_t n);
    void *ud;
    volatile int *cancel; /* polled during the transfer; may be NULL */
} gr_http_req;

typedef struct gr_http_resp {
    int status;          /* of the last response */
    gr_http_headers h;   /* its headers */
    char *url;           /* the URL that gave it */
    char *location;      /* absolute target of a redirect that was not followed */
    gr_buf errbody;      /* first GR_HTTP_ERRBODY_MAX bytes of a non-2xx body */
    uint64_t body_bytes; /* bytes passed to on_body */
    int auth_sent;       /* whether the last request carried the token */
    int redirects;       /* redirects followed */
} gr_http_resp;

/* Performs the request. Returns 0 when a response arrived (whatever its
 * status; the caller judges it), GR_ENET when the connection failed, timed
 * out, or was cut before the body was complete (message names the URL and
 * curl's reason), GR_ECANCEL when *cancel was set, GR_EFORMAT for malformed
 * headers or a bad redirect, or on_body's code. rs must be zeroed before the
 * first use; gr_http_resp_free releases it (and it can then be reused). */
int gr_http_do(const gr_http_req *rq, gr_http_resp *rs);
void gr_http_resp_free(gr_http_resp *rs);

#endif
