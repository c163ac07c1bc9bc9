"""Two prompt batches of a llama-bench run as client and server saw them, on one time line.

The client's record is timeline.c's (TL_OUT); the server's is its worker's frame log
(VGPU_FRAME_LOG=PATH on `vgpu serve` writes PATH.<session>): both CLOCK_MONOTONIC on the
same host. Client lines (C): call, bytes, copy kind, time in the call; server lines (S):
the frame's call and bulk bytes, when its bulk had landed, when the call returned and when
its reply was written (the same for one-way calls), counted from the frame's header. Shows
which frame the server was on while the client waited, and when the graph launch reached
the server. With the client's write log (VGPU_WRITE_LOG=PATH on the client writes
PATH.<pid>) also its writes (W): by the writer thread (T) or a caller with its request (C),
their bytes, when the queued frames were found and when the write ended, counted from its
start.
Usage: frames.py TIMELINE FRAMELOG [WRITELOG]
"""
import sys

client = []
for line in open(sys.argv[1]):
    start, took, op, size, kind = line.split()
    client.append((float(start), float(took), op, int(size), int(kind)))
server = []
for line in open(sys.argv[2]):
    read, landed, called, done, op, size = line.split()
    server.append((float(read), float(landed), float(called), float(done), op, int(size)))
writes = []
if len(sys.argv) > 3:
    for line in open(sys.argv[3]):
        who, found, start, end, size = line.split()
        writes.append((float(start), who, float(found), float(end), int(size)))
launches = [i for i, e in enumerate(client) if e[2] == "graphLaunch"]
if len(launches) < 3:
    sys.exit(f"{sys.argv[1]}: too few graph launches")
# Batches in the middle of the run, or of the part the write log covers (it is written in
# blocks: a run's last rows are not).
picked = [i for i, l in enumerate(launches[:-1]) if not writes or writes[0][0] <= client[l][0] <= writes[-1][0]]
if len(picked) < 2:
    sys.exit(f"{sys.argv[1]}: too few graph launches where the write log has rows")
for b in (picked[len(picked) // 2 - 1], picked[len(picked) // 2]):
    start, end = client[launches[b]][0], client[launches[b + 1]][0]
    rows = [
        (e[0] - start, "C %-14s %8d k%d took %7.1f" % (e[2], e[3], e[4], e[1]))
        for e in client
        if start - 50 <= e[0] <= end + 10
    ]
    rows += [
        (e[0] - start, "  S %-24s %8d landed +%6.1f called +%7.1f done +%7.1f" % (e[4], e[5], e[1] - e[0], e[2] - e[0], e[3] - e[0]))
        for e in server
        if start - 50 <= e[0] <= end + 10
    ]
    rows += [
        (e[0] - start, "  W %s write %17d found %6.1f ended +%7.1f" % (e[1], e[4], e[2] - e[0], e[3] - e[0]))
        for e in writes
        if start - 50 <= e[0] <= end + 10
    ]
    print("---- batch (µs from its graph launch)")
    for t, r in sorted(rows):
        print("%9.1f %s" % (t, r))
