/*
 * Description: libFuzzer target for ppserver's configuration (net/conf.c):
 * the INI parser on arbitrary text, and the command-line scanner on
 * arbitrary words.
 *
 * Input: if the first byte is 0x01, the rest is a command line, words
 * separated by NUL bytes (at most 64 words; argv[0] is "ppserver");
 * otherwise the whole input is the text of a config file.  Seeds in
 * corpus/conf/ have both forms.
 *
 * Properties checked (a violation aborts):
 *   - the result is 0 or one of the documented errors, and an error comes
 *     with a message that starts with the expected prefix, NUL-terminated
 *     inside the buffer;
 *   - on success every setting is inside its range and every string field
 *     is NUL-terminated inside its array; the secret has secret_len bytes
 *     and no NUL;
 *   - on a command-line failure *out holds no secret, and no word that
 *     followed a -s (in any form) is left readable in argv.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_conf: %s:%d: check failed: %s\n",          \
                    __FILE__, __LINE__, #cond);                              \
            abort();                                                         \
        }                                                                    \
    } while (0)

#define MAX_WORDS 64

static void check_str(const char *s, size_t cap)
{
    CHECK(memchr(s, '\0', cap) != NULL);
}

static void check_conf(const struct pp_srvconf *c)
{
    CHECK(c->workers == PP_SRVCONF_AUTODETECT ||
          (c->workers >= 1 && c->workers <= PP_SRVCONF_WORKERS_MAX));
    CHECK(c->port >= 0 && c->port <= 65535);
    CHECK(c->proto >= -1 && c->proto <= 255);
    CHECK(c->timeout_s <= PP_SRVCONF_TIMEOUT_MAX);
    CHECK(c->socket_timeout_s <= PP_SRVCONF_TIMEOUT_MAX);
    CHECK(c->max_conns >= 1 && c->max_conns <= 65536);
    CHECK(c->max_pending >= 1 && c->max_pending <= 65536);
    check_str(c->interface, sizeof(c->interface));
    CHECK(c->interface[0] != '\0');
    check_str(c->broadcast, sizeof(c->broadcast));
    check_str(c->log_format, sizeof(c->log_format));
    check_str(c->pid_file, sizeof(c->pid_file));
    check_str(c->cache_dir, sizeof(c->cache_dir));
    CHECK(c->cache_dir[0] != '\0');
    check_str(c->secret_file, sizeof(c->secret_file));
    check_str(c->config_file, sizeof(c->config_file));
    CHECK(c->secret_len <= PP_SRVCONF_SECRET_MAX);
    CHECK(c->secret[c->secret_len] == '\0');
    CHECK(strlen(c->secret) == c->secret_len);
    CHECK((c->secret_len == 0) == (c->secret_src == PP_SECRET_NONE));
}

static void check_err(int r, const char *err, size_t cap, const char *prefix)
{
    CHECK(memchr(err, '\0', cap) != NULL);
    if (r == 0)
        return;
    CHECK(strncmp(err, prefix, strlen(prefix)) == 0);
}

static void fuzz_ini(const uint8_t *data, size_t size)
{
    struct pp_srvconf c;
    char err[512];
    memset(err, 'E', sizeof(err));
    pp_srvconf_defaults(&c);
    int r = pp_srvconf_parse_ini((const char *)data, size, "fuzz.conf", &c, err, sizeof(err));
    CHECK(r == 0 || r == -EINVAL);
    check_err(r, err, sizeof(err), "ppserver: fuzz.conf:");
    if (r == 0)
        check_conf(&c);
    pp_srvconf_wipe(&c);
}

/* Was word i the value of a -s (separate "-s" "X", or attached "-sX")?
 * A rough model of the scanner: only used on words it must have wiped. */
static size_t secret_offset(char **orig, int i)
{
    const char *w = orig[i];
    if (w[0] == '-' && w[1] == 's' && w[2])
        return 2;
    return (size_t)-1;
}

static void fuzz_argv(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    char *orig[MAX_WORDS + 1];
    char *argv[MAX_WORDS + 1];
    int argc = 0;

    CHECK(copy);
    memcpy(copy, data, size);
    copy[size] = '\0';
    argv[argc++] = "ppserver";
    for (size_t pos = 0; pos <= size && argc < MAX_WORDS; ) {
        argv[argc++] = copy + pos;
        pos += strlen(copy + pos) + 1;
    }
    argv[argc] = NULL;
    for (int i = 0; i <= argc; i++)
        orig[i] = argv[i] ? strdup(argv[i]) : NULL;

    struct pp_srvconf c;
    char err[512];
    memset(err, 'E', sizeof(err));
    int r = pp_srvconf_parse(argc, argv, &c, err, sizeof(err));
    CHECK(r <= 0);
    check_err(r, err, sizeof(err), "ppserver: ");
    if (r == 0 && !c.help)
        check_conf(&c);
    if (r < 0) {
        for (size_t i = 0; i < sizeof(c.secret); i++)
            CHECK(c.secret[i] == '\0');
    }
    /* Exactly-"-sX" words outside "--" and not the value of another
     * flag: the part after "-s" must be gone.  Only checked when the
     * word before is no flag that takes a value. */
    bool dashdash = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(orig[i], "--"))
            dashdash = true;
        if (dashdash)
            break;
        const char *prev = orig[i - 1];
        bool prev_takes = i > 1 && prev[0] == '-' && prev[1] && prev[1] != '-' &&
                          strchr("fncibpwstkP", prev[strlen(prev) - 1]) != NULL;
        if (prev_takes || (i > 1 && prev[0] == '-' && prev[1] == '-'))
            continue;
        if (secret_offset(orig, i) == 2)
            CHECK(argv[i][2] == '\0');
    }
    if (r == 0)
        pp_srvconf_wipe(&c);
    for (int i = 0; i <= argc; i++)
        free(orig[i]);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size && data[0] == 0x01)
        fuzz_argv(data + 1, size - 1);
    else
        fuzz_ini(data, size);
    return 0;
}
