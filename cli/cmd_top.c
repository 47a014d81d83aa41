/* cmd_top: graft top — a dashboard that reads Redis directly (not through the
 * broker), as schemas/redis-keys.md documents the keys: full-screen refresh
 * on a terminal, plain text with --once, JSON with --json. */
#include "gr_log.h"
#include "cli.h"
#include "gr_client.h"
#include "gr_dash.h"
#include "gr_err.h"
#include "jobs.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define TOP_TIMEOUT_MS   2000 /* connect and every Redis reply */
#define TOP_MIN_INTERVAL 0.1
#define TOP_MAX_INTERVAL 3600.0
#define TOP_PLAIN_WIDTH  120 /* --once and pipes, unless $COLUMNS says otherwise */

static const char top_usage[] =
    "usage: graft top [--redis URL] [--prefix graft:] [--state DIR] [--once] [--json]\n"
    "                 [--interval S] [--jobs N]\n"
    "\n"
    "A dashboard read straight from Redis (read-only; schemas/redis-keys.md): queue depth\n"
    "per op, stages in flight, throughput, wait and run latency percentiles, failures and\n"
    "retries, workers with heartbeat age and current task, and each job's progress.\n"
    "\n"
    "  --redis URL    redis://[[user]:password@]host[:port][/db] or unix:///path; default\n"
    "                 $GRAFT_REDIS, else the Redis of a running `graft up` (--state DIR),\n"
    "                 else " GR_DASH_DEFAULT_URL "\n"
    "  --prefix P     key prefix of the installation (the broker's --prefix; default graft:)\n"
    "  --once         print one sample as plain text (or JSON) and exit\n"
    "  --json         one JSON object per sample, one per line\n"
    "  --interval S   seconds between samples (default 1); throughput is the change of the\n"
    "                 counters over it, so --once samples twice, S apart (0: once, no rates)\n"
    "  --jobs N       job rows: active jobs newest first, then recently finished (default 20)\n"
    "\n"
    "On a terminal the screen is redrawn every S seconds; q or Ctrl-C quits.\n"
    "\n"
    "JSON fields (deploy/grafana/README.md has the details):\n"
    "  redis, prefix, time_ms (Redis clock), window_s (null on a first sample),\n"
    "  queues [{op, ready, served}], ready, in_flight, delayed, resolving, dead, jobs_total,\n"
    "  jobs_active, workers_total, workers_busy, counters {P metrics}, rates {per second},\n"
    "  throughput (done/s), failures {failed, retried, timeouts, requeued, dead, delayed},\n"
    "  latency {jobs, stages, wait_ms {n, p50, p95, p99, max}, run_ms {...}},\n"
    "  workers [{worker, host, pid, state, task, op, attempt, task_ms, progress,\n"
    "            heartbeat_age_ms, rss, threads, version, ops}],\n"
    "  jobs [{job, name, state, active, nstages, finished_stages, counts {blocked, ready,\n"
    "         running, done, cached, failed, cancelled, skipped}, created, finished}]\n"
    "\n"
    "Exit status: 0, 1 when Redis cannot be reached or a read fails, 2 on bad usage.\n";

static volatile sig_atomic_t g_quit, g_resized;

static void on_quit(int sig)
{
    (void)sig;
    g_quit = 1;
}

static void on_winch(int sig)
{
    (void)sig;
    g_resized = 1;
}

static void install_handlers(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_quit; /* no SA_RESTART: poll() wakes up */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_winch;
    sigaction(SIGWINCH, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a closed pipe shows as a write error */
}

/* Terminal columns and rows (plain output: $COLUMNS or TOP_PLAIN_WIDTH). */
static void term_size(int fd, int *cols, int *rows)
{
    struct winsize ws;
    *cols = TOP_PLAIN_WIDTH;
    *rows = 0;
    if (isatty(fd) && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        *cols = ws.ws_col;
        *rows = ws.ws_row;
        return;
    }
    const char *c = getenv("COLUMNS");
    if (c && atoi(c) >= 40) *cols = atoi(c);
}

/* Writes all of b to fd; -1 when the reader went away. */
static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Waits up to s seconds; on the full screen a 'q' ends it early. Returns 1
 * when the user asked to quit. */
static int wait_or_key(double s, int keys)
{
    double end = gr_now_s() + s;
    while (!g_quit) {
        double left = end - gr_now_s();
        if (left <= 0) return 0;
        struct pollfd pf = {.fd = STDIN_FILENO, .events = POLLIN};
        int ms = (int)(left * 1000) + 1;
        int r = poll(keys ? &pf : NULL, keys ? 1 : 0, ms);
        if (r < 0 && errno == EINTR) {
            if (g_resized) return 0; /* redraw at once */
            continue;
        }
        if (r > 0 && (pf.revents & POLLIN)) {
            char ch;
            ssize_t n = read(STDIN_FILENO, &ch, 1);
            if (n == 1 && (ch == 'q' || ch == 'Q' || ch == 3)) return 1;
            if (n == 0) keys = 0; /* stdin closed: only the clock */
        }
    }
    return 1;
}

/* Full screen: alternate buffer, hidden cursor, keys without Enter or echo. */
typedef struct screen {
    int on, tio_saved;
    struct termios tio;
} screen;

static void screen_enter(screen *sc)
{
    sc->on = 1;
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &sc->tio) == 0) {
        struct termios raw = sc->tio;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) sc->tio_saved = 1;
    }
    const char *seq = "\033[?1049h\033[?25l\033[H\033[2J";
    write_all(STDOUT_FILENO, seq, strlen(seq));
}

static void screen_leave(screen *sc)
{
    if (!sc->on) return;
    const char *seq = "\033[?25h\033[?1049l";
    write_all(STDOUT_FILENO, seq, strlen(seq));
    if (sc->tio_saved) tcsetattr(STDIN_FILENO, TCSANOW, &sc->tio);
    sc->on = 0;
}

/* One frame: home, every line cleared to its end, the rest of the screen
 * cleared. */
static int screen_draw(const char *text, size_t len)
{
    gr_buf b = {0};
    gr_buf_puts(&b, "\033[H");
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        gr_buf_append(&b, p, n);
        gr_buf_puts(&b, "\033[K");
        if (nl) gr_buf_puts(&b, "\n");
        p += n + (nl ? 1 : 0);
    }
    gr_buf_puts(&b, "\033[J");
    int rc = b.oom ? -1 : write_all(STDOUT_FILENO, b.data, b.len);
    gr_buf_free(&b);
    return rc;
}

/* Redis URL: --redis, $GRAFT_REDIS, the running `graft up`, the default. */
static char *redis_url(const char *opt, const char *state_opt)
{
    if (opt && *opt) return strdup(opt);
    const char *e = getenv("GRAFT_REDIS");
    if (e && *e) return strdup(e);
    char *state = gr_client_state_dir(state_opt);
    gr_up_info up;
    char *url = NULL;
    if (state && gr_client_up_read(state, &up) == 1 && up.redis[0]) url = strdup(up.redis);
    free(state);
    gr_clearerr();
    return url ? url : strdup(GR_DASH_DEFAULT_URL);
}

static int parse_interval(const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < 0 || x > TOP_MAX_INTERVAL) return -1;
    *out = x;
    return 0;
}

/* Prints one sample: JSON line or plain text (a blank line between samples
 * when repeating). */
static int print_sample(const gr_dash_snap *s, int json, int repeat)
{
    gr_buf b = {0};
    int cols, rows;
    term_size(STDOUT_FILENO, &cols, &rows);
    int rc = json ? gr_dash_json(s, &b) : gr_dash_text(s, &b, cols, 0);
    if (!rc && json) gr_buf_putc(&b, '\n');
    if (!rc && !json && repeat) gr_buf_putc(&b, '\n');
    if (!rc && (b.oom || write_all(STDOUT_FILENO, b.data, b.len))) rc = GR_EIO;
    gr_buf_free(&b);
    return rc;
}

int cmd_top(int argc, char **argv)
{
    const char *redis = NULL, *prefix = GR_DASH_DEFAULT_PREFIX, *state = NULL;
    int once = 0, json = 0, max_jobs = 20, missing = 0;
    double interval = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(top_usage, stdout);
            return 0;
        } else if ((v = jobs_opt(argc, argv, &i, "--redis", &missing)))
            redis = v;
        else if ((v = jobs_opt(argc, argv, &i, "--prefix", &missing)))
            prefix = v;
        else if ((v = jobs_opt(argc, argv, &i, "--state", &missing)))
            state = v;
        else if ((v = jobs_opt(argc, argv, &i, "--interval", &missing))) {
            if (parse_interval(v, &interval))
                return cli_usage_error("--interval '%s': must be a number of seconds from 0 to %g",
                                       v, TOP_MAX_INTERVAL);
        } else if ((v = jobs_opt(argc, argv, &i, "--jobs", &missing))) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || end == v || n < 1 || n > GR_DASH_MAX_ITEMS)
                return cli_usage_error("--jobs '%s': must be a number from 1 to %d", v,
                                       GR_DASH_MAX_ITEMS);
            max_jobs = (int)n;
        } else if (!strcmp(argv[i], "--once"))
            once = 1;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else
            return cli_usage_error("%s: %s\n%s", argv[i],
                                   missing ? "missing value" : "unknown option",
                                   "usage: graft top [--redis URL] [--prefix graft:] [--once] "
                                   "[--json] [--interval S] [--jobs N] (--help for more)");
    }
    if (missing) return cli_usage_error("top: missing value (graft top --help)");
    if (!*prefix) return cli_usage_error("--prefix: must not be empty");
    if (!once && interval < TOP_MIN_INTERVAL)
        return cli_usage_error("--interval: at least %g s unless --once", TOP_MIN_INTERVAL);

    char *url = redis_url(redis, state);
    if (!url) return cli_fail(gr_seterr(GR_ENOMEM, "out of memory"));
    gr_dash *d = gr_dash_new(url, prefix, TOP_TIMEOUT_MS, max_jobs);
    free(url);
    if (!d) return cli_fail(gr_errcode());
    install_handlers();

    int status = 0;
    gr_dash_snap *s = NULL;
    if (once) {
        int rc = gr_dash_sample(d, &s);
        if (!rc && interval > 0) {
            gr_dash_snap_free(&s);
            if (!wait_or_key(interval, 0))
                rc = gr_dash_sample(d, &s);
            else
                status = 130;
        }
        if (rc)
            status = cli_fail(rc);
        else if (s && print_sample(s, json, 0))
            status = cli_fail(gr_seterr(GR_EIO, "cannot write the output"));
        gr_dash_snap_free(&s);
        gr_dash_destroy(&d);
        return status;
    }

    screen sc = {0};
    int full = !json && isatty(STDOUT_FILENO);
    if (full) screen_enter(&sc);
    while (!g_quit) {
        double t0 = gr_now_s();
        g_resized = 0;
        int rc = gr_dash_sample(d, &s);
        if (full) {
            int cols, rows;
            term_size(STDOUT_FILENO, &cols, &rows);
            gr_buf b = {0};
            if (rc)
                gr_buf_printf(&b, "graft top: %s\n(retrying every %.1fs; q quits)\n", gr_errmsg(),
                              interval);
            else
                gr_dash_text(s, &b, cols, rows > 1 ? rows - 1 : 0);
            if (!b.oom) screen_draw(b.data ? b.data : "", b.len);
            gr_buf_free(&b);
        } else if (rc)
            fprintf(stderr, "graft top: %s (retrying)\n", gr_errmsg());
        else if (print_sample(s, json, 1))
            break; /* the reader went away */
        gr_dash_snap_free(&s);
        double left = interval - (gr_now_s() - t0);
        if (wait_or_key(left > 0 ? left : 0, full && sc.tio_saved)) break;
    }
    screen_leave(&sc);
    gr_dash_destroy(&d);
    return status;
}
