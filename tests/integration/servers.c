#include "servers.h"

#include <arpa/inet.h>
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
static bool atexit_set;

static void track(pid_t pid, bool add)
{
    for (int i = 0; i < SERVERS_MAX; i++) {
        if (add && running[i] == 0) {
            running[i] = pid;
            return;
        }
        if (!add && running[i] == pid) {
            running[i] = 0;
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
        }
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
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

static pid_t spawn(enum server_kind kind, uint16_t port)
{
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
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
    else
        execlp("redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", (char *)NULL);
    _exit(127);
}

bool server_start(struct server *sv, enum server_kind kind, uint16_t port)
{
    if (!atexit_set) {
        atexit(stop_all);
        atexit_set = true;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        uint16_t p = port != 0 ? port : free_port();
        if (p == 0)
            continue;
        pid_t pid = spawn(kind, p);
        if (pid < 0)
            return false;
        track(pid, true);
        uint64_t deadline = mono_ms() + 5000;
        while (mono_ms() < deadline) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                track(pid, false); /* exited: port taken, or no such binary */
                pid = 0;
                break;
            }
            int fd = connect_port(p);
            if (fd >= 0) {
                close(fd);
                sv->kind = kind;
                sv->pid = pid;
                sv->port = p;
                return true;
            }
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            track(pid, false);
        }
        if (port != 0) {
            /* a fixed port may still be in TIME_WAIT or held by the old
             * process: wait a little and retry */
            struct timespec ts = {0, 200 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return false;
}

static void reap(struct server *sv, bool gentle)
{
    if (sv == NULL || sv->pid <= 0)
        return;
    if (gentle) {
        kill(sv->pid, SIGTERM);
        uint64_t deadline = mono_ms() + 2000;
        while (mono_ms() < deadline) {
            if (waitpid(sv->pid, NULL, WNOHANG) == sv->pid)
                goto done;
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    kill(sv->pid, SIGKILL);
    waitpid(sv->pid, NULL, 0);
done:
    track(sv->pid, false);
    sv->pid = 0;
}

void server_stop(struct server *sv)
{
    reap(sv, true);
}

void server_kill(struct server *sv)
{
    reap(sv, false);
}

void server_url(const struct server *const *svs, int n, const char *query, char *buf,
                size_t len)
{
    size_t off = (size_t)snprintf(buf, len, "%s://",
                                  svs[0]->kind == SERVER_MEMCACHED ? "memcached" : "redis");
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
    uint64_t deadline = mono_ms() + 2000;
    while (got + 1 < len) {
        uint64_t now = mono_ms();
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
