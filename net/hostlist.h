/*
 * hostlist.h - Slurm hostlist expansion: what `scontrol show hostnames`
 * prints for a list such as SLURM_JOB_NODELIST ("tux[01-03,7],login1").
 *
 * A pure function on a string: no allocation, no I/O, no global state.
 * It exists so that a pp client started inside a Slurm allocation can
 * name its nodes from the job's node list without running scontrol.
 *
 * Grammar accepted (ABNF, RFC 5234; bytes, not characters):
 *
 *   list     = *sep [ item *( 1*sep item ) *sep ]
 *   sep      = "," / SP / HTAB / LF / CR
 *   item     = 1*( text / group )
 *   text     = 1*namechar
 *   namechar = %x21-2B / %x2D-5A / %x5C / %x5E-7E
 *                          ; printable ASCII except "," "[" "]"
 *   group    = "[" elem *( "," elem ) "]"
 *   elem     = num [ "-" num ]          ; lower bound <= upper bound
 *   num      = 1*DIGIT                  ; value 0..4294967295
 *
 * Why this shape.  Slurm splits a list at commas, blanks and newlines
 * outside brackets, and collapses runs of them, so empty items ("a,,b",
 * a trailing comma, a list of only separators) name nothing and are
 * skipped, as Slurm skips them; an empty list expands to no names and
 * returns 0.  A comma inside brackets separates elements of the group.
 * Text outside brackets is copied as it is: digits there are literal
 * ("n007" stays "n007").  Groups may appear anywhere in an item, next to
 * each other ("a[1-2][1-2]") and with text after the last one
 * ("n[1-2]-ib"), which current Slurm accepts too.
 *
 * Expansion.  An item names every combination of its groups' numbers,
 * in Slurm's order: groups vary like an odometer, the last one fastest
 * ("r[1-2]n[1-2]" -> r1n1 r1n2 r2n1 r2n2); within a group, elements in
 * the order written, each range ascending ("n[3,1-2]" -> n3 n1 n2).
 * Items come in list order; nothing is sorted and duplicates are kept,
 * as `scontrol show hostnames` prints them.
 *
 * Padding.  As in Slurm (_parse_single_range: width = strlen of the lower
 * bound), every number of an element is written with at least as many
 * digits as that element's lower bound was written with, zero-filled;
 * the upper bound's spelling does not matter:
 *   n[01-10]  -> n01 .. n10      n[8-10]  -> n8 n9 n10
 *   n[001-10] -> n001 .. n010    n[1-010] -> n1 .. n10
 *   n[098-100] -> n098 n099 n100 n[1,02,003] -> n1 n02 n003
 *
 * Limits.  Every name is checked against PP_HOSTLIST_NAME_MAX and the
 * whole list against max_hosts before fn is called once: the count and
 * the longest name of each item follow from its groups without expanding
 * it, so a short list that would name 2^40 hosts costs one pass over its
 * bytes, never a long loop.
 *
 * Known differences from Slurm (src/common/hostlist.c as in current
 * releases; older ones also refused text after the last group and read
 * a "[" without its "]" as text):
 *   - Slurm keeps any byte but its separators in a name; here a name is
 *     printable ASCII (host names are), so control bytes, DEL and bytes
 *     >= 0x80 are -EINVAL.  A "]" outside brackets, which Slurm keeps as
 *     text, is -EINVAL.  CR is a separator here too (lists read from
 *     CRLF files); Slurm's separators are comma, space, tab and LF.
 *   - Inside brackets Slurm reads numbers with strtoul, so it takes
 *     "n[ 1]" or "n[+1]" (as n01 and n01, the width being the spelling's
 *     length), reads "n[1-]" as n1, and lets an overlong number saturate
 *     at ULONG_MAX; here an element is digits only, "lo" or "lo-hi", and
 *     a number above 4294967295 is -EINVAL.
 *   - Slurm refuses one range of more than 65536 hosts (MAX_RANGE) and
 *     a group other than the last with more than 65536 numbers
 *     (MAX_PREFIX_CNT); here only max_hosts counts.
 *   - The multi-dimensional forms (base-36 coordinates and "AxB" boxes,
 *     for Slurm built with more than one dimension) are not supported.
 *   - Slurm reads a trailing number of a plain name back through
 *     strtoul, so a suffix beyond unsigned long comes out changed; here
 *     plain text is never reinterpreted.
 *
 * Errors.  pp_hostlist_expand returns the number of names, or -errno:
 *   -EINVAL  list is NULL, or malformed anywhere in it (checked first,
 *            over the whole list);
 *   -E2BIG   well formed, but a name would be longer than
 *            PP_HOSTLIST_NAME_MAX, an item has more than
 *            PP_HOSTLIST_GROUPS_MAX groups, or the list names more than
 *            max_hosts hosts (or more than INT_MAX);
 *   <0       whatever negative value fn returned, which stopped the walk.
 * fn is never called for a list that fails with -EINVAL or -E2BIG: a
 * list is taken whole or not at all.
 *
 * Ownership.  host points at a buffer of the call's own, valid only until
 * fn returns: copy the name to keep it.  ctx is passed through untouched.
 *
 * Threading.  Reentrant; touches only its arguments and its own stack
 * (about 2 KiB).  fn may call pp_hostlist_expand again.
 */
#ifndef PP_NET_HOSTLIST_H
#define PP_NET_HOSTLIST_H

#ifdef __cplusplus
extern "C" {
#endif

#define PP_HOSTLIST_NAME_MAX   255u  /* bytes in one name, NUL not counted (DNS: 253) */
#define PP_HOSTLIST_GROUPS_MAX 32u   /* bracket groups in one item */

/*
 * pp_hostlist_expand - call fn(ctx, name) once for each host that list
 * names, in order (see the top of this file), after checking the whole
 * list.  fn returns >= 0 to go on, or a negative value to stop the walk,
 * which then returns that value.  fn may be NULL to check and count only.
 * Returns the number of names (at most max_hosts), -EINVAL, -E2BIG or
 * fn's negative value.
 */
int pp_hostlist_expand(const char *list, int (*fn)(void *ctx, const char *host), void *ctx,
                       unsigned max_hosts);

#ifdef __cplusplus
}
#endif

#endif /* PP_NET_HOSTLIST_H */
