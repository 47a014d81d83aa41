/* jobs: what the job commands (cmd_jobs.c, cmd_up.c) share — submitting,
 * printing a job's status, watching it to the end, option parsing. */
#ifndef GR_CLI_JOBS_H
#define GR_CLI_JOBS_H

#include <stdio.h>

#include "gr_client.h"
#include "gr_json.h"

/* Parses the pipeline file locally (errors name the stage and line; exit
 * status 2) and submits it. On success copies the job id into jid and
 * returns 0; otherwise prints the error and returns the exit status. */
int jobs_submit(gr_client *c, const char *path, const char *const *sets, size_t nsets, int no_cache,
                char jid[128]);

/* Prints the status object of a job: JSON (exactly the broker's status
 * object, one line) or a table. */
void jobs_print_status(FILE *out, const gr_json *status, int json);

/* Fetches and prints a job's status; returns an exit status. */
int jobs_status(gr_client *c, const char *job, int json, FILE *out);

/* Follows a job until it ends, writing progress to out (bars when out is a
 * terminal, plain lines otherwise). *final gets the job's last status
 * object (caller frees; may be NULL if not wanted). Returns 0 when the job
 * is done, 1 when it failed or was cancelled, another exit status on errors.
 * *interrupted (may be NULL) is polled: when it becomes nonzero, the watch
 * stops and returns 130. */
int jobs_watch(gr_client *c, const char *job, FILE *out, gr_json **final,
               volatile int *interrupted);

/* Finds "--name VALUE" or "--name=VALUE" at argv[*i]; returns the value and
 * advances *i, or NULL (not this option). Sets *missing when the value is
 * absent. */
const char *jobs_opt(int argc, char **argv, int *i, const char *name, int *missing);

#endif
