/*
 * template.c - pp's Template: a function and submit options fixed once.
 *
 * The function id and the group index are looked up when the template is
 * made, so each submission skips both lookups.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

struct pp_template {
    struct pp_server *srv;
    uint32_t fn_id;
    uint32_t group;
    void (*cb)(pp_task *, void *);
    void *cb_arg;
};

PP_EXPORT int pp_template_new(pp_server *s, pp_fn *fn,
                              const struct pp_submit_opts *opts,
                              pp_template **ret)
{
    struct pp_template *t;
    uint32_t id, g = 0;
    int r;

    if (!s || !fn || !ret)
        return -EINVAL;
    if (opts && opts->group && (r = pp__group_index(s, opts->group, true, &g)) < 0)
        return r;
    if ((r = pp__fn_id(s, fn, &id)) < 0)
        return r;
    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->srv = s;
    t->fn_id = id;
    t->group = g;
    t->cb = opts ? opts->callback : NULL;
    t->cb_arg = opts ? opts->callback_arg : NULL;
    *ret = t;
    return 0;
}

PP_EXPORT int pp_template_submit(pp_template *t, const void *arg, size_t len,
                                 pp_task **ret)
{
    if (!t || (!arg && len))
        return -EINVAL;
    return pp__submit_id(t->srv, t->fn_id, t->group, arg, len, 0, t->cb,
                         t->cb_arg, ret);
}

void pp__template_ids(const pp_template *t, struct pp_server **srv, uint32_t *fn_id,
                      uint32_t *group)
{
    *srv = t->srv;
    *fn_id = t->fn_id;
    *group = t->group;
}

PP_EXPORT void pp_template_destroy(pp_template *t)
{
    free(t);
}
