/* gr_dataset: labelled tabular data for the train op and the classify task —
 * CSV (optionally gzip-compressed) with the features first and an integer
 * class label in the last column, deterministic train/test splits, and
 * transforms that make distinct tasks out of one data set (rotations, mirror
 * images, inversion, noise). */
#ifndef GR_DATASET_H
#define GR_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define GR_DATASET_MAX_FEATURES 1000000
#define GR_DATASET_MAX_CLASSES  65536
#define GR_DATASET_MAX_VALUES   (1ULL << 28) /* features x rows held in memory */
#define GR_DATASET_MAX_BYTES    (1ULL << 31) /* CSV text, after decompression */
#define GR_DATASET_MAX_FIELD    64           /* characters of one number */

/* CSV rules (everything else is rejected with "FILE: line L, column C: ..."):
 * fields separated by commas, lines by LF or CRLF; spaces and tabs around a
 * field are ignored; a UTF-8 byte-order mark at the start is skipped. Every
 * field is a decimal number ([+-]digits[.digits][e[+-]digits]; no hex, nan,
 * inf or quotes) that is finite as a float. The last field is the label, an
 * integer in [0, GR_DATASET_MAX_CLASSES). Every line has the same number of
 * fields, at least two. The first line is a header (skipped) when at least
 * one of its fields is not a number. Empty lines are allowed only at the end.
 * At least one data row. */
typedef struct gr_dataset gr_dataset;

/* Parses CSV text (text[0..len), need not be NUL-terminated). what names the
 * data in messages. NULL with gr_errmsg() set (GR_EINVAL / GR_EFORMAT for bad
 * content, GR_ENOMEM). */
gr_dataset *gr_dataset_parse(const char *what, const char *text, size_t len);
/* Reads a CSV file, gzip-compressed when it starts with the gzip magic bytes
 * (decompressed by running `gzip -dc`). path may also be a directory holding
 * exactly one regular file whose name ends in .csv or .csv.gz (the output
 * tree of a fetch stage). */
gr_dataset *gr_dataset_load(const char *path);
void gr_dataset_destroy(gr_dataset **d);

size_t gr_dataset_rows(const gr_dataset *d);
size_t gr_dataset_features(const gr_dataset *d);
/* 1 + the largest label of the whole file (kept by splits). */
int gr_dataset_classes(const gr_dataset *d);
/* Row-major features, rows x features (borrowed). */
const float *gr_dataset_x(const gr_dataset *d);
const int32_t *gr_dataset_y(const gr_dataset *d);
/* Each row's 0-based position among the data rows of the file. */
const uint64_t *gr_dataset_row_ids(const gr_dataset *d);
/* Smallest and largest feature value of the whole file (kept by splits). */
double gr_dataset_min(const gr_dataset *d);
double gr_dataset_max(const gr_dataset *d);
const char *gr_dataset_name(const gr_dataset *d);

typedef enum { GR_SPLIT_ALL, GR_SPLIT_TRAIN, GR_SPLIT_TEST } gr_split;
/* "all" | "train" | "test"; GR_EINVAL naming the value otherwise. */
int gr_split_parse(const char *s, gr_split *out);

/* A new data set with the rows of one part of a deterministic split. Each row
 * gets the uniform number u = Philox(seed, row id); the round(fraction * n)
 * rows with the smallest u (ties: lower row id) are the train part, the others
 * the test part; rows keep their file order. So the split depends only on
 * (rows, fraction, seed), never on thread count or machine, and the two parts
 * are disjoint and cover every row. fraction must be in (0, 1) and leave both
 * parts non-empty (GR_EINVAL otherwise); GR_SPLIT_ALL copies d. */
gr_dataset *gr_dataset_split(const gr_dataset *d, gr_split part, double fraction, uint64_t seed);

typedef enum {
    GR_TF_IDENTITY,
    GR_TF_ROT90, /* square images: a quarter turn clockwise */
    GR_TF_ROT180,
    GR_TF_ROT270,
    GR_TF_FLIP,   /* square images: mirrored left to right */
    GR_TF_VFLIP,  /* square images: mirrored top to bottom */
    GR_TF_INVERT, /* any data: x -> min + max - x (the file's range) */
    GR_TF_NOISE,  /* any data: x + N(0, (sigma*(max-min))^2), clipped to [min, max] */
} gr_transform;

/* Name to transform (GR_EINVAL listing the names otherwise), and back. */
int gr_transform_parse(const char *s, gr_transform *out);
const char *gr_transform_name(gr_transform t);

/* Applies t to every row in place. Images are the features in row-major
 * order, side x side with side^2 = features; the geometric transforms need a
 * square feature count (GR_EINVAL otherwise). noise is keyed by (seed, row id,
 * feature), so a row gets the same noise in whichever split it sits; sigma
 * must be finite and >= 0. */
int gr_dataset_transform(gr_dataset *d, gr_transform t, double sigma, uint64_t seed);

#endif
