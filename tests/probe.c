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
 *   probe hostname            the UTS node name
 *   probe fds                 the open descriptors, from /proc/self/fd
 *   probe readfd N            read descriptor N to the end; print it
 *   probe kill PID            kill(PID, 0): "ok" or the error
 *   probe connect IP PORT     TCP connect: "connected" or the error
 *   probe unix NAME           connect to abstract Unix socket NAME
 *   probe serve PORT          serve PORT over UDP and TCP: print "ready"; each
 *                             datagram comes back with "udp " in front; each TCP
 *                             connection gets "tcp\n" and is closed
 *   probe hold MB SECS        allocate and touch MB MiB, print "ready", sleep SECS
 *   probe open PATH r|w       open PATH for reading or writing: "ok" or the error
 *   probe node PATH MAJ MIN   make a character device node, then open it for
 *                             reading: "ok" or the error (of either step)
 *   probe write FILE TEXT     write TEXT into FILE: "ok" or the error
 *   probe escape PATH         the classic chroot escape (chroot into a subdir,
 *                             climb "..", chroot "."), then cat PATH
 *   probe nopdeath            clear the parent-death signal, say so, sleep 30 s
 *   probe orphan              leave an orphan to be reaped; count zombies after 0.3 s
 *   probe mount TARGET        mount a tmpfs on TARGET: "ok" or the error
 *   probe syscall NAME        try one system call the seccomp filter denies,
 *                             with arguments that do nothing: "ok" or the error
 *                             (clone-newuser and the like: clone with that flag)
 *   probe userns-mount        clone into a new user and mount namespace, and there
 *                             mount a tmpfs with the new mount API: "mounted"
 *   probe packet              open an AF_PACKET socket: "ok" or the error
 *   probe openat FD PATH      open PATH relative to descriptor FD: "ok" or the error
 *   probe ids                 "uid U euid E gid G egid H groups N..."
 *   probe mknod PATH          make a block device node (8,0): "ok" or the error
 *   probe killgroup SIG       kill(0, SIG): signal the whole process group; "alive" after
 *   probe forks N             fork N children that wait: "forked K" (K < N if refused)
 *   probe alloc MB            allocate and touch MB MiB: "allocated MB"
 *   probe spin SECS           busy-loop SECS of wall time: "cpu C wall W" in seconds
 *   probe sys CALL...         raw system calls, one line each: "CALL ok" or
 *                             "CALL errno N". CALL is NR[,A0...] (up to 4
 *                             arguments, this ABI's numbers) or i386:NR[,A0...]
 *                             (the 32-bit ABI by int $0x80, x86_64 only;
 *                             socketcall's (102) arguments after the call number
 *                             go into the block it points to)
 *
 * Failures print "error: <strerror>" and exit 1, so tests see why.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/reboot.h>
#include <linux/sched.h>
#include <linux/if_ether.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/times.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
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

static int fail(void) { printf("error: %s\n", strerror(errno)); return 1; }

/* clone with `flags` (raw, as libc's fallback does): the child exits at once. */
static long try_clone(unsigned long flags)
{
    long pid = syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    return pid < 0 ? -1 : 0;
}

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#define SYS_move_mount 429
#define SYS_fsopen 430
#define SYS_fsconfig 431
#define SYS_fsmount 432
#define SYS_fspick 433
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#define SYS_io_uring_enter 426
#define SYS_io_uring_register 427
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#define UFFD_USER_MODE_ONLY 1

/* A tmpfs mounted with the new mount API where the caller is: "mounted". */
static int new_api_mount(void)
{
    int fs = syscall(SYS_fsopen, "tmpfs", 0);
    if (fs < 0) return -1;
    if (syscall(SYS_fsconfig, fs, 6 /* FSCONFIG_CMD_CREATE */, NULL, NULL, 0) < 0) return -1;
    int m = syscall(SYS_fsmount, fs, 0, 0);
    return m < 0 ? -1 : 0;
}

static int userns_child(void *unused)
{
    (void)unused;
    if (new_api_mount() < 0) {
        printf("error in the new namespaces: %s\n", strerror(errno));
        fflush(stdout);
        return 1;
    }
    puts("mounted");
    fflush(stdout);  /* the child leaves by the exit system call: no stdio flush */
    return 0;
}

/* Each denied system call, with arguments that make it fail harmlessly (or
 * do nothing) when it is allowed, so the error tells who refused it. */
static long try_syscall(const char *name)
{
    if (!strcmp(name, "mount")) return mount("none", "/nonexistent", "tmpfs", 0, NULL);
    if (!strcmp(name, "umount2")) return umount2("/nonexistent", 0);
    if (!strcmp(name, "pivot_root")) return syscall(SYS_pivot_root, "/nonexistent", "/nonexistent");
    if (!strcmp(name, "unshare")) return syscall(SYS_unshare, 0);
    if (!strcmp(name, "setns")) return syscall(SYS_setns, -1, 0);
    if (!strcmp(name, "kexec_load")) return syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL);
#ifdef SYS_kexec_file_load
    if (!strcmp(name, "kexec_file_load")) return syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0xdead0000UL);
#endif
    if (!strcmp(name, "init_module")) return syscall(SYS_init_module, NULL, 0, "");
    if (!strcmp(name, "finit_module")) return syscall(SYS_finit_module, -1, "", 0);
    if (!strcmp(name, "delete_module")) return syscall(SYS_delete_module, "mc_no_such_module", 0);
    if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -7, 0);
    if (!strcmp(name, "add_key")) return syscall(SYS_add_key, "user", "mc", NULL, 0, 0);
    if (!strcmp(name, "request_key")) return syscall(SYS_request_key, "user", "mc-none", NULL, 0);
    if (!strcmp(name, "bpf")) return syscall(SYS_bpf, -1, NULL, 0);
    if (!strcmp(name, "open_by_handle_at")) return syscall(SYS_open_by_handle_at, -1, NULL, 0);
    if (!strcmp(name, "reboot")) return syscall(SYS_reboot, 0, 0, 0, NULL);  /* bad magic */
    if (!strcmp(name, "swapon")) return syscall(SYS_swapon, "/nonexistent", 0);
    if (!strcmp(name, "swapoff")) return syscall(SYS_swapoff, "/nonexistent");
#ifdef SYS_iopl
    if (!strcmp(name, "iopl")) return syscall(SYS_iopl, 0);
    if (!strcmp(name, "ioperm")) return syscall(SYS_ioperm, 0, 0, 0);
#endif
    if (!strcmp(name, "clone-newuser")) return try_clone(CLONE_NEWUSER);
    if (!strcmp(name, "clone-newns")) return try_clone(CLONE_NEWNS);
    if (!strcmp(name, "clone-newpid")) return try_clone(CLONE_NEWPID);
    if (!strcmp(name, "clone-newnet")) return try_clone(CLONE_NEWNET);
    if (!strcmp(name, "clone-newuts")) return try_clone(CLONE_NEWUTS);
    if (!strcmp(name, "clone-newipc")) return try_clone(CLONE_NEWIPC);
    if (!strcmp(name, "clone-newcgroup")) return try_clone(CLONE_NEWCGROUP);
    if (!strcmp(name, "clone-plain")) return try_clone(0);
    if (!strcmp(name, "clone3")) {
        struct clone_args args = { .exit_signal = SIGCHLD };
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
        return pid < 0 ? -1 : 0;
    }
    if (!strcmp(name, "fsopen")) { long fd = syscall(SYS_fsopen, "tmpfs", 0); if (fd >= 0) close(fd); return fd; }
    if (!strcmp(name, "fsconfig")) return syscall(SYS_fsconfig, -1, 6, NULL, NULL, 0);
    if (!strcmp(name, "fsmount")) return syscall(SYS_fsmount, -1, 0, 0);
    if (!strcmp(name, "fspick")) return syscall(SYS_fspick, -1, "/nonexistent", 0);
    if (!strcmp(name, "move_mount")) return syscall(SYS_move_mount, -1, "", -1, "", 0);
    if (!strcmp(name, "open_tree")) { long fd = syscall(SYS_open_tree, AT_FDCWD, "/", 0); if (fd >= 0) close(fd); return fd; }
    if (!strcmp(name, "mount_setattr")) return syscall(SYS_mount_setattr, -1, "", 0, NULL, 0);
    if (!strcmp(name, "io_uring_setup")) return syscall(SYS_io_uring_setup, 0, NULL);
    if (!strcmp(name, "io_uring_enter")) return syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0);
    if (!strcmp(name, "io_uring_register")) return syscall(SYS_io_uring_register, -1, 0, NULL, 0);
    if (!strcmp(name, "userfaultfd")) { long fd = syscall(SYS_userfaultfd, UFFD_USER_MODE_ONLY); if (fd >= 0) close(fd); return fd; }
    if (!strcmp(name, "kcmp")) return syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, 0, 0);
    if (!strcmp(name, "pidfd_getfd")) return syscall(SYS_pidfd_getfd, -1, 0, 0);
    if (!strcmp(name, "process_madvise")) return syscall(SYS_process_madvise, -1, NULL, 0, 0, 0);
    if (!strcmp(name, "tiocsti")) { char c = 0; return ioctl(-1, TIOCSTI, &c); }
    /* The same request with junk in the upper 32 bits, which the kernel drops. */
    if (!strcmp(name, "tiocsti-high")) { char c = 0; return syscall(SYS_ioctl, -1, TIOCSTI | (1UL << 32), &c); }
    errno = ENOSYS;
    return -1;
}

/* One raw system call from "NR,A0,..." or "i386:NR,...": the result, or -errno. */
static long raw_syscall(const char *call)
{
    static unsigned int block[4];  /* static: below 4 GiB, where a 32-bit pointer reaches */
    unsigned long a[5] = {0, 0, 0, 0, 0};
    int i386 = !strncmp(call, "i386:", 5), n = 0;
    char *p = (char *)call + (i386 ? 5 : 0);
    while (n < 5) {
        a[n++] = strtoul(p, &p, 0);
        if (*p != ',') break;
        p++;
    }
    if (!i386) {
        long r = syscall(a[0], a[1], a[2], a[3], a[4]);
        return r < 0 ? -errno : r;
    }
#ifdef __x86_64__
    long r;
    if (a[0] == 102) {  /* socketcall(CALL, a block holding the call's arguments) */
        block[0] = a[2]; block[1] = a[3]; block[2] = a[4];
        a[2] = (unsigned long)block;
    }
    __asm__ volatile ("int $0x80" : "=a"(r) : "a"(a[0]), "b"(a[1]), "c"(a[2]), "d"(a[3]) : "memory");
    return r;
#else
    return -ENOSYS;
#endif
}

static int list_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    if (!d) return fail();
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
            puts(e->d_name);
    closedir(d);
    return 0;
}

static int count_zombies(void)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int zombies = 0;
    while (d && (e = readdir(d))) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) continue;
        buf[n] = 0;
        char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'Z') zombies++;
    }
    if (d) closedir(d);
    return zombies;
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
    } else if (!strcmp(cmd, "hostname")) {
        char buf[256];
        gethostname(buf, sizeof buf);
        puts(buf);
    } else if (!strcmp(cmd, "fds")) {
        return list_fds();
    } else if (!strcmp(cmd, "readfd")) {
        char buf[4096];
        ssize_t n = read(atoi(arg), buf, sizeof buf);
        if (n < 0) return fail();
        fwrite(buf, 1, n, stdout);
    } else if (!strcmp(cmd, "kill")) {
        if (kill(atoi(arg), 0) < 0) return fail();
        puts("ok");
    } else if (!strcmp(cmd, "connect")) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        inet_pton(AF_INET, arg, &sa.sin_addr);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) return fail();
        puts("connected");
    } else if (!strcmp(cmd, "serve")) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(arg)) };
        int udp = socket(AF_INET, SOCK_DGRAM, 0), tcp = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(udp, (struct sockaddr *)&sa, sizeof sa) < 0 || bind(tcp, (struct sockaddr *)&sa, sizeof sa) < 0
            || listen(tcp, 16) < 0) return fail();
        ready();
        for (;;) {
            struct pollfd fds[2] = { { .fd = udp, .events = POLLIN }, { .fd = tcp, .events = POLLIN } };
            if (poll(fds, 2, -1) < 0) continue;
            if (fds[0].revents & POLLIN) {
                char data[65536];
                struct sockaddr_in peer;
                socklen_t len = sizeof peer;
                memcpy(data, "udp ", 4);
                ssize_t n = recvfrom(udp, data + 4, sizeof data - 4, 0, (struct sockaddr *)&peer, &len);
                if (n >= 0) sendto(udp, data, n + 4, 0, (struct sockaddr *)&peer, len);
            }
            if (fds[1].revents & POLLIN) {
                int conn = accept(tcp, NULL, NULL);
                if (conn >= 0) { if (write(conn, "tcp\n", 4) < 0) {} close(conn); }
            }
        }
    } else if (!strcmp(cmd, "hold")) {
        size_t mb = atol(arg);
        for (size_t i = 0; i < mb; i++) {
            char *p = malloc(1 << 20);
            if (!p) return fail();
            memset(p, 1, 1 << 20);
        }
        ready();
        nap(argc > 3 ? atof(argv[3]) : 30);
    } else if (!strcmp(cmd, "open")) {
        int fd = open(arg, argc > 3 && !strcmp(argv[3], "w") ? O_WRONLY : O_RDONLY);
        if (fd < 0) return fail();
        puts("ok");
    } else if (!strcmp(cmd, "node")) {
        if (mknod(arg, S_IFCHR | 0600, makedev(atoi(argv[3]), atoi(argv[4]))) < 0) return fail();
        if (open(arg, O_RDONLY) < 0) return fail();
        puts("ok");
    } else if (!strcmp(cmd, "unix")) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        size_t len = strlen(arg);
        memcpy(sa.sun_path + 1, arg, len);  /* abstract: leading NUL */
        if (connect(fd, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + 1 + len) < 0)
            return fail();
        puts("connected");
    } else if (!strcmp(cmd, "write")) {
        int fd = open(arg, O_WRONLY);
        if (fd < 0 || write(fd, argv[3], strlen(argv[3])) < 0) return fail();
        puts("ok");
    } else if (!strcmp(cmd, "escape")) {
        mkdir("/tmp/.escape", 0700);
        if (chroot("/tmp/.escape") < 0) return fail();
        for (int i = 0; i < 64; i++)
            if (chdir("..") < 0) return fail();
        if (chroot(".") < 0) return fail();
        return cat(arg);
    } else if (!strcmp(cmd, "nopdeath")) {
        int before = -1, after = -1;
        prctl(PR_GET_PDEATHSIG, &before);
        prctl(PR_SET_PDEATHSIG, 0);
        prctl(PR_GET_PDEATHSIG, &after);
        printf("pdeathsig %d -> %d\n", before, after);
        ready();
        nap(30);
    } else if (!strcmp(cmd, "orphan")) {
        if (fork() == 0) {
            if (fork() == 0) _exit(0);  /* the orphan: its parent leaves first */
            _exit(0);
        }
        wait(NULL);
        nap(0.3);
        printf("zombies %d\n", count_zombies());
    } else if (!strcmp(cmd, "syscall")) {
        if (try_syscall(arg) < 0) return fail();
        puts("ok");
    } else if (!strcmp(cmd, "ids")) {
        gid_t groups[64];
        int n = getgroups(64, groups);
        printf("uid %d euid %d gid %d egid %d groups", getuid(), geteuid(), getgid(), getegid());
        for (int i = 0; i < n; i++) printf(" %d", groups[i]);
        putchar('\n');
    } else if (!strcmp(cmd, "mknod")) {
        if (mknod(arg, S_IFBLK | 0600, makedev(8, 0)) < 0) return fail();
        puts("ok");
    } else if (!strcmp(cmd, "killgroup")) {
        signal(atoi(arg), SIG_IGN);  /* spare ourselves */
        if (kill(0, atoi(arg)) < 0) return fail();
        puts("alive");
    } else if (!strcmp(cmd, "forks")) {
        int n = atoi(arg), k = 0;
        pid_t kids[4096];
        for (; k < n && k < 4096; k++) {
            pid_t pid = fork();
            if (pid < 0) break;
            if (pid == 0) { pause(); _exit(0); }
            kids[k] = pid;
        }
        printf("forked %d\n", k);
        for (int i = 0; i < k; i++) kill(kids[i], SIGKILL);
        while (wait(NULL) > 0)
            ;
    } else if (!strcmp(cmd, "alloc")) {
        size_t mb = atol(arg);
        for (size_t i = 0; i < mb; i++) {
            char *p = malloc(1 << 20);
            if (!p) return fail();
            memset(p, 1, 1 << 20);
        }
        printf("allocated %zu\n", mb);
    } else if (!strcmp(cmd, "spin")) {
        struct timespec t0, t;
        struct rusage ru;
        double wall = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (wall < atof(arg)) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            wall = (t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9;
        }
        getrusage(RUSAGE_SELF, &ru);
        printf("cpu %.3f wall %.3f\n", ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
               + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, wall);
    } else if (!strcmp(cmd, "sys")) {
        for (int i = 2; i < argc; i++) {
            long r = raw_syscall(argv[i]);
            if (r < 0 && r > -4096) printf("%s errno %ld\n", argv[i], -r);
            else printf("%s ok\n", argv[i]);
        }
    } else if (!strcmp(cmd, "mount")) {
        if (mount("none", arg, "tmpfs", 0, NULL) < 0) return fail();
        puts("ok");
    } else if (!strcmp(cmd, "userns-mount")) {
        static char stack[1 << 16];
        int pid = clone(userns_child, stack + sizeof stack, CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD, NULL);
        if (pid < 0) return fail();
        int status;
        waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    } else if (!strcmp(cmd, "packet")) {
        int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
        if (fd < 0) return fail();
        puts("ok");
    } else if (!strcmp(cmd, "openat")) {
        int fd = openat(atoi(arg), argc > 3 ? argv[3] : ".", O_RDONLY);
        if (fd < 0) return fail();
        puts("ok");
    } else {
        fprintf(stderr, "probe: unknown subcommand '%s'\n", cmd);
        return 64;
    }
    return 0;
}
