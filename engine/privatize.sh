#!/bin/sh
# Makes jemalloc private to libpp.
#
#   privatize.sh OUT.o CORE.a JEMALLOC_PIC.a
#
# 1. Renames jemalloc's standard allocator entry points (malloc, free, ...)
#    so that libpp's own calls to malloc/free keep going to the host's
#    allocator, and only mallocx/dallocx/mallctl reach jemalloc.
# 2. Links libpp's objects and the jemalloc members they need into one
#    relocatable object (ld -r).
# 3. Makes every global symbol local except the exported pp_* API (hidden
#    visibility marks internal names), so neither
#    libpp.a nor libpp.so exports a single jemalloc symbol: a host that
#    links libpp keeps its own malloc.
set -eu
out=$1 core=$2 je=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for s in malloc free calloc realloc aligned_alloc memalign posix_memalign \
         valloc malloc_usable_size; do
    echo "$s pp__je_$s"
done > "$tmp/rename.syms"
objcopy --redefine-syms="$tmp/rename.syms" "$je" "$tmp/je.a"
ld -r -o "$tmp/all.o" --whole-archive "$core" --no-whole-archive "$tmp/je.a"
objcopy --localize-hidden --wildcard --keep-global-symbol='pp_[a-z]*' \
    "$tmp/all.o" "$out"
