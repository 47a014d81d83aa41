/* gr_manifest: building, encoding and strictly parsing canonical tree manifests. */
#include "gr_manifest.h"
#include "gr_err.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct gr_manifest {
    gr_manifest_entry *e;
    size_t n, cap;
    int sorted; /* sorted and checked (after encode or parse) */
};

gr_manifest *gr_manifest_new(void)
{
    gr_manifest *m = calloc(1, sizeof *m);
    if (!m) gr_seterr(GR_ENOMEM, "out of memory");
    return m;
}

void gr_manifest_destroy(gr_manifest **m)
{
    if (!m || !*m) return;
    for (size_t i = 0; i < (*m)->n; i++) free((*m)->e[i].path);
    free((*m)->e);
    free(*m);
    *m = NULL;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is
 * not one (overlong forms, surrogates and code points above U+10FFFF are
 * invalid). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned cp, min;
    if ((c & 0xE0) == 0xC0)
        len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* Shown form of a path for messages: bounded, control bytes as '?'. */
static const char *shown(const char *p, size_t n, char buf[128])
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < 120; i++) {
        unsigned char c = (unsigned char)p[i];
        buf[k++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (n > 120) buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
    buf[k] = 0;
    return buf;
}

static int check_path_n(const char *p, size_t n)
{
    char sb[128];
    if (n == 0) return gr_seterr(GR_EINVAL, "tree path is empty");
    if (n > GR_MANIFEST_MAX_PATH)
        return gr_seterr(GR_EINVAL, "tree path '%s': longer than %d bytes", shown(p, n, sb),
                         GR_MANIFEST_MAX_PATH);
    if (p[0] == '/')
        return gr_seterr(GR_EINVAL, "tree path '%s': absolute paths are not allowed",
                         shown(p, n, sb));
    size_t comp = 0; /* start of the current component */
    for (size_t i = 0; i <= n; i++) {
        if (i == n || p[i] == '/') {
            size_t len = i - comp;
            if (len == 0)
                return gr_seterr(GR_EINVAL,
                                 "tree path '%s': empty component (leading, trailing or "
                                 "doubled '/')",
                                 shown(p, n, sb));
            if (len > GR_MANIFEST_MAX_COMP)
                return gr_seterr(GR_EINVAL, "tree path '%s': component longer than %d bytes",
                                 shown(p, n, sb), GR_MANIFEST_MAX_COMP);
            if (p[comp] == '.' && (len == 1 || (len == 2 && p[comp + 1] == '.')))
                return gr_seterr(GR_EINVAL,
                                 "tree path '%s': '.' and '..' components are not allowed",
                                 shown(p, n, sb));
            comp = i + 1;
            continue;
        }
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f)
            return gr_seterr(GR_EINVAL, "tree path '%s': control character 0x%02x", shown(p, n, sb),
                             c);
        if (c == '\\')
            return gr_seterr(GR_EINVAL, "tree path '%s': backslash is not allowed",
                             shown(p, n, sb));
        if (c >= 0x80) {
            size_t l = utf8_seq((const unsigned char *)p + i, n - i);
            if (!l) return gr_seterr(GR_EINVAL, "tree path '%s': not valid UTF-8", shown(p, n, sb));
            i += l - 1;
        }
    }
    return 0;
}

int gr_manifest_check_path(const char *path)
{
    if (!path) return gr_seterr(GR_EINVAL, "tree path missing");
    return check_path_n(path, strlen(path));
}

static int push(gr_manifest *m, char *path, const char *id, uint64_t size)
{
    if (m->n >= GR_MANIFEST_MAX_ENTRIES)
        return gr_seterr(GR_EINVAL, "tree has more than %d entries", GR_MANIFEST_MAX_ENTRIES);
    if (m->n == m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 16;
        gr_manifest_entry *ne = realloc(m->e, ncap * sizeof *ne);
        if (!ne) return gr_seterr(GR_ENOMEM, "out of memory");
        m->e = ne;
        m->cap = ncap;
    }
    gr_manifest_entry *e = &m->e[m->n++];
    e->path = path;
    memcpy(e->id, id, GR_ID_SZ);
    e->size = size;
    m->sorted = 0;
    return 0;
}

int gr_manifest_add(gr_manifest *m, const char *path, const char *id, uint64_t size)
{
    int rc = gr_manifest_check_path(path);
    if (rc) return rc;
    if ((rc = gr_id_parse(id, NULL))) return gr_adderr(rc, "tree path '%s'", path);
    char *dup = strdup(path);
    if (!dup) return gr_seterr(GR_ENOMEM, "out of memory");
    if ((rc = push(m, dup, id, size))) free(dup);
    return rc;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const gr_manifest_entry *)a)->path, ((const gr_manifest_entry *)b)->path);
}

static const gr_manifest_entry *find_n(const gr_manifest *m, const char *path, size_t n)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *p = m->e[mid].path;
        int c = strncmp(p, path, n);
        if (c == 0) c = p[n] ? 1 : 0;
        if (c == 0) return &m->e[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Duplicates and a path that is also another entry's directory. Requires
 * sorted entries. */
static int check_tree(const gr_manifest *m, const char *what, int code)
{
    char sb[128];
    for (size_t i = 0; i < m->n; i++) {
        const char *p = m->e[i].path;
        if (i && !strcmp(m->e[i - 1].path, p))
            return gr_seterr(code, "%s: duplicate tree path '%s'", what, shown(p, strlen(p), sb));
        for (const char *s = strchr(p, '/'); s; s = strchr(s + 1, '/'))
            if (find_n(m, p, (size_t)(s - p)))
                return gr_seterr(code,
                                 "%s: tree path '%.*s' is a file and also the directory of '%s'",
                                 what, (int)(s - p), p, shown(p, strlen(p), sb));
    }
    return 0;
}

int gr_manifest_encode(gr_manifest *m, gr_buf *out)
{
    if (!m->sorted) {
        if (m->n) qsort(m->e, m->n, sizeof *m->e, cmp_entry);
        int rc = check_tree(m, "tree", GR_EINVAL);
        if (rc) return rc;
        m->sorted = 1;
    }
    gr_buf_puts(out, GR_MANIFEST_MAGIC "\"entries\":[");
    for (size_t i = 0; i < m->n; i++) {
        const gr_manifest_entry *e = &m->e[i];
        gr_buf_puts(out, i ? ",{\"path\":" : "{\"path\":");
        gr_buf_json_str(out, e->path, strlen(e->path));
        gr_buf_printf(out, ",\"id\":\"%s\",\"size\":%" PRIu64 "}", e->id, e->size);
    }
    gr_buf_puts(out, "]}");
    return out->oom ? gr_seterr(GR_ENOMEM, "out of memory encoding a manifest") : 0;
}

int gr_manifest_sniff(const void *data, size_t len)
{
    size_t k = sizeof GR_MANIFEST_MAGIC - 1;
    return len >= k && !memcmp(data, GR_MANIFEST_MAGIC, k);
}

/* ---- strict parser of the canonical form ---- */

typedef struct cursor {
    const char *s;
    size_t n, i;
    const char *what;
    size_t entry; /* index of the entry being read, for messages */
} cursor;

static int bad(cursor *c, const char *rule)
{
    return gr_seterr(GR_EFORMAT, "%s: manifest byte %zu (entry %zu): %s", c->what, c->i, c->entry,
                     rule);
}

static int lit(cursor *c, const char *l, const char *rule)
{
    size_t k = strlen(l);
    if (c->n - c->i < k || memcmp(c->s + c->i, l, k)) return bad(c, rule);
    c->i += k;
    return 0;
}

/* A JSON string in canonical escaping; returns a new NUL-terminated copy. */
static int string(cursor *c, char **out, size_t *outlen)
{
    *out = NULL;
    if (c->i >= c->n || c->s[c->i] != '"') return bad(c, "expected a string");
    size_t start = ++c->i, extra = 0;
    /* First pass: find the end and validate. */
    for (;;) {
        if (c->i >= c->n) return bad(c, "unterminated string");
        unsigned char ch = (unsigned char)c->s[c->i];
        if (ch == '"') break;
        if (ch == '\\') {
            if (c->i + 1 >= c->n) return bad(c, "unterminated string");
            char e = c->s[c->i + 1];
            /* Canonical output escapes only '"' and '\\' among printable
             * bytes; control characters are not allowed in paths at all. */
            if (e != '"' && e != '\\')
                return bad(c, "non-canonical or forbidden escape in a string");
            c->i += 2;
            extra++;
            continue;
        }
        if (ch < 0x20) return bad(c, "control character in a string");
        if (ch >= 0x80) {
            size_t l = utf8_seq((const unsigned char *)c->s + c->i, c->n - c->i);
            if (!l) return bad(c, "string is not valid UTF-8");
            c->i += l;
            continue;
        }
        c->i++;
    }
    size_t raw = c->i - start, len = raw - extra;
    char *p = malloc(len + 1);
    if (!p) return gr_seterr(GR_ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t j = start; j < c->i; j++) {
        if (c->s[j] == '\\') j++;
        p[k++] = c->s[j];
    }
    p[k] = 0;
    c->i++; /* closing quote */
    *out = p;
    *outlen = len;
    return 0;
}

static int u64(cursor *c, uint64_t *v)
{
    size_t start = c->i;
    uint64_t x = 0;
    while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9') {
        unsigned d = (unsigned)(c->s[c->i] - '0');
        if (x > (UINT64_MAX - d) / 10) return bad(c, "size does not fit in 64 bits");
        x = x * 10 + d;
        c->i++;
    }
    if (c->i == start) return bad(c, "size must be a non-negative integer");
    if (c->s[start] == '0' && c->i - start > 1) return bad(c, "size has leading zeros");
    *v = x;
    return 0;
}

gr_manifest *gr_manifest_parse(const char *data, size_t len, const char *what)
{
    cursor c = {data, len, 0, what ? what : "manifest", 0};
    gr_manifest *m = gr_manifest_new();
    char *path = NULL;
    char sb[128];
    if (!m) return NULL;
    if (len > GR_MANIFEST_MAX_BYTES) {
        gr_seterr(GR_EFORMAT, "%s: manifest larger than %u bytes", c.what, GR_MANIFEST_MAX_BYTES);
        goto fail;
    }
    if (lit(&c, GR_MANIFEST_MAGIC "\"entries\":[",
            "not a graft tree manifest (want {\"graft_tree\":1,\"entries\":[...]} without "
            "whitespace)"))
        goto fail;
    if (c.i < c.n && c.s[c.i] != ']') {
        for (;;) {
            size_t plen = 0;
            char id[GR_ID_SZ];
            uint64_t size = 0;
            if (lit(&c, "{\"path\":", "entry must start with {\"path\":")) goto fail;
            if (string(&c, &path, &plen)) goto fail;
            if (plen != strlen(path) || check_path_n(path, plen)) {
                if (plen != strlen(path)) gr_seterr(GR_EINVAL, "tree path contains NUL");
                gr_adderr(GR_EFORMAT, "%s: manifest entry %zu", c.what, c.entry);
                goto fail;
            }
            if (lit(&c, ",\"id\":\"", "expected ,\"id\": after the path")) goto fail;
            if (c.n - c.i < GR_ID_SZ - 1) {
                bad(&c, "truncated id");
                goto fail;
            }
            memcpy(id, c.s + c.i, GR_ID_SZ - 1);
            id[GR_ID_SZ - 1] = 0;
            if (gr_id_parse(id, NULL)) {
                gr_adderr(GR_EFORMAT, "%s: manifest entry %zu ('%s')", c.what, c.entry,
                          shown(path, plen, sb));
                goto fail;
            }
            c.i += GR_ID_SZ - 1;
            if (lit(&c, "\",\"size\":", "expected \",\"size\": after the id")) goto fail;
            if (u64(&c, &size)) goto fail;
            if (lit(&c, "}", "entry must end after size")) goto fail;
            if (m->n && strcmp(m->e[m->n - 1].path, path) >= 0) {
                gr_seterr(GR_EFORMAT, "%s: manifest entry %zu: path '%s' is %s", c.what, c.entry,
                          shown(path, plen, sb),
                          strcmp(m->e[m->n - 1].path, path) ? "out of order (entries must be "
                                                              "sorted by path)"
                                                            : "a duplicate");
                goto fail;
            }
            if (push(m, path, id, size)) {
                gr_adderr(GR_EFORMAT, "%s", c.what);
                goto fail;
            }
            path = NULL;
            c.entry++;
            if (c.i < c.n && c.s[c.i] == ',') {
                c.i++;
                continue;
            }
            break;
        }
    }
    if (lit(&c, "]}", "expected ] } at the end of the entries")) goto fail;
    if (c.i != c.n) {
        bad(&c, "trailing bytes after the manifest");
        goto fail;
    }
    if (check_tree(m, c.what, GR_EFORMAT)) goto fail;
    m->sorted = 1;
    return m;
fail:
    free(path);
    gr_manifest_destroy(&m);
    return NULL;
}

size_t gr_manifest_count(const gr_manifest *m)
{
    return m->n;
}

const gr_manifest_entry *gr_manifest_entry_at(const gr_manifest *m, size_t i)
{
    return i < m->n ? &m->e[i] : NULL;
}

const gr_manifest_entry *gr_manifest_find(const gr_manifest *m, const char *path)
{
    if (!m->sorted) {
        for (size_t i = 0; i < m->n; i++)
            if (!strcmp(m->e[i].path, path)) return &m->e[i];
        return NULL;
    }
    return find_n(m, path, strlen(path));
}

uint64_t gr_manifest_total_size(const gr_manifest *m)
{
    uint64_t t = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (t > UINT64_MAX - m->e[i].size) return UINT64_MAX; /* hostile sizes: saturate */
        t += m->e[i].size;
    }
    return t;
}
