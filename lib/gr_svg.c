/* gr_svg: a small plain-SVG plot writer (line and scatter plots with axes,
 * ticks, log scales, titles, direct labels, grids of panels). */
#include "gr_svg.h"
#include "gr_err.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SVG_MIN_W        120
#define SVG_MIN_H        90
#define SVG_MAX_SIDE     20000
#define SVG_MAX_POINTS   10000000
#define SVG_FONT         11.0 /* tick and label font size, px */
#define SVG_TITLE_FONT   14.0
#define SVG_CHAR_W       0.6  /* average glyph width as a fraction of font size */
#define SVG_LABEL_GAP    12.0 /* minimum vertical distance between direct labels */
#define SVG_MAX_TICKS    9
#define SVG_PAD_FRACTION 0.05 /* auto ranges get this much air on each side */

enum { SERIES_LINE, SERIES_SCATTER };

/* Okabe & Ito's colour-blind-safe palette, yellow last (low contrast). */
static const char *const palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                      "#E69F00", "#56B4E9", "#000000", "#F0E442"};
#define PALETTE_N (sizeof palette / sizeof palette[0])

typedef struct svg_series {
    int kind;
    char *label;
    double *x, *y;
    size_t n;
    char color[8];
    double width, marker;
    int dashed;
    char **plabels; /* n entries or NULL */
} svg_series;

typedef struct svg_ref {
    int vertical;
    double v;
    char *label;
} svg_ref;

struct gr_svg_plot {
    int w, h;
    char *title, *xlabel, *ylabel;
    int xlog, ylog, equal, direct;
    double xlo, xhi, ylo, yhi; /* fixed ends, NAN = automatic */
    svg_series *s;
    size_t ns, scap;
    svg_ref *refs;
    size_t nref, refcap;
};

/* One axis after layout: transformed range (log10 for log axes) and ticks. */
typedef struct axis {
    int log;
    double lo, hi; /* transformed */
    double ticks[64];
    int nticks;
    double minor[128];
    int nminor;
    double step; /* linear tick step, in data units (for label precision) */
} axis;

static char *dupstr(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static int set_text(char **dst, const char *s)
{
    char *d = NULL;
    if (s && !(d = dupstr(s))) return gr_seterr(GR_ENOMEM, "svg: out of memory");
    free(*dst);
    *dst = d;
    return 0;
}

gr_svg_plot *gr_svg_new(int width, int height)
{
    if (width < SVG_MIN_W || height < SVG_MIN_H || width > SVG_MAX_SIDE || height > SVG_MAX_SIDE) {
        gr_seterr(GR_EINVAL, "svg: plot size %dx%d outside %dx%d..%dx%d", width, height, SVG_MIN_W,
                  SVG_MIN_H, SVG_MAX_SIDE, SVG_MAX_SIDE);
        return NULL;
    }
    gr_svg_plot *p = calloc(1, sizeof *p);
    if (!p) {
        gr_seterr(GR_ENOMEM, "svg: out of memory");
        return NULL;
    }
    p->w = width;
    p->h = height;
    p->direct = 1;
    p->xlo = p->xhi = p->ylo = p->yhi = NAN;
    return p;
}

void gr_svg_destroy(gr_svg_plot **pp)
{
    if (!pp || !*pp) return;
    gr_svg_plot *p = *pp;
    for (size_t i = 0; i < p->ns; i++) {
        svg_series *s = &p->s[i];
        free(s->label);
        free(s->x);
        free(s->y);
        if (s->plabels)
            for (size_t k = 0; k < s->n; k++) free(s->plabels[k]);
        free(s->plabels);
    }
    for (size_t i = 0; i < p->nref; i++) free(p->refs[i].label);
    free(p->refs);
    free(p->s);
    free(p->title);
    free(p->xlabel);
    free(p->ylabel);
    free(p);
    *pp = NULL;
}

int gr_svg_title(gr_svg_plot *p, const char *t)
{
    return set_text(&p->title, t);
}

int gr_svg_xlabel(gr_svg_plot *p, const char *t)
{
    return set_text(&p->xlabel, t);
}

int gr_svg_ylabel(gr_svg_plot *p, const char *t)
{
    return set_text(&p->ylabel, t);
}

void gr_svg_xlog(gr_svg_plot *p, int on)
{
    p->xlog = !!on;
}

void gr_svg_ylog(gr_svg_plot *p, int on)
{
    p->ylog = !!on;
}

static int set_range(double *plo, double *phi, double lo, double hi, const char *which)
{
    if (!isnan(lo) && !isnan(hi) && !(lo < hi))
        return gr_seterr(GR_EINVAL, "svg: %s range [%g, %g] must have lo < hi", which, lo, hi);
    if (isinf(lo) || isinf(hi))
        return gr_seterr(GR_EINVAL, "svg: %s range ends must be finite or NAN", which);
    *plo = lo;
    *phi = hi;
    return 0;
}

int gr_svg_xrange(gr_svg_plot *p, double lo, double hi)
{
    return set_range(&p->xlo, &p->xhi, lo, hi, "x");
}

int gr_svg_yrange(gr_svg_plot *p, double lo, double hi)
{
    return set_range(&p->ylo, &p->yhi, lo, hi, "y");
}

void gr_svg_equal_aspect(gr_svg_plot *p, int on)
{
    p->equal = !!on;
}

void gr_svg_direct_labels(gr_svg_plot *p, int on)
{
    p->direct = !!on;
}

static int add_series(gr_svg_plot *p, int kind, const char *label, const double *x, const double *y,
                      size_t n)
{
    if (n > SVG_MAX_POINTS)
        return gr_seterr(GR_EINVAL, "svg: series '%s' has %zu points (limit %d)",
                         label ? label : "", n, SVG_MAX_POINTS);
    if (n > 0 && (!x || !y))
        return gr_seterr(GR_EINVAL, "svg: series '%s' has %zu points but no data",
                         label ? label : "", n);
    if (p->ns == p->scap) {
        size_t cap = p->scap ? 2 * p->scap : 8;
        svg_series *ns = realloc(p->s, cap * sizeof *ns);
        if (!ns) return gr_seterr(GR_ENOMEM, "svg: out of memory");
        p->s = ns;
        p->scap = cap;
    }
    svg_series s = {.kind = kind,
                    .n = n,
                    .width = kind == SERIES_LINE ? 1.5 : 0,
                    .marker = kind == SERIES_SCATTER ? 3.0 : 0};
    snprintf(s.color, sizeof s.color, "%s", palette[p->ns % PALETTE_N]);
    if (label && !(s.label = dupstr(label))) goto oom;
    if (n) {
        s.x = malloc(n * sizeof *s.x);
        s.y = malloc(n * sizeof *s.y);
        if (!s.x || !s.y) goto oom;
        memcpy(s.x, x, n * sizeof *x);
        memcpy(s.y, y, n * sizeof *y);
    }
    p->s[p->ns] = s;
    return (int)p->ns++;
oom:
    free(s.label);
    free(s.x);
    free(s.y);
    return gr_seterr(GR_ENOMEM, "svg: out of memory");
}

int gr_svg_line(gr_svg_plot *p, const char *label, const double *x, const double *y, size_t n)
{
    return add_series(p, SERIES_LINE, label, x, y, n);
}

int gr_svg_scatter(gr_svg_plot *p, const char *label, const double *x, const double *y, size_t n)
{
    return add_series(p, SERIES_SCATTER, label, x, y, n);
}

static svg_series *series_at(gr_svg_plot *p, int i)
{
    if (i < 0 || (size_t)i >= p->ns) {
        gr_seterr(GR_EINVAL, "svg: no series %d (plot has %zu)", i, p->ns);
        return NULL;
    }
    return &p->s[i];
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int gr_svg_series_color(gr_svg_plot *p, int i, const char *color)
{
    svg_series *s = series_at(p, i);
    if (!s) return GR_EINVAL;
    size_t n = color ? strlen(color) : 0;
    int ok = (n == 4 || n == 7) && color[0] == '#';
    for (size_t k = 1; ok && k < n; k++) ok = is_hex(color[k]);
    if (!ok)
        return gr_seterr(GR_EINVAL, "svg: colour '%s' is not #rgb or #rrggbb",
                         color ? color : "(null)");
    memcpy(s->color, color, n + 1);
    return 0;
}

int gr_svg_series_width(gr_svg_plot *p, int i, double width)
{
    svg_series *s = series_at(p, i);
    if (!s) return GR_EINVAL;
    if (!(width >= 0.1 && width <= 50))
        return gr_seterr(GR_EINVAL, "svg: stroke width %g outside 0.1..50", width);
    s->width = width;
    return 0;
}

int gr_svg_series_dashed(gr_svg_plot *p, int i, int on)
{
    svg_series *s = series_at(p, i);
    if (!s) return GR_EINVAL;
    s->dashed = !!on;
    return 0;
}

int gr_svg_series_markers(gr_svg_plot *p, int i, double r)
{
    svg_series *s = series_at(p, i);
    if (!s) return GR_EINVAL;
    int ok = (r >= 0.5 && r <= 50) || (r == 0 && s->kind == SERIES_LINE);
    if (!ok) return gr_seterr(GR_EINVAL, "svg: marker radius %g outside 0.5..50", r);
    s->marker = r;
    return 0;
}

int gr_svg_point_labels(gr_svg_plot *p, int i, const char *const *labels, size_t n)
{
    svg_series *s = series_at(p, i);
    if (!s) return GR_EINVAL;
    if (n != s->n || (n && !labels))
        return gr_seterr(GR_EINVAL, "svg: %zu point labels for a series of %zu points", n, s->n);
    char **pl = calloc(n ? n : 1, sizeof *pl);
    if (!pl) return gr_seterr(GR_ENOMEM, "svg: out of memory");
    for (size_t k = 0; k < n; k++)
        if (labels[k] && !(pl[k] = dupstr(labels[k]))) {
            for (size_t j = 0; j < k; j++) free(pl[j]);
            free(pl);
            return gr_seterr(GR_ENOMEM, "svg: out of memory");
        }
    if (s->plabels)
        for (size_t k = 0; k < s->n; k++) free(s->plabels[k]);
    free(s->plabels);
    s->plabels = pl;
    return 0;
}

static int add_ref(gr_svg_plot *p, int vertical, double v, const char *label)
{
    if (!isfinite(v)) return gr_seterr(GR_EINVAL, "svg: reference line at non-finite %g", v);
    if (p->nref == p->refcap) {
        size_t cap = p->refcap ? 2 * p->refcap : 4;
        svg_ref *nr = realloc(p->refs, cap * sizeof *nr);
        if (!nr) return gr_seterr(GR_ENOMEM, "svg: out of memory");
        p->refs = nr;
        p->refcap = cap;
    }
    svg_ref r = {.vertical = vertical, .v = v};
    if (label && !(r.label = dupstr(label))) return gr_seterr(GR_ENOMEM, "svg: out of memory");
    p->refs[p->nref++] = r;
    return 0;
}

int gr_svg_hline(gr_svg_plot *p, double y, const char *label)
{
    return add_ref(p, 0, y, label);
}

int gr_svg_vline(gr_svg_plot *p, double x, const char *label)
{
    return add_ref(p, 1, x, label);
}

int gr_svg_escape(gr_buf *out, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            gr_buf_puts(out, "&amp;");
            break;
        case '<':
            gr_buf_puts(out, "&lt;");
            break;
        case '>':
            gr_buf_puts(out, "&gt;");
            break;
        case '"':
            gr_buf_puts(out, "&quot;");
            break;
        case '\'':
            gr_buf_puts(out, "&apos;");
            break;
        default:
            /* Control characters are not allowed in XML 1.0: drop them. */
            if ((unsigned char)*s < 0x20 && *s != '\t' && *s != '\n') break;
            gr_buf_putc(out, *s);
        }
    }
    return out->oom ? GR_ENOMEM : 0;
}

/* ---- layout ---- */

/* Transforms a data value for an axis; NAN when it cannot be drawn. */
static double tx(int log, double v)
{
    if (!isfinite(v)) return NAN;
    if (log) return v > 0 ? log10(v) : NAN;
    return v;
}

static double text_width(const char *s, double font)
{
    size_t chars = 0;
    for (; s && *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) chars++;
    return (double)chars * font * SVG_CHAR_W;
}

/* The 1-2-5 step that gives at most SVG_MAX_TICKS ticks over span. */
static double nice_step(double span)
{
    double raw = span / (SVG_MAX_TICKS - 1);
    double mag = pow(10, floor(log10(raw)));
    static const double m[] = {1, 2, 5, 10};
    for (int i = 0; i < 4; i++)
        if (m[i] * mag >= raw) return m[i] * mag;
    return 10 * mag;
}

static void lin_ticks(axis *a)
{
    double step = nice_step(a->hi - a->lo);
    a->step = step;
    a->nticks = a->nminor = 0;
    double k0 = ceil(a->lo / step - 1e-9), k1 = floor(a->hi / step + 1e-9);
    for (double k = k0; k <= k1 && a->nticks < 64; k++) {
        double v = k * step;
        if (fabs(v) < step * 1e-9) v = 0;
        a->ticks[a->nticks++] = v;
    }
}

static void log_ticks(axis *a)
{
    a->nticks = a->nminor = 0;
    double span = a->hi - a->lo;
    if (span >= 1) {
        double stride = ceil(span / (SVG_MAX_TICKS - 1));
        for (double k = ceil(a->lo - 1e-9); k <= a->hi + 1e-9 && a->nticks < 64; k++) {
            if (fmod(k, stride) != 0) continue;
            a->ticks[a->nticks++] = k;
        }
        if (span <= 8)
            for (double k = floor(a->lo); k <= a->hi; k++)
                for (int m = 2; m <= 9 && a->nminor < 128; m++) {
                    double v = k + log10(m);
                    if (v >= a->lo && v <= a->hi) a->minor[a->nminor++] = v;
                }
        if (a->nticks >= 2) return;
        a->nticks = 0;
    }
    /* Less than about a decade: 1-2-5 multiples, else plain linear ticks. */
    for (double k = floor(a->lo); k <= ceil(a->hi) && a->nticks < 64; k++) {
        static const double m[] = {1, 2, 5};
        for (int i = 0; i < 3 && a->nticks < 64; i++) {
            double v = k + log10(m[i]);
            if (v >= a->lo - 1e-9 && v <= a->hi + 1e-9) a->ticks[a->nticks++] = v;
        }
    }
    if (a->nticks >= 2) return;
    axis lin = {.lo = pow(10, a->lo), .hi = pow(10, a->hi)};
    lin_ticks(&lin);
    a->nticks = 0;
    for (int i = 0; i < lin.nticks; i++)
        if (lin.ticks[i] > 0) a->ticks[a->nticks++] = log10(lin.ticks[i]);
    a->step = lin.step;
}

/* Finds an axis' transformed range from fixed ends, data and reference lines. */
static void axis_range(const gr_svg_plot *p, int is_x, axis *a)
{
    int log = is_x ? p->xlog : p->ylog;
    memset(a, 0, sizeof *a);
    double flo = tx(log, is_x ? p->xlo : p->ylo), fhi = tx(log, is_x ? p->xhi : p->yhi);
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < p->ns; i++) {
        const svg_series *s = &p->s[i];
        for (size_t k = 0; k < s->n; k++) {
            double vx = tx(p->xlog, s->x[k]), vy = tx(p->ylog, s->y[k]);
            if (isnan(vx) || isnan(vy)) continue;
            double v = is_x ? vx : vy;
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
    }
    for (size_t i = 0; i < p->nref; i++) {
        if (p->refs[i].vertical != is_x) continue;
        double v = tx(log, p->refs[i].v);
        if (isnan(v)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    if (lo > hi) lo = 0, hi = 1; /* nothing drawable */
    if (!isnan(flo)) lo = flo;
    if (!isnan(fhi)) hi = fhi;
    if (lo > hi) { /* a fixed end beyond all data */
        if (!isnan(flo))
            hi = lo + 1;
        else
            lo = hi - 1;
    }
    if (hi - lo < 1e-12 * fmax(1, fmax(fabs(lo), fabs(hi)))) {
        double d = log ? 0.5 : (lo == 0 ? 1 : 0.1 * fabs(lo));
        if (isnan(flo)) lo -= d;
        if (isnan(fhi)) hi += d;
        if (!(hi > lo)) hi = lo + d; /* both fixed to one value is rejected earlier */
    }
    double pad = SVG_PAD_FRACTION * (hi - lo);
    if (isnan(flo)) lo -= pad;
    if (isnan(fhi)) hi += pad;
    a->log = log;
    a->lo = lo;
    a->hi = hi;
}

typedef struct layout {
    double left, top, pw, ph; /* data area in panel pixels */
    axis x, y;
} layout;

static int has_direct_labels(const gr_svg_plot *p, double *maxw)
{
    int any = 0;
    *maxw = 0;
    for (size_t i = 0; i < p->ns; i++)
        if (p->s[i].label && p->s[i].label[0]) {
            any = 1;
            *maxw = fmax(*maxw, text_width(p->s[i].label, SVG_FONT));
        }
    return any && p->direct;
}

static void do_layout(const gr_svg_plot *p, layout *L)
{
    double lw;
    double right = has_direct_labels(p, &lw) ? fmin(lw + 12, p->w / 3.0) : 15;
    L->left = p->ylabel ? 72 : 58;
    L->top = p->title ? 30 : 14;
    double bottom = p->xlabel ? 48 : 32;
    L->pw = p->w - L->left - right;
    L->ph = p->h - L->top - bottom;
    if (L->pw < 20) L->pw = 20;
    if (L->ph < 20) L->ph = 20;
    axis_range(p, 1, &L->x);
    axis_range(p, 0, &L->y);
    if (p->equal && !p->xlog && !p->ylog) {
        double sx = L->pw / (L->x.hi - L->x.lo), sy = L->ph / (L->y.hi - L->y.lo);
        double s = fmin(sx, sy);
        double cx = 0.5 * (L->x.lo + L->x.hi), cy = 0.5 * (L->y.lo + L->y.hi);
        L->x.lo = cx - 0.5 * L->pw / s, L->x.hi = cx + 0.5 * L->pw / s;
        L->y.lo = cy - 0.5 * L->ph / s, L->y.hi = cy + 0.5 * L->ph / s;
    }
    if (L->x.log)
        log_ticks(&L->x);
    else
        lin_ticks(&L->x);
    if (L->y.log)
        log_ticks(&L->y);
    else
        lin_ticks(&L->y);
}

static double px(const layout *L, double X)
{
    return L->left + (X - L->x.lo) / (L->x.hi - L->x.lo) * L->pw;
}

static double py(const layout *L, double Y)
{
    return L->top + L->ph - (Y - L->y.lo) / (L->y.hi - L->y.lo) * L->ph;
}

/* Writes a tick value: 10^k on log axes at whole decades, else %g with as many
 * digits as the step needs. */
static void tick_label(gr_buf *b, const axis *a, double t)
{
    if (a->log) {
        double k = round(t);
        if (fabs(t - k) < 1e-9) {
            /* plain numbers when every decade on the axis reads well so */
            if (a->lo >= -2.5 && a->hi <= 3.5)
                gr_buf_printf(b, "%g", pow(10, k));
            else
                gr_buf_printf(b, "10<tspan dy=\"-4\" font-size=\"8\">%.0f</tspan>", k);
            return;
        }
        gr_buf_printf(b, "%.3g", pow(10, t));
        return;
    }
    /* plain decimals with as many places as the step has; %g beyond */
    double mag = fmax(fabs(a->lo), fabs(a->hi));
    if (a->step >= 1e-6 && mag < 1e7) {
        int places = a->step >= 1 ? 0 : (int)ceil(-log10(a->step) - 1e-9);
        gr_buf_printf(b, "%.*f", places, t);
        return;
    }
    gr_buf_printf(b, "%.3g", t);
}

typedef struct dlabel {
    double x, y;
    size_t series;
} dlabel;

static int cmp_dlabel(const void *a, const void *b)
{
    double ya = ((const dlabel *)a)->y, yb = ((const dlabel *)b)->y;
    return (ya > yb) - (ya < yb);
}

static void series_attrs(gr_buf *b, const svg_series *s)
{
    gr_buf_printf(b, " fill=\"none\" stroke=\"%s\" stroke-width=\"%.2f\"", s->color, s->width);
    if (s->dashed) gr_buf_puts(b, " stroke-dasharray=\"6,4\"");
}

/* Draws the run of drawable points [k0, k1) of a line: a polyline, or a dot
 * when the run is a single point (so isolated data stay visible). */
static void render_run(gr_buf *b, const layout *L, const svg_series *s, size_t k0, size_t k1)
{
    if (k1 - k0 == 1) {
        if (s->marker == 0)
            gr_buf_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%.2f\" fill=\"%s\"/>\n",
                          px(L, tx(L->x.log, s->x[k0])), py(L, tx(L->y.log, s->y[k0])), s->width,
                          s->color);
        return;
    }
    gr_buf_puts(b, "<polyline");
    series_attrs(b, s);
    gr_buf_puts(b, " stroke-linejoin=\"round\" points=\"");
    for (size_t k = k0; k < k1; k++)
        gr_buf_printf(b, "%.2f,%.2f ", px(L, tx(L->x.log, s->x[k])), py(L, tx(L->y.log, s->y[k])));
    gr_buf_puts(b, "\"/>\n");
}

static int drawable(const layout *L, const svg_series *s, size_t k)
{
    return !isnan(tx(L->x.log, s->x[k])) && !isnan(tx(L->y.log, s->y[k]));
}

static void render_series(gr_buf *b, const layout *L, const svg_series *s)
{
    if (s->kind == SERIES_LINE) {
        size_t k = 0;
        while (k < s->n) {
            while (k < s->n && !drawable(L, s, k)) k++;
            size_t k0 = k;
            while (k < s->n && drawable(L, s, k)) k++;
            if (k > k0) render_run(b, L, s, k0, k);
        }
    }
    if (s->marker > 0)
        for (size_t k = 0; k < s->n; k++) {
            if (!drawable(L, s, k)) continue;
            gr_buf_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%.2f\" fill=\"%s\"/>\n",
                          px(L, tx(L->x.log, s->x[k])), py(L, tx(L->y.log, s->y[k])), s->marker,
                          s->color);
        }
}

static void render_point_labels(gr_buf *b, const layout *L, const svg_series *s)
{
    if (!s->plabels) return;
    for (size_t k = 0; k < s->n; k++) {
        double X = tx(L->x.log, s->x[k]), Y = tx(L->y.log, s->y[k]);
        if (!s->plabels[k] || isnan(X) || isnan(Y)) continue;
        gr_buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.0f\" fill=\"%s\">",
                      px(L, X) + s->marker + 2, py(L, Y) - s->marker - 1, SVG_FONT - 2, s->color);
        gr_svg_escape(b, s->plabels[k]);
        gr_buf_puts(b, "</text>\n");
    }
}

/* Direct labels beside each labelled series' end, pushed apart vertically. */
static int render_direct_labels(gr_buf *b, const gr_svg_plot *p, const layout *L)
{
    dlabel *d = calloc(p->ns ? p->ns : 1, sizeof *d);
    if (!d) return gr_seterr(GR_ENOMEM, "svg: out of memory");
    size_t nd = 0;
    for (size_t i = 0; i < p->ns; i++) {
        const svg_series *s = &p->s[i];
        if (!s->label || !s->label[0]) continue;
        double bx = NAN, by = NAN;
        for (size_t k = 0; k < s->n; k++) {
            double X = tx(L->x.log, s->x[k]), Y = tx(L->y.log, s->y[k]);
            if (isnan(X) || isnan(Y)) continue;
            if (s->kind == SERIES_LINE || isnan(bx) || X > bx) bx = X, by = Y;
        }
        if (isnan(bx)) continue;
        double x = fmin(fmax(px(L, bx), L->left), L->left + L->pw);
        double y = fmin(fmax(py(L, by), L->top), L->top + L->ph);
        /* below a point's own label when the points carry labels */
        double dy = s->plabels ? 6 + SVG_FONT : 4;
        d[nd++] = (dlabel){x + 5 + (s->kind == SERIES_SCATTER ? s->marker : 0), y + dy, i};
    }
    qsort(d, nd, sizeof *d, cmp_dlabel);
    for (size_t i = 1; i < nd; i++)
        if (d[i].y < d[i - 1].y + SVG_LABEL_GAP) d[i].y = d[i - 1].y + SVG_LABEL_GAP;
    double bottom = L->top + L->ph + 4;
    for (size_t i = nd; i-- > 0;) {
        double lim = i + 1 < nd ? d[i + 1].y - SVG_LABEL_GAP : bottom;
        if (d[i].y > lim) d[i].y = lim;
    }
    for (size_t i = 0; i < nd; i++) {
        const svg_series *s = &p->s[d[i].series];
        gr_buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.0f\" fill=\"%s\">", d[i].x,
                      d[i].y, SVG_FONT, s->color);
        gr_svg_escape(b, s->label);
        gr_buf_puts(b, "</text>\n");
    }
    free(d);
    return 0;
}

static void render_legend(gr_buf *b, const gr_svg_plot *p, const layout *L)
{
    double maxw = 0;
    int n = 0;
    for (size_t i = 0; i < p->ns; i++)
        if (p->s[i].label && p->s[i].label[0]) {
            maxw = fmax(maxw, text_width(p->s[i].label, SVG_FONT));
            n++;
        }
    if (!n) return;
    double w = maxw + 34, h = n * 15 + 6;
    double x0 = L->left + L->pw - w - 6, y0 = L->top + 6;
    gr_buf_printf(b,
                  "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"white\" "
                  "fill-opacity=\"0.85\" stroke=\"#999\"/>\n",
                  x0, y0, w, h);
    int row = 0;
    for (size_t i = 0; i < p->ns; i++) {
        const svg_series *s = &p->s[i];
        if (!s->label || !s->label[0]) continue;
        double y = y0 + 12 + 15 * row++;
        if (s->kind == SERIES_LINE) {
            gr_buf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"", x0 + 6, y - 4,
                          x0 + 24, y - 4);
            series_attrs(b, s);
            gr_buf_puts(b, "/>\n");
        } else {
            gr_buf_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%.2f\" fill=\"%s\"/>\n", x0 + 15,
                          y - 4, fmin(s->marker, 5), s->color);
        }
        gr_buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.0f\">", x0 + 28, y, SVG_FONT);
        gr_svg_escape(b, s->label);
        gr_buf_puts(b, "</text>\n");
    }
}

/* One panel as a <g> translated to (ox, oy); id keeps clip-path ids unique. */
static int render_panel(const gr_svg_plot *p, double ox, double oy, int id, gr_buf *b)
{
    layout L;
    do_layout(p, &L);
    gr_buf_printf(b, "<g transform=\"translate(%.2f,%.2f)\">\n", ox, oy);
    gr_buf_printf(b,
                  "<clipPath id=\"gr-clip-%d\"><rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" "
                  "height=\"%.2f\"/></clipPath>\n",
                  id, L.left, L.top, L.pw, L.ph);
    /* grid and ticks */
    for (int i = 0; i < L.x.nminor; i++)
        gr_buf_printf(
            b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#f0f0f0\"/>\n",
            px(&L, L.x.minor[i]), L.top, px(&L, L.x.minor[i]), L.top + L.ph);
    for (int i = 0; i < L.y.nminor; i++)
        gr_buf_printf(
            b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#f0f0f0\"/>\n",
            L.left, py(&L, L.y.minor[i]), L.left + L.pw, py(&L, L.y.minor[i]));
    for (int i = 0; i < L.x.nticks; i++) {
        double x = px(&L, L.x.ticks[i]);
        gr_buf_printf(b,
                      "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#ddd\"/>\n",
                      x, L.top, x, L.top + L.ph);
        gr_buf_printf(b,
                      "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333\"/>\n",
                      x, L.top + L.ph, x, L.top + L.ph + 4);
        gr_buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.0f\" text-anchor=\"middle\">",
                      x, L.top + L.ph + 16, SVG_FONT);
        tick_label(b, &L.x, L.x.ticks[i]);
        gr_buf_puts(b, "</text>\n");
    }
    for (int i = 0; i < L.y.nticks; i++) {
        double y = py(&L, L.y.ticks[i]);
        gr_buf_printf(b,
                      "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#ddd\"/>\n",
                      L.left, y, L.left + L.pw, y);
        gr_buf_printf(b,
                      "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333\"/>\n",
                      L.left - 4, y, L.left, y);
        gr_buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.0f\" text-anchor=\"end\">",
                      L.left - 6, y + 4, SVG_FONT);
        tick_label(b, &L.y, L.y.ticks[i]);
        gr_buf_puts(b, "</text>\n");
    }
    gr_buf_printf(b,
                  "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" "
                  "stroke=\"#333\"/>\n",
                  L.left, L.top, L.pw, L.ph);
    /* data, clipped to the data area */
    gr_buf_printf(b, "<g clip-path=\"url(#gr-clip-%d)\">\n", id);
    for (size_t i = 0; i < p->nref; i++) {
        const svg_ref *r = &p->refs[i];
        double v = tx(r->vertical ? L.x.log : L.y.log, r->v);
        if (isnan(v)) continue;
        double x1 = r->vertical ? px(&L, v) : L.left, x2 = r->vertical ? x1 : L.left + L.pw;
        double y1 = r->vertical ? L.top : py(&L, v), y2 = r->vertical ? L.top + L.ph : y1;
        gr_buf_printf(b,
                      "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#777\" "
                      "stroke-dasharray=\"3,3\"/>\n",
                      x1, y1, x2, y2);
        if (r->label) {
            gr_buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.0f\" fill=\"#555\">",
                          r->vertical ? x1 + 3 : L.left + 4, r->vertical ? L.top + 12 : y1 - 3,
                          SVG_FONT - 1);
            gr_svg_escape(b, r->label);
            gr_buf_puts(b, "</text>\n");
        }
    }
    for (size_t i = 0; i < p->ns; i++) render_series(b, &L, &p->s[i]);
    gr_buf_puts(b, "</g>\n");
    for (size_t i = 0; i < p->ns; i++) render_point_labels(b, &L, &p->s[i]);
    int rc = 0;
    if (p->direct)
        rc = render_direct_labels(b, p, &L);
    else
        render_legend(b, p, &L);
    /* title and axis labels */
    if (p->title) {
        gr_buf_printf(b,
                      "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.0f\" font-weight=\"bold\" "
                      "text-anchor=\"middle\">",
                      L.left + L.pw / 2, L.top - 10, SVG_TITLE_FONT);
        gr_svg_escape(b, p->title);
        gr_buf_puts(b, "</text>\n");
    }
    if (p->xlabel) {
        gr_buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.0f\" text-anchor=\"middle\">",
                      L.left + L.pw / 2, L.top + L.ph + 36, SVG_FONT + 1);
        gr_svg_escape(b, p->xlabel);
        gr_buf_puts(b, "</text>\n");
    }
    if (p->ylabel) {
        double cx = 16, cy = L.top + L.ph / 2;
        gr_buf_printf(b,
                      "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.0f\" text-anchor=\"middle\" "
                      "transform=\"rotate(-90 %.2f %.2f)\">",
                      cx, cy, SVG_FONT + 1, cx, cy);
        gr_svg_escape(b, p->ylabel);
        gr_buf_puts(b, "</text>\n");
    }
    gr_buf_puts(b, "</g>\n");
    return rc;
}

static void doc_open(gr_buf *b, int w, int h)
{
    gr_buf_printf(b,
                  "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                  "viewBox=\"0 0 %d %d\" font-family=\"Helvetica, Arial, sans-serif\">\n"
                  "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                  w, h, w, h);
}

int gr_svg_render_grid(const gr_svg_plot *const *plots, size_t n, int cols, gr_buf *out)
{
    if (!plots || n == 0) return gr_seterr(GR_EINVAL, "svg: a grid needs at least one plot");
    if (cols < 1) return gr_seterr(GR_EINVAL, "svg: grid columns %d must be >= 1", cols);
    if (n > 10000) return gr_seterr(GR_EINVAL, "svg: %zu plots in one grid (limit 10000)", n);
    int cw = 0, ch = 0;
    for (size_t i = 0; i < n; i++) {
        if (!plots[i]) return gr_seterr(GR_EINVAL, "svg: grid plot %zu is NULL", i);
        if (plots[i]->w > cw) cw = plots[i]->w;
        if (plots[i]->h > ch) ch = plots[i]->h;
    }
    size_t ncols = (size_t)cols < n ? (size_t)cols : n;
    size_t rows = (n + ncols - 1) / ncols;
    if ((double)cw * ncols > 1e6 || (double)ch * rows > 1e6)
        return gr_seterr(GR_EINVAL, "svg: grid of %zux%zu plots is too large", rows, ncols);
    doc_open(out, (int)(cw * ncols), (int)(ch * rows));
    for (size_t i = 0; i < n; i++) {
        int rc =
            render_panel(plots[i], (double)cw * (i % ncols), (double)ch * (i / ncols), (int)i, out);
        if (rc) return rc;
    }
    gr_buf_puts(out, "</svg>\n");
    return out->oom ? gr_seterr(GR_ENOMEM, "svg: out of memory") : 0;
}

int gr_svg_render(const gr_svg_plot *p, gr_buf *out)
{
    return gr_svg_render_grid(&p, 1, 1, out);
}

static int write_atomic(const char *path, const gr_buf *b)
{
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return gr_seterr(GR_ENOMEM, "svg: out of memory");
    snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int rc = gr_seterr(GR_EIO, "%s: cannot create temporary file: %s", path, strerror(errno));
        free(tmp);
        return rc;
    }
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(fd, b->data + off, b->len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) goto fail;
        off += (size_t)w;
    }
    if (fsync(fd) != 0) goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) goto fail;
    free(tmp);
    return 0;
fail:;
    int rc = gr_seterr(GR_EIO, "%s: write failed: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return rc;
}

int gr_svg_save_grid(const gr_svg_plot *const *plots, size_t n, int cols, const char *path)
{
    gr_buf b = {0};
    int rc = gr_svg_render_grid(plots, n, cols, &b);
    if (rc == 0) rc = write_atomic(path, &b);
    gr_buf_free(&b);
    return rc;
}

int gr_svg_save(const gr_svg_plot *p, const char *path)
{
    return gr_svg_save_grid(&p, 1, 1, path);
}
