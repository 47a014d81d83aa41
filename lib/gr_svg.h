/* gr_svg: a small plain-SVG plot writer (line and scatter plots with axes,
 * ticks, log scales, titles, direct labels, grids of panels). */
#ifndef GR_SVG_H
#define GR_SVG_H

#include <stddef.h>

#include "gr_buf.h"

/* A plot is one panel: axes, ticks, a title, axis labels and any number of
 * series. Build it, then render it alone (gr_svg_render / gr_svg_save) or as
 * a panel of a grid (gr_svg_render_grid / gr_svg_save_grid).
 *
 * Data rules: every series' points are copied. A point with a non-finite
 * coordinate, or a coordinate <= 0 on a log axis, is not drawn and breaks a
 * line in two (so NaN can be used to separate segments). Axis ranges come from
 * the drawable points unless fixed with gr_svg_xrange / gr_svg_yrange; an
 * empty plot renders its frame and title only.
 *
 * Text (titles, labels) is XML-escaped; any UTF-8 may be passed. Functions
 * that take a gr_svg_plot accept NULL only where stated. Errors are GR_E*
 * codes with gr_errmsg() set. */
typedef struct gr_svg_plot gr_svg_plot;

/* A plot of width x height pixels (each at least 120 x 90 and at most
 * 20000 x 20000). Returns NULL with gr_errmsg() set on bad size or no memory. */
gr_svg_plot *gr_svg_new(int width, int height);
/* Frees the plot and sets *p to NULL; accepts NULL and *p == NULL. */
void gr_svg_destroy(gr_svg_plot **p);

/* Title above the plot and axis labels (copied; NULL clears). */
int gr_svg_title(gr_svg_plot *p, const char *title);
int gr_svg_xlabel(gr_svg_plot *p, const char *label);
int gr_svg_ylabel(gr_svg_plot *p, const char *label);
/* Logarithmic (base 10) axes. */
void gr_svg_xlog(gr_svg_plot *p, int on);
void gr_svg_ylog(gr_svg_plot *p, int on);
/* Fixes an axis range; pass NAN for either end to keep it automatic. On a log
 * axis an end <= 0 cannot be drawn and is left automatic. Returns GR_EINVAL
 * when lo >= hi or an end is infinite. */
int gr_svg_xrange(gr_svg_plot *p, double lo, double hi);
int gr_svg_yrange(gr_svg_plot *p, double lo, double hi);
/* Same scale on both axes (one data unit is as long in x as in y), the
 * data area centred; for orbits. Ignored when either axis is logarithmic. */
void gr_svg_equal_aspect(gr_svg_plot *p, int on);
/* Direct labels (default on): each series' label is written beside its last
 * drawn point (lines) or its rightmost point (scatter), nudged apart so
 * labels do not overlap. Off: a legend box in the top-right corner. */
void gr_svg_direct_labels(gr_svg_plot *p, int on);

/* Adds a series of n points (x[i], y[i]); label may be NULL (unlabelled).
 * Returns the series index (>= 0), or GR_EINVAL (n > 10,000,000, NULL data
 * with n > 0) / GR_ENOMEM. Colours cycle through a colour-blind-safe palette. */
int gr_svg_line(gr_svg_plot *p, const char *label, const double *x, const double *y, size_t n);
int gr_svg_scatter(gr_svg_plot *p, const char *label, const double *x, const double *y, size_t n);

/* Per-series style. color is "#rgb" or "#rrggbb" (GR_EINVAL otherwise);
 * width is the stroke width in pixels (0.1..50); marker_radius draws a marker
 * at each point of a line (0 = none) or sets the dot size of a scatter
 * (0.5..50). An unknown series index is GR_EINVAL. */
int gr_svg_series_color(gr_svg_plot *p, int series, const char *color);
int gr_svg_series_width(gr_svg_plot *p, int series, double width);
int gr_svg_series_dashed(gr_svg_plot *p, int series, int on);
int gr_svg_series_markers(gr_svg_plot *p, int series, double marker_radius);
/* Labels the points of a series one by one (e.g. the mu of each point of a
 * Pareto front); labels[i] may be NULL to leave point i unlabelled. n must
 * equal the series' point count. Strings are copied. */
int gr_svg_point_labels(gr_svg_plot *p, int series, const char *const *labels, size_t n);

/* A dashed horizontal (y = v) or vertical (x = v) reference line across the
 * data area, with an optional label. */
int gr_svg_hline(gr_svg_plot *p, double y, const char *label);
int gr_svg_vline(gr_svg_plot *p, double x, const char *label);

/* Appends a complete standalone SVG document to out. */
int gr_svg_render(const gr_svg_plot *p, gr_buf *out);
/* Appends one SVG document holding n plots in a grid of cols columns (rows as
 * needed); each cell is as large as the largest plot. */
int gr_svg_render_grid(const gr_svg_plot *const *plots, size_t n, int cols, gr_buf *out);
/* Renders and writes to path through a temporary file in the same directory
 * that is renamed into place: on failure nothing is left under path. */
int gr_svg_save(const gr_svg_plot *p, const char *path);
int gr_svg_save_grid(const gr_svg_plot *const *plots, size_t n, int cols, const char *path);

/* Appends s XML-escaped (& < > " ') to out; for callers writing their own
 * SVG or HTML around these plots. */
int gr_svg_escape(gr_buf *out, const char *s);

#endif
