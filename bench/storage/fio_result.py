#!/usr/bin/python3
"""fio_result.py FILE: one line from fio's JSON output (--output-format=json), summed over jobs:

    read_MiBps read_iops write_MiBps write_iops read_bytes write_bytes runtime_ms errors \
        write_ios sync_ios

fio_result.py --iops-log LOG N: the mean IOPS over the first N one-second samples of a log
written with --write_iops_log and --log_avg_msec=1000.

Used by scripts/bench storage.  fio may put a line of text before the JSON; it is skipped."""
import json
import sys


def iops_log_mean(path, seconds):
    """The mean of the first `seconds` one-second samples of a fio IOPS log."""
    values = []
    with open(path) as f:
        for line in f:
            fields = [x.strip() for x in line.split(",")]
            if len(fields) >= 2:
                values.append(float(fields[1]))
    head = values[:seconds]
    return sum(head) / len(head) if head else 0.0


def main():
    if sys.argv[1] == "--iops-log":
        print(f"{iops_log_mean(sys.argv[2], int(sys.argv[3])):.1f}")
        return
    text = open(sys.argv[1]).read()
    start = text.find("{")
    if start < 0:
        sys.exit(f"{sys.argv[1]}: no JSON in fio's output")
    data = json.loads(text[start:])
    out = dict(rbw=0.0, riops=0.0, wbw=0.0, wiops=0.0, rbytes=0, wbytes=0, runtime=0, err=0,
               wios=0, sios=0)
    for job in data["jobs"]:
        out["rbw"] += job["read"]["bw_bytes"] / 1048576
        out["riops"] += job["read"]["iops"]
        out["wbw"] += job["write"]["bw_bytes"] / 1048576
        out["wiops"] += job["write"]["iops"]
        out["rbytes"] += job["read"]["io_bytes"]
        out["wbytes"] += job["write"]["io_bytes"]
        out["runtime"] = max(out["runtime"], job["job_runtime"])
        out["err"] += 1 if job["error"] else 0
        out["wios"] += job["write"]["total_ios"]
        out["sios"] += job["sync"]["total_ios"]
    print("{rbw:.1f} {riops:.1f} {wbw:.1f} {wiops:.1f} {rbytes} {wbytes} {runtime} {err} {wios} {sios}"
          .format(**out))


if __name__ == "__main__":
    main()
