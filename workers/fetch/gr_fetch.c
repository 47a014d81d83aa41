/* gr_fetch: the fetch op — file://, http(s):// and hf:// artifacts into the
 * op's output tree, with HEAD metadata, Range resume, retries with backoff,
 * size and sha256 checks before a file gets its final name, progress in
 * bytes, cancellation, and an offline mode served from the store. */
#include "gr_cas.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_hf.h"
#include "gr_http.h"
#include "gr_log.h"
#include "gr_op.h"
#include "gr_sha256.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FETCH_DEFAULT_RETRIES 5
#define FETCH_DEFAULT_BACKOFF 1.0  /* seconds before the first retry; doubles */
#define FETCH_MAX_BACKOFF     30.0 /* seconds */
#define FETCH_MAX_RETRY_AFTER 60.0 /* seconds of Retry-After honoured */
#define FETCH_DEFAULT_STALL   60   /* seconds without a byte before a retry */
#define FETCH_MAX_PATTERNS    64
#define FETCH_COPY_CHUNK      (1u << 20)
#define FETCH_INDEX_MAX       (16u << 20)
#define SLEEP_TICK_S          0.02 /* cancel latency while backing off */
#define UNKNOWN_SIZE          UINT64_MAX

static const gr_param fetch_params[] = {
    {"url", GR_P_STR, 1, "file:///abs/path, http(s)://..., or hf://org/name[@revision][/path]"},
    {"include", GR_P_ANY, 0,
     "file patterns (string, comma-separated, or list) for repositories and directories; "
     "default *.safetensors, *.json, tokenizer*, *.model, *.txt"},
    {"revision", GR_P_STR, 0, "branch, tag or commit for hf:// (default main)"},
    {"sha256", GR_P_STR, 0, "expected sha256 of a single fetched file"},
    {"http_retries", GR_P_INT, 0, "attempts after a transient failure without progress (default 5)"},
    {"backoff", GR_P_NUM, 0, "seconds before the first retry, doubling (default 1)"},
    {"timeout", GR_P_INT, 0, "seconds without data before a connection is retried (default 60)"},
    {NULL, 0, 0, NULL},
};

typedef struct fetch {
    gr_op_ctx *ctx;
    const char *url;
    const char *include[FETCH_MAX_PATTERNS + 1];
    char *include_buf; /* storage for comma-split patterns */
    int include_given;
    char sha_param[GR_SHA256_HEXSZ]; /* "" when not given */
    int64_t retries, stall;
    double backoff;
    gr_cas *cas;          /* the store (index, offline, reuse); NULL without one */
    uint64_t total, done; /* progress over all files */
    gr_manifest *out;     /* what went into outdir */
    uint64_t downloaded, reused, nretries, nresumed, nrestarts;
    char *commit;
    unsigned seq; /* partial file names */
} fetch;

/* ---- small helpers ---- */

/* Sleeps secs, waking early (GR_ECANCEL) when the task is cancelled. */
static int nap(fetch *f, double secs)
{
    double end = gr_now_s() + secs;
    for (;;) {
        if (gr_op_cancelled(f->ctx)) return gr_seterr(GR_ECANCEL, "fetch: cancelled");
        double left = end - gr_now_s();
        if (left <= 0) return 0;
        double d = left < SLEEP_TICK_S ? left : SLEEP_TICK_S;
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static int backoff_wait(fetch *f, int attempt, const gr_http_resp *rs)
{
    double d = f->backoff;
    for (int i = 1; i < attempt && d < FETCH_MAX_BACKOFF; i++) d *= 2;
    if (d > FETCH_MAX_BACKOFF) d = FETCH_MAX_BACKOFF;
    const char *ra = rs ? gr_http_header(&rs->h, "Retry-After") : NULL;
    uint64_t secs;
    if (ra && !gr_http_parse_u64(ra, &secs)) {
        double r = secs > FETCH_MAX_RETRY_AFTER ? FETCH_MAX_RETRY_AFTER : (double)secs;
        if (r > d) d = r;
    }
    gr_clearerr();
    return nap(f, d);
}

static void progress(fetch *f, uint64_t extra, const char *what)
{
    double done = (double)(f->done + extra);
    double total = f->total == UNKNOWN_SIZE || f->total == 0 ? done : (double)f->total;
    gr_op_progress(f->ctx, done, total < done ? done : total, "%s", what);
}

static char *partial_path(fetch *f)
{
    char name[64];
    snprintf(name, sizeof name, "fetch-%u.part", f->seq++);
    return gr_fs_join(f->ctx->workdir ? f->ctx->workdir : f->ctx->outdir, name);
}

/* Moves a finished file to outdir/rel (directories created as needed). */
static int place_output(fetch *f, const char *partial, const char *rel)
{
    char *dst = gr_fs_join(f->ctx->outdir, rel);
    if (!dst) return GR_ENOMEM;
    int rc = 0;
    char *slash = strrchr(dst, '/');
    *slash = 0;
    rc = gr_fs_mkdirs(dst, 0755, 0);
    *slash = '/';
    if (!rc && rename(partial, dst)) {
        if (errno == EXDEV) {
            rc = gr_fs_copy_file(partial, dst, 0644);
            if (!rc) unlink(partial);
        } else {
            rc = gr_seterr(GR_EIO, "%s: cannot move into the output: %s", dst, strerror(errno));
        }
    }
    free(dst);
    return rc;
}

/* Puts the stored blob id at outdir/rel (hardlink, else copy). */
static int output_from_store(fetch *f, const char *id, uint64_t size, const char *rel)
{
    char *src = NULL, *dst = NULL;
    uint64_t have;
    int rc = gr_cas_blob_path(f->cas, id, &src, &have);
    if (rc) return rc;
    if (size != UNKNOWN_SIZE && have != size) {
        rc = gr_seterr(GR_EFORMAT, "%s: stored %s has %" PRIu64 " bytes, expected %" PRIu64, rel,
                       id, have, size);
        goto done;
    }
    if (!(dst = gr_fs_join(f->ctx->outdir, rel))) {
        rc = GR_ENOMEM;
        goto done;
    }
    char *slash = strrchr(dst, '/');
    *slash = 0;
    rc = gr_fs_mkdirs(dst, 0755, 0);
    *slash = '/';
    if (!rc && link(src, dst)) rc = gr_fs_copy_file(src, dst, 0444);
    if (!rc) rc = gr_manifest_add(f->out, rel, id, have);
    if (!rc) {
        f->reused++;
        f->done += have;
    }
done:
    free(src);
    free(dst);
    return rc;
}

/* ---- downloading one file ---- */

typedef struct dl {
    fetch *f;
    const char *what;
    int fd;
    gr_sha256 *h;
    uint64_t have, size;
    uint64_t range_from;
    gr_http_resp *rs;
    int first;
    int restart; /* start over from byte 0 before the next attempt */
} dl;

static int dl_reset(dl *d)
{
    if (ftruncate(d->fd, 0) || lseek(d->fd, 0, SEEK_SET) < 0)
        return gr_seterr(GR_EIO, "%s: cannot truncate the partial download: %s", d->what,
                         strerror(errno));
    d->have = 0;
    d->restart = 0;
    d->f->nrestarts++;
    return gr_sha256_reset(d->h);
}

static int dl_sink(void *ud, const void *p, size_t n)
{
    dl *d = ud;
    int rc;
    if (d->first) {
        d->first = 0;
        if (d->range_from > 0 && d->rs->status != 206) {
            /* A full answer to a range request: start over. */
            GR_INFO("fetch", "%s: server ignored the range request; starting over", d->what);
            if ((rc = dl_reset(d))) return rc;
        } else if (d->rs->status == 206) {
            uint64_t first, last, total;
            const char *cr = gr_http_header(&d->rs->h, "Content-Range");
            if ((rc = gr_http_parse_content_range(cr, &first, &last, &total))) {
                d->restart = 1;
                return gr_adderr(GR_ENET, "%s", d->what);
            }
            if (first != d->have) {
                d->restart = 1;
                return gr_seterr(GR_ENET, "%s: server resumed at byte %" PRIu64 ", not %" PRIu64,
                                 d->what, first, d->have);
            }
            if (total != UINT64_MAX && d->size != UNKNOWN_SIZE && total != d->size)
                return gr_seterr(GR_EFORMAT,
                                 "%s: Content-Range says %" PRIu64 " bytes, the size announced was "
                                 "%" PRIu64,
                                 d->what, total, d->size);
        }
    }
    if (d->size != UNKNOWN_SIZE && n > d->size - d->have)
        return gr_seterr(GR_EFORMAT, "%s: server sent more than the announced %" PRIu64 " bytes",
                         d->what, d->size);
    if ((rc = gr_fs_write_all(d->fd, p, n, d->what))) return rc;
    if ((rc = gr_sha256_update(d->h, p, n))) return rc;
    d->have += n;
    d->f->downloaded += n;
    progress(d->f, d->have, d->what);
    if (gr_op_cancelled(d->f->ctx)) return gr_seterr(GR_ECANCEL, "%s: cancelled", d->what);
    return 0;
}

/* Downloads url to outdir/rel. size: expected bytes or UNKNOWN_SIZE; sha_hex:
 * expected sha256 ("" when unknown) and sha_src where it came from. The file
 * is written under workdir and moved into outdir only after the checks. */
static int download(fetch *f, const char *what, const char *url, const char *token, uint64_t size,
                    const char *sha_hex, const char *sha_src, const char *rel)
{
    gr_http_resp rs = {0};
    dl d = {f, what, -1, NULL, 0, size, 0, &rs, 0, 0};
    char *partial = partial_path(f);
    int rc = 0, attempt = 0, mismatches = 0;
    uint64_t last_have = 0;
    if (!partial) return GR_ENOMEM;
    d.fd = open(partial, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (d.fd < 0) {
        rc = gr_seterr(GR_EIO, "%s: cannot create: %s", partial, strerror(errno));
        goto done;
    }
    if (!(d.h = gr_sha256_new())) {
        rc = GR_ENOMEM;
        goto done;
    }
    for (;;) {
        int complete = 0;
        if (gr_op_cancelled(f->ctx)) {
            rc = gr_seterr(GR_ECANCEL, "%s: cancelled", what);
            goto done;
        }
        if (d.restart && (rc = dl_reset(&d))) goto done;
        if (d.have > 0) f->nresumed++;
        d.range_from = d.have;
        d.first = 1;
        gr_http_req rq = {.method = "GET",
                          .url = url,
                          .token = token,
                          .range_from = d.have,
                          .follow = GR_HTTP_FOLLOW_ALL,
                          .stall_timeout_s = (long)f->stall,
                          .on_body = dl_sink,
                          .ud = &d,
                          .cancel = f->ctx->cancel};
        rc = gr_http_do(&rq, &rs);
        if (!rc) {
            int st = rs.status;
            if (st == 416 && d.have > 0 && d.have == size) {
                complete = 1; /* asked for bytes past the end: we had them all */
            } else if (st >= 200 && st < 300) {
                if (size != UNKNOWN_SIZE && d.have < size)
                    rc = gr_seterr(GR_ENET,
                                   "%s: transfer ended after %" PRIu64 " of %" PRIu64 " bytes",
                                   what, d.have, size);
                else
                    complete = 1;
            } else if (st == 416) {
                d.restart = 1;
                rc = gr_seterr(GR_ENET, "%s: HTTP 416 for a resume at byte %" PRIu64, what, d.have);
            } else {
                rc = gr_hf_error(what, &rs, token != NULL);
                if (rc != GR_ENET) goto done;
            }
        }
        if (complete) {
            uint8_t dig[GR_SHA256_LEN];
            char got[GR_SHA256_HEXSZ];
            if ((rc = gr_sha256_final(d.h, dig))) goto done;
            gr_sha256_hex(dig, got);
            if (sha_hex[0] && strcmp(got, sha_hex)) {
                if (mismatches++ == 0) {
                    /* Maybe a bad splice of a resumed file: once more from 0. */
                    GR_WARN("fetch", "%s: sha256 mismatch, downloading again from the start", what);
                    d.restart = 1;
                    continue;
                }
                rc = gr_seterr(GR_EFORMAT,
                               "%s: corrupt download: content has sha256 %s, expected %s (%s)",
                               what, got, sha_hex, sha_src);
                goto done;
            }
            close(d.fd);
            d.fd = -1;
            char id[GR_ID_SZ];
            gr_sha256_id(dig, id);
            if ((rc = place_output(f, partial, rel))) goto done;
            if ((rc = gr_manifest_add(f->out, rel, id, d.have))) goto done;
            f->done += d.have;
            rc = 0;
            goto done;
        }
        if (rc != GR_ENET && rc != GR_ETIMEOUT) goto done;
        if (d.have > last_have) attempt = 0; /* progress made: a fresh budget */
        last_have = d.have;
        if (++attempt > f->retries) {
            rc = gr_adderr(GR_ENET, "%s: giving up after %d attempts", what, attempt);
            goto done;
        }
        f->nretries++;
        GR_INFO("fetch", "%s: %s; retry %d of %" PRId64, what, gr_errmsg(), attempt, f->retries);
        if ((rc = backoff_wait(f, attempt, &rs))) goto done;
    }
done:
    if (d.fd >= 0) close(d.fd);
    if (partial) unlink(partial);
    free(partial);
    gr_sha256_destroy(&d.h);
    gr_http_resp_free(&rs);
    return rc;
}

/* A request whose response the caller judges (HEAD, listing), retried on
 * connection failures and 408/429/5xx. body: collects a 2xx body when not
 * NULL (at most max bytes). */
typedef struct collect {
    gr_buf *b;
    size_t max;
    const char *what;
} collect;

static int collect_sink(void *ud, const void *p, size_t n)
{
    collect *c = ud;
    if (c->b->len + n > c->max)
        return gr_seterr(GR_EFORMAT, "%s: response larger than %zu bytes", c->what, c->max);
    return gr_buf_append(c->b, p, n);
}

static int request(fetch *f, const char *what, const char *method, const char *url,
                   const char *token, int follow, gr_buf *body, size_t max, gr_http_resp *rs)
{
    collect c = {body, max, what};
    for (int attempt = 1;; attempt++) {
        if (body) gr_buf_reset(body);
        gr_http_req rq = {.method = method,
                          .url = url,
                          .token = token,
                          .follow = follow,
                          .stall_timeout_s = (long)f->stall,
                          .on_body = body ? collect_sink : NULL,
                          .ud = &c,
                          .cancel = f->ctx->cancel};
        int rc = gr_http_do(&rq, rs);
        if (!rc && !gr_hf_retryable_status(rs->status)) return 0;
        if (!rc) rc = gr_hf_error(what, rs, token != NULL);
        if (rc != GR_ENET && rc != GR_ETIMEOUT) return rc;
        if (attempt > f->retries) return gr_adderr(rc, "giving up after %d attempts", attempt);
        f->nretries++;
        GR_INFO("fetch", "%s; retry %d of %" PRId64, gr_errmsg(), attempt, f->retries);
        if ((rc = backoff_wait(f, attempt, rs))) return rc;
    }
}

/* ---- the store index (offline mode and reuse) ---- */

static char *index_path(fetch *f, const char *key)
{
    uint8_t d[GR_SHA256_LEN];
    char hex[GR_SHA256_HEXSZ];
    if (gr_sha256_buf(key, strlen(key), d)) return NULL;
    gr_sha256_hex(d, hex);
    size_t n = strlen(gr_cas_root(f->cas)) + 100;
    char *p = malloc(n);
    if (!p) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(p, n, "%s/index/fetch/%s.json", gr_cas_root(f->cas), hex);
    return p;
}

/* Records key → the files now in outdir. Best effort: a failure is logged. */
static void index_record(fetch *f, const char *key)
{
    if (!f->cas || !key) return;
    gr_buf b = {0};
    char *p = index_path(f, key);
    gr_buf_puts(&b, "{\"key\":");
    gr_buf_json_str(&b, key, strlen(key));
    if (f->commit) {
        gr_buf_puts(&b, ",\"commit\":");
        gr_buf_json_str(&b, f->commit, strlen(f->commit));
    }
    gr_buf_puts(&b, ",\"files\":[");
    for (size_t i = 0; i < gr_manifest_count(f->out); i++) {
        const gr_manifest_entry *e = gr_manifest_entry_at(f->out, i);
        gr_buf_puts(&b, i ? ",{\"path\":" : "{\"path\":");
        gr_buf_json_str(&b, e->path, strlen(e->path));
        gr_buf_printf(&b, ",\"id\":\"%s\",\"size\":%" PRIu64 "}", e->id, e->size);
    }
    gr_buf_puts(&b, "]}");
    char *dir = p ? strndup(p, strrchr(p, '/') - p) : NULL;
    if (!p || !dir || b.oom || gr_fs_mkdirs(dir, 0755, 1) ||
        gr_fs_write_atomic(p, b.data, b.len, 0644))
        GR_WARN("fetch", "could not record %s in the store index: %s", f->url, gr_errmsg());
    free(dir);
    free(p);
    gr_buf_free(&b);
}

/* Serves a fetch from the store: every file the index names for key must be
 * present. GR_ENOTFOUND otherwise. */
static int index_serve(fetch *f, const char *key, const char *what)
{
    if (!f->cas)
        return gr_seterr(GR_ENOTFOUND,
                         "%s: HF_HUB_OFFLINE is set and there is no store to serve "
                         "it from",
                         what);
    char *p = index_path(f, key);
    if (!p) return GR_ENOMEM;
    gr_json *j = NULL;
    char *data = NULL;
    size_t len = 0;
    int rc = gr_fs_read_file(p, FETCH_INDEX_MAX, &data, &len);
    if (rc) {
        rc = gr_seterr(GR_ENOTFOUND,
                       "%s: HF_HUB_OFFLINE is set and the store has no copy (fetch it once "
                       "online first)",
                       what);
        goto done;
    }
    j = gr_json_parse(data, len, p);
    const gr_json *k = j ? gr_json_get(j, "key") : NULL;
    const gr_json *files = j ? gr_json_get(j, "files") : NULL;
    if (!k || k->type != GR_JSON_STR || strcmp(k->str, key) || !files ||
        files->type != GR_JSON_ARR) {
        rc = gr_seterr(GR_EFORMAT, "%s: store index entry %s is damaged", what, p);
        goto done;
    }
    const char *commit = gr_json_get_str(j, "commit", NULL);
    if (commit && !(f->commit = strdup(commit))) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    /* Check everything first so a partial output is never produced. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < files->len; i++) {
            const gr_json *e = files->items[i];
            const char *path = gr_json_get_str(e, "path", NULL);
            const char *id = gr_json_get_str(e, "id", NULL);
            const gr_json *sz = gr_json_get(e, "size");
            if (!path || !id || !sz || !sz->is_int || sz->i < 0 || gr_manifest_check_path(path) ||
                gr_id_parse(id, NULL)) {
                rc = gr_seterr(GR_EFORMAT, "%s: store index entry %s is damaged (file %zu)", what,
                               p, i);
                goto done;
            }
            if (pass == 0) {
                uint64_t have;
                char *bp = NULL;
                if (gr_cas_blob_path(f->cas, id, &bp, &have) || have != (uint64_t)sz->i) {
                    free(bp);
                    rc = gr_seterr(GR_ENOTFOUND,
                                   "%s: HF_HUB_OFFLINE is set and the store lacks '%s' (%s)", what,
                                   path, id);
                    goto done;
                }
                free(bp);
                f->total += (uint64_t)sz->i;
            } else if ((rc = output_from_store(f, id, (uint64_t)sz->i, path))) {
                goto done;
            }
        }
    }
    progress(f, 0, what);
done:
    gr_json_free(j);
    free(data);
    free(p);
    return rc;
}

/* ---- hf:// ---- */

typedef struct hf_file {
    const char *path;
    uint64_t size;
    char sha[GR_SHA256_HEXSZ];
    const char *sha_src;
} hf_file;

/* Index key of an hf:// fetch. The endpoint is left out: a mirror serves
 * the same repository, and offline mode must not depend on it. */
static char *hf_key(const gr_hf_url *u, const char *revision, const fetch *f)
{
    gr_buf b = {0};
    gr_buf_printf(&b, "hf\n%s%s\n%s\n%s\n", u->dataset ? "datasets/" : "", u->repo, revision,
                  u->path ? u->path : "*");
    for (size_t i = 0; f->include[i]; i++)
        gr_buf_printf(&b, "%s%s", i ? "\x1f" : "", f->include[i]);
    if (b.oom) {
        gr_buf_free(&b);
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    return gr_buf_take(&b);
}

static int fetch_hf(fetch *f)
{
    gr_hf_url u;
    gr_hf_listing l = {0};
    gr_http_resp rs = {0};
    gr_buf body = {0};
    hf_file *files = NULL;
    size_t nfiles = 0;
    char *endpoint = NULL, *token = NULL, *key = NULL, *what = NULL, *fwhat = NULL, *url = NULL;
    const char *revparam = NULL;
    int rc = gr_hf_url_parse(f->url, &u);
    if (rc) return rc;
    if ((rc = gr_op_str(f->ctx, "revision", NULL, &revparam))) goto done;
    if (revparam && u.revision && strcmp(revparam, u.revision)) {
        rc = gr_seterr(GR_EINVAL, "%s: revision '%s' in the URL and '%s' in the parameters differ",
                       f->url, u.revision, revparam);
        goto done;
    }
    const char *revision = u.revision ? u.revision : revparam ? revparam : "main";
    if (f->sha_param[0] && !u.path) {
        rc = gr_seterr(GR_EINVAL, "%s: parameter 'sha256' needs a single file (hf://org/name/FILE)",
                       f->url);
        goto done;
    }
    if (!(endpoint = gr_hf_endpoint()) || !(key = hf_key(&u, revision, f))) {
        rc = GR_ENOMEM;
        goto done;
    }
    /* "hf://org/name@rev" for messages about the repository */
    size_t wn = strlen(u.repo) + strlen(revision) + 32;
    if (!(what = malloc(wn))) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    snprintf(what, wn, "hf://%s%s%s%s", u.dataset ? "datasets/" : "", u.repo,
             u.revision || revparam ? "@" : "", u.revision || revparam ? revision : "");
    if (gr_hf_offline()) {
        rc = index_serve(f, key, what);
        goto done;
    }
    token = gr_hf_token();
    const char *rev_for_files = revision;
    if (u.path) {
        if (!(files = calloc(1, sizeof *files))) goto oom;
        files[0].path = u.path;
        nfiles = 1;
    } else {
        if (!(url = gr_hf_listing_url(endpoint, &u, revision))) goto oom;
        if ((rc = request(f, what, "GET", url, token, GR_HTTP_FOLLOW_SAME_ORIGIN, &body,
                          GR_HF_MAX_LISTING, &rs)))
            goto done;
        if (rs.status < 200 || rs.status >= 300) {
            rc = gr_hf_error(what, &rs, token != NULL);
            goto done;
        }
        if ((rc = gr_hf_listing_parse(body.data ? body.data : "", body.len, what, &l))) goto done;
        if (l.commit) rev_for_files = l.commit;
        if (l.n && !(files = calloc(l.n, sizeof *files))) goto oom;
        for (size_t i = 0; i < l.n; i++)
            if (gr_hf_match(l.files[i], f->include)) files[nfiles++].path = l.files[i];
        if (!nfiles) {
            gr_buf pats = {0};
            for (size_t i = 0; f->include[i]; i++)
                gr_buf_printf(&pats, "%s%s", i ? ", " : "", f->include[i]);
            rc = gr_seterr(GR_ENOTFOUND,
                           "%s: none of its %zu files matches the include patterns "
                           "(%s)",
                           what, l.n, pats.data ? pats.data : "");
            gr_buf_free(&pats);
            goto done;
        }
    }
    /* HEAD every file first: sizes for progress, hashes to check, errors early. */
    f->total = 0;
    for (size_t i = 0; i < nfiles; i++) {
        hf_file *hf = &files[i];
        free(url);
        free(fwhat);
        url = gr_hf_file_url(endpoint, &u, rev_for_files, hf->path);
        size_t n = strlen(what) + strlen(hf->path) + 2;
        if (!url || !(fwhat = malloc(n))) goto oom;
        snprintf(fwhat, n, "%s/%s", what, hf->path);
        if ((rc = request(f, fwhat, "HEAD", url, token, GR_HTTP_FOLLOW_SAME_ORIGIN, NULL, 0, &rs)))
            goto done;
        int st = rs.status;
        if (!(st >= 200 && st < 300) && !(rs.location && st >= 300 && st < 400)) {
            rc = gr_hf_error(fwhat, &rs, token != NULL);
            goto done;
        }
        const char *commit = gr_http_header(&rs.h, "X-Repo-Commit");
        if (commit && !f->commit && !(f->commit = strdup(commit))) goto oom;
        const char *ls = gr_http_header(&rs.h, "X-Linked-Size");
        const char *cl = st < 300 ? gr_http_header(&rs.h, "Content-Length") : NULL;
        const char *size_src = ls ? ls : cl;
        hf->size = UNKNOWN_SIZE;
        if (size_src && gr_http_parse_u64(size_src, &hf->size)) {
            rc = gr_adderr(GR_EFORMAT, "%s: %s", fwhat, ls ? "X-Linked-Size" : "Content-Length");
            goto done;
        }
        const char *le = gr_http_header(&rs.h, "X-Linked-Etag");
        const char *et = le ? le : gr_http_header(&rs.h, "ETag");
        if (gr_http_etag_sha256(et, hf->sha)) hf->sha_src = le ? "X-Linked-Etag" : "ETag";
        if (f->sha_param[0]) {
            if (hf->sha_src && strcmp(hf->sha, f->sha_param)) {
                rc = gr_seterr(GR_EFORMAT, "%s: the Hub says sha256 %s, parameter 'sha256' says %s",
                               fwhat, hf->sha, f->sha_param);
                goto done;
            }
            memcpy(hf->sha, f->sha_param, GR_SHA256_HEXSZ);
            hf->sha_src = "parameter sha256";
        }
        if (f->total != UNKNOWN_SIZE)
            f->total = hf->size == UNKNOWN_SIZE ? UNKNOWN_SIZE : f->total + hf->size;
    }
    if (f->total == UNKNOWN_SIZE) f->total = 0;
    progress(f, 0, what);
    for (size_t i = 0; i < nfiles; i++) {
        hf_file *hf = &files[i];
        char id[GR_ID_SZ];
        snprintf(id, sizeof id, "sha256:%s", hf->sha);
        if (hf->sha_src && f->cas && gr_cas_has(f->cas, id) == 1 &&
            !output_from_store(f, id, hf->size, hf->path)) {
            progress(f, 0, hf->path);
            continue;
        }
        free(url);
        free(fwhat);
        url = gr_hf_file_url(endpoint, &u, rev_for_files, hf->path);
        size_t n = strlen(what) + strlen(hf->path) + 2;
        if (!url || !(fwhat = malloc(n))) goto oom;
        snprintf(fwhat, n, "%s/%s", what, hf->path);
        if ((rc = download(f, fwhat, url, token, hf->size, hf->sha_src ? hf->sha : "",
                           hf->sha_src ? hf->sha_src : "", hf->path)))
            goto done;
    }
    index_record(f, key);
    if (f->commit && strcmp(f->commit, revision)) {
        /* Also reachable offline by the resolved commit. */
        char *ckey = hf_key(&u, f->commit, f);
        index_record(f, ckey);
        free(ckey);
    }
    goto done;
oom:
    rc = gr_seterr(GR_ENOMEM, "out of memory");
done:
    free(files);
    free(endpoint);
    if (token) memset(token, 0, strlen(token));
    free(token);
    free(key);
    free(what);
    free(fwhat);
    free(url);
    gr_buf_free(&body);
    gr_http_resp_free(&rs);
    gr_hf_listing_free(&l);
    gr_hf_url_free(&u);
    return rc;
}

/* ---- http(s):// ---- */

/* Output name: the last path segment of the URL, percent-decoded. */
static char *url_basename(const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    size_t n = strcspn(p, "?#");
    const char *end = p + n, *slash = end;
    while (slash > p && slash[-1] != '/') slash--;
    if (slash == p) return strdup("download"); /* no path */
    char *r = malloc((size_t)(end - slash) + 1), *o = r;
    if (!r) return NULL;
    for (const char *s = slash; s < end; s++) {
        if (*s == '%' && end - s >= 3 && isxdigit((unsigned char)s[1]) &&
            isxdigit((unsigned char)s[2])) {
            char hex[3] = {s[1], s[2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
    if (!*r || strchr(r, '/') || gr_manifest_check_path(r)) {
        gr_clearerr();
        free(r);
        return strdup("download");
    }
    return r;
}

static int fetch_http(fetch *f)
{
    gr_http_resp rs = {0};
    char *name = url_basename(f->url), *key = NULL;
    int rc = 0;
    if (!name) return gr_seterr(GR_ENOMEM, "out of memory");
    size_t kn = strlen(f->url) + 8;
    if (!(key = malloc(kn))) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    snprintf(key, kn, "url\n%s", f->url);
    if (gr_hf_offline()) {
        char id[GR_ID_SZ];
        snprintf(id, sizeof id, "sha256:%s", f->sha_param);
        if (f->sha_param[0] && f->cas && gr_cas_has(f->cas, id) == 1)
            rc = output_from_store(f, id, UNKNOWN_SIZE, name);
        else
            rc = index_serve(f, key, f->url);
        goto done;
    }
    /* HEAD for the size only: servers that refuse HEAD still get a GET. */
    uint64_t size = UNKNOWN_SIZE;
    rc = request(f, f->url, "HEAD", f->url, NULL, GR_HTTP_FOLLOW_ALL, NULL, 0, &rs);
    if (rc == GR_ECANCEL) goto done;
    if (!rc && rs.status >= 200 && rs.status < 300 && !gr_http_header(&rs.h, "Content-Encoding")) {
        const char *cl = gr_http_header(&rs.h, "Content-Length");
        if (cl && gr_http_parse_u64(cl, &size)) size = UNKNOWN_SIZE;
    }
    gr_clearerr();
    f->total = size == UNKNOWN_SIZE ? 0 : size;
    if (f->sha_param[0] && f->cas) {
        char id[GR_ID_SZ];
        snprintf(id, sizeof id, "sha256:%s", f->sha_param);
        if (gr_cas_has(f->cas, id) == 1 && !output_from_store(f, id, size, name)) goto record;
    }
    if ((rc = download(f, f->url, f->url, NULL, size, f->sha_param, "parameter sha256", name)))
        goto done;
record:
    index_record(f, key);
done:
    free(name);
    free(key);
    gr_http_resp_free(&rs);
    return rc;
}

/* ---- file:// ---- */

/* Copies src to outdir/rel while hashing. */
static int copy_local(fetch *f, const char *src, const char *rel, const char *sha_hex)
{
    int rc = 0, in = -1, out = -1;
    char *partial = partial_path(f), *buf = malloc(FETCH_COPY_CHUNK);
    gr_sha256 *h = gr_sha256_new();
    uint64_t have = 0;
    if (!partial || !buf || !h) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "file://%s: cannot open: %s", src,
                       strerror(errno));
        goto done;
    }
    if ((out = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        rc = gr_seterr(GR_EIO, "%s: cannot create: %s", partial, strerror(errno));
        goto done;
    }
    for (;;) {
        if (gr_op_cancelled(f->ctx)) {
            rc = gr_seterr(GR_ECANCEL, "file://%s: cancelled", src);
            goto done;
        }
        ssize_t got = read(in, buf, FETCH_COPY_CHUNK);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            rc = gr_seterr(GR_EIO, "file://%s: read failed: %s", src, strerror(errno));
            goto done;
        }
        if (got == 0) break;
        if ((rc = gr_fs_write_all(out, buf, (size_t)got, partial)) ||
            (rc = gr_sha256_update(h, buf, (size_t)got)))
            goto done;
        have += (uint64_t)got;
        progress(f, have, rel);
    }
    uint8_t d[GR_SHA256_LEN];
    char hex[GR_SHA256_HEXSZ], id[GR_ID_SZ];
    if ((rc = gr_sha256_final(h, d))) goto done;
    gr_sha256_hex(d, hex);
    if (sha_hex && sha_hex[0] && strcmp(hex, sha_hex)) {
        rc = gr_seterr(GR_EFORMAT,
                       "file://%s: content has sha256 %s, expected %s (parameter "
                       "sha256)",
                       src, hex, sha_hex);
        goto done;
    }
    close(out);
    out = -1;
    if ((rc = place_output(f, partial, rel))) goto done;
    gr_sha256_id(d, id);
    rc = gr_manifest_add(f->out, rel, id, have);
    f->done += have;
done:
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    if (partial) unlink(partial);
    free(partial);
    free(buf);
    gr_sha256_destroy(&h);
    return rc;
}

typedef struct lwalk {
    fetch *f;
    const char *top;
    char *top_real;
    int depth;
} lwalk;

static int walk_local(lwalk *w, const char *abs, const char *rel)
{
    if (w->depth > 64)
        return gr_seterr(GR_EINVAL, "file://%s: directories nested too deep", w->top);
    DIR *d = opendir(abs);
    if (!d) return gr_seterr(GR_EIO, "file://%s: cannot list: %s", abs, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *cabs = gr_fs_join(abs, e->d_name);
        char *crel = *rel ? gr_fs_join(rel, e->d_name) : strdup(e->d_name);
        char *target = NULL;
        struct stat st;
        if (!cabs || !crel)
            rc = gr_seterr(GR_ENOMEM, "out of memory");
        else if (lstat(cabs, &st))
            rc = gr_seterr(GR_EIO, "file://%s: %s", cabs, strerror(errno));
        else if (S_ISDIR(st.st_mode)) {
            w->depth++;
            rc = walk_local(w, cabs, crel);
            w->depth--;
        } else if (S_ISLNK(st.st_mode) || S_ISREG(st.st_mode)) {
            const char *src = cabs;
            if (S_ISLNK(st.st_mode)) {
                size_t tl = strlen(w->top_real);
                struct stat ts;
                target = realpath(cabs, NULL);
                if (!target || strncmp(target, w->top_real, tl) || target[tl] != '/' ||
                    stat(target, &ts) || !S_ISREG(ts.st_mode)) {
                    rc = gr_seterr(GR_EINVAL,
                                   "file://%s: symbolic link '%s' must point to a regular file "
                                   "inside the directory",
                                   w->top, crel);
                    goto next;
                }
                src = target;
            }
            if (w->f->include_given && !gr_hf_match(crel, w->f->include)) goto next;
            if ((rc = gr_manifest_check_path(crel))) {
                gr_adderr(GR_EINVAL, "file://%s", w->top);
                goto next;
            }
            rc = copy_local(w->f, src, crel, NULL);
        } else {
            rc = gr_seterr(GR_EINVAL, "file://%s: '%s' is not a regular file or directory", w->top,
                           crel);
        }
    next:
        free(target);
        free(cabs);
        free(crel);
    }
    closedir(d);
    return rc;
}

static int fetch_file(fetch *f)
{
    const char *p = f->url + 7;
    if (!strncmp(p, "localhost/", 10)) p += 9;
    if (*p != '/')
        return gr_seterr(GR_EINVAL, "%s: file:// URLs need an absolute path (file:///dir/file)",
                         f->url);
    struct stat st;
    if (stat(p, &st))
        return gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: %s", f->url,
                         strerror(errno));
    if (S_ISREG(st.st_mode)) {
        f->total = (uint64_t)st.st_size;
        const char *base = strrchr(p, '/') + 1;
        if (gr_manifest_check_path(base)) return gr_adderr(GR_EINVAL, "%s", f->url);
        return copy_local(f, p, base, f->sha_param);
    }
    if (!S_ISDIR(st.st_mode))
        return gr_seterr(GR_EINVAL, "%s: not a regular file or directory", f->url);
    if (f->sha_param[0])
        return gr_seterr(GR_EINVAL,
                         "%s: parameter 'sha256' needs a single file, this is a directory", f->url);
    lwalk w = {f, p, realpath(p, NULL), 0};
    if (!w.top_real) return gr_seterr(GR_EIO, "%s: %s", f->url, strerror(errno));
    int rc = walk_local(&w, p, "");
    free(w.top_real);
    if (!rc && gr_manifest_count(f->out) == 0)
        rc = gr_seterr(GR_ENOTFOUND, "%s: no file to fetch%s", f->url,
                       f->include_given ? " matches the include patterns" : " (empty directory)");
    return rc;
}

/* ---- parameters and the op ---- */

static int parse_include(fetch *f)
{
    const gr_json *v = gr_json_get(f->ctx->params, "include");
    size_t n = 0;
    if (!v || v->type == GR_JSON_NULL) {
        for (; gr_hf_default_include[n]; n++) f->include[n] = gr_hf_default_include[n];
        f->include[n] = NULL;
        return 0;
    }
    f->include_given = 1;
    if (v->type == GR_JSON_STR) {
        if (!(f->include_buf = strdup(v->str))) return gr_seterr(GR_ENOMEM, "out of memory");
        for (char *save = NULL, *t = strtok_r(f->include_buf, ",", &save); t;
             t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ') t++;
            if (!*t) continue;
            if (n == FETCH_MAX_PATTERNS) goto toomany;
            f->include[n++] = t;
        }
    } else if (v->type == GR_JSON_ARR) {
        for (size_t i = 0; i < v->len; i++) {
            if (v->items[i]->type != GR_JSON_STR || !v->items[i]->str[0])
                return gr_seterr(GR_EINVAL,
                                 "fetch: parameter 'include' item %zu must be a "
                                 "non-empty string",
                                 i);
            if (n == FETCH_MAX_PATTERNS) goto toomany;
            f->include[n++] = v->items[i]->str;
        }
    } else {
        return gr_seterr(GR_EINVAL, "fetch: parameter 'include' must be a string or a list of "
                                    "strings");
    }
    if (!n) return gr_seterr(GR_EINVAL, "fetch: parameter 'include' names no pattern");
    f->include[n] = NULL;
    return 0;
toomany:
    return gr_seterr(GR_EINVAL, "fetch: parameter 'include' has more than %d patterns",
                     FETCH_MAX_PATTERNS);
}

static int parse_params(fetch *f)
{
    const char *sha = NULL;
    double backoff;
    int rc;
    if ((rc = gr_op_req_str(f->ctx, "url", &f->url))) return rc;
    if ((rc = parse_include(f))) return rc;
    if ((rc = gr_op_str(f->ctx, "sha256", NULL, &sha))) return rc;
    if (sha) {
        const char *hex = !strncmp(sha, "sha256:", 7) ? sha + 7 : sha;
        uint8_t d[GR_SHA256_LEN];
        if (gr_sha256_from_hex(hex, strlen(hex), d))
            return gr_seterr(GR_EINVAL, "fetch: parameter 'sha256' = '%.80s': want 64 hex digits",
                             sha);
        gr_sha256_hex(d, f->sha_param);
    }
    if ((rc = gr_op_int(f->ctx, "http_retries", FETCH_DEFAULT_RETRIES, &f->retries))) return rc;
    if (f->retries < 0 || f->retries > 100)
        return gr_seterr(GR_EINVAL, "fetch: parameter 'http_retries' = %" PRId64 ": must be in [0, 100]",
                         f->retries);
    if ((rc = gr_op_num(f->ctx, "backoff", FETCH_DEFAULT_BACKOFF, &backoff))) return rc;
    if (!(backoff >= 0 && backoff <= 600))
        return gr_seterr(GR_EINVAL, "fetch: parameter 'backoff' = %g: must be in [0, 600]",
                         backoff);
    f->backoff = backoff;
    if ((rc = gr_op_int(f->ctx, "timeout", FETCH_DEFAULT_STALL, &f->stall))) return rc;
    if (f->stall < 1 || f->stall > 86400)
        return gr_seterr(GR_EINVAL,
                         "fetch: parameter 'timeout' = %" PRId64 ": must be in [1, "
                         "86400]",
                         f->stall);
    return 0;
}

static int set_metrics(fetch *f)
{
    gr_buf b = {0};
    gr_buf_puts(&b, "{\"url\":");
    gr_buf_json_str(&b, f->url, strlen(f->url));
    if (f->commit) {
        gr_buf_puts(&b, ",\"commit\":");
        gr_buf_json_str(&b, f->commit, strlen(f->commit));
    }
    gr_buf_printf(&b,
                  ",\"files\":%zu,\"bytes\":%" PRIu64 ",\"downloaded_bytes\":%" PRIu64
                  ",\"from_store\":%" PRIu64 ",\"retries\":%" PRIu64 ",\"resumed\":%" PRIu64
                  ",\"restarts\":%" PRIu64 "}",
                  gr_manifest_count(f->out), gr_manifest_total_size(f->out), f->downloaded,
                  f->reused, f->nretries, f->nresumed, f->nrestarts);
    int rc = b.oom ? gr_seterr(GR_ENOMEM, "out of memory") : gr_op_set_metrics(f->ctx, b.data);
    gr_buf_free(&b);
    return rc;
}

static int fetch_run(gr_op_ctx *ctx)
{
    fetch f;
    memset(&f, 0, sizeof f);
    f.ctx = ctx;
    int rc = parse_params(&f);
    if (rc) goto done;
    if (!(f.out = gr_manifest_new())) {
        rc = GR_ENOMEM;
        goto done;
    }
    if (ctx->store && !(f.cas = gr_cas_open(ctx->store))) {
        rc = gr_adderr(GR_EIO, "fetch");
        goto done;
    }
    if (!strncmp(f.url, "hf://", 5))
        rc = fetch_hf(&f);
    else if (!strncmp(f.url, "http://", 7) || !strncmp(f.url, "https://", 8))
        rc = fetch_http(&f);
    else if (!strncmp(f.url, "file://", 7))
        rc = fetch_file(&f);
    else
        rc = gr_seterr(GR_EINVAL, "fetch: url '%.200s': want file://, http://, https:// or hf://",
                       f.url);
    if (!rc) {
        progress(&f, 0, "done");
        rc = set_metrics(&f);
    }
done:
    free(f.include_buf);
    free(f.commit);
    gr_manifest_destroy(&f.out);
    gr_cas_destroy(&f.cas);
    return rc;
}

const gr_op gr_op_fetch = {
    .name = "fetch",
    .version = 1,
    .summary = "fetch a file, directory or Hugging Face repository (file://, http(s)://, hf://)",
    .params = fetch_params,
    .run = fetch_run,
};
