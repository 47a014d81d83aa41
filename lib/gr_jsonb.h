/* gr_jsonb: building, copying, comparing and canonically serialising gr_json
 * trees (the parser in gr_json.c only reads; pipelines and the broker build). */
#ifndef GR_JSONB_H
#define GR_JSONB_H

#include <stddef.h>
#include <stdint.h>

#include "gr_buf.h"
#include "gr_json.h"

/* Constructors. Each returns a new node the caller frees with gr_json_free
 * (or hands to gr_jsonb_push / gr_jsonb_set), or NULL with GR_ENOMEM set.
 * line is left 0; callers that track source lines set it afterwards. */
gr_json *gr_jsonb_null(void);
gr_json *gr_jsonb_bool(int b);
gr_json *gr_jsonb_num(double v);  /* is_int set when v is integral and fits int64 */
gr_json *gr_jsonb_int(int64_t v); /* is_int = 1 */
gr_json *gr_jsonb_str(const char *s);
gr_json *gr_jsonb_strn(const char *s, size_t n); /* n bytes, may hold NULs */
gr_json *gr_jsonb_arr(void);
gr_json *gr_jsonb_obj(void);

/* Whole nodes from n values at once, in O(n) (n gr_jsonb_push or
 * gr_jsonb_set calls cost O(n^2): each looks for the key and grows the
 * arrays by one). gr_jsonb_arr_take makes an array of items[0..n);
 * gr_jsonb_obj_take an object of members keys[i] -> items[i], in that order.
 * They take the arrays themselves (malloc'd, at least n long, may be NULL when
 * n is 0) and everything in them in every case: all is freed on failure. Keys
 * are malloc'd NUL-terminated strings and must be distinct (not checked: the
 * caller has checked them). Return NULL with GR_ENOMEM on failure. */
gr_json *gr_jsonb_arr_take(gr_json **items, size_t n);
gr_json *gr_jsonb_obj_take(char **keys, gr_json **items, size_t n);

/* Appends v to array arr. Takes v in every case (freed on failure).
 * Returns 0, GR_EINVAL if arr is not an array, GR_ENOMEM. */
int gr_jsonb_push(gr_json *arr, gr_json *v);
/* Sets obj[key] = v, replacing (and freeing) an existing value in place so
 * the member order is kept; new keys go last. Takes v in every case. */
int gr_jsonb_set(gr_json *obj, const char *key, gr_json *v);
/* Removes obj[key] if present (returns 1 if it was there, 0 if not). */
int gr_jsonb_del(gr_json *obj, const char *key);
/* Deep copy (lines included); NULL with GR_ENOMEM on failure, or when j is NULL. */
gr_json *gr_jsonb_copy(const gr_json *j);
/* Structural equality: same types, numbers equal by value, objects with the
 * same members regardless of order. */
int gr_jsonb_equal(const gr_json *a, const gr_json *b);

/* Canonical JSON: object members sorted by key bytes, no whitespace,
 * integers (is_int, or integral doubles within +-2^53) printed as integers,
 * other numbers in shortest round-trip form, strings with the minimal escapes
 * of gr_buf_json_str. Equal trees (gr_jsonb_equal) give identical bytes; the
 * broker's memo keys hash this form. Returns 0 or GR_ENOMEM/GR_EINVAL (a
 * NaN or infinite number has no JSON form). */
int gr_jsonb_write(gr_buf *b, const gr_json *j);
/* The same as a new NUL-terminated string (caller frees), or NULL. */
char *gr_jsonb_canon(const gr_json *j);

#endif
