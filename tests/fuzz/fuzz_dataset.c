/* fuzz_dataset: arbitrary bytes into the CSV data-set parser. What it accepts
 * must hold finite features, labels below the class count and a consistent
 * shape; every rejection must say why; splits and transforms of an accepted
 * data set must keep its rows and labels. */
#include "gr_dataset.h"
#include "gr_err.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gr_dataset *d = gr_dataset_parse("fuzz", (const char *)data, size);
    if (!d) {
        if (!gr_errmsg()[0]) abort();
        return 0;
    }
    const size_t n = gr_dataset_rows(d), f = gr_dataset_features(d);
    const int k = gr_dataset_classes(d);
    if (!n || !f || k < 1 || k > GR_DATASET_MAX_CLASSES) abort();
    int top = -1;
    for (size_t i = 0; i < n; i++) {
        const int32_t y = gr_dataset_y(d)[i];
        if (y < 0 || y >= k || gr_dataset_row_ids(d)[i] != i) abort();
        if (y > top) top = y;
    }
    if (top + 1 != k) abort();
    for (size_t i = 0; i < n * f; i++) {
        const float v = gr_dataset_x(d)[i];
        if (!isfinite(v) || v < gr_dataset_min(d) || v > gr_dataset_max(d)) abort();
    }
    /* the two parts of a split cover the rows once */
    gr_dataset *a = gr_dataset_split(d, GR_SPLIT_TRAIN, 0.5, size);
    gr_dataset *b = gr_dataset_split(d, GR_SPLIT_TEST, 0.5, size);
    if (!a != !b) abort();
    if (a && gr_dataset_rows(a) + gr_dataset_rows(b) != n) abort();
    /* transforms keep the value range (geometric ones only permute) */
    for (int t = GR_TF_IDENTITY; t <= GR_TF_NOISE; t++) {
        gr_dataset *c = gr_dataset_split(d, GR_SPLIT_ALL, 0.5, 0);
        if (!c) abort();
        if (!gr_dataset_transform(c, (gr_transform)t, 0.3, 7))
            for (size_t i = 0; i < n * f; i++) {
                const float v = gr_dataset_x(c)[i];
                if (!(v >= gr_dataset_min(d) && v <= gr_dataset_max(d))) abort();
            }
        gr_dataset_destroy(&c);
    }
    gr_dataset_destroy(&a);
    gr_dataset_destroy(&b);
    gr_dataset_destroy(&d);
    return 0;
}
