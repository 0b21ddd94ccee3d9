/*
 * fnid.h - how a job function is named outside the host's address space.
 *
 * A function is (module, offset from the module's load bias), with the
 * module's path and GNU build-id and, when dladdr finds one, its symbol.
 * These types hold no pointer and need no segment: the host's lookup
 * table (fncache.c) keeps them in the shared header for its workers, and
 * the wire protocol can serialise them as they are.
 */
#ifndef PP_ENGINE_FNID_H
#define PP_ENGINE_FNID_H

#include <limits.h>
#include <stdint.h>

#define PP_MAX_MODULES 256u
#define PP_SYMBOL_MAX 128u
#define PP_BUILD_ID_MAX 32u

struct pp_module {
    char path[PATH_MAX];     /* "" until filled */
    unsigned char build_id[PP_BUILD_ID_MAX];
    uint32_t build_id_len;
    uint32_t is_main;        /* the main program (found by its l_name "") */
};

struct pp_fn_entry {
    uint32_t module;         /* index into the module table */
    uint32_t pad;
    uint64_t offset;         /* from the module's load bias (l_addr) */
    char symbol[PP_SYMBOL_MAX]; /* "" when dladdr found none */
};

#endif /* PP_ENGINE_FNID_H */
