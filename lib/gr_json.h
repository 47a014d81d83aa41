/* gr_json: a strict JSON parser (RFC 8259) into a read-only tree. */
#ifndef GR_JSON_H
#define GR_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GR_JSON_NULL,
    GR_JSON_BOOL,
    GR_JSON_NUM,
    GR_JSON_STR,
    GR_JSON_ARR,
    GR_JSON_OBJ
} gr_json_type;

typedef struct gr_json gr_json;
struct gr_json {
    gr_json_type type;
    int line;        /* 1-based line where the value starts */
    int boolean;     /* GR_JSON_BOOL */
    double num;      /* GR_JSON_NUM */
    int is_int;      /* number literal had no fraction/exponent and fits int64 */
    int64_t i;       /* its value when is_int */
    char *str;       /* GR_JSON_STR: UTF-8, NUL-terminated (may hold NULs) */
    size_t len;      /* string length in bytes, or number of items/members */
    gr_json **items; /* GR_JSON_ARR items, GR_JSON_OBJ member values */
    char **keys;     /* GR_JSON_OBJ member names, in file order */
    size_t *keylens;
};

/* Parses exactly one JSON value from s[0..len), allowing surrounding
 * whitespace (space, tab, CR, LF) and nothing else. Strings must be valid
 * UTF-8 (no lone surrogates); duplicate keys in one object are rejected;
 * nesting deeper than 256 is rejected. Returns a tree the caller frees with
 * gr_json_free, or NULL with gr_errmsg() saying what and at which line:column
 * (prefixed by `what` when not NULL, e.g. a file name). */
gr_json *gr_json_parse(const char *s, size_t len, const char *what);
/* Reads and parses a whole file. */
gr_json *gr_json_parse_file(const char *path);
void gr_json_free(gr_json *j);

/* Member lookup (NULL if j is not an object or has no such key). */
const gr_json *gr_json_get(const gr_json *j, const char *key);
/* Typed lookups: return the value, or def when missing or of another type. */
const char *gr_json_get_str(const gr_json *j, const char *key, const char *def);
double gr_json_get_num(const gr_json *j, const char *key, double def);
int64_t gr_json_get_int(const gr_json *j, const char *key, int64_t def);
int gr_json_get_bool(const gr_json *j, const char *key, int def);
const char *gr_json_type_name(gr_json_type t);

#endif
