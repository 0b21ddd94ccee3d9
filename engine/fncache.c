/*
 * fncache.c - transparent caching of job functions.
 *
 * A function is known to other processes as (module, offset from the
 * module's load bias), plus the module's GNU build-id (a hash of its
 * content, for checking that a worker or, later, a remote node loads the
 * very same file) and the symbol name when dladdr finds one.  The host
 * gives each distinct function a small id on first use; jobs carry only
 * the id.  Each worker resolves an id once (finding or dlopen-ing the
 * module) and keeps the pointer in a private table, so later jobs of the
 * same function cost an array index.
 *
 * Host side: a lock-free open-addressing table maps pointers to ids; the
 * first use of a function takes fn_lock.  Shared entries are written in
 * full before the id is published in the table (release), and the id
 * reaches a worker only through a ring publication that comes after.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- */
/* Host: module identity                                              */
/* ---------------------------------------------------------------- */

struct build_id_search {
    uintptr_t l_addr;
    const char *name;
    unsigned char *out;
    uint32_t len;
};

/* Reads NT_GNU_BUILD_ID from the loaded program headers of the module whose
 * load bias and name match (no file access). */
static int find_build_id(struct dl_phdr_info *info, size_t size, void *data)
{
    struct build_id_search *q = data;
    (void)size;
    if (info->dlpi_addr != q->l_addr || strcmp(info->dlpi_name, q->name) != 0)
        return 0;
    for (unsigned i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const char *p = (const char *)(info->dlpi_addr + ph->p_vaddr);
        const char *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const void *)p;
            const char *name = p + sizeof(*nh);
            const unsigned char *desc =
                (const void *)(name + ((nh->n_namesz + 3) & ~3u));
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 &&
                memcmp(name, "GNU", 4) == 0) {
                q->len = nh->n_descsz > 32 ? 32 : nh->n_descsz;
                memcpy(q->out, desc, q->len);
                return 1;
            }
            p = (const char *)desc + ((nh->n_descsz + 3) & ~3u);
        }
    }
    return 1;
}

/* Index of the module that holds link map lm, adding it on first sight.
 * Called with fn_lock held. */
static int module_index(struct pp_server *s, struct link_map *lm, uint32_t *ret)
{
    struct pp_shared *sh = s->sh;
    uint32_t n = pp_load_relaxed(&sh->nmodules);

    for (uint32_t i = 0; i < n; i++)
        if (s->module_maps[i] == lm) {
            *ret = i;
            return 0;
        }
    if (n >= PP_MAX_MODULES)
        return -ENOSPC;
    struct pp_module *m = &sh->modules[n];
    memset(m, 0, sizeof(*m));
    if (lm->l_name == NULL || lm->l_name[0] == '\0') {
        ssize_t k = readlink("/proc/self/exe", m->path, sizeof(m->path) - 1);
        if (k < 0)
            return -errno;
        m->path[k] = '\0';
        m->is_main = 1;
    } else {
        if (strlen(lm->l_name) >= sizeof(m->path))
            return -ENAMETOOLONG;
        strcpy(m->path, lm->l_name);
    }
    struct build_id_search q = { lm->l_addr, lm->l_name ? lm->l_name : "",
                                 m->build_id, 0 };
    dl_iterate_phdr(find_build_id, &q);
    m->build_id_len = q.len;
    s->module_maps[n] = lm;
    pp_store_release(&sh->nmodules, n + 1);
    *ret = n;
    return 0;
}

/* ---------------------------------------------------------------- */
/* Host: pointer -> id                                                */
/* ---------------------------------------------------------------- */

static inline uint32_t hash_ptr(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x & (PP_FN_HASH - 1);
}

static bool lookup(struct pp_server *s, void *fn, uint32_t *ret_id)
{
    for (uint32_t h = hash_ptr(fn);; h = (h + 1) & (PP_FN_HASH - 1)) {
        /* Pairs with the release in insert(): id is set before fn. */
        void *v = atomic_load_explicit(&s->fn_hash[h].fn, memory_order_acquire);
        if (v == fn) {
            *ret_id = s->fn_hash[h].id;
            return true;
        }
        if (v == NULL)
            return false;
    }
}

static int describe(struct pp_server *s, void *fn, struct pp_fn_entry *e)
{
    struct dl_find_object dlfo;
    Dl_info info;

    if (_dl_find_object(fn, &dlfo) != 0 || dlfo.dlfo_link_map == NULL)
        return -ENOENT;
    int r = module_index(s, dlfo.dlfo_link_map, &e->module);
    if (r < 0)
        return r;
    e->offset = (uint64_t)((uintptr_t)fn - dlfo.dlfo_link_map->l_addr);
    e->symbol[0] = '\0';
    if (dladdr(fn, &info) && info.dli_sname && info.dli_saddr == fn &&
        strlen(info.dli_sname) < sizeof(e->symbol))
        strcpy(e->symbol, info.dli_sname);
    return 0;
}

int pp__fn_id(struct pp_server *s, pp_fn *fn, uint32_t *ret_id)
{
    void *key = (void *)(uintptr_t)fn;
    int r = 0;

    if (pp_likely(lookup(s, key, ret_id)))
        return 0;
    pthread_mutex_lock(&s->fn_lock);
    if (lookup(s, key, ret_id))
        goto out;
    uint32_t id = pp_load_relaxed(&s->sh->nfns);
    if (id >= PP_MAX_FUNCTIONS) {
        r = -ENOSPC;
        goto out;
    }
    r = describe(s, key, &s->sh->fns[id]);
    if (r < 0)
        goto out;
    pp_store_release(&s->sh->nfns, id + 1);
    uint32_t h = hash_ptr(key);
    while (atomic_load_explicit(&s->fn_hash[h].fn, memory_order_relaxed))
        h = (h + 1) & (PP_FN_HASH - 1);
    s->fn_hash[h].id = id;
    atomic_store_explicit(&s->fn_hash[h].fn, key, memory_order_release);
    *ret_id = id;
out:
    pthread_mutex_unlock(&s->fn_lock);
    return r;
}

/* ---------------------------------------------------------------- */
/* Worker: id -> pointer                                              */
/* ---------------------------------------------------------------- */

struct base_search {
    const char *path;   /* NULL: the main program */
    uintptr_t l_addr;
    bool found;
};

static int find_base(struct dl_phdr_info *info, size_t size, void *data)
{
    struct base_search *q = data;
    (void)size;
    bool match = q->path == NULL ? (info->dlpi_name[0] == '\0')
                                 : strcmp(info->dlpi_name, q->path) == 0;
    if (!match)
        return 0;
    q->l_addr = info->dlpi_addr;
    q->found = true;
    return 1;
}

pp_fn *pp__fn_resolve(struct pp_shared *sh, uint32_t id, char *err, size_t errlen)
{
    if (id >= pp_load_acquire(&sh->nfns)) {
        snprintf(err, errlen, "unknown function id %u", id);
        return NULL;
    }
    const struct pp_fn_entry *e = &sh->fns[id];
    const struct pp_module *m = &sh->modules[e->module];
    struct base_search q = { m->is_main ? NULL : m->path, 0, false };

    /* The first entry dl_iterate_phdr reports is the main program. */
    dl_iterate_phdr(find_base, &q);
    if (!q.found) {
        /* Loaded by the host after this worker's zygote was forked. */
        void *h = dlopen(m->path, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            snprintf(err, errlen, "cannot load %s: %s", m->path, dlerror());
            return NULL;
        }
        struct link_map *lm = NULL;
        if (dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0 || !lm) {
            snprintf(err, errlen, "no link map for %s", m->path);
            return NULL;
        }
        q.l_addr = lm->l_addr;
        if (m->build_id_len) {
            unsigned char bid[32];
            struct build_id_search b = { lm->l_addr, lm->l_name, bid, 0 };
            dl_iterate_phdr(find_build_id, &b);
            if (b.len != m->build_id_len || memcmp(bid, m->build_id, b.len)) {
                snprintf(err, errlen, "%s changed on disk since the host loaded it",
                         m->path);
                return NULL;
            }
        }
    }
    return (pp_fn *)(q.l_addr + e->offset);
}
