#!/usr/bin/env python3
"""CPU time of every thread of the processes named PATTERNS while PID lives (run.sh cpu).

usage: threadcpu.py PID PATTERN...   (a pattern matches a process's command line)
Samples /proc every 50 ms, keeps each thread's last utime+stime, and prints per process kind
and thread name: threads, CPU seconds, and CPU seconds per second of the watched span.
"""
import os, re, sys, time, collections

pid, pats = int(sys.argv[1]), sys.argv[2:]
tick = os.sysconf("SC_CLK_TCK")
last = {}  # (kind, pid, tid) -> (comm, cpu seconds)
procs = {}  # pid -> (kind, cpu seconds of the whole process, its ended threads included)
t0 = time.monotonic()
while os.path.exists(f"/proc/{pid}"):
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        kind = next((k for k in pats if k in cmd), None)
        if not kind:
            continue
        try:
            st = open(f"/proc/{p}/stat").read()
            f = st[st.rindex(")") + 2 :].split()
            procs[int(p)] = (kind, (int(f[11]) + int(f[12])) / tick)
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                st = open(f"/proc/{p}/task/{t}/stat").read()
            except OSError:
                continue
            comm = st[st.index("(") + 1 : st.rindex(")")]
            f = st[st.rindex(")") + 2 :].split()
            last[(kind, int(p), int(t))] = (comm, (int(f[11]) + int(f[12])) / tick)
    time.sleep(0.05)
span = time.monotonic() - t0
agg = collections.defaultdict(lambda: [0, 0.0])
for (kind, _, _), (comm, cpu) in last.items():
    a = agg[(kind, re.sub(r"\d+$", "#", comm))]
    a[0] += 1
    a[1] += cpu
# What the processes spent beyond their threads' last samples: threads that ended between
# samples (a pool started and joined for each graph, say).
for pid, (kind, total) in procs.items():
    live = sum(cpu for (_, q, _), (_, cpu) in last.items() if q == pid)
    if total - live > 0.05:
        agg[(kind, "(ended threads)")][1] += total - live
print(f"span {span:.2f} s")
for (kind, comm), (n, cpu) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"  {kind:<14} {comm:<18} threads {n:3d}  cpu {cpu:7.2f} s  {cpu / span:5.2f} cores")
