"""Issue 6's prompt ratios over several calls of `run.sh ab`, each call on a host of its own.

One call's ratio (median of its vgpu samples over the median of its native samples) moves by
several points with the host it drew; this pools the calls: each call's ratio per
configuration, then their median and mean across calls, with a bootstrap 95% interval of
the mean (calls resampled, 10 000 draws, fixed seed), so that "is the mean above 0.97?" has
an answer one call cannot give.

Usage: abpool.py [--model q8] [--only CFG,...] DIR[:SUFFIX]...
  DIR: a call's results, holding ab-samples/ab.<model>.<cfg> files (unpacked results.tgz);
  :SUFFIX takes that call's configurations named with SUFFIX (`:@b`: the second build's)
  in place of the plain ones
"""
import argparse
import os
import random
import statistics


def ratios(d, model, suffix=""):
    """Configuration -> vgpu/native ratio of medians in call folder `d` (None without native);
    with `suffix`, the configurations named with it, under their plain names."""
    folder = os.path.join(d, "ab-samples")
    files = {f.split(".", 2)[2]: os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(f"ab.{model}.")}
    if suffix:
        files = {c.replace(suffix, ""): p for c, p in files.items() if c == "native" or suffix in c}
    if "native" not in files:
        return None
    med = {c: statistics.median(float(x) for x in open(p) if x.strip()) for c, p in files.items()}
    return {c: m / med["native"] for c, m in med.items() if c != "native"}


def interval(xs, draws=10000, seed=1):
    rng = random.Random(seed)
    means = sorted(statistics.mean(rng.choice(xs) for _ in xs) for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="q8")
    ap.add_argument("--only", default="", help="configurations to report (default: all)")
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    per = {}
    for arg in a.dirs:
        d, _, suffix = arg.partition(":")
        r = ratios(d, a.model, suffix)
        if r is None:
            print(f"{d}: no native column, left out")
            continue
        for c, v in sorted(r.items()):
            if not only or c in only:
                per.setdefault(c, []).append((d, v))
    for c, rows in sorted(per.items()):
        xs = [v for _, v in rows]
        print(f"{c}: " + ", ".join(f"{v:.3f}" for v in xs))
        if len(xs) >= 2:
            lo, hi = interval(xs)
            print(f"  {len(xs)} calls: median {statistics.median(xs):.3f}, mean {statistics.mean(xs):.3f} "
                  f"(95% interval of the mean {lo:.3f}-{hi:.3f})")


if __name__ == "__main__":
    main()
