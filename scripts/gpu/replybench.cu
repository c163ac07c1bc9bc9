// What writing a decode step's logits (128 KB) back to the client costs the worker, and why
// (run.sh replybench): the bytes come from pinned memory the GPU has just written. Times
// (medians of 300, µs): reading them (memcpy) fresh from the DMA and again warm; writing them
// to a loopback TCP or unix socket whose reader polls (MSG_DONTWAIT + sched_yield, as the
// client's reply reader does), from the fresh pinned buffer and from a warm heap buffer;
// and when the reader had the last byte.
// usage: replybench [BYTES]
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <time.h>
#include <atomic>
#include <algorithm>
#include <vector>

static double now() { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static size_t N = 128000;
static std::atomic<int> go, done, stop;
static std::atomic<double> got_at;
static int rfd;

static void* reader(void*) {
  char* b = (char*)malloc(N);
  for (;;) {
    while (!go.load()) { if (stop.load()) { free(b); return 0; } sched_yield(); }
    go.store(0);
    size_t o = 0;
    while (o < N) { ssize_t k = recv(rfd, b + o, N - o, MSG_DONTWAIT); if (k > 0) o += k; else sched_yield(); }
    got_at.store(now());
    done.store(1);
  }
  return 0;
}

static double med(std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }

static void pair(int tcp, int* w, int* r) {
  if (!tcp) { int sv[2]; socketpair(AF_UNIX, SOCK_STREAM, 0, sv); *w = sv[0]; *r = sv[1]; }
  else {
    int l = socket(AF_INET, SOCK_STREAM, 0); sockaddr_in a = {}; a.sin_family = AF_INET; a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1; setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, 4);
    bind(l, (sockaddr*)&a, sizeof a); listen(l, 1); socklen_t al = sizeof a; getsockname(l, (sockaddr*)&a, &al);
    *w = socket(AF_INET, SOCK_STREAM, 0); connect(*w, (sockaddr*)&a, sizeof a); *r = accept(l, 0, 0); close(l);
    setsockopt(*w, IPPROTO_TCP, TCP_NODELAY, &one, 4); setsockopt(*r, IPPROTO_TCP, TCP_NODELAY, &one, 4);
  }
  int big = 4 << 20; for (int fd : {*w, *r}) { setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, 4); setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, 4); }
}

int main(int argc, char** argv) {
  if (argc > 1) N = atol(argv[1]);
  char *pin, *heap = (char*)malloc(N), *sink = (char*)malloc(N); void* dev;
  cudaHostAlloc((void**)&pin, N, cudaHostAllocPortable); cudaMalloc(&dev, N); cudaMemset(dev, 7, N);
  memset(heap, 3, N); memset(sink, 0, N);
  cudaStream_t s; cudaStreamCreate(&s);
  std::vector<double> fresh, warm;
  for (int i = 0; i < 300; i++) {
    cudaMemcpyAsync(pin, dev, N, cudaMemcpyDeviceToHost, s); cudaStreamSynchronize(s);
    double t0 = now(); memcpy(sink, pin, N); double t1 = now(); memcpy(sink, pin, N); double t2 = now();
    fresh.push_back(t1 - t0); warm.push_back(t2 - t1);
  }
  printf("replybench %zu B: memcpy from pinned memory fresh from the GPU %.1f us, again %.1f us\n", N, med(fresh), med(warm));
  for (int tcp = 0; tcp < 2; tcp++) {
    int w; pair(tcp, &w, &rfd);
    pthread_t th; pthread_create(&th, 0, reader, 0);
    for (int src = 0; src < 2; src++) {
      std::vector<double> wr, land;
      for (int i = 0; i < 300; i++) {
        if (src == 0) { cudaMemcpyAsync(pin, dev, N, cudaMemcpyDeviceToHost, s); cudaStreamSynchronize(s); }
        char* p = src == 0 ? pin : heap;
        done.store(0); go.store(1);
        usleep(200); // the reader polls meanwhile, as the client does while the GPU works
        double t0 = now(); size_t o = 0;
        while (o < N) { ssize_t k = send(w, p + o, N - o, 0); if (k > 0) o += k; }
        double t1 = now();
        while (!done.load()) sched_yield();
        double g = got_at.load();
        wr.push_back(t1 - t0); land.push_back(g - t0);
      }
      printf("replybench %zu B over %s from %s: write %.1f us, reader had it all %.1f us\n", N, tcp ? "tcp" : "unix",
             src == 0 ? "fresh pinned memory" : "a warm heap buffer", med(wr), med(land));
    }
    stop.store(1); pthread_join(th, 0); stop.store(0); close(w); close(rfd);
  }
  return 0;
}
