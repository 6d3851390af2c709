/* probe: a static helper the integration tests run inside containers.
 *
 * One binary, many subcommands (crun's tests do the same with /init), so a
 * test root needs nothing but this file. Output is plain text, one fact a line.
 *
 *   probe pid                 "pid N ppid M"
 *   probe argv ARGS...        each argument as hex, one a line
 *   probe exit N              exit with status N
 *   probe raise SIG           die by signal SIG (default action restored first)
 *   probe sleep SECS          print "ready", then sleep
 *   probe trap SIG            catch SIG; print "ready"; after the first one wait
 *                             0.3 s more and exit with the number of SIGs caught
 *   probe ignore SIG          ignore SIG; print "ready"; sleep 30 s
 *   probe pids                the numeric entries of /proc, sorted by readdir
 *   probe ls DIR              the names in DIR
 *   probe cat FILE            FILE's bytes
 *   probe exists PATH         exit 0 if PATH exists (lstat), else 1
 *   probe env                 the environment, one VAR=value a line
 *   probe cwd                 the working directory
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static volatile sig_atomic_t caught;

static void on_signal(int sig) { (void)sig; caught++; }

static void ready(void) { puts("ready"); fflush(stdout); }

static void nap(double secs)
{
    struct timespec ts = { (time_t)secs, (long)((secs - (time_t)secs) * 1e9) };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !caught)
        ;
}

static int list_dir(const char *path, int numeric_only)
{
    DIR *d = opendir(path);
    struct dirent *e;
    if (!d) { perror(path); return 1; }
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && (!numeric_only || (e->d_name[0] >= '0' && e->d_name[0] <= '9')))
            puts(e->d_name);
    closedir(d);
    return 0;
}

static int cat(const char *path)
{
    char buf[65536];
    ssize_t n;
    int fd = open(path, O_RDONLY);
    if (fd < 0) { perror(path); return 1; }
    while ((n = read(fd, buf, sizeof buf)) > 0)
        fwrite(buf, 1, n, stdout);
    close(fd);
    return n < 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    const char *arg = argc > 2 ? argv[2] : "";
    struct stat st;

    if (!strcmp(cmd, "pid")) {
        printf("pid %d ppid %d\n", getpid(), getppid());
    } else if (!strcmp(cmd, "argv")) {
        for (int i = 2; i < argc; i++) {
            for (const unsigned char *p = (const unsigned char *)argv[i]; *p; p++)
                printf("%02x", *p);
            putchar('\n');
        }
    } else if (!strcmp(cmd, "exit")) {
        return atoi(arg);
    } else if (!strcmp(cmd, "raise")) {
        signal(atoi(arg), SIG_DFL);
        kill(getpid(), atoi(arg));
        /* PID 1 does not die of its own signals: say so instead of dying. */
        puts("survived");
        return 99;
    } else if (!strcmp(cmd, "sleep")) {
        ready();
        nap(atof(arg));
    } else if (!strcmp(cmd, "trap")) {
        signal(atoi(arg), on_signal);
        ready();
        while (!caught)
            pause();
        caught = 0;
        nap(0.3);
        caught++;
        return caught;
    } else if (!strcmp(cmd, "ignore")) {
        signal(atoi(arg), SIG_IGN);
        ready();
        nap(30);
    } else if (!strcmp(cmd, "pids")) {
        return list_dir("/proc", 1);
    } else if (!strcmp(cmd, "ls")) {
        return list_dir(arg, 0);
    } else if (!strcmp(cmd, "cat")) {
        return cat(arg);
    } else if (!strcmp(cmd, "exists")) {
        return lstat(arg, &st) == 0 ? 0 : 1;
    } else if (!strcmp(cmd, "env")) {
        for (char **e = environ; *e; e++)
            puts(*e);
    } else if (!strcmp(cmd, "cwd")) {
        char buf[4096];
        puts(getcwd(buf, sizeof buf) ? buf : "?");
    } else {
        fprintf(stderr, "probe: unknown subcommand '%s'\n", cmd);
        return 64;
    }
    return 0;
}
