/* gr_dataset: CSV data sets with a label column, deterministic splits and
 * image/noise transforms (see gr_dataset.h). */
#include "gr_dataset.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_rng.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct gr_dataset {
    char *name;
    size_t rows, features;
    int classes;
    double lo, hi; /* value range of the whole file */
    float *x;      /* (rows, features) */
    int32_t *y;    /* (rows) */
    uint64_t *ids; /* (rows) */
};

void gr_dataset_destroy(gr_dataset **d)
{
    if (!d || !*d) return;
    free((*d)->name);
    free((*d)->x);
    free((*d)->y);
    free((*d)->ids);
    free(*d);
    *d = NULL;
}

size_t gr_dataset_rows(const gr_dataset *d)
{
    return d->rows;
}
size_t gr_dataset_features(const gr_dataset *d)
{
    return d->features;
}
int gr_dataset_classes(const gr_dataset *d)
{
    return d->classes;
}
const float *gr_dataset_x(const gr_dataset *d)
{
    return d->x;
}
const int32_t *gr_dataset_y(const gr_dataset *d)
{
    return d->y;
}
const uint64_t *gr_dataset_row_ids(const gr_dataset *d)
{
    return d->ids;
}
double gr_dataset_min(const gr_dataset *d)
{
    return d->lo;
}
double gr_dataset_max(const gr_dataset *d)
{
    return d->hi;
}
const char *gr_dataset_name(const gr_dataset *d)
{
    return d->name;
}

/* ---------------------------------------------------------------- parsing */

typedef struct field {
    const char *p;
    size_t n;
} field;

/* Whether f is a decimal number in the accepted syntax; *v gets its value
 * (which may be out of float range: the caller checks). */
static int parse_number(field f, double *v)
{
    char buf[GR_DATASET_MAX_FIELD + 1];
    if (f.n == 0 || f.n > GR_DATASET_MAX_FIELD) return 0;
    size_t i = 0, digits = 0;
    if (f.p[i] == '+' || f.p[i] == '-') i++;
    while (i < f.n && f.p[i] >= '0' && f.p[i] <= '9') i++, digits++;
    if (i < f.n && f.p[i] == '.') {
        i++;
        while (i < f.n && f.p[i] >= '0' && f.p[i] <= '9') i++, digits++;
    }
    if (!digits) return 0;
    if (i < f.n && (f.p[i] == 'e' || f.p[i] == 'E')) {
        i++;
        if (i < f.n && (f.p[i] == '+' || f.p[i] == '-')) i++;
        size_t ed = 0;
        while (i < f.n && f.p[i] >= '0' && f.p[i] <= '9') i++, ed++;
        if (!ed) return 0;
    }
    if (i != f.n) return 0;
    memcpy(buf, f.p, f.n);
    buf[f.n] = 0;
    *v = strtod(buf, NULL);
    return 1;
}

/* Splits line[0..n) into fields (trimmed of spaces and tabs). Returns the
 * number of fields; fills at most cap of them. */
static size_t split_fields(const char *line, size_t n, field *out, size_t cap)
{
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && line[i] != ',') continue;
        size_t a = start, b = i;
        while (a < b && (line[a] == ' ' || line[a] == '\t')) a++;
        while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t')) b--;
        if (k < cap) out[k] = (field){line + a, b - a};
        k++;
        start = i + 1;
    }
    return k;
}

/* Shows a field in a message: at most 24 bytes, non-printing bytes as '?'. */
static const char *show(field f, char buf[32])
{
    size_t n = f.n > 24 ? 24 : f.n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)f.p[i];
        buf[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    buf[n] = 0;
    if (f.n > 24) strcpy(buf + n, "...");
    return buf;
}

static int grow(gr_dataset *d, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    float *x = realloc(d->x, nc * d->features * sizeof *x);
    if (!x) return gr_seterr(GR_ENOMEM, "%s: out of memory", d->name);
    d->x = x;
    int32_t *y = realloc(d->y, nc * sizeof *y);
    if (!y) return gr_seterr(GR_ENOMEM, "%s: out of memory", d->name);
    d->y = y;
    uint64_t *ids = realloc(d->ids, nc * sizeof *ids);
    if (!ids) return gr_seterr(GR_ENOMEM, "%s: out of memory", d->name);
    d->ids = ids;
    *cap = nc;
    return 0;
}

gr_dataset *gr_dataset_parse(const char *what, const char *text, size_t len)
{
    if (!what) what = "data";
    gr_dataset *d = calloc(1, sizeof *d);
    field *fs = NULL;
    char sb[32];
    int rc = 0;
    if (!d || !(d->name = strdup(what))) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    if (len > GR_DATASET_MAX_BYTES) {
        rc = gr_seterr(GR_EINVAL, "%s: larger than %llu bytes", what,
                       (unsigned long long)GR_DATASET_MAX_BYTES);
        goto fail;
    }
    size_t pos = 0, line_no = 0, cap = 0, ncols = 0;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) pos = 3;
    d->lo = INFINITY;
    d->hi = -INFINITY;
    int max_label = -1;
    size_t blank_at = 0; /* line number of the first empty line (0: none yet) */
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t n = end - pos;
        const char *line = text + pos;
        pos = nl ? end + 1 : len;
        line_no++;
        if (n && line[n - 1] == '\r') n--;
        int blank = 1;
        for (size_t i = 0; i < n && blank; i++) blank = line[i] == ' ' || line[i] == '\t';
        if (blank) {
            if (!blank_at) blank_at = line_no;
            continue;
        }
        if (blank_at) {
            rc = gr_seterr(GR_EFORMAT, "%s: line %zu: empty line inside the data", what, blank_at);
            goto fail;
        }
        if (memchr(line, 0, n)) {
            rc = gr_seterr(GR_EFORMAT, "%s: line %zu: NUL byte", what, line_no);
            goto fail;
        }
        if (!ncols) {
            ncols = split_fields(line, n, NULL, 0);
            if (ncols < 2) {
                rc = gr_seterr(GR_EFORMAT,
                               "%s: line %zu: %zu field; need features and a label in the last "
                               "column",
                               what, line_no, ncols);
                goto fail;
            }
            if (ncols - 1 > GR_DATASET_MAX_FEATURES) {
                rc = gr_seterr(GR_EINVAL, "%s: line %zu: %zu features (at most %d)", what, line_no,
                               ncols - 1, GR_DATASET_MAX_FEATURES);
                goto fail;
            }
            d->features = ncols - 1;
            if (!(fs = malloc(ncols * sizeof *fs))) {
                rc = gr_seterr(GR_ENOMEM, "out of memory");
                goto fail;
            }
            split_fields(line, n, fs, ncols);
            int header = 0;
            double v;
            for (size_t c = 0; c < ncols && !header; c++) header = !parse_number(fs[c], &v);
            if (header) continue;
        }
        size_t k = split_fields(line, n, fs, ncols);
        if (k != ncols) {
            rc = gr_seterr(GR_EFORMAT, "%s: line %zu: %zu fields, the first line has %zu", what,
                           line_no, k, ncols);
            goto fail;
        }
        if ((d->rows + 1) * d->features > GR_DATASET_MAX_VALUES) {
            rc = gr_seterr(GR_EINVAL, "%s: more than %llu values", what,
                           (unsigned long long)GR_DATASET_MAX_VALUES);
            goto fail;
        }
        if ((rc = grow(d, &cap, d->rows + 1))) goto fail;
        float *xr = d->x + d->rows * d->features;
        for (size_t c = 0; c < ncols; c++) {
            double v;
            if (!parse_number(fs[c], &v)) {
                rc = gr_seterr(GR_EFORMAT, "%s: line %zu, column %zu: '%s' is not a number", what,
                               line_no, c + 1, show(fs[c], sb));
                goto fail;
            }
            if (c + 1 < ncols) {
                if (!isfinite(v) || fabs(v) > 3.4028234663852886e38) {
                    rc = gr_seterr(GR_EFORMAT,
                                   "%s: line %zu, column %zu: '%s' is outside the float range",
                                   what, line_no, c + 1, show(fs[c], sb));
                    goto fail;
                }
                xr[c] = (float)v;
                if (xr[c] < d->lo) d->lo = xr[c];
                if (xr[c] > d->hi) d->hi = xr[c];
            } else {
                if (!(v >= 0 && v < GR_DATASET_MAX_CLASSES) || v != floor(v)) {
                    rc = gr_seterr(GR_EFORMAT,
                                   "%s: line %zu, column %zu (label): '%s' is not an integer in "
                                   "[0, %d)",
                                   what, line_no, c + 1, show(fs[c], sb), GR_DATASET_MAX_CLASSES);
                    goto fail;
                }
                d->y[d->rows] = (int32_t)v;
                if ((int)v > max_label) max_label = (int)v;
            }
        }
        d->ids[d->rows] = d->rows;
        d->rows++;
    }
    if (!d->rows) {
        rc = gr_seterr(GR_EFORMAT, "%s: no data rows", what);
        goto fail;
    }
    d->classes = max_label + 1;
    free(fs);
    return d;
fail:
    (void)rc;
    free(fs);
    gr_dataset_destroy(&d);
    return NULL;
}

/* ---------------------------------------------------------------- loading */

/* Runs `gzip -dc -- path` and collects its output (at most max bytes). */
static int gunzip(const char *path, size_t max, char **out, size_t *outlen)
{
    int pfd[2] = {-1, -1}, rc = 0;
    pid_t pid = -1;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    posix_spawn_file_actions_t fa;
    int fa_ok = 0;
    if (pipe2(pfd, O_CLOEXEC)) return gr_seterr(GR_EIO, "%s: pipe: %s", path, strerror(errno));
    if (posix_spawn_file_actions_init(&fa)) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    fa_ok = 1;
    if (posix_spawn_file_actions_adddup2(&fa, pfd[1], 1) ||
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0) ||
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    char *argv[] = {"gzip", "-dc", "--", (char *)path, NULL};
    int e = posix_spawnp(&pid, "gzip", &fa, NULL, argv, environ);
    if (e) {
        pid = -1;
        rc = gr_seterr(GR_EIO, "%s: cannot run gzip to decompress it: %s", path, strerror(e));
        goto done;
    }
    close(pfd[1]);
    pfd[1] = -1;
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : 1 << 20;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                rc = gr_seterr(GR_ENOMEM, "%s: out of memory", path);
                goto done;
            }
            buf = nb;
            cap = nc;
        }
        ssize_t r = read(pfd[0], buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = gr_seterr(GR_EIO, "%s: reading gzip output: %s", path, strerror(errno));
            goto done;
        }
        if (r == 0) break;
        len += (size_t)r;
        if (len > max) {
            rc = gr_seterr(GR_EINVAL, "%s: decompresses to more than %zu bytes", path, max);
            goto done;
        }
    }
done:
    if (pfd[0] >= 0) close(pfd[0]);
    if (pfd[1] >= 0) close(pfd[1]);
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    if (pid > 0) {
        int st = 0;
        if (rc) kill(pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        if (!rc && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
            rc = gr_seterr(GR_EFORMAT, "%s: not a valid gzip file (gzip -dc exited with %s %d)",
                           path, WIFEXITED(st) ? "status" : "signal",
                           WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
    if (rc) {
        free(buf);
        return rc;
    }
    if (!buf && !(buf = malloc(1))) return gr_seterr(GR_ENOMEM, "out of memory");
    buf[len] = 0;
    *out = buf;
    *outlen = len;
    return 0;
}

static int ends_with(const char *s, const char *sfx)
{
    size_t a = strlen(s), b = strlen(sfx);
    return a >= b && !strcmp(s + a - b, sfx);
}

/* The one .csv / .csv.gz file in dir (caller frees). */
static int find_data_file(const char *dir, char **out)
{
    DIR *dh = opendir(dir);
    if (!dh) return gr_seterr(GR_EIO, "%s: cannot list: %s", dir, strerror(errno));
    struct dirent *e;
    char *found = NULL;
    int rc = 0, n = 0;
    while ((e = readdir(dh))) {
        if (e->d_name[0] == '.') continue;
        if (!ends_with(e->d_name, ".csv") && !ends_with(e->d_name, ".csv.gz")) continue;
        char *p = gr_fs_join(dir, e->d_name);
        struct stat st;
        if (!p) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            break;
        }
        if (stat(p, &st) || !S_ISREG(st.st_mode)) {
            free(p);
            continue;
        }
        if (n++) {
            rc = gr_seterr(GR_EINVAL, "%s: holds several .csv/.csv.gz files (%s, %s); give one",
                           dir, strrchr(found, '/') + 1, e->d_name);
            free(p);
            break;
        }
        found = p;
    }
    closedir(dh);
    if (!rc && !found)
        rc = gr_seterr(GR_ENOTFOUND, "%s: directory holds no .csv or .csv.gz file", dir);
    if (rc) {
        free(found);
        return rc;
    }
    *out = found;
    return 0;
}

/* 1 when path starts with the gzip magic bytes 1f 8b, 0 when not, or a
 * negative code. */
static int is_gzip(const char *path)
{
    unsigned char m[2];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: cannot open: %s", path,
                         strerror(errno));
    ssize_t n;
    do n = read(fd, m, sizeof m);
    while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n < 0) return gr_seterr(GR_EIO, "%s: read failed: %s", path, strerror(e));
    return n == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

gr_dataset *gr_dataset_load(const char *path)
{
    char *file = NULL, *text = NULL;
    size_t len = 0;
    gr_dataset *d = NULL;
    int rc;
    if (gr_fs_is_dir(path)) {
        if ((rc = find_data_file(path, &file))) return NULL;
    } else if (!(file = strdup(path))) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    if ((rc = is_gzip(file)) < 0) goto done;
    if (rc == 1)
        rc = gunzip(file, GR_DATASET_MAX_BYTES, &text, &len);
    else
        rc = gr_fs_read_file(file, GR_DATASET_MAX_BYTES, &text, &len);
    if (!rc) d = gr_dataset_parse(file, text, len);
done:
    free(text);
    free(file);
    return d;
}

/* ---------------------------------------------------------------- splits */

int gr_split_parse(const char *s, gr_split *out)
{
    if (!strcmp(s, "all"))
        *out = GR_SPLIT_ALL;
    else if (!strcmp(s, "train"))
        *out = GR_SPLIT_TRAIN;
    else if (!strcmp(s, "test"))
        *out = GR_SPLIT_TEST;
    else
        return gr_seterr(GR_EINVAL, "split '%.40s': want train, test or all", s);
    return 0;
}

typedef struct keyed {
    double u;
    size_t row;
} keyed;

static int cmp_keyed(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->u != y->u) return x->u < y->u ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static gr_dataset *copy_rows(const gr_dataset *d, const uint8_t *take, size_t n)
{
    gr_dataset *o = calloc(1, sizeof *o);
    if (!o) goto oom;
    *o = (gr_dataset){
        .rows = n, .features = d->features, .classes = d->classes, .lo = d->lo, .hi = d->hi};
    if (!(o->name = strdup(d->name)) ||
        !(o->x = malloc((n ? n : 1) * d->features * sizeof *o->x)) ||
        !(o->y = malloc((n ? n : 1) * sizeof *o->y)) ||
        !(o->ids = malloc((n ? n : 1) * sizeof *o->ids)))
        goto oom;
    size_t k = 0;
    for (size_t r = 0; r < d->rows; r++) {
        if (take && !take[r]) continue;
        memcpy(o->x + k * d->features, d->x + r * d->features, d->features * sizeof *o->x);
        o->y[k] = d->y[r];
        o->ids[k] = d->ids[r];
        k++;
    }
    return o;
oom:
    gr_dataset_destroy(&o);
    gr_seterr(GR_ENOMEM, "out of memory");
    return NULL;
}

gr_dataset *gr_dataset_split(const gr_dataset *d, gr_split part, double fraction, uint64_t seed)
{
    if (part == GR_SPLIT_ALL) return copy_rows(d, NULL, d->rows);
    if (!(fraction > 0 && fraction < 1)) {
        gr_seterr(GR_EINVAL, "%s: split fraction %g must be in (0, 1)", d->name, fraction);
        return NULL;
    }
    const size_t ntrain = (size_t)floor(fraction * (double)d->rows + 0.5);
    if (ntrain == 0 || ntrain >= d->rows) {
        gr_seterr(GR_EINVAL, "%s: split fraction %g of %zu rows leaves the %s part empty", d->name,
                  fraction, d->rows, ntrain == 0 ? "train" : "test");
        return NULL;
    }
    keyed *k = malloc(d->rows * sizeof *k);
    uint8_t *take = calloc(d->rows, 1);
    gr_dataset *o = NULL;
    if (!k || !take) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    const uint64_t key = gr_rng_key(seed, "graft.dataset.split", 0);
    for (size_t r = 0; r < d->rows; r++) k[r] = (keyed){gr_rng_uniform_d(key, d->ids[r]), r};
    qsort(k, d->rows, sizeof *k, cmp_keyed);
    for (size_t i = 0; i < ntrain; i++) take[k[i].row] = 1;
    if (part == GR_SPLIT_TEST)
        for (size_t r = 0; r < d->rows; r++) take[r] = !take[r];
    o = copy_rows(d, take, part == GR_SPLIT_TRAIN ? ntrain : d->rows - ntrain);
done:
    free(k);
    free(take);
    return o;
}

/* ---------------------------------------------------------------- transforms */

static const char *const tf_names[] = {"identity", "rot90", "rot180", "rot270",
                                       "flip",     "vflip", "invert", "noise"};

int gr_transform_parse(const char *s, gr_transform *out)
{
    for (size_t i = 0; i < sizeof tf_names / sizeof *tf_names; i++)
        if (!strcmp(s, tf_names[i])) return *out = (gr_transform)i, 0;
    return gr_seterr(GR_EINVAL,
                     "transform '%.40s': want identity, rot90, rot180, rot270, flip, vflip, "
                     "invert or noise",
                     s);
}

const char *gr_transform_name(gr_transform t)
{
    return (unsigned)t < sizeof tf_names / sizeof *tf_names ? tf_names[t] : "?";
}

/* side when n is a perfect square (> 0), else 0 */
static size_t square_side(size_t n)
{
    size_t s = (size_t)floor(sqrt((double)n) + 0.5);
    return s * s == n ? s : 0;
}

int gr_dataset_transform(gr_dataset *d, gr_transform t, double sigma, uint64_t seed)
{
    const size_t f = d->features;
    switch (t) {
    case GR_TF_IDENTITY:
        return 0;
    case GR_TF_INVERT:
        for (size_t i = 0; i < d->rows * f; i++) {
            /* clamped: with values far apart the sum may round out of range */
            double v = d->lo + d->hi - d->x[i];
            d->x[i] = (float)(v < d->lo ? d->lo : v > d->hi ? d->hi : v);
        }
        return 0;
    case GR_TF_NOISE: {
        if (!isfinite(sigma) || sigma < 0)
            return gr_seterr(GR_EINVAL, "%s: noise level %g must be finite and >= 0", d->name,
                             sigma);
        const double sd = sigma * (d->hi - d->lo);
        for (size_t r = 0; r < d->rows; r++) {
            gr_rng_stream s;
            char tag[48];
            snprintf(tag, sizeof tag, "graft.dataset.noise.%llu", (unsigned long long)d->ids[r]);
            gr_rng_stream_init(&s, seed, tag);
            float *xr = d->x + r * f;
            for (size_t c = 0; c < f; c++) {
                double v = xr[c] + sd * gr_rng_next_normal(&s);
                xr[c] = (float)(v < d->lo ? d->lo : v > d->hi ? d->hi : v);
            }
        }
        return 0;
    }
    default:
        break;
    }
    const size_t S = square_side(f);
    if (!S)
        return gr_seterr(GR_EINVAL,
                         "%s: transform '%s' needs square images (a square number of features), "
                         "not %zu features",
                         d->name, gr_transform_name(t), f);
    float *tmp = malloc(f * sizeof *tmp);
    if (!tmp) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t r = 0; r < d->rows; r++) {
        float *img = d->x + r * f; /* (S, S) row-major */
        memcpy(tmp, img, f * sizeof *tmp);
        for (size_t i = 0; i < S; i++)
            for (size_t j = 0; j < S; j++) {
                size_t si, sj; /* source pixel of output pixel (i, j) */
                switch (t) {
                case GR_TF_ROT90: /* clockwise: the left column becomes the top row */
                    si = S - 1 - j, sj = i;
                    break;
                case GR_TF_ROT180:
                    si = S - 1 - i, sj = S - 1 - j;
                    break;
                case GR_TF_ROT270:
                    si = j, sj = S - 1 - i;
                    break;
                case GR_TF_FLIP:
                    si = i, sj = S - 1 - j;
                    break;
                default: /* GR_TF_VFLIP */
                    si = S - 1 - i, sj = j;
                    break;
                }
                img[i * S + j] = tmp[si * S + sj];
            }
    }
    free(tmp);
    return 0;
}
