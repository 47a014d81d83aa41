/* gr_hf: hf:// URLs, Hub endpoint/token/offline settings, listing parsing,
 * include patterns and Hub error mapping for the fetch op. */
#include "gr_hf.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_json.h"
#include "gr_manifest.h"

#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HF_REPO_PART_MAX 96
#define HF_TOKEN_MAX     4096

const char *const gr_hf_default_include[] = {
    "*.safetensors", "*.json", "tokenizer*", "*.model", "*.txt", NULL,
};

void gr_hf_url_free(gr_hf_url *u)
{
    if (!u) return;
    free(u->repo);
    free(u->revision);
    free(u->path);
    memset(u, 0, sizeof *u);
}

/* One of ORG or NAME. */
static int repo_part_ok(const char *s, size_t n)
{
    if (n == 0 || n > HF_REPO_PART_MAX) return 0;
    if (s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.')) return 0;
        if (i && (c == '-' || c == '.') && s[i - 1] == c) return 0; /* "--" or ".." */
    }
    return 1;
}

static int revision_ok(const char *s, size_t n)
{
    if (n == 0 || n > 256) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || c == '?' || c == '#' || c == '\\') return 0;
    }
    return 1;
}

int gr_hf_url_parse(const char *url, gr_hf_url *u)
{
    memset(u, 0, sizeof *u);
    if (!url || strncmp(url, "hf://", 5))
        return gr_seterr(GR_EINVAL, "'%.200s': not an hf:// URL", url ? url : "");
    const char *p = url + 5;
    if (!strncmp(p, "datasets/", 9))
        u->dataset = 1, p += 9;
    else if (!strncmp(p, "models/", 7))
        p += 7;
    const char *slash = strchr(p, '/');
    if (!slash || !repo_part_ok(p, (size_t)(slash - p)))
        return gr_seterr(GR_EINVAL,
                         "%s: want hf://ORG/NAME[@REVISION][/PATH] (ORG: letters, digits, '-', "
                         "'_', '.')",
                         url);
    const char *name = slash + 1;
    size_t nlen = strcspn(name, "@/");
    if (!repo_part_ok(name, nlen))
        return gr_seterr(GR_EINVAL,
                         "%s: repository name '%.*s' is not valid (letters, digits, '-', '_', "
                         "'.', at most %d, no '--' or '..')",
                         url, (int)(nlen > 100 ? 100 : nlen), name, HF_REPO_PART_MAX);
    const char *rest = name + nlen;
    int rc = 0;
    if (!(u->repo = strndup(p, (size_t)(rest - p)))) goto oom;
    if (*rest == '@') {
        const char *rev = rest + 1;
        size_t rlen;
        if (!strncmp(rev, "refs/pr/", 8) || !strncmp(rev, "refs/convert/", 13)) {
            const char *third = strchr(rev, '/') + 1;
            third = strchr(third, '/') + 1;
            rlen = (size_t)(third - rev) + strcspn(third, "/");
        } else {
            rlen = strcspn(rev, "/");
        }
        if (!revision_ok(rev, rlen) || rev[rlen - 1] == '/') {
            rc = gr_seterr(GR_EINVAL, "%s: empty or malformed revision after '@'", url);
            goto fail;
        }
        if (!(u->revision = strndup(rev, rlen))) goto oom;
        rest = rev + rlen;
    }
    if (*rest == '/') {
        if (rest[1] == '/') {
            rc = gr_seterr(GR_EINVAL, "%s: empty component ('//') in the file path", url);
            goto fail;
        }
        if ((rc = gr_manifest_check_path(rest + 1))) {
            gr_adderr(GR_EINVAL, "%s", url);
            goto fail;
        }
        if (!(u->path = strdup(rest + 1))) goto oom;
    } else if (*rest) {
        rc = gr_seterr(GR_EINVAL, "%s: unexpected '%c' after the repository", url, *rest);
        goto fail;
    }
    return 0;
oom:
    rc = gr_seterr(GR_ENOMEM, "out of memory");
fail:
    gr_hf_url_free(u);
    return rc;
}

char *gr_hf_endpoint(void)
{
    const char *e = getenv("HF_ENDPOINT");
    if (!e || !*e) e = GR_HF_DEFAULT_ENDPOINT;
    size_t n = strlen(e);
    while (n > 1 && e[n - 1] == '/') n--;
    char *r = strndup(e, n);
    if (!r) gr_seterr(GR_ENOMEM, "out of memory");
    return r;
}

static char *trimmed(const char *s)
{
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    return n ? strndup(s, n) : NULL;
}

char *gr_hf_token(void)
{
    const char *t = getenv("HF_TOKEN");
    if (!t || !*t) t = getenv("HUGGING_FACE_HUB_TOKEN");
    if (t && *t) return trimmed(t);
    char path[4096];
    const char *home = getenv("HF_HOME"), *xdg = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (home && *home)
        snprintf(path, sizeof path, "%s/token", home);
    else if (xdg && *xdg)
        snprintf(path, sizeof path, "%s/huggingface/token", xdg);
    else if (h && *h)
        snprintf(path, sizeof path, "%s/.cache/huggingface/token", h);
    else
        return NULL;
    char *data = NULL;
    size_t len;
    if (gr_fs_read_file(path, HF_TOKEN_MAX, &data, &len)) {
        gr_clearerr();
        return NULL;
    }
    char *r = trimmed(data);
    free(data);
    return r;
}

int gr_hf_offline(void)
{
    const char *v = getenv("HF_HUB_OFFLINE");
    if (!v) return 0;
    return !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
           !strcasecmp(v, "on");
}

char *gr_hf_file_url(const char *endpoint, const gr_hf_url *u, const char *revision,
                     const char *path)
{
    char *qr = gr_http_quote(revision, ""), *qp = gr_http_quote(path, "/");
    char *r = NULL;
    if (qr && qp) {
        size_t n = strlen(endpoint) + strlen(u->repo) + strlen(qr) + strlen(qp) + 32;
        if ((r = malloc(n)))
            snprintf(r, n, "%s/%s%s/resolve/%s/%s", endpoint, u->dataset ? "datasets/" : "",
                     u->repo, qr, qp);
        else
            gr_seterr(GR_ENOMEM, "out of memory");
    }
    free(qr);
    free(qp);
    return r;
}

char *gr_hf_listing_url(const char *endpoint, const gr_hf_url *u, const char *revision)
{
    char *qr = gr_http_quote(revision, "");
    char *r = NULL;
    if (qr) {
        size_t n = strlen(endpoint) + strlen(u->repo) + strlen(qr) + 40;
        if ((r = malloc(n)))
            snprintf(r, n, "%s/api/%s/%s/revision/%s", endpoint, u->dataset ? "datasets" : "models",
                     u->repo, qr);
        else
            gr_seterr(GR_ENOMEM, "out of memory");
    }
    free(qr);
    return r;
}

void gr_hf_listing_free(gr_hf_listing *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) free(l->files[i]);
    free(l->files);
    free(l->commit);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int gr_hf_listing_parse(const char *json, size_t len, const char *what, gr_hf_listing *l)
{
    memset(l, 0, sizeof *l);
    char **sorted = NULL;
    int rc = 0;
    gr_json *j = gr_json_parse(json, len, what);
    if (!j) return gr_adderr(GR_EFORMAT, "repository listing");
    if (j->type != GR_JSON_OBJ) {
        rc = gr_seterr(GR_EFORMAT, "%s: repository listing is not a JSON object", what);
        goto done;
    }
    const gr_json *sha = gr_json_get(j, "sha");
    if (sha && sha->type == GR_JSON_STR) {
        if (!revision_ok(sha->str, sha->len) || strlen(sha->str) != sha->len) {
            rc = gr_seterr(GR_EFORMAT, "%s: listing 'sha' is not a commit id", what);
            goto done;
        }
        if (!(l->commit = strdup(sha->str))) goto oom;
    }
    const gr_json *sib = gr_json_get(j, "siblings");
    if (!sib || sib->type != GR_JSON_ARR) {
        rc = gr_seterr(GR_EFORMAT, "%s: listing has no 'siblings' array", what);
        goto done;
    }
    if (sib->len > GR_HF_MAX_FILES) {
        rc = gr_seterr(GR_EFORMAT, "%s: listing has more than %d files", what, GR_HF_MAX_FILES);
        goto done;
    }
    if (sib->len && !(l->files = calloc(sib->len, sizeof *l->files))) goto oom;
    for (size_t i = 0; i < sib->len; i++) {
        const gr_json *f = gr_json_get(sib->items[i], "rfilename");
        if (!f || f->type != GR_JSON_STR || strlen(f->str) != f->len) {
            rc =
                gr_seterr(GR_EFORMAT, "%s: listing sibling %zu has no string 'rfilename'", what, i);
            goto done;
        }
        if ((rc = gr_manifest_check_path(f->str))) {
            rc = gr_adderr(GR_EFORMAT, "%s: listing sibling %zu", what, i);
            goto done;
        }
        if (!(l->files[l->n] = strdup(f->str))) goto oom;
        l->n++;
    }
    if (l->n) {
        if (!(sorted = malloc(l->n * sizeof *sorted))) goto oom;
        memcpy(sorted, l->files, l->n * sizeof *sorted);
        qsort(sorted, l->n, sizeof *sorted, cmp_str);
        for (size_t i = 1; i < l->n; i++)
            if (!strcmp(sorted[i - 1], sorted[i])) {
                rc = gr_seterr(GR_EFORMAT, "%s: listing names '%s' twice", what, sorted[i]);
                goto done;
            }
    }
    goto done;
oom:
    rc = gr_seterr(GR_ENOMEM, "out of memory");
done:
    free(sorted);
    gr_json_free(j);
    if (rc) gr_hf_listing_free(l);
    return rc;
}

int gr_hf_match(const char *name, const char *const *patterns)
{
    for (size_t i = 0; patterns[i]; i++) {
        /* Match the whole path ('*' spans '/'), or the base name alone. */
        if (!fnmatch(patterns[i], name, 0)) return 1;
        const char *base = strrchr(name, '/');
        if (base && !fnmatch(patterns[i], base + 1, 0)) return 1;
    }
    return 0;
}

int gr_hf_retryable_status(int status)
{
    return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

int gr_hf_error(const char *what, const gr_http_resp *rs, int had_token)
{
    const char *code = gr_http_header(&rs->h, "X-Error-Code");
    const char *msg = gr_http_header(&rs->h, "X-Error-Message");
    char extra[300] = "";
    if (msg && *msg) snprintf(extra, sizeof extra, ": %.250s", msg);
    int st = rs->status;
    if (code) {
        if (!strcmp(code, "RepoNotFound"))
            return gr_seterr(
                GR_ENOTFOUND, "%s: repository not found (RepoNotFound)%s%s", what,
                !had_token && (st == 401 || st == 403) ? "; if it is private, set HF_TOKEN" : "",
                extra);
        if (!strcmp(code, "RevisionNotFound"))
            return gr_seterr(GR_ENOTFOUND, "%s: revision not found (RevisionNotFound)%s", what,
                             extra);
        if (!strcmp(code, "EntryNotFound"))
            return gr_seterr(GR_ENOTFOUND, "%s: file not found (EntryNotFound)%s", what, extra);
        if (!strcmp(code, "GatedRepo"))
            return gr_seterr(GR_EINVAL,
                             "%s: gated repository: accept its conditions on the Hub and use a "
                             "token that has access (GatedRepo)%s",
                             what, extra);
    }
    char named[120] = "";
    if (code) snprintf(named, sizeof named, " (%.100s)", code);
    if (st == 401)
        return gr_seterr(GR_EINVAL, "%s: HTTP 401%s: %s%s", what, named,
                         had_token ? "the token was rejected"
                                   : "a token is needed (set HF_TOKEN or write $HF_HOME/token)",
                         extra);
    if (st == 403)
        return gr_seterr(GR_EINVAL, "%s: HTTP 403%s: %s%s", what, named,
                         had_token ? "the token has insufficient permissions"
                                   : "access denied without a token (set HF_TOKEN)",
                         extra);
    if (st == 404)
        return gr_seterr(GR_ENOTFOUND, "%s: not found (HTTP 404)%s%s", what, named, extra);
    if (gr_hf_retryable_status(st))
        return gr_seterr(GR_ENET, "%s: HTTP %d%s%s", what, st, named, extra);
    return gr_seterr(GR_EINVAL, "%s: HTTP %d%s%s", what, st, named, extra);
}
