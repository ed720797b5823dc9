#!/usr/bin/python3
"""report.py WORKDIR: the markdown body of scripts/bench storage's report (tables, targets,
chunk-size sweep, memory), from the files the script wrote in WORKDIR:

    results.tsv     run, system, workload, value       (MiB/s for sequential, IOPS for random)
    unmeasured.tsv  system, reason                     (a peer that could not be measured)
    notes.tsv       system, workload, text, value      (a footnote: {} in text becomes every
                                                        run's value, in run order)
    rss.tsv         durability, key, value             (the 100-open-disks memory measurement)
    params.tsv      key, value                         (runs, sizes, chunk sizes, ...)

Figures are medians over runs; ratios compare medians."""
import collections
import math
import statistics
import sys

W = sys.argv[1]


def rows(name):
    try:
        with open(f"{W}/{name}") as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except FileNotFoundError:
        return []


P = {k: v for k, v in rows("params.tsv")}
RUNS = collections.defaultdict(list)
for run, system, workload, value in rows("results.tsv"):
    try:
        RUNS[(system, workload)].append(float(value))
    except ValueError:
        pass  # a figure that could not be read; reported as missing
UNMEASURED = {s: r for s, r in rows("unmeasured.tsv")}
NOTES = collections.defaultdict(lambda: collections.defaultdict(list))
for s, wl, text, value in rows("notes.tsv"):
    NOTES[(s, wl)][text].append(value)
RSS = collections.defaultdict(dict)
for mode, key, value in rows("rss.tsv"):
    RSS[mode][key] = value


def med(system, workload):
    v = RUNS.get((system, workload))
    return statistics.median(v) if v else None


def fmt(v):
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio(a, b):
    return a / b if a is not None and b else None


SYSTEMS = [("file", "nbdkit file plugin"), ("rgw", "raw radosgw (16 × curl, 4 MiB objects)"),
           ("wisp", f"Wisp ({P.get('chunk_label', '1 MiB')} chunks)"), ("nbds3", "nbdkit S3 plugin (64 KiB objects)"),
           ("s3backer", "s3backer 1.5.4 (FUSE, 1 MiB blocks)")]

# Rows: label, then per system the workload key to show (None: not applicable).
SEQ = P.get("seq_label", "1 GiB")
RT = P.get("rand_time", "30")
X32 = P.get("x32_time", "30")
ROWS = [
    (f"Sequential write, 1 MiB, QD 8, {SEQ}, end_fsync (MiB/s, flush included)",
     {"file": "seqwrite", "rgw": "put", "wisp": "seqwrite", "nbds3": "seqwrite", "s3backer": "seqwrite"}),
    ("… Wisp with durability=local (flush = local fsync) (MiB/s)", {"wisp": "seqwrite_local"}),
    ("Sequential read, 1 MiB, QD 8, cold (MiB/s)",
     {"file": "seqread_cold", "rgw": "get", "wisp": "seqread_cold", "nbds3": "seqread", "s3backer": "seqread_cold"}),
    ("Sequential read, 1 MiB, QD 8, warm (MiB/s)",
     {"file": "seqread_warm", "wisp": "seqread_warm", "nbds3": "seqread", "s3backer": "seqread_warm"}),
    (f"Random read, 4 KiB, QD 32, {RT} s, cold (IOPS)",
     {"wisp": "randread_cold", "nbds3": "randread", "s3backer": "randread_cold"}),
    ("… its first 5 s, while the cache fills (IOPS)",
     {"wisp": "randread_cold_5s", "s3backer": "randread_cold_5s"}),
    (f"Random read, 4 KiB, QD 32, {RT} s, warm (IOPS)",
     {"file": "randread_warm", "wisp": "randread_warm", "nbds3": "randread", "s3backer": "randread_warm"}),
    (f"Random write, 4 KiB, QD 32, {RT} s, fio fsync=32, local durability (IOPS) ¶",
     {"file": "randwrite", "wisp": "randwrite_local", "s3backer": "randwrite"}),
    (f"Random write, 4 KiB, QD 32, {RT} s, fio fsync=32, remote durability (IOPS) ¶",
     {"wisp": "randwrite_remote", "nbds3": "randwrite"}),
    (f"Random write, 4 KiB, QD 32, {X32} s, one flush per 32 writes exactly, local durability (IOPS) ¶",
     {"file": "randwrite_x32", "wisp": "randwrite_x32_local"}),
    (f"Random write, 4 KiB, QD 32, {X32} s, one flush per 32 writes exactly, remote durability (IOPS) ¶",
     {"wisp": "randwrite_x32_remote", "nbds3": "randwrite_x32"}),
    ("… local durability with upload-delay=60, so no upload round during the writes (IOPS) ¶",
     {"file": "randwrite_x32", "wisp": "randwrite_x32_local_d60"}),
]

MARKS = {
    ("s3backer", "seqwrite"): "†", ("s3backer", "randwrite"): "†",
    ("nbds3", "seqread"): "‡", ("nbds3", "randread"): "‡",
    ("rgw", "put"): " PUT", ("rgw", "get"): " GET",
}


def cell(system, workload):
    if system in UNMEASURED:
        return "not measured"
    if workload is None:
        return "—"
    v = med(system, workload)
    if v is None:
        return "—"
    s = fmt(v) + MARKS.get((system, workload), "")
    if NOTES.get((system, workload)):
        s += " §"
    return s


def main_table():
    out = ["| Workload | " + " | ".join(n for _, n in SYSTEMS) + " |",
           "| --- |" + " ---: |" * len(SYSTEMS)]
    for label, m in ROWS:
        out.append(f"| {label} | " + " | ".join(cell(s, m.get(s)) for s, _ in SYSTEMS) + " |")
    return out


def target_lines():
    lines = []
    results = []

    def target(text, num, den, need, what_num, what_den, exact=None):
        """exact: (num, den) of the same comparison with one flush per 32 writes exactly; when
        measured, it decides the verdict and the fio 3.33 figure is shown next to it."""
        a, b = med(*num), med(*den)
        r = ratio(a, b)
        sysn, sysd = num[0], den[0]
        if sysd in UNMEASURED or r is None:
            reason = UNMEASURED.get(sysd) or UNMEASURED.get(sysn) or "a figure is missing"
            lines.append(f"- {text}: **not measured** ({reason}).")
            results.append(None)
            return
        fio_part = f"{r:.2f}× ({what_num} {fmt(a)} against {what_den} {fmt(b)})"
        if exact and ratio(med(*exact[0]), med(*exact[1])) is not None:
            xa, xb = med(*exact[0]), med(*exact[1])
            xr = xa / xb
            ok = xr >= need
            results.append(ok)
            lines.append(f"- {text}: one flush per 32 writes: {xr:.2f}× ({what_num} {fmt(xa)} "
                         f"against {what_den} {fmt(xb)}): **{'met' if ok else 'not met'}**; "
                         f"fio 3.33 `fsync=32` (more flushes): {fio_part}, "
                         f"{'met' if r >= need else 'not met'} there.")
            return
        ok = r >= need
        results.append(ok)
        lines.append(f"- {text}: {fio_part}: **{'met' if ok else 'not met'}**.")

    target("Warm sequential read ≥ 0.8× the file plugin", ("wisp", "seqread_warm"),
           ("file", "seqread_warm"), 0.8, "Wisp", "file plugin")
    target("Warm random 4 KiB read ≥ 0.7× the file plugin", ("wisp", "randread_warm"),
           ("file", "randread_warm"), 0.7, "Wisp", "file plugin")
    target("Sequential write, flush included (durability=remote), ≥ 0.9× raw radosgw PUT",
           ("wisp", "seqwrite"), ("rgw", "put"), 0.9, "Wisp", "curl PUT")
    target("Cold sequential read ≥ 1.0× raw radosgw GET", ("wisp", "seqread_cold"),
           ("rgw", "get"), 1.0, "Wisp", "curl GET")
    target("Random 4 KiB write, fsync=32, durability=local ≥ 0.3× the file plugin",
           ("wisp", "randwrite_local"), ("file", "randwrite"), 0.3, "Wisp", "file plugin",
           (("wisp", "randwrite_x32_local"), ("file", "randwrite_x32")))
    target("Random 4 KiB write, fsync=32, durability=local ≥ 20× nbdkit S3",
           ("wisp", "randwrite_local"), ("nbds3", "randwrite"), 20, "Wisp", "nbdkit S3",
           (("wisp", "randwrite_x32_local"), ("nbds3", "randwrite_x32")))
    target("Random 4 KiB write, fsync=32, durability=remote ≥ 2× nbdkit S3",
           ("wisp", "randwrite_remote"), ("nbds3", "randwrite"), 2, "Wisp", "nbdkit S3",
           (("wisp", "randwrite_x32_remote"), ("nbds3", "randwrite_x32")))
    target("Cold random 4 KiB read ≥ 1.5× s3backer", ("wisp", "randread_cold"),
           ("s3backer", "randread_cold"), 1.5, "Wisp", "s3backer")
    local = RSS.get("local")
    if local and "rss_kib" in local:
        rss = int(local["rss_kib"]) / 1024
        hwm = int(local["hwm_kib"]) / 1024
        limit = float(local["limit_mib"])
        ok = rss < limit and hwm < limit
        results.append(ok)
        lines.append(f"- Plugin RSS with {local['disks']} open disks < 64 MiB + the configured "
                     f"in-memory buffers ({local['buffers_mib']} MiB) = {limit:.0f} MiB: RSS "
                     f"{rss:.1f} MiB, peak (VmHWM) {hwm:.1f} MiB: **{'met' if ok else 'not met'}**.")
    else:
        results.append(None)
        lines.append("- Plugin RSS with 100 open disks: **not measured**.")
    met = sum(1 for r in results if r)
    missed = sum(1 for r in results if r is False)
    lines.insert(0, f"Targets: {met} met, {missed} not met, "
                    f"{sum(1 for r in results if r is None)} not measured.")
    lines.insert(1, "")
    return lines


def load_json(path):
    import json
    try:
        with open(path) as f:
            return json.load(f)["stats"]
    except (OSError, ValueError, KeyError):
        return None


def write_amplification():
    """From the `wisp disk stats` kept around the exact-flush random writes: what the plugin
    did for them.  Runs kept without the snapshot taken before the writes subtract the fill
    instead, which is known exactly: SIZE in 1 MiB writes, uploaded as SIZE / chunk chunks in
    one flush."""
    import glob
    size = int(P.get("size_bytes", "0") or 0)
    chunk = 1 << 20
    lines = []
    for mode in ("local", "remote"):
        per = collections.defaultdict(list)
        for after_path in sorted(glob.glob(f"{W}/stats/r*-wisp-x32-{mode}-randwrite-x32-{mode}.json")):
            after = load_json(after_path)
            before = load_json(after_path.replace(".json", "-before.json"))
            if after is None:
                continue
            if before is None:
                if not size:
                    continue
                before = {"writes": size // (1 << 20), "write_bytes": size, "flushes": 1,
                          "uploads": size // chunk, "upload_bytes": size}
            for k in ("writes", "write_bytes", "flushes", "uploads", "upload_bytes"):
                per[k].append(after[k] - before[k])
            per["pending"].append(after["pending_bytes"])
        if not per["writes"]:
            continue
        m = {k: statistics.median(v) for k, v in per.items()}
        amp = m["upload_bytes"] / m["write_bytes"] if m["write_bytes"] else 0
        lines.append(f"- durability={mode}: {m['writes']:,.0f} writes of 4 KiB "
                     f"({m['write_bytes'] / 1048576:.0f} MiB) and {m['flushes']:,.0f} flushes; "
                     f"{m['uploads']:,.0f} chunks uploaded ({m['upload_bytes'] / 1073741824:.2f} GiB)"
                     + (f", {m['pending'] / 1073741824:.2f} GiB still waiting for upload at the end"
                        if m["pending"] else "")
                     + f": {amp:,.0f} bytes uploaded per byte written.")
    if not lines:
        return []
    return ["What the plugin did during the random writes with one flush per 32 writes, from "
            "`wisp disk stats` (medians of the runs): a 4 KiB write makes its whole chunk "
            "dirty, and every dirty chunk is uploaded whole.", ""] + lines


def footnotes():
    out = []
    out.append("† s3backer 1.5.4 answers fsync without writing anything (`fuse_op_fsync` returns 0): "
               "its flush figures are **not durable**; its writes sit in its block cache "
               "(1000 blocks of 1 MiB in RAM by default) and go out later.")
    out.append("‡ nbdkit's S3 plugin has no cache: every read is a ranged GET, so one "
               "measurement stands for both cold and warm.  Its flush does nothing either, but "
               "every write is a PUT (a read-modify-write of its 64 KiB object for a 4 KiB "
               "write) before it returns, so its writes are durable in the store.")
    wpf = [med(s, w) for s, w in (("file", "randwrite_wpf"), ("wisp", "randwrite_local_wpf"),
                                  ("wisp", "randwrite_remote_wpf"), ("nbds3", "randwrite_wpf"))]
    wpf = [f"{x:.1f}" for x in wpf if x]
    s3b = med("s3backer", "randwrite_wpf")
    out.append("¶ fio 3.33 with an asynchronous engine such as `nbd` keeps issuing flushes while "
               "one is in flight, so `fsync=32` sent one flush per "
               f"{' / '.join(wpf) if wpf else '?'} writes here (file plugin / Wisp local / Wisp "
               "remote / nbdkit S3; from fio's own sync count), not one per 32 (fixed in fio 3.37, "
               "axboe/fio#1754)"
               + (f"; through libaio on s3backer's file it was one per {s3b:.1f}" if s3b else "")
               + ".  So the random writes were also run with `bench/storage/nbd_randwrite.c` "
               "(libnbd, QD 32, exactly one flush per 32 writes issued, other requests in flight "
               "meanwhile), and the write targets are judged on those figures.")
    evicting = int(P.get("size_bytes", "0") or 0) > 1000 << 20
    out.append("s3backer's warm random read is not measured (no target uses it).  Its warm "
               "sequential read comes from its block cache, 1000 blocks of 1 MiB by default"
               + (", which a sequential pass over more blocks than that keeps evicting."
                  if evicting else "."))
    for (s, wl), notes in sorted(NOTES.items()):
        for text, values in notes.items():
            filled = text.replace("{}", " / ".join(values))
            if len(values) > 1:
                filled += " (runs " + " / ".join(str(i + 1) for i in range(len(values))) + ")"
            out.append(f"§ {dict(SYSTEMS).get(s, s)}: {filled}.")
    for s, reason in UNMEASURED.items():
        out.append(f"{dict(SYSTEMS).get(s, s)}: not measured ({reason}).")
    return [f"- {x}" for x in out]


SWEEP = [("64k", "64 KiB"), ("256k", "256 KiB"), ("1m", "1 MiB"), ("4m", "4 MiB")]
SWEEP_COLS = [("seqwrite", "Seq write, durability=remote (MiB/s)"),
              ("seqread_cold", "Cold seq read (MiB/s)"),
              ("seqread_warm", "Warm seq read (MiB/s)"),
              ("randread_cold", "Cold rand read 4 KiB (IOPS)"),
              ("randread_warm", "Warm rand read 4 KiB (IOPS)"),
              ("randwrite_local", "Rand write 4 KiB, fsync=32, local (IOPS)"),
              ("randwrite_x32_remote", "Rand write 4 KiB, a flush per 32, remote (IOPS)")]
SWEEP_SHORT = {"seqwrite": "sequential write", "seqread_cold": "cold sequential read",
               "seqread_warm": "warm sequential read", "randread_cold": "cold random read",
               "randread_warm": "warm random read", "randwrite_local": "random write (local)",
               "randwrite_x32_remote": "random write (remote)"}


def sweep_system(key):
    return f"wisp-{key}"


def sweep():
    have = [(k, lab) for k, lab in SWEEP if any(med(sweep_system(k), c) for c, _ in SWEEP_COLS)]
    if not have:
        return ["Not measured."], None
    best = {c: max((med(sweep_system(k), c) or 0) for k, _ in have) for c, _ in SWEEP_COLS}
    out = ["| Chunk size | " + " | ".join(l for _, l in SWEEP_COLS) + " | Score |",
           "| --- |" + " ---: |" * (len(SWEEP_COLS) + 1)]
    scores = {}
    for k, lab in have:
        vals = [med(sweep_system(k), c) for c, _ in SWEEP_COLS]
        fr = [v / best[c] for v, (c, _) in zip(vals, SWEEP_COLS) if v and best[c]]
        score = math.exp(sum(math.log(f) for f in fr) / len(fr)) if len(fr) == len(SWEEP_COLS) else None
        scores[k] = score
        out.append(f"| {lab} | " + " | ".join(fmt(v) for v in vals) + f" | {score:.2f} |"
                   if score is not None else
                   f"| {lab} | " + " | ".join(fmt(v) for v in vals) + " | — |")
    pick = max((k for k in scores if scores[k] is not None), key=lambda k: scores[k], default=None)
    return out, (pick, dict(SWEEP)[pick] if pick else None, scores)


def pick_text():
    """The recommended default, from the sweep's figures, with what each workload prefers."""
    have = [(k, lab) for k, lab in SWEEP if any(med(sweep_system(k), c) for c, _ in SWEEP_COLS)]
    _, pick = sweep()
    if not have or not pick or not pick[0]:
        return "No recommendation: the sweep was not measured."
    best = []
    for c, label in SWEEP_COLS:
        vals = {k: med(sweep_system(k), c) for k, _ in have if med(sweep_system(k), c)}
        if vals:
            k = max(vals, key=vals.get)
            best.append(f"{SWEEP_SHORT[c]} {dict(SWEEP)[k]}")
    return (f"Best chunk size per workload: {', '.join(best)}.  Highest overall score: "
            f"**{pick[1]}**, the recommended default from these figures.")


def runs_table():
    out = ["| System | Workload | Each run |", "| --- | --- | --- |"]
    for (s, wl), v in sorted(RUNS.items()):
        out.append(f"| {s} | {wl} | {' / '.join(fmt(x) for x in v)} |")
    return out


def rss_table():
    if not RSS:
        return ["Not measured."]
    out = ["| Durability | Open disks | RSS before connecting (MiB) | RSS with every disk open (MiB) | "
           "Peak VmHWM (MiB) | Threads | Limit (MiB) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode in ("local", "remote"):
        r = RSS.get(mode)
        if not r or "rss_kib" not in r:
            continue
        out.append(f"| {mode} | {r['disks']} | {int(r['idle_kib']) / 1024:.1f} | "
                   f"{int(r['rss_kib']) / 1024:.1f} | {int(r['hwm_kib']) / 1024:.1f} | "
                   f"{r['threads']} | {float(r['limit_mib']):.0f} |")
    return out


def main():
    what = sys.argv[2] if len(sys.argv) > 2 else "all"
    if what in ("all", "table"):
        print("\n".join(main_table()))
        print()
        print("\n".join(footnotes()))
        print()
        print("\n".join(target_lines()))
        wa = write_amplification()
        if wa:
            print()
            print("\n".join(wa))
    if what in ("all", "sweep"):
        table, pick = sweep()
        print("\n".join(table))
        if pick and pick[0]:
            print()
            print(f"Score: the geometric mean, over the {len(SWEEP_COLS)} workloads, of each figure as a "
                  "fraction of the best chunk size's figure.")
    if what in ("all", "rss"):
        print("\n".join(rss_table()))
    if what in ("all", "runs"):
        print("\n".join(runs_table()))
    if what == "durations":
        d = collections.defaultdict(list)
        for run, system, secs in rows("durations.tsv"):
            d[system].append(float(secs))
        if d:
            total = sum(sum(v) for v in d.values()) / max(len(v) for v in d.values())
            print("Time a run spent on each system (median, s): " +
                  ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in d.items()) +
                  f"; about {total / 60:.1f} min a run.")
    if what == "pick":
        print(pick_text())


if __name__ == "__main__":
    main()
