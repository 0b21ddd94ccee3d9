/*
 * zygote.c - the process that forks workers.
 *
 * Workers are not forked from the host directly: the engine thread forks
 * one small single-threaded "zygote" when the server starts, and the zygote
 * forks every worker, at start, on pp_set_ncpus, after a crash and in
 * restart mode.  Why:
 *   - forking a busy multi-threaded host again and again would copy its
 *     page tables each time and race with its other threads; the zygote is
 *     forked once;
 *   - the workers are the zygote's children, so it alone reaps them and a
 *     host that calls waitpid(-1) or ignores SIGCHLD cannot steal their
 *     exit status;
 *   - PR_SET_PDEATHSIG follows the thread that forked: the zygote is forked
 *     by the engine thread, which lives as long as the server, and the
 *     workers by the single-threaded zygote.  If the host dies, the engine
 *     thread dies with it, the zygote gets SIGKILL, and so do the workers.
 *
 * After fork the zygote only makes system calls (no malloc, no stdio): it
 * is the child of a possibly multi-threaded process.  The protocol is in
 * zygote.h.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void zsend(int sock, int type, int slot, int pid, int status)
{
    struct pp_zmsg m = { type, slot, pid, status };
    while (send(sock, &m, sizeof(m), MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

/* Closes every descriptor but the ones the zygote and workers need, so the
 * host's files and sockets do not stay open in workers. */
static void close_others(int keep1, int keep2, int keep3)
{
    int keep[3] = { keep1, keep2, keep3 };
    int lo = 3;
    /* Sort the three (tiny) so we can close the gaps between them. */
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (keep[j] < keep[i]) {
                int t = keep[i];
                keep[i] = keep[j];
                keep[j] = t;
            }
    for (int i = 0; i < 3; i++) {
        if (keep[i] < lo)
            continue;
        if (keep[i] > lo)
            syscall(SYS_close_range, lo, keep[i] - 1, 0);
        lo = keep[i] + 1;
    }
    syscall(SYS_close_range, lo, ~0u, 0);
}

static void reap_all(pid_t *pids)
{
    for (int i = 0; i < PP_MAX_WORKERS; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGKILL);
    for (int i = 0; i < PP_MAX_WORKERS; i++)
        if (pids[i] > 0) {
            while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR)
                ;
            pids[i] = 0;
        }
}

static void spawn(struct pp_shared *sh, char *base, int sock, int sfd,
                  pid_t *pids, const struct pp_zmsg *m)
{
    if (m->slot < 0 || m->slot >= PP_MAX_WORKERS || pids[m->slot] > 0) {
        zsend(sock, PP_Z_SPAWN_FAILED, m->slot, 0, EINVAL);
        return;
    }
    pid_t zpid = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        zsend(sock, PP_Z_SPAWN_FAILED, m->slot, 0, errno);
        return;
    }
    if (pid == 0) {
        close(sock);
        close(sfd);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != zpid)
            _exit(1); /* the zygote died before we armed PDEATHSIG */
        pp__worker_main(sh, base, m->slot);
    }
    pids[m->slot] = pid;
    zsend(sock, PP_Z_SPAWNED, m->slot, pid, 0);
}

static void report_exits(int sock, pid_t *pids)
{
    int st;
    pid_t pid;

    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < PP_MAX_WORKERS; i++)
            if (pids[i] == pid) {
                pids[i] = 0;
                zsend(sock, PP_Z_EXITED, i, pid, st);
                break;
            }
    }
}

static void __attribute__((noreturn))
zygote_main(struct pp_shared *sh, char *base, int sock, pid_t parent)
{
    static pid_t pids[PP_MAX_WORKERS];
    sigset_t all, chld;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    prctl(PR_SET_NAME, "pp-zygote", 0, 0, 0);
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        _exit(1);
    close_others(sock, sfd, sh->engine_efd);

    for (;;) {
        struct pollfd pfd[2] = { { sock, POLLIN, 0 }, { sfd, POLLIN, 0 } };
        if (poll(pfd, 2, -1) < 0)
            continue;
        if (pfd[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == sizeof(si))
                ;
            report_exits(sock, pids);
        }
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            struct pp_zmsg m;
            ssize_t n = recv(sock, &m, sizeof(m), MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (n != (ssize_t)sizeof(m) || m.type == PP_Z_SHUTDOWN) {
                reap_all(pids);
                _exit(0);
            }
            if (m.type == PP_Z_SPAWN)
                spawn(sh, base, sock, sfd, pids, &m);
        }
    }
}

/* Called on the engine thread (see the PDEATHSIG note above). */
int pp__zygote_start(struct pp_server *s)
{
    int sv[2];
    pid_t parent = getpid();

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close(sv[0]);
        close(sv[1]);
        return r;
    }
    if (pid == 0) {
        close(sv[0]);
        zygote_main(s->sh, s->seg.base, sv[1], parent);
    }
    close(sv[1]);
    s->zsock = sv[0];
    s->zygote = pid;
    return 0;
}

int pp__zygote_spawn(struct pp_server *s, int slot)
{
    struct pp_zmsg m = { PP_Z_SPAWN, slot, 0, 0 };
    if (send(s->zsock, &m, sizeof(m), MSG_NOSIGNAL) != (ssize_t)sizeof(m))
        return -errno;
    return 0;
}

void pp__zygote_shutdown(struct pp_server *s)
{
    struct pp_zmsg m = { PP_Z_SHUTDOWN, 0, 0, 0 };
    if (s->zygote <= 0)
        return;
    (void)!send(s->zsock, &m, sizeof(m), MSG_NOSIGNAL);
    while (waitpid(s->zygote, NULL, 0) < 0 && errno == EINTR)
        ;
    s->zygote = 0;
    close(s->zsock);
    s->zsock = -1;
}
