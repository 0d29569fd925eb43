/* stateful_target.c: the target of bench/stateful.py, a small HTTP/1.1 + WebSocket server
 * that counts what it receives.
 *
 * Build: cc -O2 -o stateful_target stateful_target.c -lcrypto
 * Run:   stateful_target PORT        (0: the kernel picks; listens on 127.0.0.1)
 *
 * Routes (HTTP/1.1 keep-alive, Content-Length request bodies):
 *   GET  /      200 "ok\n"                                            counts root
 *   POST /login 200 {"token":"tok-<n>"} for a JSON body with "user"   counts login
 *               400 otherwise                                         counts login_bad
 *   GET  /me    200 with "Authorization: Bearer tok-...", else 401    me_ok / me_unauthorized
 *   GET  /ws    with "Upgrade: websocket" and a key: 101, then the    ws_connect
 *               connection speaks WebSocket: each client text/binary  ws_text / ws_binary
 *               frame is echoed unmasked, pings answered, a close     ws_sent, ws_close
 *               frame answered and the connection closed; a socket
 *               that ends without a close frame counts ws_drop.
 *   anything else 404 (not_found); an unparsable request closes the connection (bad).
 *
 * Theory of operation: one thread, one level-triggered epoll set, one struct per connection
 * with its own input and output buffers, so partial reads and writes are just "wait for
 * more". Bytes are read into ``in``; every complete request (head, then its body) or frame
 * at its front is handled and consumed. Replies are appended to ``out`` and sent at once;
 * what the socket does not take waits for EPOLLOUT. A connection whose ``close_after`` is
 * set is closed once ``out`` is empty. Fragmented WebSocket messages are not supported
 * (the benchmark's client sends single frames).
 *
 * On SIGTERM (or SIGINT) the server stops accepting, serves until every connection is
 * closed (the generator has exited, so that is soon; at most 2 s), then prints its counts as
 * one JSON line on stdout (with its own CPU seconds) and exits 0. At start it prints
 * {"port": N} once it listens, which is how the benchmark knows it is ready.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_MESSAGE_BYTES (1 << 20) /* a request head + body or a frame larger than this is bad */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#define COUNTERS(X)                                                                       \
    X(connections) X(root) X(login) X(login_bad) X(me_ok) X(me_unauthorized) X(ws_connect) \
    X(ws_text) X(ws_binary) X(ws_sent) X(ws_close) X(ws_drop) X(not_found) X(bad)
#define DECLARE(name) long long name;
static struct { COUNTERS(DECLARE) } counts;

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

typedef struct {
    int fd;
    int websocket;   /* after the 101 */
    int close_after; /* close once out is sent */
    int epollout;    /* EPOLLOUT armed */
    int ws_closed;   /* a close frame came from the client */
    buf_t in, out;
    size_t out_pos;
} conn_t;

static int epfd;
static volatile sig_atomic_t stopping;
static long long open_conns;
static long long tokens_issued;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static void buf_append(buf_t *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data) { perror("realloc"); exit(1); }
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void buf_consume(buf_t *b, size_t n) {
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

static void set_epollout(conn_t *c, int want) {
    if (c->epollout == want) return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->epollout = want;
}

static void conn_close(conn_t *c) {
    if (c->websocket && !c->ws_closed) counts.ws_drop++;
    close(c->fd); /* also removes it from the epoll set */
    free(c->in.data);
    free(c->out.data);
    free(c);
    open_conns--;
}

/* Send what out holds: 0 fine (maybe some left for EPOLLOUT), -1 the connection is gone. */
static int conn_flush(conn_t *c) {
    while (c->out_pos < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_pos, c->out.len - c->out_pos, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_pos += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            set_epollout(c, 1);
            return 0;
        } else {
            return -1;
        }
    }
    c->out.len = c->out_pos = 0;
    set_epollout(c, 0);
    return c->close_after ? -1 : 0;
}

static void reply(conn_t *c, const char *status, const char *body) {
    char head[256];
    size_t body_len = strlen(body);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n", status,
                     body[0] == '{' ? "application/json" : "text/plain", body_len);
    buf_append(&c->out, head, (size_t)n);
    buf_append(&c->out, body, body_len);
}

/* The value of header ``name`` (case-insensitive) in the head [start, end), or NULL. */
static const char *header(const char *start, const char *end, const char *name, size_t *len) {
    size_t name_len = strlen(name);
    const char *line = memchr(start, '\n', (size_t)(end - start)); /* skip the request line */
    while (line && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\r', (size_t)(end - line));
        if (!eol || eol == line) return NULL;
        if ((size_t)(eol - line) > name_len && line[name_len] == ':' &&
            strncasecmp(line, name, name_len) == 0) {
            const char *v = line + name_len + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            *len = (size_t)(eol - v);
            return v;
        }
        line = memchr(eol, '\n', (size_t)(end - eol));
    }
    return NULL;
}

static void websocket_accept(conn_t *c, const char *key, size_t key_len) {
    unsigned char digest[SHA_DIGEST_LENGTH];
    unsigned char accept[32];
    char joined[128];
    if (key_len > 64) key_len = 64;
    memcpy(joined, key, key_len);
    memcpy(joined + key_len, WS_GUID, sizeof WS_GUID - 1);
    SHA1((unsigned char *)joined, key_len + sizeof WS_GUID - 1, digest);
    EVP_EncodeBlock(accept, digest, SHA_DIGEST_LENGTH); /* 28 chars and a NUL */
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    buf_append(&c->out, head, (size_t)n);
    c->websocket = 1;
    counts.ws_connect++;
}

/* One complete request at the front of ``in``: its length, 0 incomplete, -1 bad. */
static long handle_request(conn_t *c) {
    char *start = c->in.data;
    char *head_end = memmem(start, c->in.len, "\r\n\r\n", 4);
    if (!head_end) return c->in.len > MAX_MESSAGE_BYTES ? -1 : 0;
    head_end += 4;
    size_t len;
    const char *v = header(start, head_end, "content-length", &len);
    size_t body_len = v ? strtoul(v, NULL, 10) : 0;
    if (body_len > MAX_MESSAGE_BYTES) return -1;
    size_t total = (size_t)(head_end - start) + body_len;
    if (c->in.len < total) return 0;
    const char *body = head_end;

    const char *sp1 = memchr(start, ' ', (size_t)(head_end - start));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(head_end - sp1 - 1)) : NULL;
    if (!sp2) return -1;
    size_t method_len = (size_t)(sp1 - start), path_len = (size_t)(sp2 - sp1 - 1);
    const char *path = sp1 + 1;
#define IS(m, p) (method_len == strlen(m) && !memcmp(start, m, method_len) && \
                  path_len == strlen(p) && !memcmp(path, p, path_len))
    if (IS("GET", "/")) {
        counts.root++;
        reply(c, "200 OK", "ok\n");
    } else if (IS("POST", "/login")) {
        if (body_len > 0 && body[0] == '{' && memmem(body, body_len, "\"user\"", 6)) {
            char token[64];
            snprintf(token, sizeof token, "{\"token\":\"tok-%lld\"}", ++tokens_issued);
            counts.login++;
            reply(c, "200 OK", token);
        } else {
            counts.login_bad++;
            reply(c, "400 Bad Request", "bad login\n");
        }
    } else if (IS("GET", "/me")) {
        v = header(start, head_end, "authorization", &len);
        if (v && len > 11 && !memcmp(v, "Bearer tok-", 11)) {
            counts.me_ok++;
            reply(c, "200 OK", "{\"me\":true}");
        } else {
            counts.me_unauthorized++;
            reply(c, "401 Unauthorized", "no token\n");
        }
    } else if (IS("GET", "/ws")) {
        size_t key_len, up_len;
        const char *key = header(start, head_end, "sec-websocket-key", &key_len);
        const char *up = header(start, head_end, "upgrade", &up_len);
        if (!key || !up || up_len != 9 || strncasecmp(up, "websocket", 9)) return -1;
        websocket_accept(c, key, key_len);
    } else {
        counts.not_found++;
        reply(c, "404 Not Found", "not found\n");
    }
#undef IS
    v = header(start, head_end, "connection", &len);
    if (v && len == 5 && !strncasecmp(v, "close", 5)) c->close_after = 1;
    return (long)total;
}

static void frame_append(buf_t *out, int opcode, const unsigned char *payload, uint64_t n) {
    unsigned char h[10];
    size_t hl = 2;
    h[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[1] = (unsigned char)n;
    } else if (n < 65536) {
        h[1] = 126, h[2] = (unsigned char)(n >> 8), h[3] = (unsigned char)n, hl = 4;
    } else {
        h[1] = 127, hl = 10;
        for (int i = 0; i < 8; i++) h[2 + i] = (unsigned char)(n >> (56 - 8 * i));
    }
    buf_append(out, h, hl);
    buf_append(out, payload, (size_t)n);
}

/* One complete client frame at the front of ``in``: its length, 0 incomplete, -1 bad. */
static long handle_frame(conn_t *c) {
    unsigned char *p = (unsigned char *)c->in.data;
    size_t have = c->in.len, hl = 2;
    if (have < 2) return 0;
    int fin = p[0] & 0x80, opcode = p[0] & 0x0f;
    if (!(p[1] & 0x80)) return -1; /* client frames must be masked */
    uint64_t n = p[1] & 0x7f;
    if (n == 126) {
        if (have < 4) return 0;
        n = ((uint64_t)p[2] << 8) | p[3], hl = 4;
    } else if (n == 127) {
        if (have < 10) return 0;
        n = 0, hl = 10;
        for (int i = 0; i < 8; i++) n = (n << 8) | p[2 + i];
    }
    if (n > MAX_MESSAGE_BYTES || !fin) return -1;
    if (have < hl + 4 + n) return 0;
    unsigned char *mask = p + hl, *payload = p + hl + 4;
    for (uint64_t i = 0; i < n; i++) payload[i] ^= mask[i & 3];
    switch (opcode) {
    case 1: case 2:
        if (opcode == 1) counts.ws_text++; else counts.ws_binary++;
        frame_append(&c->out, opcode, payload, n);
        counts.ws_sent++;
        break;
    case 8:
        counts.ws_close++;
        c->ws_closed = 1;
        frame_append(&c->out, 8, payload, n < 2 ? n : 2); /* echo the code back */
        c->close_after = 1;
        break;
    case 9:
        frame_append(&c->out, 10, payload, n); /* ping -> pong */
        break;
    case 10:
        break;
    default:
        return -1;
    }
    return (long)(hl + 4 + n);
}

/* The connection is readable: read, handle what is complete, flush. -1: close it. */
static int conn_read(conn_t *c) {
    char chunk[65536];
    for (;;) {
        ssize_t n = read(c->fd, chunk, sizeof chunk);
        if (n == 0) return -1;
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return -1;
        }
        buf_append(&c->in, chunk, (size_t)n);
        if ((size_t)n < sizeof chunk) break;
    }
    while (c->in.len > 0 && !c->close_after) {
        long used = c->websocket ? handle_frame(c) : handle_request(c);
        if (used < 0) {
            counts.bad++;
            return -1;
        }
        if (used == 0) break;
        buf_consume(&c->in, (size_t)used);
    }
    return conn_flush(c);
}

static void accept_all(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or an aborted connection: nothing to do */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        if (!c) { perror("calloc"); exit(1); }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
        counts.connections++;
        open_conns++;
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void print_counts(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_s = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                   (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
#define PRINT(name) printf("\"" #name "\": %lld, ", counts.name);
    printf("{");
    COUNTERS(PRINT)
    printf("\"open_at_exit\": %lld, \"cpu_s\": %.3f}\n", open_conns, cpu_s);
#undef PRINT
    fflush(stdout);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait gets EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t addr_len = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 4096) ||
        getsockname(lfd, (struct sockaddr *)&addr, &addr_len)) {
        perror("listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the listener */
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    printf("{\"port\": %d}\n", ntohs(addr.sin_port));
    fflush(stdout);

    struct epoll_event events[256];
    double give_up_s = 0;
    for (;;) {
        if (stopping && give_up_s == 0) {
            close(lfd); /* no new connections; the open ones are served to their end */
            give_up_s = now_s() + 2.0;
        }
        if (stopping && (open_conns == 0 || now_s() > give_up_s)) break;
        int n = epoll_wait(epfd, events, 256, stopping ? 100 : -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (!c) {
                if (!stopping) accept_all(lfd);
                continue;
            }
            int rc = 0;
            if (events[i].events & EPOLLOUT) rc = conn_flush(c);
            if (rc == 0 && events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) rc = conn_read(c);
            if (rc < 0) conn_close(c);
        }
    }
    print_counts();
    return 0;
}
