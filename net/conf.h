/*
 * conf.h - ppserver's configuration: command line, config file, secrets.
 *
 * ppserver keeps pp's command line (-h -d -a -r -f -n -c -i -b -p -w -s
 * -t -k -P) and pp's INI config file (sections [general] and [network]),
 * and adds a few long options of its own (--cache-dir, --secret-file,
 * --max-conns, --max-pending).  Two things differ from pp on purpose:
 *
 *   - there is no default secret: parsing fails unless one is given;
 *   - the default interface is 127.0.0.1 (pp listens on every interface)
 *     and the default socket timeout is 3 s (pp's hour is what makes a pp
 *     client hang on a dead node).
 *
 * Precedence, lowest first: built-in defaults, the config file (-c),
 * command-line flags.  For the secret: PP_SECRET in the environment, then
 * the config file's secret=, then --secret-file, then -s.
 *
 * Files that hold the secret must be private: a regular file owned by the
 * effective user, with no group or other permission bits (mode & 077 ==
 * 0).  A config file without a secret may be world-readable, but never
 * writable by group or others, and it must belong to the effective user
 * or to root (so /etc/ppserver.conf works for everyone).
 *
 * Errors.  Functions return 0 on success and -errno on failure, with a
 * one-line message ("ppserver: ...") in err[0..errlen) when err is not
 * NULL (and "" there on success): -EINVAL for a bad flag or value, -EACCES for a file that is not
 * private enough, -ENOENT (and any other open/read errno) for a file that
 * cannot be read, -EFBIG for a file over its size limit.
 *
 * Ownership.  struct pp_srvconf holds no pointers: every string is an
 * array inside it, so it can be copied, and the only thing to release is
 * the secret: call pp_srvconf_wipe() when done with it.
 *
 * Threading.  pp_srvconf_parse reads and changes the environment
 * (getenv, unsetenv) and is meant for ppserver's main() before it starts
 * threads.  The other functions touch only their arguments.
 */
#ifndef PP_NET_CONF_H
#define PP_NET_CONF_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PP_SRVCONF_SECRET_MAX   1024u   /* secret bytes, NUL not counted */
#define PP_SRVCONF_NAME_MAX     256u    /* interface, broadcast, log format (with NUL) */
#define PP_SRVCONF_PATH_MAX     4096u   /* file and directory paths (with NUL) */
#define PP_SRVCONF_FILE_MAX     (64u * 1024)  /* largest config file read */

#define PP_SRVCONF_AUTODETECT   (-1)    /* workers: the effective CPUs */
#define PP_SRVCONF_WORKERS_MAX  256     /* = PP_MAX_WORKERS; net/ does not include pp.h */
#define PP_SRVCONF_PORT         60000   /* pp's default port */
#define PP_SRVCONF_SOCKET_TIMEOUT 3u    /* seconds */
#define PP_SRVCONF_MAX_CONNS    64u
#define PP_SRVCONF_MAX_PENDING  16u
/* Largest -t / -k, so that the value in milliseconds still fits an int
 * (poll, epoll_wait and the loop's timers take int milliseconds). */
#define PP_SRVCONF_TIMEOUT_MAX  2147483u

/* Where the secret came from, for ppserver's startup log line. */
enum pp_secret_src {
    PP_SECRET_NONE = 0,
    PP_SECRET_ENV,            /* PP_SECRET */
    PP_SECRET_CONFIG,         /* secret= in the -c file */
    PP_SECRET_FILE,           /* --secret-file */
    PP_SECRET_ARGV,           /* -s */
};

struct pp_srvconf {
    int workers;              /* -w: 1..PP_SRVCONF_WORKERS_MAX, or AUTODETECT */
    int port;                 /* -p: 0..65535; 0 = an ephemeral port */
    char interface[PP_SRVCONF_NAME_MAX];  /* -i: address to listen on */
    char broadcast[PP_SRVCONF_NAME_MAX];  /* -b: beacons go here (with -a); "" = none */
    bool autodiscovery;       /* -a: answer discovery queries (UDP, disc.h) */
    bool restart;             /* -r: restart a worker after each job */
    bool debug;               /* -d: log at debug level */
    bool help;                /* -h/--help: print pp_srvconf_usage(), exit */
    bool slurm;               /* --slurm: a task of a Slurm step (slurm.h) */
    char log_format[PP_SRVCONF_NAME_MAX]; /* -f: stored; "" = the default */
    int proto;                /* -n: pickle protocol; accepted, no meaning here */
    unsigned timeout_s;       /* -t: exit after this long without a client; 0 = never */
    unsigned socket_timeout_s; /* -k: a connection silent this long is dead; 0 = never */
    char pid_file[PP_SRVCONF_PATH_MAX];   /* -P: "" = none */
    char cache_dir[PP_SRVCONF_PATH_MAX];  /* --cache-dir: the code cache */
    char secret_file[PP_SRVCONF_PATH_MAX]; /* --secret-file given, "" = none */
    char config_file[PP_SRVCONF_PATH_MAX]; /* -c given, "" = none */
    unsigned max_conns;       /* --max-conns: client connections at once */
    unsigned max_pending;     /* --max-pending: handshakes in progress at once */
    enum pp_secret_src secret_src;
    size_t secret_len;        /* bytes in secret, 1..PP_SRVCONF_SECRET_MAX */
    char secret[PP_SRVCONF_SECRET_MAX + 1]; /* NUL-terminated; no NUL inside */
};

/*
 * pp_srvconf_defaults - fill *out with the built-in defaults: workers
 * AUTODETECT, port 60000, interface 127.0.0.1, socket timeout 3 s,
 * max_conns 64, max_pending 16, no secret, and cache_dir
 * $XDG_CACHE_HOME/pp/ppserver, else $HOME/.cache/pp/ppserver, else
 * /var/cache/pp/ppserver (an XDG_CACHE_HOME that is not absolute is
 * ignored, as the XDG spec says).  Reads the environment; never fails.
 */
void pp_srvconf_defaults(struct pp_srvconf *out);

/*
 * pp_srvconf_parse - ppserver's whole configuration from argv.
 *
 * Defaults, then the -c file, then every other flag, whatever their order
 * on the command line.  Short flags cluster (-dar) and take their value
 * attached or as the next word (-p60000, -p 60000); long options take
 * --opt=VALUE or --opt VALUE; "--" ends the options; any other word is an
 * error (ppserver takes no operands).
 *
 * Every -s value is copied and then overwritten with NUL bytes in argv
 * itself, even when some other word is wrong, so that ps(1) and
 * /proc/PID/cmdline stop showing it ("-s" "X" leaves "-s" ""; "-sX"
 * leaves "-s"); argv[0] and the other words are left alone.  PP_SECRET
 * is removed from the environment once read, so that the session agents,
 * which run clients' code, never inherit it.
 *
 * With -h or --help, returns 0 with out->help set as soon as argv parses:
 * the config file is not read and no secret is required.
 *
 * Returns 0 and fills *out, or -errno with the message in err (see the
 * top of this file); on failure *out is zeroed, so no secret remains in
 * it.  After success, call pp_srvconf_wipe(out) when done.
 */
int pp_srvconf_parse(int argc, char **argv, struct pp_srvconf *out,
                     char *err, size_t errlen);

/*
 * pp_srvconf_parse_ini - apply INI text[0..len) to *out, which the caller
 * has filled (pp_srvconf_defaults).  name (may be NULL) is used in
 * messages: "ppserver: NAME:LINE: ...".  The text need not be
 * NUL-terminated and is only read.
 *
 * Format (pp's): "[section]" lines and "key = value" lines; blank lines
 * and lines whose first non-blank character is '#' or ';' are comments;
 * an unquoted value ends at a '#' or ';' that follows whitespace (an
 * inline comment); a value in "double" or 'single' quotes is taken as
 * written; "\r\n" line ends are fine.  Sections and keys, as in pp
 * (names are case-sensitive) plus cache_dir, max_conns and max_pending:
 *   [general]  secret workers restart debug proto pid_file cache_dir
 *   [network]  interface port broadcast autodiscovery timeout
 *              socket_timeout max_conns max_pending
 * Booleans are true/false/yes/no/on/off/1/0 in any case.  A key given
 * twice: the last one wins.  An unknown section or key, a key outside a
 * section, a line that is neither, or a NUL byte is an error naming the
 * line.  secret= sets out->secret_src to PP_SECRET_CONFIG.
 *
 * Returns 0, or -EINVAL with the message; *out may then be partly
 * changed (its secret included: wipe it).
 */
int pp_srvconf_parse_ini(const char *text, size_t len, const char *name,
                         struct pp_srvconf *out, char *err, size_t errlen);

/* pp_srvconf_usage - the --help text (static; ends with a newline). */
const char *pp_srvconf_usage(void);

/*
 * pp_read_secret_file - read a shared secret from a private file.
 *
 * The path must name a regular file, not a symbolic link (O_NOFOLLOW),
 * owned by the effective user, with mode & 077 == 0; it is checked with
 * fstat on the opened descriptor, so it cannot be swapped between check
 * and read.  One trailing "\n" or "\r\n" is stripped (editors add one);
 * what remains must be 1..cap-1 bytes with no NUL byte in it.  buf is
 * NUL-terminated.  Also used by libpp for pp_config.secret_file.
 *
 * Returns 0 and *ret_len (bytes, NUL not counted), or -EINVAL (bad
 * arguments, empty, a NUL byte), -EACCES (a symlink, not a regular file,
 * another owner, group or other bits), -EFBIG (longer than cap-1), or the
 * errno of open/read (-ENOENT ...), each with a message naming the path.
 * On failure buf holds no part of the file (it is wiped).
 */
int pp_read_secret_file(const char *path, char *buf, size_t cap, size_t *ret_len,
                        char *err, size_t errlen);

/* pp_srvconf_wipe - zero the secret in a way the compiler keeps.  NULL is fine. */
void pp_srvconf_wipe(struct pp_srvconf *conf);

#ifdef __cplusplus
}
#endif

#endif /* PP_NET_CONF_H */
