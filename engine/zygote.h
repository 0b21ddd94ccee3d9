/*
 * zygote.h - the engine <-> zygote protocol (zygote.c).
 *
 * Over a SOCK_SEQPACKET pair, one struct pp_zmsg per message:
 *   engine -> zygote: SPAWN{slot}, SHUTDOWN
 *   zygote -> engine: SPAWNED{slot, pid}, SPAWN_FAILED{slot, errno},
 *                     EXITED{slot, pid, wait status}
 * EOF on the socket is a SHUTDOWN.  The worker reads its CPU from its
 * slot (struct pp_wcb), which the engine fills in before SPAWN.
 */
#ifndef PP_ENGINE_ZYGOTE_H
#define PP_ENGINE_ZYGOTE_H

#include <stdint.h>

enum { PP_Z_SPAWN = 1, PP_Z_SHUTDOWN, PP_Z_SPAWNED, PP_Z_SPAWN_FAILED, PP_Z_EXITED };

struct pp_zmsg {
    int32_t type;
    int32_t slot;
    int32_t pid;
    int32_t status;   /* wait status, or errno for SPAWN_FAILED */
};

struct pp_server;
struct pp_shared;

PP_HIDDEN int pp__zygote_start(struct pp_server *s);
PP_HIDDEN int pp__zygote_spawn(struct pp_server *s, int slot);
PP_HIDDEN void pp__zygote_shutdown(struct pp_server *s);
/* In the worker process, forked by the zygote. */
PP_HIDDEN void pp__worker_main(struct pp_shared *sh, char *base, int slot)
    __attribute__((noreturn));

#endif /* PP_ENGINE_ZYGOTE_H */
