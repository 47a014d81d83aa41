/* gr_hf: the Hugging Face Hub side of the fetch op — hf:// URLs, endpoint and
 * token discovery, file URLs, the repository listing, include patterns and
 * Hub error responses turned into named errors (reference/formats.md). */
#ifndef GR_HF_H
#define GR_HF_H

#include <stddef.h>

#include "gr_http.h"

#define GR_HF_DEFAULT_ENDPOINT "https://huggingface.co"
#define GR_HF_MAX_LISTING      (64u << 20) /* bytes of listing JSON accepted */
#define GR_HF_MAX_FILES        100000

/* hf://[datasets/|models/]ORG/NAME[@REVISION][/PATH]. A revision may hold
 * '/' only as refs/pr/N or refs/convert/NAME. */
typedef struct gr_hf_url {
    int dataset;    /* datasets/ prefix */
    char *repo;     /* "ORG/NAME" */
    char *revision; /* NULL when not in the URL */
    char *path;     /* file inside the repository, NULL for the whole repository */
} gr_hf_url;

/* Parses and checks an hf:// URL (repository names: letters, digits, '-',
 * '_', '.', at most 96 bytes, no "--" or "..", not starting or ending with
 * '-' or '.'; the path follows the tree path rules). GR_EINVAL naming the URL
 * and the rule otherwise. Free with gr_hf_url_free. */
int gr_hf_url_parse(const char *url, gr_hf_url *u);
void gr_hf_url_free(gr_hf_url *u);

/* $HF_ENDPOINT without trailing '/', else the default (new string). */
char *gr_hf_endpoint(void);
/* Token from HF_TOKEN, else HUGGING_FACE_HUB_TOKEN, else the file
 * $HF_HOME/token (HF_HOME defaulting to $XDG_CACHE_HOME/huggingface or
 * ~/.cache/huggingface), whitespace trimmed. NULL when there is none. */
char *gr_hf_token(void);
/* Whether HF_HUB_OFFLINE is set to 1/true/yes/on. */
int gr_hf_offline(void);

/* {endpoint}/[datasets/]{repo}/resolve/{quoted revision}/{quoted path} */
char *gr_hf_file_url(const char *endpoint, const gr_hf_url *u, const char *revision,
                     const char *path);
/* {endpoint}/api/{models|datasets}/{repo}/revision/{quoted revision} */
char *gr_hf_listing_url(const char *endpoint, const gr_hf_url *u, const char *revision);

/* A parsed listing: the resolved commit and the file names. */
typedef struct gr_hf_listing {
    char *commit; /* "sha", NULL when absent */
    char **files; /* siblings[].rfilename, in listing order */
    size_t n;
} gr_hf_listing;
/* Parses the listing JSON (what names it in messages). Every rfilename must
 * follow the tree path rules and be unique. GR_EFORMAT otherwise. */
int gr_hf_listing_parse(const char *json, size_t len, const char *what, gr_hf_listing *l);
void gr_hf_listing_free(gr_hf_listing *l);

/* Default include patterns (fnmatch, '*' also matching '/'). */
extern const char *const gr_hf_default_include[];
/* 1 when name matches one of the NULL-terminated patterns. */
int gr_hf_match(const char *name, const char *const *patterns);

/* Turns a non-success Hub response into an error (GR_ENOTFOUND for
 * RepoNotFound / RevisionNotFound / EntryNotFound / 404, GR_EINVAL for
 * GatedRepo / 401 / 403 / other 4xx, GR_ENET for 408 / 429 / 5xx), message
 * "WHAT: repository not found (RepoNotFound)" and so on; had_token tells a
 * missing token from an insufficient one. */
int gr_hf_error(const char *what, const gr_http_resp *rs, int had_token);
/* Whether a status is worth retrying (408, 429, 5xx). */
int gr_hf_retryable_status(int status);

#endif
