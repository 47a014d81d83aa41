/* gr_report: tabulating and plotting the metrics of many pipeline stages —
 * records (stage id, variables, metrics), a long CSV, Markdown pivot tables
 * and SVG line/scatter plots described by small JSON specs. */
#ifndef GR_REPORT_H
#define GR_REPORT_H

#include <stddef.h>

#include "gr_buf.h"
#include "gr_json.h"

/* Grouping is by linear search (quadratic in the number of records), which
 * takes a few seconds at most up to this many stages. */
#define GR_REPORT_MAX_RECORDS 20000
#define GR_REPORT_MAX_NAME    512 /* bytes of a stage id, variable or metric name */

/* One record per stage. Its variables are the matrix bindings of its stage id
 * ("ev[density=0.1,method=dare]": density = "0.1", method = "dare"; the part
 * before '[' is the stage's name) laid over the scalar parameters of the
 * stage (strings, numbers in canonical JSON, booleans; not artifact ids
 * "sha256:..." and not names starting with '_'). Its metrics are the numeric
 * members of a metrics object.
 *
 * A value selector names a metric, optionally narrowed by conditions on
 * variables: "acc", "acc@transform=rot90", "acc@transform=rot90|flip",
 * "acc@transform=*", "loss@a=1,b=x". Evaluated over a group of records it is
 * the metric of the one record in the group (several is an error: the group
 * is ambiguous), or with conditions the mean over the records that meet them
 * (each condition: the variable's value is one of the '|'-separated values,
 * or the variable is present for '*'). No record: missing (NaN, shown "-"). */
typedef struct gr_report gr_report;

gr_report *gr_report_new(void);
void gr_report_destroy(gr_report **r);

/* Adds a record. stage: the stage id (or any label); op may be NULL; params
 * and metrics are objects or NULL (borrowed: copied). GR_EINVAL for a stage
 * id whose bindings do not parse ("name[k=v,...]"), names over
 * GR_REPORT_MAX_NAME bytes, or more than GR_REPORT_MAX_RECORDS records. */
int gr_report_add(gr_report *r, const char *stage, const char *op, const gr_json *params,
                  const gr_json *metrics);
size_t gr_report_count(const gr_report *r);

/* Metric names tabulated by default: every numeric metric of any record in
 * order of first appearance, except timings (names ending in "_s", and
 * "seconds"), which vary from run to run. */
/* Appends a CSV (RFC 4180) with one line per record: stage, op, every
 * variable (sorted by name), then the metrics (metrics[0..nm), or the
 * default set when metrics is NULL). */
int gr_report_csv(const gr_report *r, const char *const *metrics, size_t nm, gr_buf *out);
/* Appends a Markdown table of every record (stage + metrics as above). */
int gr_report_md_all(const gr_report *r, const char *const *metrics, size_t nm, gr_buf *out);

/* Appends the Markdown table described by spec (an object; `what` names it in
 * messages, e.g. "tables[0]"):
 *   title    heading (optional)
 *   from     stage name or list of names the records come from (default all)
 *   where    {var: value or [values]}: keep records whose variable is one of
 *            them (values compared as text; numbers in canonical JSON; null
            matches a record without the variable)
 *   rows     variable or list of variables: one table row per combination
 *   cols     variable: one column per value, cells = `value` (a selector)
 *            evaluated over the records of that row and value
 *   values   instead of cols: a list of selectors, one column each
 *   mean     with cols: true adds a column with the mean of the row's cells
 *            (shown only when every cell is present), or a list of column
 *            values to average
 *   digits   decimals shown (default 3)
 * Rows and columns keep the order in which records first show them. */
int gr_report_md_table(const gr_report *r, const gr_json *spec, const char *what, gr_buf *out);

/* Writes the SVG plot described by spec to path (atomically):
 *   title, xlabel, ylabel, xlog, ylog, from, where   as above
 *   kind     "line" (default) or "scatter"
 *   line:    x (a variable with numeric values), y (a selector), series
 *            (variable or list: one line per combination, labelled directly).
 *            Records are grouped by (series, x); y is evaluated per group.
 *            Records without the x variable become dashed horizontal
 *            reference lines (grouped by stage name, series and the value of
 *            `ref_label`, a variable), labelled by that value or their stage
 *            name.
 *   scatter: x and y are selectors; records are grouped by all their
 *            variables except those the selectors' conditions name; one
 *            point per group, coloured by `series` (points with none of the
 *            series variables form a series named after their stage),
 *            labelled by `label` (a variable, or a list: the first one the
 *            group has).
 * The plot's numbers are also appended to csv (when not NULL) as lines
 * "series,x,y" after a header, so a test or reader can check them. */
int gr_report_plot(const gr_report *r, const gr_json *spec, const char *what, const char *path,
                   gr_buf *csv);

#endif
