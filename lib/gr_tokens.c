/* gr_tokens: token-id data for evaluation (.bin, .jsonl, choice .jsonl) and
 * its cutting into scored windows. */
#include "gr_tokens.h"
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct gr_tokens {
    char *what;
    /* .bin: one sequence, read from the mapping */
    const unsigned char *map;
    size_t map_len;
    int width; /* bytes per id: 2 or 4 */
    /* .jsonl: ids of all sequences back to back */
    uint32_t *ids;
    uint64_t *off; /* nseq + 1 offsets into ids */
    size_t nseq;
};

static int ends_with(const char *s, const char *sfx)
{
    size_t a = strlen(s), b = strlen(sfx);
    return a >= b && !strcmp(s + a - b, sfx);
}

/* Reads a whole file into b. */
static int slurp(const char *path, gr_buf *b)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: cannot open: %s", path,
                         strerror(errno));
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) gr_buf_append(b, chunk, n);
    int err = ferror(f);
    fclose(f);
    if (err) return gr_seterr(GR_EIO, "%s: read error", path);
    if (b->oom) return gr_seterr(GR_ENOMEM, "%s: out of memory reading the file", path);
    return 0;
}

/* Calls fn(line, len, lineno, ud) for every line that holds more than
 * whitespace. */
static int each_line(const char *buf, size_t len, int (*fn)(const char *, size_t, int, void *),
                     void *ud)
{
    size_t i = 0;
    int lineno = 0;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - buf) : len;
        lineno++;
        int blank = 1;
        for (size_t k = i; k < e && blank; k++)
            blank = buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r';
        if (!blank) {
            int rc = fn(buf + i, e - i, lineno, ud);
            if (rc) return rc;
        }
        i = e + 1;
    }
    return 0;
}

/* Checks that a is an array of ids (integers in [0, vocab) or [0, 2^32))
 * and appends them to *ids. */
static int put_ids(const gr_json *a, const char *what, int line, const char *field, uint32_t vocab,
                   uint32_t **ids, uint64_t *n, uint64_t *cap)
{
    if (a->type != GR_JSON_ARR)
        return gr_seterr(GR_EINVAL, "%s:%d: %s must be an array of token ids, not %s", what, line,
                         field, gr_json_type_name(a->type));
    if (*n + a->len > *cap) {
        uint64_t nc = *cap ? *cap : 1024;
        while (nc < *n + a->len) nc *= 2;
        if (nc > SIZE_MAX / sizeof(uint32_t))
            return gr_seterr(GR_ENOMEM, "%s: too many tokens", what);
        uint32_t *ni = realloc(*ids, (size_t)nc * sizeof *ni);
        if (!ni) return gr_seterr(GR_ENOMEM, "%s: out of memory", what);
        *ids = ni;
        *cap = nc;
    }
    for (size_t k = 0; k < a->len; k++) {
        const gr_json *v = a->items[k];
        if (v->type != GR_JSON_NUM || !v->is_int || v->i < 0 || v->i > UINT32_MAX)
            return gr_seterr(GR_EINVAL,
                             "%s:%d: %s item %zu is not a token id (a non-negative "
                             "integer)",
                             what, line, field, k);
        if (vocab && (uint64_t)v->i >= vocab)
            return gr_seterr(GR_EINVAL,
                             "%s:%d: %s item %zu: token id %lld is >= the vocabulary "
                             "size %u",
                             what, line, field, k, (long long)v->i, vocab);
        (*ids)[(*n)++] = (uint32_t)v->i;
    }
    return 0;
}

/* ---------------------------------------------------------------- sequences */

typedef struct seq_parse {
    gr_tokens *t;
    const char *what;
    uint32_t vocab;
    uint64_t n, cap;
    size_t seq_cap;
} seq_parse;

static int seq_line(const char *s, size_t len, int line, void *ud)
{
    seq_parse *p = ud;
    gr_tokens *t = p->t;
    char where[4200];
    snprintf(where, sizeof where, "%s:%d", p->what, line);
    gr_json *j = gr_json_parse(s, len, where);
    if (!j) return gr_errcode();
    int rc = put_ids(j, p->what, line, "sequence", p->vocab, &t->ids, &p->n, &p->cap);
    size_t got = j->len;
    gr_json_free(j);
    if (rc) return rc;
    if (got < 2)
        return gr_seterr(GR_EINVAL, "%s:%d: a sequence needs at least 2 tokens (has %zu)", p->what,
                         line, got);
    if (t->nseq + 2 > p->seq_cap) {
        size_t nc = p->seq_cap ? 2 * p->seq_cap : 64;
        uint64_t *no = realloc(t->off, nc * sizeof *no);
        if (!no) return gr_seterr(GR_ENOMEM, "%s: out of memory", p->what);
        t->off = no;
        p->seq_cap = nc;
    }
    t->off[++t->nseq] = p->n;
    return 0;
}

gr_tokens *gr_tokens_parse_jsonl(const char *buf, size_t len, const char *what, uint32_t vocab)
{
    gr_tokens *t = calloc(1, sizeof *t);
    if (!t || !(t->what = strdup(what ? what : "tokens"))) goto oom;
    seq_parse p = {.t = t, .what = t->what, .vocab = vocab};
    if (!(t->off = calloc(1, sizeof *t->off))) goto oom;
    p.seq_cap = 1;
    if (each_line(buf, len, seq_line, &p)) goto fail;
    if (!t->nseq) {
        gr_seterr(GR_EINVAL, "%s: empty data file (no sequences)", t->what);
        goto fail;
    }
    return t;
oom:
    gr_seterr(GR_ENOMEM, "out of memory");
fail:
    gr_tokens_close(&t);
    return NULL;
}

static gr_tokens *open_bin(const char *path, const char *dtype, uint32_t vocab)
{
    int width;
    if (!dtype || !strcmp(dtype, "uint16"))
        width = 2;
    else if (!strcmp(dtype, "uint32"))
        width = 4;
    else {
        gr_seterr(GR_EINVAL, "%s: token_dtype '%s' is not supported (uint16 or uint32)", path,
                  dtype);
        return NULL;
    }
    gr_tokens *t = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: cannot open: %s", path,
                  strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        gr_seterr(GR_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        gr_seterr(GR_EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    if (sb.st_size == 0) {
        gr_seterr(GR_EINVAL, "%s: empty data file", path);
        goto fail;
    }
    if ((uint64_t)sb.st_size % (uint64_t)width) {
        gr_seterr(GR_EINVAL, "%s: size %lld is not a multiple of %d bytes (token_dtype %s)", path,
                  (long long)sb.st_size, width, width == 2 ? "uint16" : "uint32");
        goto fail;
    }
    if ((uint64_t)sb.st_size / (uint64_t)width < 2) {
        gr_seterr(GR_EINVAL, "%s: holds 1 token; at least 2 are needed", path);
        goto fail;
    }
    t = calloc(1, sizeof *t);
    if (!t || !(t->what = strdup(path)) || !(t->off = calloc(2, sizeof *t->off))) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        gr_seterr(GR_EIO, "%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    t->map = map;
    t->map_len = (size_t)sb.st_size;
    t->width = width;
    t->nseq = 1;
    t->off[1] = (uint64_t)sb.st_size / (uint64_t)width;
    close(fd);
    fd = -1;
    if (vocab)
        for (uint64_t i = 0; i < t->off[1]; i++) {
            uint32_t id = gr_tokens_at(t, 0, i);
            if (id >= vocab) {
                gr_seterr(GR_EINVAL,
                          "%s: token %llu (byte offset %llu): id %u is >= the "
                          "vocabulary size %u",
                          path, (unsigned long long)i, (unsigned long long)(i * (uint64_t)width),
                          id, vocab);
                goto fail;
            }
        }
    return t;
fail:
    if (fd >= 0) close(fd);
    gr_tokens_close(&t);
    return NULL;
}

gr_tokens *gr_tokens_open(const char *path, const char *token_dtype, uint32_t vocab)
{
    if (!ends_with(path, ".jsonl")) return open_bin(path, token_dtype, vocab);
    gr_buf b = {0};
    if (slurp(path, &b)) {
        gr_buf_free(&b);
        return NULL;
    }
    if (!b.len) {
        gr_buf_free(&b);
        gr_seterr(GR_EINVAL, "%s: empty data file", path);
        return NULL;
    }
    gr_tokens *t = gr_tokens_parse_jsonl(b.data, b.len, path, vocab);
    gr_buf_free(&b);
    return t;
}

void gr_tokens_close(gr_tokens **pt)
{
    if (!pt || !*pt) return;
    gr_tokens *t = *pt;
    if (t->map) munmap((void *)t->map, t->map_len);
    free(t->ids);
    free(t->off);
    free(t->what);
    free(t);
    *pt = NULL;
}

size_t gr_tokens_count(const gr_tokens *t)
{
    return t->nseq;
}

uint64_t gr_tokens_len(const gr_tokens *t, size_t seq)
{
    return t->off[seq + 1] - t->off[seq];
}

uint64_t gr_tokens_total(const gr_tokens *t)
{
    return t->off[t->nseq];
}

uint32_t gr_tokens_at(const gr_tokens *t, size_t seq, uint64_t i)
{
    if (!t->map) return t->ids[t->off[seq] + i];
    const unsigned char *p = t->map + i * (uint64_t)t->width; /* little-endian */
    if (t->width == 2) return (uint32_t)p[0] | (uint32_t)p[1] << 8;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int gr_tokens_windows(const gr_tokens *t, int seq_len, int stride, gr_window **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (seq_len < 2) return gr_seterr(GR_EINVAL, "seq_len must be at least 2 (is %d)", seq_len);
    if (stride < 1 || stride > seq_len)
        return gr_seterr(GR_EINVAL, "stride must be in [1, seq_len=%d] (is %d)", seq_len, stride);
    gr_window *w = NULL;
    size_t nw = 0, cap = 0;
    for (size_t s = 0; s < t->nseq; s++) {
        const uint64_t len = gr_tokens_len(t, s);
        uint64_t scored_end = 1; /* targets below this are scored already */
        for (uint64_t start = 0;; start += (uint64_t)stride) {
            uint64_t end = start + (uint64_t)seq_len < len ? start + (uint64_t)seq_len : len;
            uint64_t first_target = scored_end > start + 1 ? scored_end : start + 1;
            if (first_target < end) {
                if (nw == cap) {
                    cap = cap ? 2 * cap : 256;
                    gr_window *nwp = realloc(w, cap * sizeof *nwp);
                    if (!nwp) {
                        free(w);
                        return gr_seterr(GR_ENOMEM, "out of memory");
                    }
                    w = nwp;
                }
                w[nw].seq = s;
                w[nw].start = start;
                w[nw].len = (int)(end - start);
                w[nw].first = (int)(first_target - 1 - start);
                nw++;
                scored_end = end;
            }
            if (end == len) break;
        }
    }
    *out = w;
    *n = nw;
    return 0;
}

void gr_tokens_get(const gr_tokens *t, const gr_window *w, int32_t *dst)
{
    for (int i = 0; i < w->len; i++)
        dst[i] = (int32_t)gr_tokens_at(t, w->seq, w->start + (uint64_t)i);
}

/* ---------------------------------------------------------------- choices */

typedef struct raw_item {
    int line, label, nchoices;
    uint64_t ctx; /* offset of the context in ids */
    uint32_t nctx;
    size_t chx; /* index of the first choice in choff/chlen */
} raw_item;

struct gr_choices {
    uint32_t *ids;
    uint64_t nids, cap;
    raw_item *raw;
    size_t n, rcap;
    uint64_t *choff; /* offsets into ids, one per choice of every item */
    uint32_t *chlen;
    size_t nch, chcap;
    /* resolved views (after parsing, when ids no longer moves) */
    gr_choice_item *items;
    const uint32_t **chptr;
    char *what;
};

static int choice_line(const char *s, size_t len, int line, void *ud)
{
    gr_choices *c = ud;
    char where[4200];
    snprintf(where, sizeof where, "%s:%d", c->what, line);
    gr_json *j = gr_json_parse(s, len, where);
    if (!j) return gr_errcode();
    int rc = 0;
    if (j->type != GR_JSON_OBJ) {
        rc = gr_seterr(GR_EINVAL,
                       "%s: each line must be an object {\"context\", \"choices\", "
                       "\"label\"}",
                       where);
        goto done;
    }
    const gr_json *ctx = gr_json_get(j, "context"), *chs = gr_json_get(j, "choices"),
                  *lab = gr_json_get(j, "label");
    if (!ctx || !chs || !lab) {
        rc = gr_seterr(GR_EINVAL, "%s: missing field '%s'", where,
                       !ctx   ? "context"
                       : !chs ? "choices"
                              : "label");
        goto done;
    }
    if (c->n == c->rcap) {
        size_t nc = c->rcap ? 2 * c->rcap : 64;
        raw_item *nr = realloc(c->raw, nc * sizeof *nr);
        if (!nr) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            goto done;
        }
        c->raw = nr;
        c->rcap = nc;
    }
    raw_item *it = &c->raw[c->n];
    it->line = line;
    it->ctx = c->nids;
    if ((rc = put_ids(ctx, c->what, line, "context", 0, &c->ids, &c->nids, &c->cap))) goto done;
    it->nctx = (uint32_t)(c->nids - it->ctx);
    if (!it->nctx) {
        rc = gr_seterr(GR_EINVAL, "%s: context must hold at least one token", where);
        goto done;
    }
    if (chs->type != GR_JSON_ARR || chs->len == 0) {
        rc =
            gr_seterr(GR_EINVAL, "%s: choices must be a non-empty array of token-id arrays", where);
        goto done;
    }
    if (chs->len > INT32_MAX / 2) {
        rc = gr_seterr(GR_EINVAL, "%s: too many choices", where);
        goto done;
    }
    it->chx = c->nch;
    it->nchoices = (int)chs->len;
    for (size_t k = 0; k < chs->len; k++) {
        char field[32];
        snprintf(field, sizeof field, "choices[%zu]", k);
        uint64_t at = c->nids;
        if ((rc = put_ids(chs->items[k], c->what, line, field, 0, &c->ids, &c->nids, &c->cap)))
            goto done;
        if (c->nids == at) {
            rc = gr_seterr(GR_EINVAL, "%s: %s must hold at least one token", where, field);
            goto done;
        }
        if (c->nch == c->chcap) {
            size_t nc = c->chcap ? 2 * c->chcap : 256;
            uint64_t *no = realloc(c->choff, nc * sizeof *no);
            if (no) c->choff = no;
            uint32_t *nl = no ? realloc(c->chlen, nc * sizeof *nl) : NULL;
            if (!no || !nl) {
                rc = gr_seterr(GR_ENOMEM, "out of memory");
                goto done;
            }
            c->chlen = nl;
            c->chcap = nc;
        }
        c->choff[c->nch] = at;
        c->chlen[c->nch] = (uint32_t)(c->nids - at);
        c->nch++;
    }
    if (lab->type != GR_JSON_NUM || !lab->is_int || lab->i < 0 || lab->i >= (int64_t)chs->len) {
        rc = gr_seterr(GR_EINVAL, "%s: label must be an integer index into choices [0, %zu)", where,
                       chs->len);
        goto done;
    }
    it->label = (int)lab->i;
    c->n++;
done:
    gr_json_free(j);
    return rc;
}

/* Checks ids against vocab after parsing, naming the item's line. */
static int choices_vocab(const gr_choices *c, uint32_t vocab)
{
    for (size_t i = 0; vocab && i < c->n; i++) {
        const gr_choice_item *it = &c->items[i];
        for (uint32_t k = 0; k < it->context_len; k++)
            if (it->context[k] >= vocab)
                return gr_seterr(GR_EINVAL,
                                 "%s:%d: context item %u: token id %u is >= the "
                                 "vocabulary size %u",
                                 c->what, it->line, k, it->context[k], vocab);
        for (int ch = 0; ch < it->nchoices; ch++)
            for (uint32_t k = 0; k < it->choice_len[ch]; k++)
                if (it->choice[ch][k] >= vocab)
                    return gr_seterr(GR_EINVAL,
                                     "%s:%d: choices[%d] item %u: token id %u is >= "
                                     "the vocabulary size %u",
                                     c->what, it->line, ch, k, it->choice[ch][k], vocab);
    }
    return 0;
}

gr_choices *gr_choices_parse(const char *buf, size_t len, const char *what, uint32_t vocab)
{
    gr_choices *c = calloc(1, sizeof *c);
    if (!c || !(c->what = strdup(what ? what : "choices"))) goto oom;
    if (each_line(buf, len, choice_line, c)) goto fail;
    if (!c->n) {
        gr_seterr(GR_EINVAL, "%s: empty data file (no items)", c->what);
        goto fail;
    }
    c->items = calloc(c->n, sizeof *c->items);
    c->chptr = calloc(c->nch, sizeof *c->chptr);
    if (!c->items || !c->chptr) goto oom;
    for (size_t k = 0; k < c->nch; k++) c->chptr[k] = c->ids + c->choff[k];
    for (size_t i = 0; i < c->n; i++) {
        const raw_item *r = &c->raw[i];
        gr_choice_item *it = &c->items[i];
        it->line = r->line;
        it->label = r->label;
        it->context = c->ids + r->ctx;
        it->context_len = r->nctx;
        it->nchoices = r->nchoices;
        it->choice = c->chptr + r->chx;
        it->choice_len = c->chlen + r->chx;
    }
    if (choices_vocab(c, vocab)) goto fail;
    return c;
oom:
    gr_seterr(GR_ENOMEM, "out of memory");
fail:
    gr_choices_close(&c);
    return NULL;
}

gr_choices *gr_choices_open(const char *path, uint32_t vocab)
{
    gr_buf b = {0};
    if (slurp(path, &b)) {
        gr_buf_free(&b);
        return NULL;
    }
    if (!b.len) {
        gr_buf_free(&b);
        gr_seterr(GR_EINVAL, "%s: empty data file", path);
        return NULL;
    }
    gr_choices *c = gr_choices_parse(b.data, b.len, path, vocab);
    gr_buf_free(&b);
    return c;
}

void gr_choices_close(gr_choices **pc)
{
    if (!pc || !*pc) return;
    gr_choices *c = *pc;
    free(c->ids);
    free(c->raw);
    free(c->choff);
    free(c->chlen);
    free(c->items);
    free(c->chptr);
    free(c->what);
    free(c);
    *pc = NULL;
}

size_t gr_choices_count(const gr_choices *c)
{
    return c->n;
}

const gr_choice_item *gr_choices_item(const gr_choices *c, size_t i)
{
    return &c->items[i];
}
