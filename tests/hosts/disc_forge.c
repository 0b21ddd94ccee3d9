/*
 * disc_forge.c - the attacker's side of the network-namespace discovery
 * test (test_netns.sh): white-box, linked with net/ (disc.h, secure.h,
 * conf.h), run inside the test's "evil" namespace.
 *
 *   disc_forge capture PORT OUTFILE [FROM_ADDR [TIMEOUT_MS]]
 *       Binds UDP PORT on the wildcard address (SO_REUSEADDR,
 *       SO_BROADCAST), prints "disc_forge: capture bound ..." once bound,
 *       and waits (TIMEOUT_MS, default 15000) for one datagram that looks
 *       like a BEACON (magic, type and length per disc.h; pp_disc_type),
 *       from FROM_ADDR if given ("" = any).  Saves its bytes as they came
 *       to OUTFILE (written under a temporary name, then renamed).
 *       Exit 0 when saved, 1 on timeout or error.
 *   disc_forge replay INFILE BCAST PORT
 *       Sends INFILE's bytes again, as they are, to BCAST:PORT.
 *   disc_forge forge SECRETFILE BCAST PORT TCPPORT [IDFROM]
 *       Builds a BEACON with pp_disc_beacon_build under the key of the
 *       secret in SECRETFILE (the wrong one, in the test), announcing
 *       TCPPORT, with a fresh node_id, or the node_id of the beacon saved
 *       in IDFROM (a forged beacon that claims a real node's identity), and
 *       sends it to BCAST:PORT.
 *   disc_forge decoy PORT[,PORT...] MS
 *       Listens on TCP PORT(s) of the wildcard address for MS ms (or until
 *       SIGTERM/SIGINT), accepting and closing every connection, and prints
 *       "disc_forge: decoy: N connection(s) accepted".  Exit 0 if N is 0,
 *       1 otherwise (2 on a setup error).
 *
 * Every line it prints starts with "disc_forge:".  It never sends anything
 * but the one datagram per replay/forge call, to the address it is given.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "conf.h"
#include "disc.h"
#include "secure.h"

#define LOG(...) do { printf("disc_forge: " __VA_ARGS__); putchar('\n'); fflush(stdout); } while (0)

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int parse_port(const char *s, uint16_t *ret)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v == 0 || v > 65535) {
        LOG("bad port '%s'", s);
        return -1;
    }
    *ret = (uint16_t)v;
    return 0;
}

static int ipv4(const char *s, uint16_t port, struct sockaddr_in *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->sin_family = AF_INET;
    ret->sin_port = htons(port);
    if (inet_pton(AF_INET, s, &ret->sin_addr) != 1) {
        LOG("bad IPv4 address '%s'", s);
        return -1;
    }
    return 0;
}

static int send_bcast(const uint8_t *p, size_t len, const char *bcast, uint16_t port)
{
    struct sockaddr_in to;
    if (ipv4(bcast, port, &to) < 0)
        return -1;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)) < 0) {
        LOG("socket: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    ssize_t n = sendto(fd, p, len, 0, (struct sockaddr *)&to, sizeof(to));
    int e = errno;
    close(fd);
    if (n != (ssize_t)len) {
        LOG("sendto %s:%u: %s", bcast, port, n < 0 ? strerror(e) : "short write");
        return -1;
    }
    return 0;
}

static int read_all(const char *path, uint8_t *buf, size_t cap, size_t *ret_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        LOG("%s: %s", path, strerror(errno));
        return -1;
    }
    ssize_t n = read(fd, buf, cap);
    close(fd);
    if (n <= 0) {
        LOG("%s: %s", path, n < 0 ? strerror(errno) : "empty");
        return -1;
    }
    *ret_len = (size_t)n;
    return 0;
}

/* ---------------------------------------------------------------- */

static int cmd_capture(int argc, char **argv)
{
    uint16_t port;
    struct sockaddr_in from;
    bool filter = argc > 4 && argv[4][0];
    long timeout_ms = argc > 5 ? atol(argv[5]) : 15000;
    if (argc < 4 || parse_port(argv[2], &port) < 0 || (filter && ipv4(argv[4], 0, &from) < 0)) {
        LOG("usage: capture PORT OUTFILE [FROM_ADDR [TIMEOUT_MS]]");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in any = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&any, sizeof(any)) < 0) {
        LOG("capture: cannot bind UDP %u: %s", port, strerror(errno));
        return 2;
    }
    LOG("capture bound on UDP %u, waiting for a beacon from %s", port, filter ? argv[4] : "anyone");
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    unsigned other = 0;
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= end) {
            LOG("capture: no beacon in %ld ms (%u other datagrams)", timeout_ms, other);
            return 1;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int r = poll(&pfd, 1, (int)(end - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        uint8_t buf[PP_DISC_MAX_LEN + 1];
        struct sockaddr_in src;
        socklen_t slen = sizeof(src);
        ssize_t n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&src, &slen);
        if (n < 0)
            continue;
        if (pp_disc_type(buf, (size_t)n) != PP_DISC_BEACON ||
            (filter && src.sin_addr.s_addr != from.sin_addr.s_addr)) {
            other++;
            continue;
        }
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", argv[3]);
        int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0 || write(out, buf, (size_t)n) != n || close(out) < 0 ||
            rename(tmp, argv[3]) < 0) {
            LOG("capture: cannot write %s: %s", argv[3], strerror(errno));
            return 1;
        }
        char a[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &src.sin_addr, a, sizeof(a));
        uint64_t ts = 0;
        for (int i = 0; i < 8; i++)
            ts |= (uint64_t)buf[8 + i] << (8 * i);
        LOG("captured a %zd-byte beacon from %s:%u (ts %llu, %lld ms old; %u other datagrams)",
            n, a, ntohs(src.sin_port), (unsigned long long)ts,
            (long long)(wall_ms() - ts), other);
        close(fd);
        return 0;
    }
}

static int cmd_replay(int argc, char **argv)
{
    uint16_t port;
    uint8_t buf[PP_DISC_MAX_LEN + 1];
    size_t len;
    if (argc != 5 || parse_port(argv[4], &port) < 0) {
        LOG("usage: replay INFILE BCAST PORT");
        return 2;
    }
    if (read_all(argv[2], buf, sizeof(buf), &len) < 0)
        return 1;
    if (send_bcast(buf, len, argv[3], port) < 0)
        return 1;
    LOG("replayed %zu bytes of %s to %s:%u", len, argv[2], argv[3], port);
    return 0;
}

static int cmd_forge(int argc, char **argv)
{
    uint16_t port, tcp;
    if ((argc != 6 && argc != 7) || parse_port(argv[4], &port) < 0 ||
        parse_port(argv[5], &tcp) < 0) {
        LOG("usage: forge SECRETFILE BCAST PORT TCPPORT [IDFROM]");
        return 2;
    }
    char secret[PP_SRVCONF_SECRET_MAX + 1], err[256];
    size_t slen;
    if (pp_read_secret_file(argv[2], secret, sizeof(secret), &slen, err, sizeof(err)) < 0) {
        LOG("forge: %s", err);
        return 1;
    }
    struct pp_sec_psk psk;
    static struct pp_disc_key key; /* static: the node state is ~25 KiB */
    static struct pp_disc_node node;
    int r = pp_sec_psk_init(&psk, secret, slen);
    memset(secret, 0, sizeof(secret));
    if (r == 0)
        r = pp_disc_key_init(&key, &psk);
    if (r == 0)
        r = pp_disc_node_init(&node);
    pp_sec_psk_wipe(&psk);
    if (r < 0) {
        LOG("forge: key setup: %s", strerror(-r));
        return 1;
    }
    if (argc == 7) {
        uint8_t b[PP_DISC_MAX_LEN + 1];
        size_t blen;
        if (read_all(argv[6], b, sizeof(b), &blen) < 0)
            return 1;
        if (pp_disc_type(b, blen) != PP_DISC_BEACON) {
            LOG("forge: %s is not a beacon", argv[6]);
            return 1;
        }
        memcpy(node.id, b + 24, PP_DISC_ID_LEN); /* BEACON: node_id at offset 24 */
    }
    uint8_t out[PP_DISC_MAX_LEN];
    size_t olen;
    r = pp_disc_beacon_build(&key, &node, wall_ms(), tcp, 1, out, sizeof(out), &olen);
    pp_disc_key_wipe(&key);
    if (r < 0) {
        LOG("forge: pp_disc_beacon_build: %s", strerror(-r));
        return 1;
    }
    if (send_bcast(out, olen, argv[3], port) < 0)
        return 1;
    LOG("forged a %zu-byte beacon (wrong key, TCP port %u, node_id %s) to %s:%u", olen, tcp,
        argc == 7 ? "copied" : "fresh", argv[3], port);
    return 0;
}

static volatile sig_atomic_t decoy_stop;
static void on_term(int sig)
{
    (void)sig;
    decoy_stop = 1;
}

static int cmd_decoy(int argc, char **argv)
{
    enum { MAXP = 8 };
    struct pollfd pfd[MAXP];
    uint16_t ports[MAXP];
    int np = 0;
    if (argc != 4) {
        LOG("usage: decoy PORT[,PORT...] MS");
        return 2;
    }
    char list[256];
    snprintf(list, sizeof(list), "%s", argv[2]);
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (np == MAXP || parse_port(t, &ports[np]) < 0)
            return 2;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int one = 1;
        struct sockaddr_in any = { .sin_family = AF_INET, .sin_port = htons(ports[np]) };
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(fd, (struct sockaddr *)&any, sizeof(any)) < 0 || listen(fd, 64) < 0) {
            LOG("decoy: cannot listen on TCP %u: %s", ports[np], strerror(errno));
            return 2;
        }
        pfd[np].fd = fd;
        pfd[np].events = POLLIN;
        np++;
    }
    long ms = atol(argv[3]);
    struct sigaction sa = { .sa_handler = on_term };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    LOG("decoy listening on TCP %s for %ld ms", argv[2], ms);
    unsigned accepted = 0;
    uint64_t end = mono_ms() + (uint64_t)ms;
    while (!decoy_stop) {
        uint64_t now = mono_ms();
        if (now >= end)
            break;
        int r = poll(pfd, (nfds_t)np, (int)(end - now < 200 ? end - now : 200));
        if (r <= 0)
            continue;
        for (int i = 0; i < np; i++) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            struct sockaddr_in src;
            socklen_t sl = sizeof(src);
            int c;
            while ((c = accept4(pfd[i].fd, (struct sockaddr *)&src, &sl, SOCK_CLOEXEC)) >= 0) {
                char a[INET_ADDRSTRLEN];
                inet_ntop(AF_INET, &src.sin_addr, a, sizeof(a));
                LOG("decoy: connection on TCP %u from %s:%u", ports[i], a, ntohs(src.sin_port));
                accepted++;
                close(c);
                sl = sizeof(src);
            }
        }
    }
    LOG("decoy: %u connection(s) accepted", accepted);
    return accepted == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && strcmp(argv[1], "capture") == 0)
        return cmd_capture(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "replay") == 0)
        return cmd_replay(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "forge") == 0)
        return cmd_forge(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "decoy") == 0)
        return cmd_decoy(argc, argv);
    fprintf(stderr,
            "usage: disc_forge capture PORT OUTFILE [FROM_ADDR [TIMEOUT_MS]]\n"
            "       disc_forge replay INFILE BCAST PORT\n"
            "       disc_forge forge SECRETFILE BCAST PORT TCPPORT [IDFROM]\n"
            "       disc_forge decoy PORT[,PORT...] MS\n");
    return 2;
}
