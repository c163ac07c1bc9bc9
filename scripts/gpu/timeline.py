"""Per-batch segments of a llama-bench prompt run recorded by timeline.c (medians, in µs).

A batch runs from one graph launch to the next:
  wait  the launch until the first synchronize after it returns (the GPU's work, and for
        vgpu the device-to-host copy of the logits, which waits for it)
  h2d   the next batch's host-to-device copies and the synchronizes after them
  cpu   the rest: llama.cpp's own work on the CPU between the two
  gpu   (TL_GPU=1) the graph's own time on the GPU, from events recorded around it (even steps);
  pre   (TL_GPU=1) on the GPU, from the step's first host-to-device copy to the graph's start;
  gap   (TL_GPU=1) on the GPU, from the previous graph's end to the step's first copy
Usage: timeline.py FILE NAME [--dump]  (--dump: also print one batch's calls)
"""
import statistics
import sys

events = []
for line in open(sys.argv[1]):
    start, took, op, size, kind = line.split()
    events.append((float(start), float(took), op, int(size), int(kind)))
launches = [i for i, e in enumerate(events) if e[2] == "graphLaunch"]
batches = []
for a, b in zip(launches[1:], launches[2:]):  # the first batch warms up
    seg = events[a : b + 1]
    syncs = [e for e in seg if e[2] == "streamSync"]
    waited = syncs[0][0] + syncs[0][1] if syncs else seg[0][0]
    h2d = sum(e[1] for e in seg if e[2] == "memcpyAsync" and e[4] == 1) + sum(e[1] for e in syncs[1:])
    batch = {"batch": seg[-1][0] - seg[0][0], "wait": waited - seg[0][0], "h2d": h2d}
    batch["cpu"] = batch["batch"] - batch["wait"] - batch["h2d"]
    batches.append(batch)
if not batches:
    sys.exit(f"{sys.argv[1]}: no batches (no graph launches recorded)")
row = "  ".join("%s %7.1f" % (k, statistics.median(b[k] for b in batches)) for k in ("batch", "wait", "h2d", "cpu"))
# TL_GPU=1: GPU-side times from events on the stream (timeline.c): the graph's own, the
# step's copies until the graph starts, and the idle gap before the step's first copy.
for name, col in (("graphGpu", "gpu"), ("gpuPre", "pre"), ("gpuGap", "gap")):
    xs = [e[1] for e in events if e[2] == name][1:]
    if xs:
        row += "  %s %7.1f" % (col, statistics.median(xs))
print(f"{sys.argv[2]:<28} {row}  ({len(batches)} batches)")
if "--dump" in sys.argv:
    a, b = launches[len(launches) // 2], launches[len(launches) // 2 + 1]
    for e in events[a : b + 1]:
        print("   %9.1f +%8.1f %s %d kind=%d" % (e[0] - events[a][0], e[1], e[2], e[3], e[4]))
