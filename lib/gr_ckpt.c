/* gr_ckpt: a checkpoint as one set of tensors: a single .safetensors file, a
 * directory with model.safetensors, or shards listed by
 * model.safetensors.index.json; plus its config.json. */
#include "gr_err.h"
#include "gr_st.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SINGLE_NAME "model.safetensors"
#define INDEX_NAME  "model.safetensors.index.json"
#define CONFIG_NAME "config.json"

struct gr_ckpt {
    char *dir;
    gr_st **files;
    size_t nfiles;
    const gr_tensor **sorted; /* every tensor of every file, by name */
    size_t n;
    gr_json *config;
};

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int add_file(gr_ckpt *c, const char *path)
{
    gr_st **nf = realloc(c->files, (c->nfiles + 1) * sizeof *nf);
    if (!nf) return gr_seterr(GR_ENOMEM, "%s: out of memory", path);
    c->files = nf;
    gr_st *st = gr_st_open(path);
    if (!st) return gr_errcode();
    c->files[c->nfiles++] = st;
    return 0;
}

static int cmp_tensor_ptr(const void *a, const void *b)
{
    return strcmp((*(const gr_tensor *const *)a)->name, (*(const gr_tensor *const *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard name from an index must stay inside the checkpoint directory. */
static int shard_name_ok(const char *s)
{
    if (!*s || s[0] == '/') return 0;
    for (const char *p = s; *p;) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || (n == 2 && p[0] == '.' && p[1] == '.') || (n == 1 && p[0] == '.')) return 0;
        p += n + (q ? 1 : 0);
    }
    return 1;
}

/* name first: sorted and searched with cmp_str */
typedef struct {
    const char *name, *shard;
} name_shard;

/* Opens the shards named by index.json's weight_map values and checks that
 * every listed tensor lies in the file that the index names. */
static int open_sharded(gr_ckpt *c, const char *index_path)
{
    int rc = 0;
    const char **names = NULL;
    name_shard *pairs = NULL;
    gr_json *idx = gr_json_parse_file(index_path);
    if (!idx) return gr_errcode() == GR_ENOMEM ? GR_ENOMEM : GR_EFORMAT;
    const gr_json *wm = gr_json_get(idx, "weight_map");
    if (idx->type != GR_JSON_OBJ || !wm || wm->type != GR_JSON_OBJ) {
        rc = gr_seterr(GR_EFORMAT, "%s: no \"weight_map\" object", index_path);
        goto done;
    }
    if (wm->len == 0) {
        rc = gr_seterr(GR_EFORMAT, "%s: \"weight_map\" lists no tensors", index_path);
        goto done;
    }
    names = malloc(wm->len * sizeof *names);
    if (!names) {
        rc = gr_seterr(GR_ENOMEM, "%s: out of memory", index_path);
        goto done;
    }
    for (size_t i = 0; i < wm->len; i++) {
        const gr_json *v = wm->items[i];
        if (v->type != GR_JSON_STR || strlen(v->str) != v->len || !shard_name_ok(v->str)) {
            rc = gr_seterr(GR_EFORMAT,
                           "%s: weight_map entry for tensor '%s' is not a file name inside the "
                           "checkpoint directory",
                           index_path, wm->keys[i]);
            goto done;
        }
        names[i] = v->str;
    }
    qsort(names, wm->len, sizeof *names, cmp_str);
    for (size_t i = 0; i < wm->len; i++) {
        if (i && !strcmp(names[i], names[i - 1])) continue;
        char *p = path_join(c->dir, names[i]);
        if (!p) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            goto done;
        }
        rc = add_file(c, p);
        free(p);
        if (rc) {
            if (rc == GR_ENOTFOUND)
                gr_adderr(GR_ENOTFOUND, "%s names a shard that is missing", index_path);
            goto done;
        }
    }
    /* Every tensor of the index must be in the shard it names. */
    for (size_t i = 0; i < wm->len; i++) {
        const char *shard = wm->items[i]->str;
        const gr_st *st = NULL;
        for (size_t f = 0; f < c->nfiles && !st; f++) {
            const char *fp = gr_st_path(c->files[f]);
            size_t dl = strlen(c->dir);
            if (!strncmp(fp, c->dir, dl) && fp[dl] == '/' && !strcmp(fp + dl + 1, shard))
                st = c->files[f];
        }
        if (!st || !gr_st_find(st, wm->keys[i])) {
            rc = gr_seterr(GR_EFORMAT,
                           "%s: tensor '%s': the index places it in %s, which does not "
                           "hold it",
                           index_path, wm->keys[i], shard);
            goto done;
        }
    }
    /* ...and every tensor of the shards must be listed (count check: names
     * are unique per file and the lookups above found each listed one). */
    size_t total = 0;
    for (size_t f = 0; f < c->nfiles; f++) total += gr_st_count(c->files[f]);
    if (total != wm->len) {
        /* (tensor, shard) pairs of the index sorted by tensor, for lookups */
        pairs = malloc(wm->len * sizeof *pairs);
        if (!pairs) {
            rc = gr_seterr(GR_ENOMEM, "%s: out of memory", index_path);
            goto done;
        }
        for (size_t i = 0; i < wm->len; i++) {
            pairs[i].name = wm->keys[i];
            pairs[i].shard = wm->items[i]->str;
        }
        qsort(pairs, wm->len, sizeof *pairs, cmp_str);
        for (size_t f = 0; f < c->nfiles; f++)
            for (size_t k = 0; k < gr_st_count(c->files[f]); k++) {
                const gr_tensor *t = gr_st_tensor(c->files[f], k);
                const name_shard *hit = bsearch(&t->name, pairs, wm->len, sizeof *pairs, cmp_str);
                const char *listed = hit ? hit->shard : NULL;
                const char *fp = t->file + strlen(c->dir) + 1;
                if (!listed) {
                    rc = gr_seterr(GR_EFORMAT,
                                   "%s: tensor '%s': %s holds it but the index does "
                                   "not list it",
                                   index_path, t->name, t->file);
                    goto done;
                }
                if (strcmp(listed, fp)) {
                    rc = gr_seterr(GR_EFORMAT,
                                   "%s: tensor '%s' appears in two shards: %s (where the index "
                                   "places it) and %s",
                                   index_path, t->name, listed, fp);
                    goto done;
                }
            }
    }
done:
    free(pairs);
    free(names);
    gr_json_free(idx);
    return rc;
}

/* A directory without model.safetensors or an index: accepted when it holds
 * exactly one *.safetensors file (e.g. a PEFT adapter directory). */
static int open_lone_file(gr_ckpt *c)
{
    DIR *d = opendir(c->dir);
    if (!d) return gr_seterr(GR_EIO, "%s: cannot list: %s", c->dir, strerror(errno));
    char *found = NULL;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n <= 12 || de->d_name[0] == '.' || strcmp(de->d_name + n - 12, ".safetensors"))
            continue;
        char *p = path_join(c->dir, de->d_name);
        if (p && is_file(p) && ++count == 1)
            found = p;
        else
            free(p);
    }
    closedir(d);
    int rc;
    if (count == 1)
        rc = add_file(c, found);
    else
        rc = gr_seterr(GR_ENOTFOUND,
                       "%s: no " SINGLE_NAME " or " INDEX_NAME " (and %s other .safetensors file)",
                       c->dir, count ? "more than one" : "no");
    free(found);
    return rc;
}

gr_ckpt *gr_ckpt_open(const char *path)
{
    gr_ckpt *c = calloc(1, sizeof *c);
    char *p = NULL;
    if (!c) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    struct stat sb;
    if (stat(path, &sb) < 0) {
        gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path);
        while (n > 1 && path[n - 1] == '/') n--;
        if (!(c->dir = strndup(path, n))) goto oom;
        /* transformers looks for the single file before the index */
        if (!(p = path_join(c->dir, SINGLE_NAME))) goto oom;
        if (is_file(p)) {
            if (add_file(c, p)) goto fail;
        } else {
            free(p);
            if (!(p = path_join(c->dir, INDEX_NAME))) goto oom;
            if (is_file(p) ? open_sharded(c, p) : open_lone_file(c)) goto fail;
        }
    } else {
        const char *slash = strrchr(path, '/');
        c->dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
        if (!c->dir) goto oom;
        if (add_file(c, path)) goto fail;
    }
    free(p);
    p = NULL;

    size_t total = 0;
    for (size_t f = 0; f < c->nfiles; f++) total += gr_st_count(c->files[f]);
    if (total && !(c->sorted = malloc(total * sizeof *c->sorted))) goto oom;
    for (size_t f = 0; f < c->nfiles; f++)
        for (size_t k = 0; k < gr_st_count(c->files[f]); k++)
            c->sorted[c->n++] = gr_st_tensor(c->files[f], k);
    if (c->n > 1) qsort(c->sorted, c->n, sizeof *c->sorted, cmp_tensor_ptr);
    for (size_t i = 1; i < c->n; i++)
        if (!strcmp(c->sorted[i]->name, c->sorted[i - 1]->name)) {
            gr_seterr(GR_EFORMAT, "%s: tensor '%s' appears in two shards: %s and %s", c->dir,
                      c->sorted[i]->name, c->sorted[i - 1]->file, c->sorted[i]->file);
            goto fail;
        }

    if (!(p = path_join(c->dir, CONFIG_NAME))) goto oom;
    if (is_file(p)) {
        c->config = gr_json_parse_file(p);
        if (!c->config) goto fail;
        if (c->config->type != GR_JSON_OBJ) {
            gr_seterr(GR_EFORMAT, "%s: not a JSON object", p);
            goto fail;
        }
    }
    free(p);
    return c;
oom:
    gr_seterr(GR_ENOMEM, "%s: out of memory", path);
fail:
    free(p);
    gr_ckpt_close(&c);
    return NULL;
}

void gr_ckpt_close(gr_ckpt **pc)
{
    if (!pc || !*pc) return;
    gr_ckpt *c = *pc;
    for (size_t f = 0; f < c->nfiles; f++) gr_st_close(&c->files[f]);
    free(c->files);
    free(c->sorted);
    gr_json_free(c->config);
    free(c->dir);
    free(c);
    *pc = NULL;
}

size_t gr_ckpt_count(const gr_ckpt *c)
{
    return c->n;
}

const gr_tensor *gr_ckpt_tensor(const gr_ckpt *c, size_t i)
{
    return i < c->n ? c->sorted[i] : NULL;
}

const gr_tensor *gr_ckpt_find(const gr_ckpt *c, const char *name)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(c->sorted[mid]->name, name);
        if (r == 0) return c->sorted[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *gr_ckpt_dir(const gr_ckpt *c)
{
    return c->dir;
}

const gr_json *gr_ckpt_config(const gr_ckpt *c)
{
    return c->config;
}

const char *gr_ckpt_meta_get(const gr_ckpt *c, const char *key)
{
    return c->nfiles ? gr_st_meta_get(c->files[0], key) : NULL;
}

size_t gr_ckpt_nfiles(const gr_ckpt *c)
{
    return c->nfiles;
}

const gr_st *gr_ckpt_file(const gr_ckpt *c, size_t i)
{
    return i < c->nfiles ? c->files[i] : NULL;
}
