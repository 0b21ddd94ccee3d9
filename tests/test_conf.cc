// Description: ppserver's configuration (net/conf.c): every flag and its
// range, config file then flags, the INI dialect, where the secret comes
// from and in which order, -s wiped from argv, and the private-file rules
// for secret and config files.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "conf.h"

namespace {

// A private temporary directory, removed with everything in it.
struct TmpDir {
    std::string path;
    TmpDir()
    {
        char tmpl[] = "/tmp/pp-conf-XXXXXX";
        const char *p = mkdtemp(tmpl);
        EXPECT_NE(p, nullptr) << strerror(errno);
        path = p ? p : "/tmp";
    }
    ~TmpDir() { std::filesystem::remove_all(path); }
    std::string operator/(const std::string &name) const { return path + "/" + name; }
};

// Write a file and set its mode exactly (whatever the umask).
std::string put(const std::string &path, const std::string &text, mode_t mode)
{
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << path << ": " << strerror(errno);
    if (fd < 0)
        return path;
    EXPECT_EQ(write(fd, text.data(), text.size()), (ssize_t)text.size());
    EXPECT_EQ(fchmod(fd, mode), 0);
    close(fd);
    return path;
}

// A writable argv (pp_srvconf_parse wipes -s values in place).
struct Argv {
    std::vector<std::vector<char>> words;
    std::vector<char *> ptrs;
    Argv(std::initializer_list<std::string> list)
    {
        words.push_back(std::vector<char>{'p', 'p', 's', 'e', 'r', 'v', 'e', 'r', '\0'});
        for (const std::string &w : list) {
            words.emplace_back(w.begin(), w.end());
            words.back().push_back('\0');
        }
        for (auto &w : words)
            ptrs.push_back(w.data());
        ptrs.push_back(nullptr);
    }
    int argc() const { return (int)words.size(); }
    char **argv() { return ptrs.data(); }
    std::string word(size_t i) const { return std::string(words[i].data()); }
    // True if every byte of word i from `from` up to its original end is 0.
    bool zeroed(size_t i, size_t from) const
    {
        for (size_t k = from; k + 1 < words[i].size(); k++)
            if (words[i][k] != '\0')
                return false;
        return true;
    }
};

class Conf : public ::testing::Test {
protected:
    pp_srvconf c{};
    char err[2048] = "";

    void SetUp() override
    {
        unsetenv("PP_SECRET");
        save("HOME", home_);
        save("XDG_CACHE_HOME", xdg_);
    }
    void TearDown() override
    {
        pp_srvconf_wipe(&c);
        unsetenv("PP_SECRET");
        restore("HOME", home_);
        restore("XDG_CACHE_HOME", xdg_);
    }
    int parse(Argv &a) { return pp_srvconf_parse(a.argc(), a.argv(), &c, err, sizeof(err)); }
    int parse(std::initializer_list<std::string> list)
    {
        Argv a(list);
        return parse(a);
    }
    std::string msg() const { return err; }
    int ini(const std::string &text)
    {
        pp_srvconf_defaults(&c);
        return pp_srvconf_parse_ini(text.data(), text.size(), "t.conf", &c, err, sizeof(err));
    }

private:
    struct Saved {
        bool set = false;
        std::string value;
    } home_, xdg_;
    static void save(const char *name, Saved &s)
    {
        const char *v = getenv(name);
        s.set = v != nullptr;
        s.value = v ? v : "";
    }
    static void restore(const char *name, const Saved &s)
    {
        if (s.set)
            setenv(name, s.value.c_str(), 1);
        else
            unsetenv(name);
    }
};

bool all_zero(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

}  // namespace

/****  Defaults and every flag  ****/

TEST_F(Conf, Defaults)
{
    setenv("HOME", "/home/u", 1);
    unsetenv("XDG_CACHE_HOME");
    ASSERT_EQ(parse({"-s", "k"}), 0) << msg();
    EXPECT_EQ(c.workers, PP_SRVCONF_AUTODETECT);
    EXPECT_EQ(c.port, 60000);
    EXPECT_STREQ(c.interface, "127.0.0.1");
    EXPECT_STREQ(c.broadcast, "");
    EXPECT_FALSE(c.autodiscovery);
    EXPECT_FALSE(c.restart);
    EXPECT_FALSE(c.debug);
    EXPECT_FALSE(c.help);
    EXPECT_STREQ(c.log_format, "");
    EXPECT_EQ(c.timeout_s, 0u);
    EXPECT_EQ(c.socket_timeout_s, 3u);
    EXPECT_STREQ(c.pid_file, "");
    EXPECT_STREQ(c.cache_dir, "/home/u/.cache/pp/ppserver");
    EXPECT_STREQ(c.secret_file, "");
    EXPECT_STREQ(c.config_file, "");
    EXPECT_EQ(c.max_conns, 64u);
    EXPECT_EQ(c.max_pending, 16u);
    EXPECT_STREQ(c.secret, "k");
    EXPECT_EQ(c.secret_len, 1u);
    EXPECT_EQ(c.secret_src, PP_SECRET_ARGV);
}

TEST_F(Conf, CacheDirDefault)
{
    setenv("HOME", "/home/u", 1);
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    pp_srvconf_defaults(&c);
    EXPECT_STREQ(c.cache_dir, "/xdg/pp/ppserver");
    setenv("XDG_CACHE_HOME", "relative/xdg", 1);  // the XDG spec: ignore it
    pp_srvconf_defaults(&c);
    EXPECT_STREQ(c.cache_dir, "/home/u/.cache/pp/ppserver");
    unsetenv("XDG_CACHE_HOME");
    unsetenv("HOME");
    pp_srvconf_defaults(&c);
    EXPECT_STREQ(c.cache_dir, "/var/cache/pp/ppserver");
}

TEST_F(Conf, EveryFlag)
{
    TmpDir d;
    std::string sf = put(d / "secret", "from-file\n", 0600);
    ASSERT_EQ(parse({"-d", "-a", "-r", "-f", "%(message)s", "-n", "4", "-i", "0.0.0.0",
                     "-b", "10.0.0.255", "-p", "1234", "-w", "8", "-t", "30", "-k", "7",
                     "-P", "/run/pp.pid", "--cache-dir", "/var/c", "--max-conns", "5",
                     "--max-pending", "2", "--secret-file", sf, "--slurm"}), 0) << msg();
    EXPECT_TRUE(c.debug);
    EXPECT_TRUE(c.slurm);
    EXPECT_TRUE(c.autodiscovery);
    EXPECT_TRUE(c.restart);
    EXPECT_STREQ(c.log_format, "%(message)s");
    EXPECT_EQ(c.proto, 4);
    EXPECT_STREQ(c.interface, "0.0.0.0");
    EXPECT_STREQ(c.broadcast, "10.0.0.255");
    EXPECT_EQ(c.port, 1234);
    EXPECT_EQ(c.workers, 8);
    EXPECT_EQ(c.timeout_s, 30u);
    EXPECT_EQ(c.socket_timeout_s, 7u);
    EXPECT_STREQ(c.pid_file, "/run/pp.pid");
    EXPECT_STREQ(c.cache_dir, "/var/c");
    EXPECT_EQ(c.max_conns, 5u);
    EXPECT_EQ(c.max_pending, 2u);
    EXPECT_STREQ(c.secret_file, sf.c_str());
    EXPECT_STREQ(c.secret, "from-file");
    EXPECT_EQ(c.secret_src, PP_SECRET_FILE);
    EXPECT_FALSE(c.help);
}

TEST_F(Conf, ClusteredAndAttachedForms)
{
    ASSERT_EQ(parse({"-dar", "-p1234", "-w8", "-sk", "--cache-dir=/x", "--max-conns=9"}), 0)
        << msg();
    EXPECT_TRUE(c.debug && c.autodiscovery && c.restart);
    EXPECT_EQ(c.port, 1234);
    EXPECT_EQ(c.workers, 8);
    EXPECT_STREQ(c.secret, "k");
    EXPECT_STREQ(c.cache_dir, "/x");
    EXPECT_EQ(c.max_conns, 9u);
    // A switch, then a flag with its value in the next word.
    ASSERT_EQ(parse({"-dp", "77", "-s", "k"}), 0) << msg();
    EXPECT_TRUE(c.debug);
    EXPECT_EQ(c.port, 77);
    // "--" ends the options.
    ASSERT_EQ(parse({"-s", "k", "--"}), 0) << msg();
}

TEST_F(Conf, LastFlagWins)
{
    ASSERT_EQ(parse({"-p", "1", "-p", "2", "-s", "a", "-s", "b"}), 0) << msg();
    EXPECT_EQ(c.port, 2);
    EXPECT_STREQ(c.secret, "b");
}

TEST_F(Conf, Help)
{
    // No secret and a config file that does not exist: neither matters.
    ASSERT_EQ(parse({"-h", "-c", "/nonexistent/pp.conf"}), 0) << msg();
    EXPECT_TRUE(c.help);
    ASSERT_EQ(parse({"--help"}), 0) << msg();
    EXPECT_TRUE(c.help);
    ASSERT_EQ(parse({"-dh"}), 0) << msg();
    EXPECT_TRUE(c.help);
    // ...but argv must still parse.
    EXPECT_EQ(parse({"-h", "-x"}), -EINVAL);
    EXPECT_EQ(parse({"--help=yes"}), -EINVAL);
    EXPECT_NE(msg().find("--help takes no value"), std::string::npos) << msg();
}

TEST_F(Conf, Workers)
{
    ASSERT_EQ(parse({"-s", "k", "-w", "autodetect"}), 0);
    EXPECT_EQ(c.workers, PP_SRVCONF_AUTODETECT);
    ASSERT_EQ(parse({"-s", "k", "-w", "-1"}), 0);
    EXPECT_EQ(c.workers, PP_SRVCONF_AUTODETECT);
    ASSERT_EQ(parse({"-s", "k", "-w", "1"}), 0);
    EXPECT_EQ(c.workers, 1);
    ASSERT_EQ(parse({"-s", "k", "-w", "256"}), 0);
    EXPECT_EQ(c.workers, 256);

    EXPECT_EQ(parse({"-s", "k", "-w", "abc"}), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: -w: not a number: 'abc'");
    for (const char *bad : {"0", "257", "-2", "99999999999999999999999"}) {
        EXPECT_EQ(parse({"-s", "k", "-w", bad}), -EINVAL) << bad;
        EXPECT_NE(msg().find("ppserver: -w: out of range"), std::string::npos) << msg();
    }
    for (const char *bad : {"", " 4", "4 ", "+4", "0x10", "4k", "-"}) {
        EXPECT_EQ(parse({"-s", "k", "-w", bad}), -EINVAL) << "'" << bad << "'";
        EXPECT_NE(msg().find("not a number"), std::string::npos) << msg();
    }
}

TEST_F(Conf, NumberRanges)
{
    ASSERT_EQ(parse({"-s", "k", "-p", "0"}), 0);
    EXPECT_EQ(c.port, 0);
    ASSERT_EQ(parse({"-s", "k", "-p", "65535"}), 0);
    EXPECT_EQ(c.port, 65535);
    EXPECT_EQ(parse({"-s", "k", "-p", "65536"}), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: -p: port out of range (0..65535): '65536'");
    EXPECT_EQ(parse({"-s", "k", "-p", "-1"}), -EINVAL);
    EXPECT_NE(msg().find("port out of range"), std::string::npos) << msg();

    ASSERT_EQ(parse({"-s", "k", "-t", "0", "-k", "0"}), 0);
    EXPECT_EQ(c.timeout_s, 0u);
    EXPECT_EQ(c.socket_timeout_s, 0u);
    ASSERT_EQ(parse({"-s", "k", "-t", "2147483", "-k", "2147483"}), 0);
    EXPECT_EQ(c.timeout_s, PP_SRVCONF_TIMEOUT_MAX);
    EXPECT_EQ(parse({"-s", "k", "-t", "2147484"}), -EINVAL);
    EXPECT_NE(msg().find("-t: out of range"), std::string::npos) << msg();
    EXPECT_EQ(parse({"-s", "k", "-k", "-1"}), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: -k: out of range (0..2147483 seconds): '-1'");

    EXPECT_EQ(parse({"-s", "k", "--max-conns", "0"}), -EINVAL);
    EXPECT_NE(msg().find("--max-conns: out of range"), std::string::npos) << msg();
    EXPECT_EQ(parse({"-s", "k", "--max-pending", "65537"}), -EINVAL);
    EXPECT_NE(msg().find("--max-pending: out of range"), std::string::npos) << msg();

    ASSERT_EQ(parse({"-s", "k", "-n", "-1"}), 0);
    EXPECT_EQ(c.proto, -1);
    EXPECT_EQ(parse({"-s", "k", "-n", "two"}), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: -n: not a number: 'two'");
}

TEST_F(Conf, BadCommandLines)
{
    struct Case {
        std::initializer_list<std::string> args;
        const char *want;
    };
    const Case cases[] = {
        {{"-s", "k", "-x"}, "ppserver: unknown option '-x' (see --help)"},
        {{"-s", "k", "--frobnicate"}, "ppserver: unknown option '--frobnicate' (see --help)"},
        {{"-s", "k", "-p"}, "ppserver: -p: needs a value"},
        {{"-s", "k", "--cache-dir"}, "ppserver: --cache-dir: needs a value"},
        {{"-s", "k", "stray"}, "ppserver: unexpected argument 'stray'"},
        {{"-s", "k", "-"}, "ppserver: unexpected argument '-'"},
        {{"-s", "k", "--", "-p"}, "ppserver: unexpected argument '-p'"},
        {{"-s", "k", "-i", ""}, "ppserver: -i: empty value"},
        {{"-s", "k", "--cache-dir="}, "ppserver: --cache-dir: empty value"},
        {{"-s", "k", "-i", std::string(300, 'a')}, "ppserver: -i: longer than 255 bytes"},
        {{"-s", "k", "-P", std::string(5000, 'a')}, "ppserver: -P: longer than 4095 bytes"},
        {{"-s", ""}, "ppserver: -s: the secret is empty"},
        {{"-s", std::string(1025, 's')}, "ppserver: -s: the secret is longer than 1024 bytes"},
        // The first error is the one reported.
        {{"-x", "-y"}, "ppserver: unknown option '-x'"},
    };
    for (const Case &k : cases) {
        Argv a(k.args);
        EXPECT_EQ(parse(a), -EINVAL) << k.want;
        EXPECT_EQ(msg().rfind(k.want, 0), 0u) << "got: " << msg();
    }
    // Empty strings where "" means none are fine.
    ASSERT_EQ(parse({"-s", "k", "-P", "", "-b", "", "-f", ""}), 0) << msg();
    ASSERT_EQ(parse({"-s", std::string(1024, 's')}), 0) << msg();
    EXPECT_EQ(c.secret_len, 1024u);
}

TEST_F(Conf, BadArguments)
{
    EXPECT_EQ(pp_srvconf_parse(1, nullptr, &c, err, sizeof(err)), -EINVAL);
    char *argv[] = {nullptr};
    EXPECT_EQ(pp_srvconf_parse(0, argv, nullptr, err, sizeof(err)), -EINVAL);
    // No err buffer at all is fine.
    EXPECT_EQ(pp_srvconf_parse(0, argv, &c, nullptr, 0), -EINVAL);
    // argc 0: no flags, so no secret.
    EXPECT_EQ(pp_srvconf_parse(0, argv, &c, err, sizeof(err)), -EINVAL);
    EXPECT_NE(msg().find("no secret"), std::string::npos) << msg();
}

TEST_F(Conf, UsageListsEveryFlag)
{
    std::string u = pp_srvconf_usage();
    EXPECT_EQ(u.rfind("Parallel Python Network Server", 0), 0u);
    EXPECT_NE(u.find("Usage: ppserver [-hdar] [-f format] [-n proto] [-c config_path] "
                     "[-i interface]"), std::string::npos) << u;
    for (const char *f : {"-h, --help", "-d ", "-f format", "-a ", "-r ", "-n proto",
                          "-c path", "-i interface", "-b broadcast", "-p port",
                          "-w nworkers", "-s secret", "-t seconds", "-k seconds",
                          "-P pid_file", "--secret-file FILE", "--cache-dir DIR",
                          "--max-conns N", "--max-pending N", "--slurm "})
        EXPECT_NE(u.find(std::string("\n") + f), std::string::npos) << f;
    EXPECT_NE(u.find("SIGUSR1"), std::string::npos);
    EXPECT_NE(u.find("default 60000"), std::string::npos);
    EXPECT_NE(u.find("default 127.0.0.1"), std::string::npos);
    EXPECT_NE(u.find("(default 3)"), std::string::npos);
    EXPECT_EQ(u.back(), '\n');
}

/****  -s leaves argv  ****/

TEST_F(Conf, SecretWipedFromArgv)
{
    Argv a({"-d", "-s", "topsecret", "-p", "5"});
    ASSERT_EQ(parse(a), 0) << msg();
    EXPECT_STREQ(c.secret, "topsecret");
    EXPECT_EQ(a.word(0), "ppserver");
    EXPECT_EQ(a.word(1), "-d");
    EXPECT_EQ(a.word(2), "-s");
    EXPECT_EQ(a.word(3), "");
    EXPECT_TRUE(a.zeroed(3, 0));
    EXPECT_EQ(a.word(4), "-p");
    EXPECT_EQ(a.word(5), "5");
}

TEST_F(Conf, SecretWipedAttachedAndClustered)
{
    Argv a({"-stopsecret", "-dsother"});
    ASSERT_EQ(parse(a), 0) << msg();
    EXPECT_STREQ(c.secret, "other");
    EXPECT_EQ(a.word(1), "-s");
    EXPECT_TRUE(a.zeroed(1, 2));
    EXPECT_EQ(a.word(2), "-ds");
    EXPECT_TRUE(a.zeroed(2, 3));
}

TEST_F(Conf, SecretWipedEvenWhenParsingFails)
{
    Argv before({"-x", "-s", "one", "-w", "abc", "-stwo", "stray"});
    EXPECT_EQ(parse(before), -EINVAL);
    EXPECT_TRUE(before.zeroed(3, 0));
    EXPECT_TRUE(before.zeroed(6, 2));
    EXPECT_EQ(before.word(7), "stray");
    // Failure leaves no secret in *out either.
    EXPECT_EQ(c.secret_len, 0u);
    EXPECT_TRUE(all_zero(c.secret, sizeof(c.secret)));

    Argv toolong({"-s", std::string(2000, 'q')});
    EXPECT_EQ(parse(toolong), -EINVAL);
    EXPECT_TRUE(toolong.zeroed(2, 0));

    Argv help({"-h", "-s", "three"});
    EXPECT_EQ(parse(help), 0);
    EXPECT_TRUE(help.zeroed(3, 0));
    EXPECT_EQ(c.secret_len, 0u);
}

/****  Where the secret comes from  ****/

TEST_F(Conf, NoSecretAtAll)
{
    EXPECT_EQ(parse({"-p", "1"}), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: no secret: give -s, --secret-file, a config file with "
                     "secret=, or PP_SECRET; there is no default");
    setenv("PP_SECRET", "", 1);  // empty is no secret
    EXPECT_EQ(parse({}), -EINVAL);
    EXPECT_NE(msg().find("no secret"), std::string::npos) << msg();
}

TEST_F(Conf, SecretFromEnvironment)
{
    setenv("PP_SECRET", "env-secret", 1);
    ASSERT_EQ(parse({}), 0) << msg();
    EXPECT_STREQ(c.secret, "env-secret");
    EXPECT_EQ(c.secret_src, PP_SECRET_ENV);
    // Read once, then gone: session agents must not inherit it.
    EXPECT_EQ(getenv("PP_SECRET"), nullptr);

    setenv("PP_SECRET", std::string(1025, 'e').c_str(), 1);
    EXPECT_EQ(parse({}), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: PP_SECRET: the secret is longer than 1024 bytes");
}

TEST_F(Conf, SecretPrecedence)
{
    TmpDir d;
    std::string conf = put(d / "pp.conf", "[general]\nsecret = from-config\n", 0600);
    std::string sf = put(d / "secret", "from-file\n", 0600);

    setenv("PP_SECRET", "from-env", 1);
    ASSERT_EQ(parse({"-c", conf}), 0) << msg();
    EXPECT_STREQ(c.secret, "from-config");
    EXPECT_EQ(c.secret_src, PP_SECRET_CONFIG);
    EXPECT_STREQ(c.config_file, conf.c_str());

    setenv("PP_SECRET", "from-env", 1);
    ASSERT_EQ(parse({"--secret-file", sf, "-c", conf}), 0) << msg();
    EXPECT_STREQ(c.secret, "from-file");
    EXPECT_EQ(c.secret_src, PP_SECRET_FILE);

    setenv("PP_SECRET", "from-env", 1);
    ASSERT_EQ(parse({"-s", "from-argv", "--secret-file", sf, "-c", conf}), 0) << msg();
    EXPECT_STREQ(c.secret, "from-argv");
    EXPECT_EQ(c.secret_src, PP_SECRET_ARGV);
    EXPECT_EQ(c.secret_len, 9u);

    // A config file without a secret leaves the environment's in place.
    std::string plain = put(d / "plain.conf", "[network]\nport = 1\n", 0644);
    setenv("PP_SECRET", "from-env", 1);
    ASSERT_EQ(parse({"-c", plain}), 0) << msg();
    EXPECT_STREQ(c.secret, "from-env");
    EXPECT_EQ(c.secret_src, PP_SECRET_ENV);
}

TEST_F(Conf, SecretFileErrorsThroughParse)
{
    TmpDir d;
    std::string sf = put(d / "secret", "s\n", 0644);
    EXPECT_EQ(parse({"--secret-file", sf}), -EACCES);
    EXPECT_EQ(msg().rfind("ppserver: --secret-file: secret file " + sf, 0), 0u) << msg();
    EXPECT_EQ(parse({"--secret-file", d / "missing"}), -ENOENT);
    EXPECT_NE(msg().find(d / "missing"), std::string::npos) << msg();
    EXPECT_NE(msg().find("No such file or directory"), std::string::npos) << msg();
    EXPECT_TRUE(all_zero(c.secret, sizeof(c.secret)));
}

/****  Config file, then flags  ****/

TEST_F(Conf, ConfigFileThenFlags)
{
    TmpDir d;
    std::string conf = put(d / "pp.conf",
                           "[general]\n"
                           "secret = s3\n"
                           "workers = 3\n"
                           "restart = yes\n"
                           "debug = true\n"
                           "proto = 5\n"
                           "pid_file = /run/a.pid\n"
                           "cache_dir = /cache\n"
                           "[network]\n"
                           "interface = 10.1.1.1\n"
                           "port = 1111\n"
                           "broadcast = 10.1.1.255\n"
                           "autodiscovery = on\n"
                           "timeout = 9\n"
                           "socket_timeout = 8\n"
                           "max_conns = 7\n"
                           "max_pending = 6\n",
                           0600);
    ASSERT_EQ(parse({"-c", conf}), 0) << msg();
    EXPECT_EQ(c.workers, 3);
    EXPECT_TRUE(c.restart);
    EXPECT_TRUE(c.debug);
    EXPECT_EQ(c.proto, 5);
    EXPECT_STREQ(c.pid_file, "/run/a.pid");
    EXPECT_STREQ(c.cache_dir, "/cache");
    EXPECT_STREQ(c.interface, "10.1.1.1");
    EXPECT_EQ(c.port, 1111);
    EXPECT_STREQ(c.broadcast, "10.1.1.255");
    EXPECT_TRUE(c.autodiscovery);
    EXPECT_EQ(c.timeout_s, 9u);
    EXPECT_EQ(c.socket_timeout_s, 8u);
    EXPECT_EQ(c.max_conns, 7u);
    EXPECT_EQ(c.max_pending, 6u);
    EXPECT_STREQ(c.secret, "s3");

    // Flags win, whether they come before or after -c.
    ASSERT_EQ(parse({"-p", "2222", "-c", conf, "-i", "0.0.0.0", "-w", "autodetect",
                     "-k", "1", "--max-conns", "70", "--cache-dir", "/other"}), 0) << msg();
    EXPECT_EQ(c.port, 2222);
    EXPECT_STREQ(c.interface, "0.0.0.0");
    EXPECT_EQ(c.workers, PP_SRVCONF_AUTODETECT);
    EXPECT_EQ(c.socket_timeout_s, 1u);
    EXPECT_EQ(c.max_conns, 70u);
    EXPECT_STREQ(c.cache_dir, "/other");
    EXPECT_EQ(c.timeout_s, 9u);  // not on the command line: the file's
    EXPECT_TRUE(c.restart);
}

TEST_F(Conf, ConfigFileErrorsNameTheLine)
{
    TmpDir d;
    std::string conf = put(d / "pp.conf", "[general]\nsecret = k\n\n[network]\nprot = 1\n", 0600);
    EXPECT_EQ(parse({"-c", conf}), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: " + conf + ":5: unknown key 'prot' in [network]");
    EXPECT_TRUE(all_zero(c.secret, sizeof(c.secret)));

    std::string bad = put(d / "bad.conf", "[network]\nport = 99999\n", 0644);
    EXPECT_EQ(parse({"-s", "k", "-c", bad}), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: " + bad + ":2: port: port out of range (0..65535): '99999'");
}

TEST_F(Conf, ConfigFileMissingOrOdd)
{
    TmpDir d;
    EXPECT_EQ(parse({"-s", "k", "-c", d / "none.conf"}), -ENOENT);
    EXPECT_EQ(msg(), "ppserver: config file " + (d / "none.conf") +
                     ": No such file or directory");
    EXPECT_EQ(parse({"-s", "k", "-c", d.path}), -EACCES);
    EXPECT_NE(msg().find("not a regular file"), std::string::npos) << msg();
    ASSERT_EQ(mkfifo((d / "fifo").c_str(), 0600), 0);
    EXPECT_EQ(parse({"-s", "k", "-c", d / "fifo"}), -EACCES);  // and does not block
    std::string big = put(d / "big.conf", std::string(PP_SRVCONF_FILE_MAX + 1, '#'), 0600);
    EXPECT_EQ(parse({"-s", "k", "-c", big}), -EFBIG);
    std::string edge = put(d / "edge.conf", std::string(PP_SRVCONF_FILE_MAX, '\n'), 0600);
    EXPECT_EQ(parse({"-s", "k", "-c", edge}), 0) << msg();
}

TEST_F(Conf, ConfigWithSecretMustBePrivate)
{
    TmpDir d;
    std::string conf = put(d / "pp.conf", "[general]\nsecret = k\n", 0644);
    EXPECT_EQ(parse({"-c", conf}), -EACCES);
    EXPECT_NE(msg().find("mode 0644"), std::string::npos) << msg();
    EXPECT_NE(msg().find("holds the secret"), std::string::npos) << msg();
    EXPECT_TRUE(all_zero(c.secret, sizeof(c.secret)));
    // Even when -s overrides it: the file still gives the secret away.
    EXPECT_EQ(parse({"-s", "other", "-c", conf}), -EACCES);
    put(conf, "[general]\nsecret = k\n", 0640);
    EXPECT_EQ(parse({"-c", conf}), -EACCES);
    put(conf, "[general]\nsecret = k\n", 0600);
    ASSERT_EQ(parse({"-c", conf}), 0) << msg();
    EXPECT_STREQ(c.secret, "k");
    put(conf, "[general]\nsecret = k\n", 0400);
    ASSERT_EQ(parse({"-c", conf}), 0) << msg();
}

TEST_F(Conf, ConfigWithoutSecretMayBeReadable)
{
    TmpDir d;
    std::string conf = put(d / "pp.conf", "[network]\nport = 4444\n", 0644);
    ASSERT_EQ(parse({"-s", "k", "-c", conf}), 0) << msg();
    EXPECT_EQ(c.port, 4444);
    // ...but nobody else may change it.
    put(conf, "[network]\nport = 4444\n", 0664);
    EXPECT_EQ(parse({"-s", "k", "-c", conf}), -EACCES);
    EXPECT_NE(msg().find("may write it"), std::string::npos) << msg();
    put(conf, "[network]\nport = 4444\n", 0646);
    EXPECT_EQ(parse({"-s", "k", "-c", conf}), -EACCES);
}

TEST_F(Conf, ConfigNotOwned)
{
    if (geteuid() != 0)
        GTEST_SKIP() << "needs root to chown a file to another user";
    struct passwd *nobody = getpwnam("nobody");
    uid_t uid = nobody ? nobody->pw_uid : 65534;
    TmpDir d;
    std::string conf = put(d / "pp.conf", "[network]\nport = 1\n", 0644);
    if (chown(conf.c_str(), uid, (gid_t)-1) != 0)
        GTEST_SKIP() << "chown: " << strerror(errno);
    EXPECT_EQ(parse({"-s", "k", "-c", conf}), -EACCES);
    EXPECT_NE(msg().find("neither you"), std::string::npos) << msg();
    // Root's file is fine for anyone (we are root here: trivially ours).
    std::string ours = put(d / "ours.conf", "[network]\nport = 1\n", 0644);
    EXPECT_EQ(parse({"-s", "k", "-c", ours}), 0) << msg();
}

/****  The INI dialect  ****/

TEST_F(Conf, IniCommentsBlanksAndWhitespace)
{
    ASSERT_EQ(ini("# a comment\n"
                  "; another\n"
                  "\n"
                  "   \t\n"
                  "  [ general ]  # trailing comment\n"
                  "\tworkers\t=\t4\t\n"
                  "  # indented comment\n"
                  "[network]\r\n"
                  "port=1234\r\n"
                  "interface =   0.0.0.0   ; inline comment\n"
                  "broadcast = 10.0.0.255 # inline\n"
                  "timeout = 5"),  // no newline at the end
              0) << msg();
    EXPECT_EQ(c.workers, 4);
    EXPECT_EQ(c.port, 1234);
    EXPECT_STREQ(c.interface, "0.0.0.0");
    EXPECT_STREQ(c.broadcast, "10.0.0.255");
    EXPECT_EQ(c.timeout_s, 5u);
}

TEST_F(Conf, IniValues)
{
    // '#' and ';' inside a word are part of it; quotes keep everything.
    ASSERT_EQ(ini("[general]\nsecret = ab#c;d\n"), 0) << msg();
    EXPECT_STREQ(c.secret, "ab#c;d");
    EXPECT_EQ(c.secret_src, PP_SECRET_CONFIG);
    ASSERT_EQ(ini("[general]\nsecret = \"  with # and ; \"  # comment\n"), 0) << msg();
    EXPECT_STREQ(c.secret, "  with # and ; ");
    ASSERT_EQ(ini("[general]\nsecret = 'it''\n"), -EINVAL);
    ASSERT_EQ(ini("[general]\nsecret = 'a \"b\" c'\n"), 0) << msg();
    EXPECT_STREQ(c.secret, "a \"b\" c");
    ASSERT_EQ(ini("[general]\npid_file = x = y\n"), 0) << msg();
    EXPECT_STREQ(c.pid_file, "x = y");
    ASSERT_EQ(ini("[general]\npid_file =\n"), 0) << msg();
    EXPECT_STREQ(c.pid_file, "");
    ASSERT_EQ(ini("[general]\npid_file = \"\"\n"), 0) << msg();
    EXPECT_STREQ(c.pid_file, "");
    ASSERT_EQ(ini("[general]\nworkers = autodetect\n"), 0) << msg();
    EXPECT_EQ(c.workers, PP_SRVCONF_AUTODETECT);
}

TEST_F(Conf, IniBooleans)
{
    for (const char *t : {"true", "TRUE", "Yes", "on", "1"}) {
        ASSERT_EQ(ini(std::string("[general]\nrestart = ") + t + "\n"), 0) << t << msg();
        EXPECT_TRUE(c.restart) << t;
    }
    for (const char *f : {"false", "No", "OFF", "0"}) {
        ASSERT_EQ(ini(std::string("[general]\nrestart = true\nrestart = ") + f + "\n"), 0)
            << f;
        EXPECT_FALSE(c.restart) << f;
    }
    EXPECT_EQ(ini("[network]\nautodiscovery = maybe\n"), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: t.conf:2: autodiscovery: not a boolean (true/false, "
                     "yes/no, on/off, 1/0): 'maybe'");
}

TEST_F(Conf, IniDuplicatesLastWins)
{
    ASSERT_EQ(ini("[network]\nport = 1\n[general]\nworkers = 2\n[network]\nport = 3\n"
                  "port = 4\n[general]\nworkers = 5\n"), 0) << msg();
    EXPECT_EQ(c.port, 4);
    EXPECT_EQ(c.workers, 5);
}

TEST_F(Conf, IniErrors)
{
    struct Case {
        const char *text;
        const char *want;
    };
    const Case cases[] = {
        {"[network]\nport = 1\nfoo = 2\n", "ppserver: t.conf:3: unknown key 'foo' in [network]"},
        {"[network]\nworkers = 2\n",
         "ppserver: t.conf:2: unknown key 'workers' in [network] (it belongs in [general])"},
        {"# c\n[nets]\n", "ppserver: t.conf:2: unknown section '[nets]'"},
        {"port = 1\n", "ppserver: t.conf:1: 'port' outside a section"},
        {"[general]\njust words\n", "ppserver: t.conf:2: expected 'key = value'"},
        {"[general]\n= 4\n", "ppserver: t.conf:2: a value without a key"},
        {"[general\n", "ppserver: t.conf:1: a section header without ']'"},
        {"[general] x\n", "ppserver: t.conf:1: text after the section header"},
        {"[general]\nsecret = \"abc\n", "ppserver: t.conf:2: unterminated quote"},
        {"[general]\nsecret = \"abc\" def\n", "ppserver: t.conf:2: text after the closing quote"},
        {"[general]\nsecret =\n", "ppserver: t.conf:2: secret: the secret is empty"},
        {"[general]\nsecret = # only a comment\n", "ppserver: t.conf:2: secret: the secret is empty"},
        {"[general]\nworkers = abc\n", "ppserver: t.conf:2: workers: not a number: 'abc'"},
        {"[network]\ninterface =\n", "ppserver: t.conf:2: interface: empty value"},
        {"[network]\ntimeout = -3\n", "ppserver: t.conf:2: timeout: out of range (0..2147483 seconds): '-3'"},
        {"[General]\n", "ppserver: t.conf:1: unknown section '[General]'"},
        {"[general]\nWorkers = 1\n", "ppserver: t.conf:2: unknown key 'Workers' in [general]"},
    };
    for (const Case &k : cases) {
        EXPECT_EQ(ini(k.text), -EINVAL) << k.text;
        EXPECT_EQ(msg().rfind(k.want, 0), 0u) << "text: " << k.text << "\ngot: " << msg();
    }
    // A NUL byte anywhere in a line.
    const std::string nul("[general]\nwor\0kers = 1\n", 23);
    EXPECT_EQ(ini(nul), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: t.conf:2: a NUL byte in the line");
    // A value longer than any setting can hold.
    EXPECT_EQ(ini("[general]\npid_file = " + std::string(5000, 'p') + "\n"), -EINVAL);
    EXPECT_NE(msg().find("t.conf:2: pid_file: value longer than"), std::string::npos) << msg();
    EXPECT_EQ(ini("[general]\nsecret = " + std::string(1025, 'p') + "\n"), -EINVAL);
    EXPECT_EQ(msg(), "ppserver: t.conf:2: secret: the secret is longer than 1024 bytes");
}

TEST_F(Conf, IniEmptyAndNameless)
{
    EXPECT_EQ(ini(""), 0);
    EXPECT_EQ(ini("\n\n# nothing\n"), 0);
    pp_srvconf_defaults(&c);
    EXPECT_EQ(pp_srvconf_parse_ini("x\n", 2, nullptr, &c, err, sizeof(err)), -EINVAL);
    EXPECT_EQ(msg().rfind("ppserver: (config):1:", 0), 0u) << msg();
    EXPECT_EQ(pp_srvconf_parse_ini(nullptr, 1, "n", &c, err, sizeof(err)), -EINVAL);
    EXPECT_EQ(pp_srvconf_parse_ini(nullptr, 0, "n", &c, err, sizeof(err)), 0);
}

/****  Secret files  ****/

class SecretFile : public ::testing::Test {
protected:
    TmpDir d;
    char buf[PP_SRVCONF_SECRET_MAX + 1];
    char err[2048] = "";
    size_t len = 12345;

    int read(const std::string &path, size_t cap = sizeof(buf))
    {
        memset(buf, 'Z', sizeof(buf));
        return pp_read_secret_file(path.c_str(), buf, cap, &len, err, sizeof(err));
    }
    std::string msg() const { return err; }
};

TEST_F(SecretFile, PrivateFileIsRead)
{
    ASSERT_EQ(read(put(d / "s", "hunter2\n", 0600)), 0) << msg();
    EXPECT_STREQ(buf, "hunter2");
    EXPECT_EQ(len, 7u);
    ASSERT_EQ(read(put(d / "s", "crlf\r\n", 0600)), 0) << msg();
    EXPECT_STREQ(buf, "crlf");
    ASSERT_EQ(read(put(d / "s", "none", 0600)), 0) << msg();
    EXPECT_STREQ(buf, "none");
    // One newline only: the rest is the secret.
    ASSERT_EQ(read(put(d / "s", "two\n\n", 0600)), 0) << msg();
    EXPECT_STREQ(buf, "two\n");
    EXPECT_EQ(len, 4u);
    ASSERT_EQ(read(put(d / "s", " spaces kept \n", 0400)), 0) << msg();
    EXPECT_STREQ(buf, " spaces kept ");
}

TEST_F(SecretFile, ReadableByOthersRefused)
{
    for (mode_t m : {0644, 0640, 0604, 0620, 0602, 0610, 0601}) {
        std::string p = put(d / "s", "k\n", m);
        EXPECT_EQ(read(p), -EACCES) << std::oct << m;
        EXPECT_NE(msg().find("group or others"), std::string::npos) << msg();
        EXPECT_NE(msg().find(p), std::string::npos) << msg();
        EXPECT_EQ(len, 12345u);  // ret_len untouched on failure
        EXPECT_TRUE(all_zero(buf, sizeof(buf)));
    }
}

TEST_F(SecretFile, SymlinkRefused)
{
    std::string target = put(d / "real", "k\n", 0600);
    ASSERT_EQ(symlink(target.c_str(), (d / "link").c_str()), 0);
    EXPECT_EQ(read(d / "link"), -EACCES);
    EXPECT_NE(msg().find("is a symbolic link"), std::string::npos) << msg();
    EXPECT_EQ(read(target), 0) << msg();
}

TEST_F(SecretFile, NotOwnedRefused)
{
    if (geteuid() != 0)
        GTEST_SKIP() << "needs root to chown a file to another user";
    struct passwd *nobody = getpwnam("nobody");
    uid_t uid = nobody ? nobody->pw_uid : 65534;
    std::string p = put(d / "s", "k\n", 0600);
    if (chown(p.c_str(), uid, (gid_t)-1) != 0)
        GTEST_SKIP() << "chown: " << strerror(errno);
    EXPECT_EQ(read(p), -EACCES);
    EXPECT_NE(msg().find("owned by uid " + std::to_string(uid)), std::string::npos) << msg();
}

TEST_F(SecretFile, EmptyOrNulRefused)
{
    EXPECT_EQ(read(put(d / "s", "", 0600)), -EINVAL);
    EXPECT_NE(msg().find("is empty"), std::string::npos) << msg();
    EXPECT_EQ(read(put(d / "s", "\n", 0600)), -EINVAL);
    EXPECT_EQ(read(put(d / "s", "\r\n", 0600)), -EINVAL);
    EXPECT_EQ(read(put(d / "s", std::string("a\0b", 3), 0600)), -EINVAL);
    EXPECT_NE(msg().find("NUL byte"), std::string::npos) << msg();
}

TEST_F(SecretFile, MissingAndOdd)
{
    EXPECT_EQ(read(d / "missing"), -ENOENT);
    EXPECT_EQ(msg(), "secret file " + (d / "missing") + ": No such file or directory");
    EXPECT_EQ(read(d.path), -EACCES);
    EXPECT_NE(msg().find("not a regular file"), std::string::npos) << msg();
    ASSERT_EQ(mkfifo((d / "fifo").c_str(), 0600), 0);
    EXPECT_EQ(read(d / "fifo"), -EACCES);  // and does not block
    EXPECT_EQ(pp_read_secret_file(nullptr, buf, sizeof(buf), &len, err, sizeof(err)), -EINVAL);
    EXPECT_EQ(pp_read_secret_file("", buf, sizeof(buf), &len, err, sizeof(err)), -EINVAL);
    EXPECT_EQ(pp_read_secret_file("x", buf, 1, &len, err, sizeof(err)), -EINVAL);
    EXPECT_EQ(pp_read_secret_file("x", buf, sizeof(buf), nullptr, nullptr, 0), -EINVAL);
}

TEST_F(SecretFile, SizeLimit)
{
    // cap 8: up to 7 bytes, plus one stripped line end.
    ASSERT_EQ(read(put(d / "s", "1234567", 0600), 8), 0) << msg();
    EXPECT_STREQ(buf, "1234567");
    ASSERT_EQ(read(put(d / "s", "1234567\n", 0600), 8), 0) << msg();
    EXPECT_STREQ(buf, "1234567");
    ASSERT_EQ(read(put(d / "s", "1234567\r\n", 0600), 8), 0) << msg();
    EXPECT_STREQ(buf, "1234567");
    EXPECT_EQ(len, 7u);
    for (const char *big : {"12345678", "12345678\n", "1234567\n\n", "1234567xyz",
                            "123456789012345678901234567890"}) {
        EXPECT_EQ(read(put(d / "s", big, 0600), 8), -EFBIG) << big;
        EXPECT_NE(msg().find("longer than 7 bytes"), std::string::npos) << msg();
        EXPECT_TRUE(all_zero(buf, 8)) << big;
        EXPECT_EQ(buf[8], 'Z');  // nothing beyond cap touched
    }
    ASSERT_EQ(read(put(d / "s", std::string(PP_SRVCONF_SECRET_MAX, 'x') + "\n", 0600)), 0);
    EXPECT_EQ(len, PP_SRVCONF_SECRET_MAX);
    EXPECT_EQ(read(put(d / "s", std::string(PP_SRVCONF_SECRET_MAX + 1, 'x'), 0600)), -EFBIG);
}

TEST(ConfWipe, ZeroesTheSecret)
{
    pp_srvconf c;
    pp_srvconf_defaults(&c);
    memcpy(c.secret, "abc", 4);
    c.secret_len = 3;
    c.secret_src = PP_SECRET_ARGV;
    pp_srvconf_wipe(&c);
    EXPECT_TRUE(all_zero(c.secret, sizeof(c.secret)));
    EXPECT_EQ(c.secret_len, 0u);
    EXPECT_EQ(c.secret_src, PP_SECRET_NONE);
    EXPECT_EQ(c.port, 60000);  // the rest stays
    pp_srvconf_wipe(nullptr);
}
