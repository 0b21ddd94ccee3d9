/*
 * msg.h - the bodies of the session's frames (net/PROTOCOL.md, "Bodies").
 *
 * Every body is little-endian fields written and read one by one through
 * a bounded reader: a read past the end sets the reader's error and
 * yields zeros, so a decoder checks `rd.err` once at the end instead of
 * every field, and never reads outside the body.
 */
#ifndef PP_NET_MSG_H
#define PP_NET_MSG_H

#include <stdbool.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "secure.h"
#include "wire.h"

#define PP_HASH_LEN 32u         /* BLAKE2b-256 of a module's file */
#define PP_MSG_STR_MAX 4096u    /* longest string field (paths) */

/* JOB: reqid = job id.  Body: module u32 | flags u32 | offset u64 | argument.
 * CHUNKED: total u64 (argument bytes) | module | flags | offset; the
 * argument follows in CHUNK frames. */
#define PP_JOB_HDR 16u
/* JOB flags.  MAP: a pp_map chunk; the argument starts with in_size u64,
 * out_size u64, count u64 and then holds count * in_size input bytes; the
 * RESULT's bytes are the count * out_size outputs and its status that of
 * the chunk's lowest failing item (0 if none). */
#define PP_JOB_F_MAP 1u
#define PP_JOB_MAP_HDR 24u
/* COLLECT: a collector's job.  Each pp_job_send it makes comes back as one
 * MESSAGE frame (reqid = the JOB's id; body: the message bytes; CHUNKED
 * beyond max_body: total u64, the bytes in CHUNK frames), in the order
 * sent and before its RESULT, which carries the flag NONE when the job set
 * no result. */
#define PP_JOB_F_COLLECT 2u
/* A MESSAGE with the flag RUN carries one or more of one job's messages of
 * at most PP_RUN_MSG_MAX bytes each, in order: per message len u32, then
 * its bytes (no padding); never CHUNKED, never empty. */
#define PP_RUN_MSG_MAX 192u
/* RESULT: reqid = the JOB's id.  Body: status i32 | err_len u32 | run_ns u64
 * | err | result.  CHUNKED: total u64 (result bytes) | status | err_len |
 * run_ns | err; the result follows in CHUNK frames. */
#define PP_RES_HDR 16u

struct pp_rd {
    const uint8_t *p, *end;
    bool err;
};

static inline struct pp_rd pp_rd_of(const void *p, size_t n)
{
    struct pp_rd r = { (const uint8_t *)p, (const uint8_t *)p + n, false };
    return r;
}
static inline size_t pp_rd_left(const struct pp_rd *r) { return (size_t)(r->end - r->p); }
static inline const uint8_t *pp_rd_take(struct pp_rd *r, size_t n)
{
    if (r->err || pp_rd_left(r) < n) {
        r->err = true;
        return NULL;
    }
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}
static inline uint32_t pp_rd_u32(struct pp_rd *r)
{
    const uint8_t *q = pp_rd_take(r, 4);
    return q ? pp_wire_get_u32(q) : 0;
}
static inline uint64_t pp_rd_u64(struct pp_rd *r)
{
    const uint8_t *q = pp_rd_take(r, 8);
    return q ? pp_wire_get_u64(q) : 0;
}
/* A u16-length string, copied NUL-terminated into out[cap] (cut to fit). */
static inline void pp_rd_str(struct pp_rd *r, char *out, size_t cap)
{
    const uint8_t *q = pp_rd_take(r, 2);
    size_t n = q ? pp_wire_get_u16(q) : 0;
    const uint8_t *s = pp_rd_take(r, n);
    size_t k = s ? (n < cap - 1 ? n : cap - 1) : 0;
    if (k)
        memcpy(out, s, k);
    out[k] = '\0';
}

struct pp_wr {
    uint8_t *p, *end;
    bool err;
};
static inline struct pp_wr pp_wr_of(void *p, size_t n)
{
    struct pp_wr w = { (uint8_t *)p, (uint8_t *)p + n, false };
    return w;
}
static inline uint8_t *pp_wr_take(struct pp_wr *w, size_t n)
{
    if (w->err || (size_t)(w->end - w->p) < n) {
        w->err = true;
        return NULL;
    }
    uint8_t *q = w->p;
    w->p += n;
    return q;
}
static inline void pp_wr_u32(struct pp_wr *w, uint32_t v)
{
    uint8_t *q = pp_wr_take(w, 4);
    if (q)
        pp_wire_put_u32(q, v);
}
static inline void pp_wr_u64(struct pp_wr *w, uint64_t v)
{
    uint8_t *q = pp_wr_take(w, 8);
    if (q)
        pp_wire_put_u64(q, v);
}
static inline void pp_wr_bytes(struct pp_wr *w, const void *s, size_t n)
{
    uint8_t *q = pp_wr_take(w, n);
    if (q && n)
        memcpy(q, s, n);
}
static inline void pp_wr_str(struct pp_wr *w, const char *s)
{
    size_t n = strlen(s); /* callers pass NUL-terminated strings */
    if (n > PP_MSG_STR_MAX)
        n = PP_MSG_STR_MAX;
    uint8_t *q = pp_wr_take(w, 2);
    if (q)
        pp_wire_put_u16(q, (uint16_t)n);
    pp_wr_bytes(w, s, n);
}

/* What a host says about itself (INFO from a node, SESSION from a
 * client): code is only ever sent between hosts whose machine names are
 * equal and where the receiver's C library is at least as new. */
struct pp_host_info {
    char machine[65];        /* uname -m (65: utsname field size) */
    char libc[32];           /* gnu_get_libc_version() */
};

/* Fills info for this host. */
void pp_host_info_self(struct pp_host_info *info);
/* 0 when code built on `from` may run on `to`; else -ENOEXEC and a reason. */
int pp_host_info_compatible(const struct pp_host_info *from, const struct pp_host_info *to,
                            char *why, size_t whylen);

/* A numeric IPv4 or IPv6 address and a port into *ss (*len its size).
 * Returns 0, or -EINVAL for anything but a numeric address. */
int pp_net_addr(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);
/* Wall-clock milliseconds (CLOCK_REALTIME): discovery's time window. */
uint64_t pp_wall_ms(void);

/* The BLAKE2b-256 of a file's contents (fd read from offset 0).
 * Returns 0 and the size, or -errno. */
int pp_hash_fd(int fd, uint8_t out[PP_HASH_LEN], uint64_t *ret_size);
/* Lowercase hex of a hash into out[2 * PP_HASH_LEN + 1]. */
void pp_hash_hex(const uint8_t h[PP_HASH_LEN], char *out);

/* The code cache: files named <kind>-<hex of hash> in a 0700 directory.
 * A file is used only after its contents were hashed again and match
 * (a truncated write, a disk error or a hand edit is caught there). */
void pp_cache_path(char *out, size_t n, const char *dir, const char *kind,
                   const uint8_t hash[PP_HASH_LEN]);
bool pp_cache_ok(const char *path, const uint8_t hash[PP_HASH_LEN]);

/* Receiving a module into the cache: written under a temporary name in
 * the cache directory, hashed as it arrives, renamed into place only when
 * complete and matching. */
struct pp_code_rx {
    int fd;                       /* -1 when idle */
    char tmp[PATH_MAX], path[PATH_MAX];
    uint8_t want[PP_HASH_LEN];
    uint64_t total, have;
    crypto_generichash_state hst;
};
int pp_code_rx_begin(struct pp_code_rx *c, const char *dir, const char *kind,
                     const uint8_t hash[PP_HASH_LEN], uint64_t total);
/* -EPROTO for more bytes than announced, or a write's -errno. */
int pp_code_rx_add(struct pp_code_rx *c, const uint8_t *p, size_t n);
static inline bool pp_code_rx_complete(const struct pp_code_rx *c) { return c->have == c->total; }
/* Checks and renames: 0 (c->path is the cached file), -EBADMSG (hash
 * mismatch: discarded) or -errno. */
int pp_code_rx_end(struct pp_code_rx *c);
void pp_code_rx_abort(struct pp_code_rx *c);

/* What ppserver's session process hands to the session agent it execs
 * (the client's own program, in agent mode): through a pipe, named with
 * the socket in the environment variable PP_AGENT="sockfd,pipefd". */
#define PP_AGENT_ENV "PP_AGENT"
#define PP_AGENT_MAGIC 0x7070616731000001ull
struct pp_agent_state {
    uint64_t magic;
    struct pp_sec_dir tx, rx;     /* the session's keys, node's view */
    int32_t workers;              /* -w (-1: the effective CPUs) */
    uint32_t restart, debug;
    uint32_t socket_timeout_ms;   /* a client silent this long is gone */
    uint8_t exe_hash[PP_HASH_LEN];/* the program this agent runs */
    char cache_dir[PATH_MAX];
    char peer[64];                /* the client's address, for logs */
};

#endif /* PP_NET_MSG_H */
