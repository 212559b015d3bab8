#!/usr/bin/env python3
"""Workloads that Weir benchmarks against Flink beyond the shared harness's own
(/work/shared/bench/flink/bench.py), run by that harness's machinery: same rows, same timing
(Flink's job time from its log), same JSON detail line.

    bench_extra.py WORKLOAD N K P [bench.py options]   # one timed run (through ./run)
    bench_extra.py check N WORKLOAD K                   # checksum of Flink's result at P = 1

Workloads added:
  session  per key, session windows with a 1 s gap, COUNT(*) and SUM(price), over the sparser
           rows: ts = id / 100 ms (100,000 events per event-time second), so that with
           K = 100,000 a key's events are 0.6-1.6 s apart and sessions both merge and split.
"""
import os
import re
import sys

HARNESS = os.environ.get("FLINK_HARNESS", "/work/shared/bench/flink")
sys.path.insert(0, HARNESS)
import bench  # noqa: E402  (the shared harness)

SPARSE_SRC = bench.SRC_WM.replace("TO_TIMESTAMP_LTZ(id / 1000, 3)", "TO_TIMESTAMP_LTZ(id / 100, 3)")
assert SPARSE_SRC != bench.SRC_WM

bench.WORKLOADS["session"] = dict(
    src=SPARSE_SRC,
    sink="CREATE TABLE sink (k BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), "
         "cnt BIGINT, sum_price BIGINT) WITH ('connector' = 'blackhole')",
    query="INSERT INTO sink SELECT k, window_start, window_end, COUNT(*) AS cnt, "
          "SUM(CAST(price AS BIGINT)) AS sum_price "
          "FROM TABLE(SESSION(TABLE events PARTITION BY k, DESCRIPTOR(ts), INTERVAL '1' SECOND)) "
          "GROUP BY k, window_start, window_end")

def check(n, wl, k):
    """Prints [rows, Σcnt, Σsum, Σk·cnt] of Flink's result at P = 1 and the span sum."""
    from pyflink.table import EnvironmentSettings, TableEnvironment
    t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t.get_config().set("parallelism.default", "1")
    t.get_config().set("table.local-time-zone", "UTC")
    # the checksum is a global aggregation over the result: without mini-batch it would send one
    # changelog row per result row to this client (as the harness's check.py does).
    t.get_config().set("table.exec.mini-batch.enabled", "true")
    t.get_config().set("table.exec.mini-batch.allow-latency", "5 s")
    t.get_config().set("table.exec.mini-batch.size", "100000000")
    w = bench.WORKLOADS[wl]
    f = dict(N=n, NM1=n - 1, K=k)
    t.execute_sql(w["src"].format(**f))
    select = re.sub(r"^INSERT INTO sink ", "", w["query"].format(**f))
    t.execute_sql("CREATE TEMPORARY VIEW res AS " + select)
    # spans in ms: window bounds are TIMESTAMP(3) in UTC
    q = ("SELECT COUNT(*), SUM(cnt), SUM(sum_price), SUM(k * cnt), "
         "SUM(UNIX_TIMESTAMP(CAST(window_end AS STRING), 'yyyy-MM-dd HH:mm:ss.SSS') * 1000 "
         "+ EXTRACT(MILLISECOND FROM window_end) "
         "- UNIX_TIMESTAMP(CAST(window_start AS STRING), 'yyyy-MM-dd HH:mm:ss.SSS') * 1000 "
         "- EXTRACT(MILLISECOND FROM window_start)) FROM res")
    rows = [tuple(r) for r in t.execute_sql(q).collect()]
    print("flink %s n=%d k=%d checksum=%s" % (wl, n, k, list(rows[-1])), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "check":
        try:
            check(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        except BaseException as e:  # noqa: BLE001
            print("CHECK FAILED: %s: %s" % (type(e).__name__, str(e)[:4000]), file=sys.stderr)
            sys.stderr.flush()
            os._exit(2)
        sys.stdout.flush()
        os._exit(0)
    sys.argv[0] = os.path.join(HARNESS, "bench.py")
    try:
        bench.main()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        print("BENCH FAILED: %s: %s" % (type(e).__name__, str(e)[:4000]), file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
