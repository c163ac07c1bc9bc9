// What one write of a decode step's frames costs by its size (run.sh writesize): a socket
// pair (unix or TCP loopback), a reader that polls (zero-timeout ppoll + sched_yield, as the
// server's worker does) and reads each message whole, and a writer that writes SIZE bytes
// every GAP_US microseconds (sleeping between; with SPIN=1 polling with sched_yield, as the
// client's writer does between decode steps), whole or in pieces of at most PIECE bytes. Prints, medians of 400 messages: how
// long the write calls took and when the reader had the last byte, both from the first call.
// usage: writesize unix|tcp SIZE PIECE GAP_US
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
static int cmp(const void *a, const void *b) {
    double x = *(double *)a, y = *(double *)b;
    return x < y ? -1 : x > y;
}

enum { ROUNDS = 400 };
static int rfd;
static size_t size;
static _Atomic double got;
static atomic_int seen;

static void *reader(void *arg) {
    (void)arg;
    char *buf = malloc(size);
    for (int r = 0;; r++) {
        size_t have = 0;
        while (have < size) {
            struct pollfd p = {rfd, POLLIN, 0};
            struct timespec zero = {0, 0};
            if (ppoll(&p, 1, &zero, NULL) == 0) {
                sched_yield();
                continue;
            }
            ssize_t k = read(rfd, buf + have, size - have);
            if (k <= 0) return NULL;
            have += k;
        }
        atomic_store(&got, now());
        atomic_store(&seen, r + 1);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: writesize unix|tcp SIZE PIECE GAP_US\n");
        return 2;
    }
    int tcp = !strcmp(argv[1], "tcp");
    size = atol(argv[2]);
    size_t piece = atol(argv[3]);
    long gap = atol(argv[4]);
    int spin = getenv("SPIN") != NULL; // SPIN=1: the writer polls through the gap instead
    int wfd;
    if (!tcp) {
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
        wfd = sv[0];
        rfd = sv[1];
    } else {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof a;
        bind(l, (void *)&a, al);
        listen(l, 1);
        getsockname(l, (void *)&a, &al);
        wfd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(wfd, (void *)&a, al)) {
            perror("connect");
            return 1;
        }
        rfd = accept(l, 0, 0);
        close(l);
        int one = 1;
        setsockopt(wfd, IPPROTO_TCP, TCP_NODELAY, &one, 4);
        setsockopt(rfd, IPPROTO_TCP, TCP_NODELAY, &one, 4);
    }
    char *src = malloc(size);
    memset(src, 7, size);
    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    static double wr[ROUNDS], dl[ROUNDS];
    for (int r = 0; r < ROUNDS + 20; r++) {
        if (spin) {
            for (double until = now() + gap; now() < until;) sched_yield();
        } else {
            struct timespec g = {0, gap * 1000};
            nanosleep(&g, NULL);
        }
        double t0 = now();
        for (size_t o = 0; o < size;) {
            size_t n = size - o < piece ? size - o : piece;
            ssize_t k = write(wfd, src + o, n);
            if (k <= 0) {
                perror("write");
                return 1;
            }
            o += k;
        }
        double t1 = now();
        while (atomic_load(&seen) < r + 1) {
        }
        if (r >= 20) {
            wr[r - 20] = t1 - t0;
            dl[r - 20] = atomic_load(&got) - t0;
        }
    }
    qsort(wr, ROUNDS, sizeof(double), cmp);
    qsort(dl, ROUNDS, sizeof(double), cmp);
    printf("writesize %s%s size %zu piece %zu gap %ld us: write %.1f us (p90 %.1f), delivered %.1f us (p90 %.1f)\n",
           argv[1], spin ? " spin" : "", size, piece, gap, wr[ROUNDS / 2], wr[ROUNDS * 9 / 10], dl[ROUNDS / 2], dl[ROUNDS * 9 / 10]);
    return 0;
}
