/*
 * internal.h - the engine's private interfaces, by role:
 *
 *   record.h    the job record in shared memory and its state word
 *   consumer.h  what every consumer of the submit ring shares (a local
 *               worker, later a remote node's connection), and its
 *               post-mortem
 *   fnid.h      a function's identity outside the host
 *   shared.h    the shared segment's header
 *   zygote.h    the engine <-> zygote protocol
 *   host.h      the host-private server and task
 *
 * Two kinds of memory: the shared segment, mapped at the same address in
 * the host, the zygote and every worker, and host-private state, which
 * workers never read after they were forked.
 */
#ifndef PP_ENGINE_INTERNAL_H
#define PP_ENGINE_INTERNAL_H

#define PP_HIDDEN __attribute__((visibility("hidden")))

#include "host.h"
#include "shared.h"
#include "zygote.h"

#endif /* PP_ENGINE_INTERNAL_H */
