/*
 * segment.c - memfd + mmap for the shared segment.
 */
#define _GNU_SOURCE
#include "segment.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

int pp_segment_create(struct pp_segment *seg, size_t size)
{
    long pg = sysconf(_SC_PAGESIZE);
    int r;

    seg->fd = -1;
    seg->base = NULL;
    seg->size = 0;
    size = (size + (size_t)pg - 1) & ~((size_t)pg - 1);
    seg->fd = memfd_create("pp-segment", MFD_CLOEXEC);
    if (seg->fd < 0)
        return -errno;
    if (ftruncate(seg->fd, (off_t)size) < 0)
        goto err;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_NORESERVE, seg->fd, 0);
    if (p == MAP_FAILED)
        goto err;
    seg->base = p;
    seg->size = size;
    return 0;
err:
    r = -errno;
    close(seg->fd);
    seg->fd = -1;
    return r;
}

void pp_segment_destroy(struct pp_segment *seg)
{
    if (seg->base)
        munmap(seg->base, seg->size);
    if (seg->fd >= 0)
        close(seg->fd);
    seg->base = NULL;
    seg->fd = -1;
    seg->size = 0;
}
