/*
 * msg.c - host descriptions and file hashes for the session (msg.h).
 */
#define _GNU_SOURCE
#include "msg.h"

#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

void pp_host_info_self(struct pp_host_info *info)
{
    struct utsname u;
    memset(info, 0, sizeof(*info));
    if (uname(&u) == 0)
        snprintf(info->machine, sizeof(info->machine), "%s", u.machine);
    snprintf(info->libc, sizeof(info->libc), "%s", gnu_get_libc_version());
}

/* "2.36" -> 2 * 1000 + 36; anything unparsable -> 0. */
static unsigned libc_num(const char *v)
{
    char *end;
    unsigned long maj = strtoul(v, &end, 10);
    if (*end != '.')
        return 0;
    unsigned long min = strtoul(end + 1, NULL, 10);
    return maj > 100 || min > 999 ? 0 : (unsigned)(maj * 1000 + min);
}

int pp_host_info_compatible(const struct pp_host_info *from, const struct pp_host_info *to,
                            char *why, size_t whylen)
{
    if (strcmp(from->machine, to->machine) != 0) {
        snprintf(why, whylen, "architecture %s, not the client's %s", to->machine,
                 from->machine);
        return -ENOEXEC;
    }
    unsigned f = libc_num(from->libc), t = libc_num(to->libc);
    if (!f || !t || t < f) {
        snprintf(why, whylen, "C library %s, older than the client's %s", to->libc,
                 from->libc);
        return -ENOEXEC;
    }
    return 0;
}

/* Module hashes are BLAKE2b-256 of a domain label and the file: the same
 * start for a whole file (pp_hash_fd) and one that arrives in pieces
 * (pp_code_rx). */
static const char module_label[] = "pp-v1 module";

static void module_hash_begin(crypto_generichash_state *st)
{
    crypto_generichash_init(st, NULL, 0, PP_HASH_LEN);
    crypto_generichash_update(st, (const unsigned char *)module_label, sizeof(module_label) - 1);
}

int pp_hash_fd(int fd, uint8_t out[PP_HASH_LEN], uint64_t *ret_size)
{
    crypto_generichash_state st;
    uint8_t buf[1 << 16];
    uint64_t size = 0;
    off_t off = 0;

    if (sodium_init() < 0)
        return -ENOSYS;
    module_hash_begin(&st);
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof(buf), off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        crypto_generichash_update(&st, buf, (size_t)n);
        off += n;
        size += (uint64_t)n;
    }
    crypto_generichash_final(&st, out, PP_HASH_LEN);
    *ret_size = size;
    return 0;
}

void pp_hash_hex(const uint8_t h[PP_HASH_LEN], char *out)
{
    static const char d[] = "0123456789abcdef";
    for (unsigned i = 0; i < PP_HASH_LEN; i++) {
        out[2 * i] = d[h[i] >> 4];
        out[2 * i + 1] = d[h[i] & 15];
    }
    out[2 * PP_HASH_LEN] = '\0';
}

/* ---- the code cache ---- */


void pp_cache_path(char *out, size_t n, const char *dir, const char *kind,
                   const uint8_t hash[PP_HASH_LEN])
{
    char hex[2 * PP_HASH_LEN + 1];
    pp_hash_hex(hash, hex);
    snprintf(out, n, "%s/%s-%s", dir, kind, hex);
}

bool pp_cache_ok(const char *path, const uint8_t hash[PP_HASH_LEN])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return false;
    uint8_t h[PP_HASH_LEN];
    uint64_t size;
    bool ok = pp_hash_fd(fd, h, &size) == 0 && sodium_memcmp(h, hash, PP_HASH_LEN) == 0;
    close(fd);
    return ok;
}

int pp_code_rx_begin(struct pp_code_rx *c, const char *dir, const char *kind,
                     const uint8_t hash[PP_HASH_LEN], uint64_t total)
{
    static _Atomic unsigned seq;
    memcpy(c->want, hash, PP_HASH_LEN);
    c->total = total;
    c->have = 0;
    pp_cache_path(c->path, sizeof(c->path), dir, kind, hash);
    snprintf(c->tmp, sizeof(c->tmp), "%s/.tmp-%d-%u", dir, (int)getpid(), seq++);
    c->fd = open(c->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (c->fd < 0)
        return -errno;
    module_hash_begin(&c->hst);
    return 0;
}

int pp_code_rx_add(struct pp_code_rx *c, const uint8_t *p, size_t n)
{
    if (c->fd < 0 || n > c->total - c->have)
        return -EPROTO;
    crypto_generichash_update(&c->hst, p, n);
    while (n) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
        c->have += (uint64_t)w;
    }
    return 0;
}

int pp_code_rx_end(struct pp_code_rx *c)
{
    uint8_t h[PP_HASH_LEN];
    int r = 0;
    crypto_generichash_final(&c->hst, h, PP_HASH_LEN);
    if (c->have != c->total || sodium_memcmp(h, c->want, PP_HASH_LEN) != 0)
        r = -EBADMSG;
    else if (fsync(c->fd) < 0 || fchmod(c->fd, 0500) < 0)
        r = -errno;
    close(c->fd);
    c->fd = -1;
    if (r == 0 && rename(c->tmp, c->path) < 0)
        r = -errno;
    if (r < 0)
        unlink(c->tmp);
    return r;
}

void pp_code_rx_abort(struct pp_code_rx *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        unlink(c->tmp);
        c->fd = -1;
    }
}

/* ---- addresses and clocks ---- */

int pp_net_addr(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof(*a6);
        return 0;
    }
    return -EINVAL;
}

uint64_t pp_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
