/*
 * cpus.h - the cgroup CPU quota reader behind pp_detect_ncpus, kept apart
 * so tests can feed it fixture files instead of /proc and /sys.
 *
 * Plain C with no shm/ headers, so C++ tests can include it.
 */
#ifndef PP_ENGINE_CPUS_H
#define PP_ENGINE_CPUS_H

#ifndef PP_HIDDEN /* the same definition as internal.h's */
#define PP_HIDDEN __attribute__((visibility("hidden")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The CPU quota of this process's cgroups: ceil(quota / period) of the
 * tightest limit on the path from the process's cgroup up to its mount
 * root, over the v1 cpu controller and the v2 hierarchy.
 *
 * proc_cgroup and mountinfo are files in the format of /proc/self/cgroup
 * and /proc/self/mountinfo; prefix is prepended to every mount point
 * ("" for the real system).  Unreadable, missing or malformed cgroup
 * files count as "no limit" at their level.
 *
 * Returns the CPU count (>= 1), 0 when nothing limits the process, or
 * -errno when proc_cgroup or mountinfo cannot be read.  Allocates
 * nothing, prints nothing.
 */
PP_HIDDEN int pp__cgroup_ncpus(const char *proc_cgroup, const char *mountinfo,
                               const char *prefix);

#ifdef __cplusplus
}
#endif

#endif
