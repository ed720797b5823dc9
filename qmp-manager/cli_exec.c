/* cli_exec.c: wisp-vm exec, a command in the sprite's container with its stdin, stdout and
 * stderr streamed; exits with the command's status (128 + signal if it was killed). */
#include "cli.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

/* The local terminal's settings while it is in raw mode for a remote pty. */
static struct termios cli_saved_termios;
static bool cli_raw;

static void cli_restore_terminal(void)
{
    if (cli_raw && tcsetattr(0, TCSANOW, &cli_saved_termios) == 0)
        cli_raw = false;
}

/* With -t on a terminal, keys go to the remote pty as they are typed (^C included). */
static void cli_raw_terminal(void)
{
    struct termios raw;

    if (!isatty(0) || tcgetattr(0, &cli_saved_termios) < 0)
        return;
    raw = cli_saved_termios;
    cfmakeraw(&raw);
    if (tcsetattr(0, TCSANOW, &raw) == 0) {
        cli_raw = true;
        atexit(cli_restore_terminal);
    }
}

/* Signals to the command: SIGWINCH becomes RESIZE of its pty, INT, TERM and HUP are passed on.
 * They are blocked in every thread and taken here with sigwait. */
static void *cli_signal_thread(void *opaque)
{
    agent_exec *e = opaque;
    sigset_t set;
    int sig;

    sigemptyset(&set);
    sigaddset(&set, SIGWINCH);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    for (;;) {
        GError *error = NULL;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGWINCH) {
            struct winsize ws;
            if (ioctl(0, TIOCGWINSZ, &ws) == 0)
                agent_exec_resize(e, ws.ws_row, ws.ws_col, &error);
        } else {
            agent_exec_signal(e, sig, &error);
        }
        g_clear_error(&error);
    }
    return NULL;
}

struct cli_stdin_pump {
    agent_exec *e;
    GError *error;
    int done; /* atomic: the pump has returned */
};

/* Copies our stdin to the command's until EOF, then closes it. */
static void *cli_pump_stdin(void *opaque)
{
    struct cli_stdin_pump *p = opaque;
    char buf[65536];

    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (!agent_exec_write(p->e, buf, (size_t)n, 3600 * 1000, &p->error))
            goto out;
    }
    agent_exec_close_stdin(p->e, &p->error);
out:
    g_atomic_int_set(&p->done, 1);
    return NULL;
}

static bool cli_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

int cli_exec(int argc, char **argv)
{
    g_autofree char *run_dir = NULL, *cwd = NULL;
    g_auto(GStrv) env = NULL;
    gboolean tty = FALSE, with_stdin = FALSE;
    int timeout_s = 0, rows = 0, cols = 0;
    GOptionEntry entries[] = {
        {"run-dir", 0, 0, G_OPTION_ARG_FILENAME, &run_dir, "the VM's run directory", "DIR"},
        {"tty", 't', 0, G_OPTION_ARG_NONE, &tty, "a pty (stdout and stderr merged)", NULL},
        {"stdin", 'i', 0, G_OPTION_ARG_NONE, &with_stdin, "send our stdin", NULL},
        {"env", 'e', 0, G_OPTION_ARG_STRING_ARRAY, &env, "environment", "K=V"},
        {"cwd", 0, 0, G_OPTION_ARG_FILENAME, &cwd, "working directory", "DIR"},
        {"rows", 0, 0, G_OPTION_ARG_INT, &rows, "pty rows", "N"},
        {"cols", 0, 0, G_OPTION_ARG_INT, &cols, "pty columns", "N"},
        {"timeout", 0, 0, G_OPTION_ARG_INT, &timeout_s, "give up after S seconds", "S"},
        G_OPTION_ENTRY_NULL};
    g_autoptr(GOptionContext) ctx = g_option_context_new("-- CMD [ARGS...]");
    struct cli_stdin_pump pump = {0};
    GThread *pumper = NULL;
    GError *error = NULL;
    agent_client *c;
    agent_exec *e;
    const char *dir;
    char buf[65536];
    int kind = 0, code = 0, status;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!cli_parse(ctx, &argc, &argv))
        return CLI_EXIT_USAGE;
    if (!(dir = cli_run_dir(run_dir)))
        return CLI_EXIT_USAGE;
    if (argc >= 2 && g_strcmp0(argv[1], "--") == 0) {
        argc--;
        argv++;
    }
    if (argc < 2) {
        fprintf(stderr, "wisp-vm: exec needs a command\n");
        return CLI_EXIT_USAGE;
    }
    if (tty && !rows) {
        struct winsize ws;
        if (ioctl(0, TIOCGWINSZ, &ws) == 0) {
            rows = ws.ws_row;
            cols = ws.ws_col;
        }
    }
    /* Blocked before any thread starts (the agent's reader too), so that only the signal thread
     * takes them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGWINCH);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (!(c = cli_agent_connect(dir, 30000)))
        return CLI_EXIT_FAILURE;
    struct agent_exec_opts opts = {
        .argv = (const char *const *)argv + 1,
        .env = (const char *const *)env,
        .cwd = cwd,
        .tty = tty,
        .with_stdin = with_stdin,
        .rows = (uint16_t)rows,
        .cols = (uint16_t)cols,
    };
    int timeout_ms = timeout_s > 0 ? timeout_s * 1000 : 24 * 3600 * 1000;
    e = agent_exec_start(c, &opts, 30000, &error);
    if (!e) {
        agent_client_free(c);
        return cli_fail("exec", error);
    }
    g_thread_unref(g_thread_new("signals", cli_signal_thread, e));
    if (tty && with_stdin)
        cli_raw_terminal();
    if (with_stdin) {
        pump.e = e;
        pumper = g_thread_new("stdin", cli_pump_stdin, &pump);
    }
    for (;;) {
        enum agent_stream_kind k;
        ssize_t n = agent_exec_read(e, buf, sizeof buf, &k, timeout_ms, &error);
        if (n < 0) {
            /* The pump thread blocks in read(0): exit without joining it. */
            return cli_fail("exec", error);
        }
        if (n == 0)
            break;
        if (!cli_write_all(k == AGENT_STDERR ? 2 : 1, buf, (size_t)n))
            break; /* our reader went away: the command gets its output dropped */
    }
    if (!agent_exec_wait(e, timeout_ms, &kind, &code, &error))
        return cli_fail("exec", error);
    status = agent_exec_status_code(kind, code);
    if (pumper && !g_atomic_int_get(&pump.done)) {
        /* The command is done but our stdin has not ended (a terminal, say); the pump blocks in
         * read(0), which nothing interrupts: exit without waiting for it. */
        return status;
    }
    if (pumper) {
        g_thread_join(pumper);
        g_clear_error(&pump.error);
    }
    agent_exec_free(e);
    agent_client_free(c);
    return status;
}
