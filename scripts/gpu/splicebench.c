// Socket write against vmsplice + splice (the sender's pages handed to the socket, one copy:
// the receiver's) for a 4 MiB host-to-device frame split over lanes (run.sh micro):
// usage splicebench SPINNERS LANES unix|tcp (SIZE_KB: another size); prints when the senders returned and when the
// receiver had every byte (its one-byte ack read), medians of 300. Spinners busy-wait
// without yielding, as llama.cpp's threads do between graphs.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <time.h>
#include <stdint.h>
#include <sys/syscall.h>
// SLICE_US: the lane threads ask the scheduler (EEVDF, Linux 6.12+) for a short slice, so that
// they preempt a spinner when they wake instead of waiting out its slice.
struct sattr { uint32_t size, policy; uint64_t flags; int32_t nice; uint32_t prio; uint64_t runtime, deadline, period; };
static void slice(void){ const char*e=getenv("SLICE_US"); if(!e) return; struct sattr a={.size=sizeof a,.runtime=(uint64_t)atoi(e)*1000};
  if(syscall(SYS_sched_setattr,0,&a,0)) perror("sched_setattr"); }
// SEND_CPUS / RECV_CPUS / MAIN_CPU ("0,1,2,3"): lane i's sender (receiver) runs on the i-th CPU of
// its list, the main thread (which writes the bytes before each round) on MAIN_CPU: where the
// cores that copy sit against each other's caches (run.sh topo).
static void pin(const char*env,int i){ const char*e=getenv(env); if(!e||!*e) return; int c[64],n=0; char*d=strdup(e),*t=strtok(d,",");
  while(t&&n<64){c[n++]=atoi(t);t=strtok(0,",");} free(d); if(!n) return; cpu_set_t m; CPU_ZERO(&m); CPU_SET(c[i%n],&m);
  if(pthread_setaffinity_np(pthread_self(),sizeof m,&m)) perror("pin"); }
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static int L=4, tcp; static size_t N=4<<20; static int mode; // 0 write, 1 vmsplice
static int cs[16], ss[16], pp[16][2]; static char *src;
static int blk; // BLOCK=1: threads sleep in the kernel instead of polling with sched_yield
static void rd(int fd, void*b, size_t n){size_t o=0;while(o<n){ssize_t k=recv(fd,(char*)b+o,n-o,blk?0:MSG_DONTWAIT);if(k>0)o+=k;else sched_yield();}}
static void wr(int fd, const void*b, size_t n){size_t o=0;while(o<n){ssize_t k=send(fd,(const char*)b+o,n-o,blk?0:MSG_DONTWAIT);if(k>0)o+=k;else sched_yield();}}
static void* srv(void*a){ slice(); long i=(long)a; pin("RECV_CPUS",i); size_t c=N/L; char*d=aligned_alloc(4096,c); memset(d,1,c);
  for(;;){ char m; rd(ss[i],&m,1); rd(ss[i],d,c); char k=1; wr(ss[i],&k,1);} }
static void spl(int i, const char*p, size_t n){ size_t o=0; while(o<n){
    struct iovec v={(void*)(p+o),n-o}; ssize_t k=vmsplice(pp[i][1],&v,1,0); if(k<=0){perror("vmsplice");exit(1);}
    size_t left=k; while(left){ ssize_t s=splice(pp[i][0],0,cs[i],0,left,SPLICE_F_MOVE|SPLICE_F_MORE); if(s<=0){perror("splice");exit(1);} left-=s; }
    o+=k; } }
static atomic_int go[16]; static atomic_int done;
static pthread_mutex_t mu=PTHREAD_MUTEX_INITIALIZER; static pthread_cond_t cv=PTHREAD_COND_INITIALIZER, dcv=PTHREAD_COND_INITIALIZER;
static void await_go(int i){ if(!blk){ while(!atomic_load(&go[i])) sched_yield(); } else { pthread_mutex_lock(&mu); while(!atomic_load(&go[i])) pthread_cond_wait(&cv,&mu); pthread_mutex_unlock(&mu);} }
static void finish(void){ atomic_fetch_add(&done,1); if(blk){ pthread_mutex_lock(&mu); pthread_cond_broadcast(&dcv); pthread_mutex_unlock(&mu);} }
static void* hlp(void*a){ slice(); long i=(long)a; pin("SEND_CPUS",i); size_t c=N/L; for(;;){ await_go(i); atomic_store(&go[i],0);
  char m='d'; wr(cs[i],&m,1); if(mode) spl(i,src+i*c,c); else wr(cs[i],src+i*c,c); finish();} }
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
static void pair(int i){ int bs=4<<20;
  if(!tcp){ int sv[2]; socketpair(AF_UNIX,SOCK_STREAM,0,sv); cs[i]=sv[0]; ss[i]=sv[1]; }
  else { int l=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={.sin_family=AF_INET,.sin_addr.s_addr=htonl(INADDR_LOOPBACK)}; socklen_t al=sizeof a;
    bind(l,(void*)&a,al); listen(l,1); getsockname(l,(void*)&a,&al); cs[i]=socket(AF_INET,SOCK_STREAM,0);
    setsockopt(cs[i],SOL_SOCKET,SO_SNDBUF,&bs,4); if(connect(cs[i],(void*)&a,al)){perror("connect");exit(1);} ss[i]=accept(l,0,0); close(l);
    int one=1; setsockopt(cs[i],IPPROTO_TCP,TCP_NODELAY,&one,4); setsockopt(ss[i],IPPROTO_TCP,TCP_NODELAY,&one,4); }
  setsockopt(cs[i],SOL_SOCKET,SO_SNDBUF,&bs,4); setsockopt(ss[i],SOL_SOCKET,SO_RCVBUF,&bs,4);
  if(pipe(pp[i])||fcntl(pp[i][1],F_SETPIPE_SZ,1<<20)<0){perror("pipe");exit(1);} }
int main(int argc,char**argv){ int spin=argc>1?atoi(argv[1]):0; int R=300; blk=getenv("BLOCK")!=0; slice(); if(getenv("SIZE_KB")) N=(size_t)atoi(getenv("SIZE_KB"))<<10;
  if(argc>2) L=atoi(argv[2]); tcp=argc>3&&!strcmp(argv[3],"tcp");
  src=aligned_alloc(4096,N); memset(src,7,N);
  for(int i=0;i<L;i++) pair(i);
  pid_t sp=fork(); if(!sp){ pthread_t t; for(long i=0;i<L;i++) pthread_create(&t,0,srv,(void*)i); pause(); }
  pid_t lp=0; if(spin){ lp=fork(); if(!lp){ setpgid(0,0); for(int i=1;i<spin;i++) if(!fork()) break; for(;;) __builtin_ia32_pause(); } }
  pthread_t t; for(long i=0;i<L;i++) pthread_create(&t,0,hlp,(void*)i);
  pin("MAIN_CPU",0); int modes=getenv("WRITE_ONLY")?1:2;
  for(mode=0;mode<modes;mode++){ double sent[R], acked[R];
    for(int r=0;r<R;r++){ memset(src,r,N); double t0=now(); atomic_store(&done,0); pthread_mutex_lock(&mu); for(int i=0;i<L;i++) atomic_store(&go[i],1); pthread_cond_broadcast(&cv); pthread_mutex_unlock(&mu);
      if(blk){ pthread_mutex_lock(&mu); while(atomic_load(&done)<L) pthread_cond_wait(&dcv,&mu); pthread_mutex_unlock(&mu);} else while(atomic_load(&done)<L) sched_yield(); double t1=now();
      for(int i=0;i<L;i++){char k; rd(cs[i],&k,1);} double t2=now(); sent[r]=t1-t0; acked[r]=t2-t0; usleep(2000);}
    qsort(sent,R,8,cmp); qsort(acked,R,8,cmp);
    printf("%s %s slice=%s spin=%d lanes=%d send=%s recv=%s main=%s %s: sent p50 %.0f us, landed p50 %.0f p90 %.0f us\n",tcp?"tcp ":"unix",blk?"block":"poll ",getenv("SLICE_US")?getenv("SLICE_US"):"-",spin,L,getenv("SEND_CPUS")?getenv("SEND_CPUS"):"-",getenv("RECV_CPUS")?getenv("RECV_CPUS"):"-",getenv("MAIN_CPU")?getenv("MAIN_CPU"):"-",mode?"splice":"write ",sent[R/2],acked[R/2],acked[R*9/10]); fflush(stdout);}
  kill(sp,9); if(lp) kill(-lp,9); return 0; }
