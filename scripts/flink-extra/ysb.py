#!/usr/bin/env python3
"""The Yahoo streaming benchmark's job on Apache Flink SQL, over the files `ysb gen` writes
(crates/weir-ysb): ad events (CSV) -> views -> ad -> campaign join -> 10 s tumbling event-time
windows of COUNT(*) per campaign, for scripts/bench-suite.

    ysb.py run EVENTS N CAMPAIGNS P       one timed run to blackhole (through ./run)
    ysb.py check EVENTS CAMPAIGNS         prints [rows,sum(cnt),sum(campaign*cnt),sum(window_s*cnt)]

EVENTS is a CSV file or a directory of parts (read a directory only at P >= its parts, as
nexmark.py explains); the join table is EVENTS.ads.csv (`ad_id,campaign_id`).

The join: a window after a regular join is not possible in Flink SQL (a regular join's output
has no time attribute), so the table is a versioned table (primary key ad_id, every row valid
from the epoch) joined `FOR SYSTEM_TIME AS OF` the view's time: an event-time temporal join,
which keeps the rowtime for the window. Same results as a lookup in a static table.
"""
import json
import os
import sys
import time

T0 = time.time()
HARNESS = os.environ.get("FLINK_HARNESS", "/work/shared/bench/flink")
sys.path.insert(0, HARNESS)
import bench  # noqa: E402  (the shared harness: parse_log, vm_hwm_kib, PROFILES)

DDL = [
    """CREATE TABLE ad_events (
    user_id BIGINT, page_id BIGINT, ad_id BIGINT, ad_type STRING, event_type STRING,
    event_time BIGINT, ip STRING,
    ts AS TO_TIMESTAMP_LTZ(event_time, 3),
    WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'file://{events}', 'format' = 'csv')""",
    """CREATE TABLE ads (
    ad_id BIGINT, campaign_id BIGINT,
    valid_from AS TO_TIMESTAMP_LTZ(0, 3),
    WATERMARK FOR valid_from AS valid_from,
    PRIMARY KEY (ad_id) NOT ENFORCED
) WITH ('connector' = 'filesystem', 'path' = 'file://{ads}', 'format' = 'csv')""",
    """CREATE VIEW campaign_views AS
    SELECT a.campaign_id, v.ts
    FROM (SELECT ad_id, ts FROM ad_events WHERE event_type = 'view') AS v
    JOIN ads FOR SYSTEM_TIME AS OF v.ts AS a ON a.ad_id = v.ad_id""",
]
QUERY = """SELECT campaign_id, window_start, COUNT(*) AS cnt
    FROM TABLE(TUMBLE(TABLE campaign_views, DESCRIPTOR(ts), INTERVAL '10' SECOND))
    GROUP BY campaign_id, window_start, window_end"""


def table_env(p, job_name=None, extra=()):
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment
    conf = Configuration()
    conf.set_string("parallelism.default", str(p))
    conf.set_string("table.local-time-zone", "UTC")
    if job_name:
        conf.set_string("pipeline.name", job_name)
    for k, v in extra:
        conf.set_string(k, v)
    s = EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    return TableEnvironment.create(s)


def define(t_env, events):
    events = os.path.abspath(events)
    for stmt in DDL:
        t_env.execute_sql(stmt.format(events=events, ads=events + ".ads.csv"))


def check(events):
    t_env = table_env(1, extra=[("table.exec.mini-batch.enabled", "true"),
                                ("table.exec.mini-batch.allow-latency", "5 s"),
                                ("table.exec.mini-batch.size", "100000000")])
    define(t_env, events)
    t_env.execute_sql("CREATE TEMPORARY VIEW res AS " + QUERY)
    q = ("SELECT COUNT(*), SUM(cnt), SUM(campaign_id * cnt), "
         "SUM(CAST(UNIX_TIMESTAMP(CAST(window_start AS STRING), 'yyyy-MM-dd HH:mm:ss.SSS') AS "
         "DECIMAL(38, 0)) * cnt) FROM res")
    rows = [tuple(r) for r in t_env.execute_sql(q).collect()]
    s = rows[-1]
    print("[%d,%d,%d,%d]" % tuple(int(x) for x in s), flush=True)


def run(events, n, campaigns, p):
    from pyflink.java_gateway import get_gateway
    from pyflink.table import TableDescriptor
    job_name = "bench-ysb-k%d-p%d" % (campaigns, p)
    t_env = table_env(p, job_name)
    jvm_pid = int(get_gateway().jvm.java.lang.ProcessHandle.current().pid())
    print('# {"jvm_pid": %d}' % jvm_pid, file=sys.stderr, flush=True)
    define(t_env, events)
    t_env.sql_query(QUERY).execute_insert(TableDescriptor.for_connector("blackhole").build()).wait()
    hwm = bench.vm_hwm_kib(jvm_pid)
    log_dir = os.environ.get("FLINK_LOG_DIR", "")
    time.sleep(0.3)
    _, last_run, finished, _ = bench.parse_log(log_dir, job_name)
    if last_run is None or finished is None:
        raise RuntimeError("no task RUNNING / job FINISHED lines in the Flink log in %s" % log_dir)
    secs = finished - last_run
    print("ysb %d %d %d %.3f %.0f" % (p, n, campaigns, secs, n / secs), flush=True)
    detail = dict(workload="ysb", parallelism=p, n=n, k=campaigns, job_seconds=round(secs, 3),
                  events_per_sec=round(n / secs), startup_s=round(last_run - T0, 3),
                  jvm_pid=jvm_pid, jvm_peak_rss_mib=round(hwm / 1024) if hwm else None,
                  log_dir=log_dir, events=events)
    print("# " + json.dumps(detail), file=sys.stderr, flush=True)
    out = os.environ.get("BENCH_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(detail) + "\n")


if __name__ == "__main__":
    try:
        if sys.argv[1] == "check":
            check(sys.argv[2])
        elif sys.argv[1] == "run":
            run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        else:
            sys.exit(__doc__)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        print("YSB FAILED: %s: %s" % (type(e).__name__, str(e)[:4000]), file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
