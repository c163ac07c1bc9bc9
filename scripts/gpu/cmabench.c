// Socket copy against process_vm_readv pull for a 4 MiB host-to-device frame split over lanes
// (run.sh micro): usage cmabench SPINNERS LANES; prints when the sender returned and when
// the receiver had every byte, medians of 300.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sched.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <signal.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static int L=4; static size_t N=4<<20; static int mode; // 0 sock 1 cma
static int cs[16], ss[16]; static char *src; static pid_t cpid;
static void rd(int fd, void*b, size_t n){size_t o=0;while(o<n){ssize_t k=recv(fd,(char*)b+o,n-o,MSG_DONTWAIT);if(k>0)o+=k;else sched_yield();}}
static void wr(int fd, const void*b, size_t n){size_t o=0;while(o<n){ssize_t k=send(fd,(const char*)b+o,n-o,MSG_DONTWAIT);if(k>0)o+=k;else sched_yield();}}
static void* srv(void*a){ long i=(long)a; size_t c=N/L; char*d=aligned_alloc(4096,c); memset(d,1,c);
  for(;;){ struct {char m; char*addr;} rq; rd(ss[i],&rq,sizeof rq);
    if(rq.m=='s') rd(ss[i],d,c); else { struct iovec l={d,c},r={rq.addr,c}; if(process_vm_readv(cpid,&l,1,&r,1,0)!=(ssize_t)c){perror("pvr");exit(1);} }
    char k=1; wr(ss[i],&k,1);} }
static atomic_int go[16]; static atomic_int done;
static void* hlp(void*a){ long i=(long)a; size_t c=N/L; for(;;){ while(!atomic_load(&go[i])) sched_yield(); atomic_store(&go[i],0);
  struct {char m; char*addr;} rq={mode?'c':'s', src+i*c}; wr(cs[i],&rq,sizeof rq); if(!mode) wr(cs[i],src+i*c,c); atomic_fetch_add(&done,1);} }
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){ int spin=argc>1?atoi(argv[1]):0; int R=300;
  if(argc>2) L=atoi(argv[2]);
  src=malloc(N); memset(src,7,N); cpid=getpid();
  for(int i=0;i<L;i++){int sv[2];socketpair(AF_UNIX,SOCK_STREAM,0,sv);int bs=4<<20;setsockopt(sv[0],SOL_SOCKET,SO_SNDBUF,&bs,4);setsockopt(sv[1],SOL_SOCKET,SO_RCVBUF,&bs,4);cs[i]=sv[0];ss[i]=sv[1];}
  pid_t sp=fork(); if(!sp){ pthread_t t; for(long i=0;i<L;i++) pthread_create(&t,0,srv,(void*)i); pause(); }
  pid_t lp=0; if(spin){ lp=fork(); if(!lp){ setpgid(0,0); for(int i=1;i<spin;i++) if(!fork()) break; for(;;) sched_yield(); } }
  pthread_t t; for(long i=0;i<L;i++) pthread_create(&t,0,hlp,(void*)i);
  for(mode=0;mode<2;mode++){ double sent[R], acked[R];
    for(int r=0;r<R;r++){ memset(src,r,N); double t0=now(); atomic_store(&done,0); for(int i=0;i<L;i++) atomic_store(&go[i],1);
      while(atomic_load(&done)<L) sched_yield(); double t1=now();
      for(int i=0;i<L;i++){char k; rd(cs[i],&k,1);} double t2=now(); sent[r]=t1-t0; acked[r]=t2-t0; usleep(2000);}
    qsort(sent,R,8,cmp); qsort(acked,R,8,cmp);
    printf("spin=%d lanes=%d %s: sent p50 %.0f us, landed p50 %.0f p90 %.0f us\n",spin,L,mode?"cma ":"sock",sent[R/2],acked[R/2],acked[R*9/10]); fflush(stdout);}
  kill(sp,9); if(lp) kill(-lp,9); return 0; }
