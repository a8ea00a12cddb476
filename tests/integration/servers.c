#include "servers.h"
#include "util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Servers started and not yet stopped, for the atexit handler. A test
 * binary is single-threaded at the points where servers start and stop. */
#define SERVERS_MAX 16
static pid_t running[SERVERS_MAX];
static char running_dir[SERVERS_MAX][64];
static bool atexit_set;

static void remove_dir(char *dir);

static void track(pid_t pid, bool add, const char *dir)
{
    for (int i = 0; i < SERVERS_MAX; i++) {
        if (add && running[i] == 0) {
            running[i] = pid;
            snprintf(running_dir[i], sizeof(running_dir[i]), "%s", dir);
            return;
        }
        if (!add && running[i] == pid) {
            running[i] = 0;
            running_dir[i][0] = '\0';
            return;
        }
    }
}

static void stop_all(void)
{
    for (int i = 0; i < SERVERS_MAX; i++)
        if (running[i] > 0) {
            kill(running[i], SIGKILL);
            waitpid(running[i], NULL, 0);
            running[i] = 0;
            remove_dir(running_dir[i]);
        }
}

/* A port the kernel just handed out; the server may still lose a race for
 * it, which server_start handles by retrying. */
static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int connect_port(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static pid_t spawn(enum server_kind kind, uint16_t port, uint16_t bus, const char *dir)
{
    char portstr[8], busstr[8];
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    snprintf(busstr, sizeof(busstr), "%u", (unsigned)bus);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* child: dies with the test even when the test is killed (no atexit
     * then); its own process group so a terminal's ^C is the test's. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    setpgid(0, 0);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
    }
    if (kind == SERVER_MEMCACHED)
        execlp("memcached", "memcached", "-u", "root", "-l", "127.0.0.1", "-p", portstr, "-U",
               "0", "-t", "1", "-m", "64", (char *)NULL);
    else if (kind == SERVER_REDIS)
        execlp("redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", (char *)NULL);
    else
        execlp("redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
               "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
               "--cluster-port", busstr, "--dir", dir, (char *)NULL);
    _exit(127);
}

/* A cluster node's directory holds nodes.conf only (no RDB, no AOF). */
static void remove_dir(char *dir)
{
    if (dir[0] == '\0')
        return;
    char path[64 + sizeof("/nodes.conf")];
    size_t len = strnlen(dir, 63);
    memcpy(path, dir, len);
    memcpy(path + len, "/nodes.conf", sizeof("/nodes.conf"));
    unlink(path);
    rmdir(dir);
    dir[0] = '\0';
}

bool server_start(struct server *sv, enum server_kind kind, uint16_t port)
{
    if (!atexit_set) {
        atexit(stop_all);
        atexit_set = true;
    }
    char dir[64] = "";
    if (kind == SERVER_REDIS_CLUSTER) {
        snprintf(dir, sizeof(dir), "/tmp/lt-redis-node-XXXXXX");
        if (mkdtemp(dir) == NULL)
            return false;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        uint16_t p = port != 0 ? port : free_port();
        if (p == 0)
            continue;
        /* The cluster bus defaults to port + 10000, which may be taken or
         * past 65535: give it a free port of its own, never the node's. */
        uint16_t bus = 0;
        if (kind == SERVER_REDIS_CLUSTER) {
            bus = free_port();
            if (bus == 0 || bus == p)
                continue;
        }
        pid_t pid = spawn(kind, p, bus, dir);
        if (pid < 0)
            break;
        track(pid, true, dir);
        uint64_t deadline = util_mono_ms() + 5000;
        while (util_mono_ms() < deadline) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                track(pid, false, NULL); /* exited: port taken, or no such binary */
                pid = 0;
                break;
            }
            /* a cluster node that lost the race for its bus port exits
             * after it took the client port: ready means both listen */
            int fd = connect_port(p);
            int busfd = fd >= 0 && bus != 0 ? connect_port(bus) : -1;
            if (busfd >= 0)
                close(busfd);
            if (fd >= 0)
                close(fd);
            if (fd >= 0 && (bus == 0 || busfd >= 0)) {
                sv->kind = kind;
                sv->pid = pid;
                sv->port = p;
                memcpy(sv->dir, dir, sizeof(sv->dir));
                return true;
            }
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            track(pid, false, NULL);
        }
        if (port != 0) {
            /* a fixed port may still be in TIME_WAIT or held by the old
             * process: wait a little and retry */
            struct timespec ts = {0, 200 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    remove_dir(dir);
    return false;
}

static void reap(struct server *sv, bool gentle)
{
    if (sv == NULL || sv->pid <= 0)
        return;
    if (gentle) {
        kill(sv->pid, SIGTERM);
        uint64_t deadline = util_mono_ms() + 2000;
        while (util_mono_ms() < deadline) {
            if (waitpid(sv->pid, NULL, WNOHANG) == sv->pid)
                goto done;
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    kill(sv->pid, SIGKILL);
    waitpid(sv->pid, NULL, 0);
done:
    track(sv->pid, false, NULL);
    sv->pid = 0;
    remove_dir(sv->dir);
}

void server_stop(struct server *sv)
{
    reap(sv, true);
}

void server_kill(struct server *sv)
{
    reap(sv, false);
}

/* Every task of the process in state T (stopped) per /proc/PID/task/TID/stat. */
static bool all_tasks_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    if (dir == NULL)
        return false;
    bool stopped = true;
    struct dirent *de;
    while (stopped && (de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char stat_path[sizeof(path) + sizeof(de->d_name) + 8], buf[512];
        snprintf(stat_path, sizeof(stat_path), "%s/%s/stat", path, de->d_name);
        FILE *fp = fopen(stat_path, "r");
        if (fp == NULL)
            continue; /* the thread ended */
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
        buf[n] = '\0';
        /* "TID (comm) S ...": the state follows the last ')' */
        const char *rp = strrchr(buf, ')');
        stopped = rp != NULL && rp[1] == ' ' && (rp[2] == 'T' || rp[2] == 't');
    }
    closedir(dir);
    return stopped;
}

bool server_pause(const struct server *sv)
{
    if (sv->pid <= 0 || kill(sv->pid, SIGSTOP) != 0)
        return false;
    for (int i = 0; i < 400; i++) {
        if (all_tasks_stopped(sv->pid))
            return true;
        nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
    }
    return false;
}

bool server_resume(const struct server *sv)
{
    return sv->pid > 0 && kill(sv->pid, SIGCONT) == 0;
}

void server_url(const struct server *const *svs, int n, const char *query, char *buf,
                size_t len)
{
    static const char *const schemes[] = {
        [SERVER_MEMCACHED] = "memcached",
        [SERVER_REDIS] = "redis",
        [SERVER_REDIS_CLUSTER] = "redis-cluster",
    };
    size_t off = (size_t)snprintf(buf, len, "%s://", schemes[svs[0]->kind]);
    for (int i = 0; i < n && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s127.0.0.1:%u", i ? "," : "",
                                (unsigned)svs[i]->port);
    if (query != NULL && off < len)
        snprintf(buf + off, len - off, "?%s", query);
}

int server_raw(const struct server *sv, const char *req, const char *until, char *reply,
               size_t len)
{
    int fd = connect_port(sv->port);
    if (fd < 0 || len == 0)
        goto err;
    size_t n = strlen(req);
    if (send(fd, req, n, MSG_NOSIGNAL) != (ssize_t)n)
        goto err;
    size_t got = 0;
    size_t ulen = strlen(until);
    uint64_t deadline = util_mono_ms() + 2000;
    while (got + 1 < len) {
        uint64_t now = util_mono_ms();
        if (now >= deadline)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(deadline - now)) <= 0)
            break;
        ssize_t r = recv(fd, reply + got, len - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        reply[got] = '\0';
        if (got >= ulen && memcmp(reply + got - ulen, until, ulen) == 0)
            break;
    }
    reply[got] = '\0';
    close(fd);
    return (int)got;
err:
    if (fd >= 0)
        close(fd);
    return -1;
}

int server_run(const char *const *argv, char *out, size_t outlen)
{
    int pipefd[2] = {-1, -1};
    if (out != NULL && (outlen == 0 || pipe(pipefd) != 0))
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        if (out != NULL) {
            close(pipefd[0]);
            close(pipefd[1]);
        }
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(out != NULL ? pipefd[1] : devnull, STDERR_FILENO);
            dup2(out != NULL ? pipefd[1] : devnull, STDOUT_FILENO);
        }
        if (out != NULL) {
            close(pipefd[0]);
            close(pipefd[1]);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    size_t got = 0;
    if (out != NULL) {
        close(pipefd[1]);
        for (;;) {
            ssize_t r = read(pipefd[0], out + got, outlen - 1 - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
            if (got == outlen - 1) {
                char sink[4096]; /* keep draining: the child must not block */
                while (read(pipefd[0], sink, sizeof(sink)) > 0)
                    ;
                break;
            }
        }
        out[got] = '\0';
        close(pipefd[0]);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool cluster_ok(const struct server *sv)
{
    char reply[4096];
    if (server_raw(sv, "CLUSTER INFO\r\n", "\r\n\r\n", reply, sizeof(reply)) <= 0)
        return false;
    return strstr(reply, "cluster_state:ok") != NULL;
}

bool server_cluster_create(const struct server *const *svs, int n)
{
    char addrs[16][32];
    const char *argv[24];
    int argc = 0;
    if (n < 3 || n > 16)
        return false;
    argv[argc++] = "redis-cli";
    argv[argc++] = "--cluster";
    argv[argc++] = "create";
    for (int i = 0; i < n; i++) {
        snprintf(addrs[i], sizeof(addrs[i]), "127.0.0.1:%u", (unsigned)svs[i]->port);
        argv[argc++] = addrs[i];
    }
    argv[argc++] = "--cluster-yes";
    argv[argc] = NULL;
    char out[8192];
    if (server_run(argv, out, sizeof(out)) != 0) {
        fprintf(stderr, "redis-cli --cluster create failed:\n%s\n", out);
        return false;
    }
    uint64_t deadline = util_mono_ms() + 20000;
    while (util_mono_ms() < deadline) {
        bool all = true;
        for (int i = 0; i < n && all; i++)
            all = cluster_ok(svs[i]);
        if (all)
            return true;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}
