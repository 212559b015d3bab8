#!/usr/bin/env python3
"""Nexmark q0-q9, q11-q14 on Apache Flink SQL over the event files that `nexmark-gen` writes
(JSON lines), with the semantics of crates/weir-nexmark/README.md, for scripts/bench-suite.

    nexmark.py run QUERY EVENTS N P [--side FILE] [--profile default|tuned]
        one timed run to a blackhole sink (through ./run, which sets the JVM and log dir);
        prints `nexmark-QUERY P N 0 seconds events_per_s` and the harness's `# {...}` detail
    nexmark.py check EVENTS SIDE OUTDIR QUERY...
        every query's rows, at parallelism 1, into OUTDIR/QUERY.flink.jsonl: a multiset of JSON
        objects (changelogs applied; q4 and q9 as their final table, the last row per id)

EVENTS is one JSON-lines file, or a directory of parts (`nexmark-gen --parts K`). Read a
directory only at parallelism >= its parts: Flink's file source reads one split after another
in a reader, and the second file's events would then be late for the first file's watermark.

The timing is the shared harness's (/work/shared/bench/flink/bench.py, imported): Flink's own
job time, from its log (last task RUNNING -> job FINISHED; batch jobs, first task RUNNING),
and the JVM's peak RSS (VmHWM).

What the queries needed on Flink (see the weir-nexmark README): time columns are CAST to
TIMESTAMP(3) (collect() cannot return TIMESTAMP_LTZ; the session time zone is UTC); q6 runs in
batch mode (its OVER window over a changelog does not run in streaming mode); q13's side
table is a regular join (the filesystem connector is no lookup source); q14's count_char is
CHAR_LENGTH arithmetic. q9 orders ties by bidder and extra as Weir does.
"""
import collections
import datetime
import decimal
import json
import os
import sys
import time

T0 = time.time()
HARNESS = os.environ.get("FLINK_HARNESS", "/work/shared/bench/flink")
sys.path.insert(0, HARNESS)
import bench  # noqa: E402  (the shared harness: parse_log, vm_hwm_kib, PROFILES)

os.environ.setdefault("TZ", "UTC")

DDL = [
    """CREATE TABLE nexmark (
    event_type INT,
    person ROW<id BIGINT, name STRING, emailAddress STRING, creditCard STRING, city STRING,
               state STRING, `dateTime` BIGINT, extra STRING>,
    auction ROW<id BIGINT, itemName STRING, description STRING, initialBid BIGINT,
                reserve BIGINT, `dateTime` BIGINT, expires BIGINT, seller BIGINT,
                category BIGINT, extra STRING>,
    bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` BIGINT, extra STRING>,
    `dateTime` AS TO_TIMESTAMP_LTZ(COALESCE(bid.`dateTime`, auction.`dateTime`,
                                            person.`dateTime`), 3),
    p_time AS PROCTIME(),
    WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'file://{events}', 'format' = 'json')""",
    """CREATE VIEW person AS
    SELECT person.id, person.name, person.emailAddress, person.creditCard, person.city,
           person.state, `dateTime`, person.extra
    FROM nexmark WHERE event_type = 0""",
    """CREATE VIEW auction AS
    SELECT auction.id, auction.itemName, auction.description, auction.initialBid,
           auction.reserve, `dateTime`, TO_TIMESTAMP_LTZ(auction.expires, 3) AS expires,
           auction.seller, auction.category, auction.extra
    FROM nexmark WHERE event_type = 1""",
    """CREATE VIEW bid AS
    SELECT bid.auction, bid.bidder, bid.price, `dateTime`, bid.extra, p_time
    FROM nexmark WHERE event_type = 2""",
    """CREATE TABLE side_input (key BIGINT, `value` STRING)
    WITH ('connector' = 'filesystem', 'path' = 'file://{side}', 'format' = 'csv')""",
]


def ms(col, alias=None):
    """A time column as TIMESTAMP(3) (UTC wall time), which collect() can return."""
    return "CAST(%s AS TIMESTAMP(3)) AS `%s`" % (col, alias or col.split(".")[-1].strip("`"))


# One SELECT per query, written for the semantics in crates/weir-nexmark/README.md.
QUERIES = {
    # pass-through of every bid
    "q0": "SELECT auction, bidder, price, %s, extra FROM bid" % ms("`dateTime`"),
    # prices in euros, exact thousandths
    "q1": "SELECT auction, bidder, CAST(price * 0.908 AS DECIMAL(23, 3)) AS price, %s, extra "
          "FROM bid" % ms("`dateTime`"),
    # bids on every 123rd auction
    "q2": "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
    # people in OR/ID/CA selling in category 10 (a regular join)
    "q3": """SELECT p.name, p.city, p.state, a.id
        FROM auction AS a JOIN person AS p ON p.id = a.seller
        WHERE a.category = 10 AND p.state IN ('OR', 'ID', 'CA')""",
    # average winning price per category: the best valid bid of each auction, then AVG
    "q4": """WITH best AS (
            SELECT a.id AS auction_id, a.category, MAX(b.price) AS top_price
            FROM auction AS a JOIN bid AS b ON b.auction = a.id
            WHERE b.`dateTime` >= a.`dateTime` AND b.`dateTime` <= a.expires
            GROUP BY a.id, a.category)
        SELECT category AS id, AVG(top_price) AS final FROM best GROUP BY category""",
    # hot auctions: per 10 s window sliding by 2 s, the auctions with the highest bid count
    "q5": """WITH counted AS (
            SELECT auction, window_start, window_end, COUNT(*) AS num
            FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`),
                           INTERVAL '2' SECOND, INTERVAL '10' SECOND))
            GROUP BY auction, window_start, window_end),
        tops AS (
            SELECT window_start, window_end, MAX(num) AS top_num
            FROM counted GROUP BY window_start, window_end)
        SELECT c.auction, c.num
        FROM counted AS c JOIN tops AS t
          ON c.window_start = t.window_start AND c.window_end = t.window_end
         AND c.num >= t.top_num""",
    # per seller, average of the winning prices of its last 11 won auctions (batch mode)
    "q6": """WITH ranked AS (
            SELECT a.id, a.seller, b.price, b.`dateTime` AS bid_time,
                   ROW_NUMBER() OVER (PARTITION BY a.id
                                      ORDER BY b.price DESC, b.`dateTime` ASC) AS pos
            FROM auction AS a JOIN bid AS b ON b.auction = a.id
            WHERE b.`dateTime` >= a.`dateTime` AND b.`dateTime` <= a.expires),
        won AS (SELECT id, seller, price, bid_time FROM ranked WHERE pos = 1)
        SELECT seller, AVG(price) OVER (PARTITION BY seller ORDER BY bid_time, id
                                        ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
        FROM won""",
    # the highest bids of every 10 s tumbling window
    "q7": """WITH top_prices AS (
            SELECT window_end AS wend, MAX(price) AS top_price
            FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
            GROUP BY window_start, window_end)
        SELECT b.auction, b.bidder, b.price, %s, b.extra
        FROM bid AS b JOIN top_prices AS t ON b.price = t.top_price
        WHERE b.`dateTime` >= t.wend - INTERVAL '10' SECOND AND b.`dateTime` <= t.wend"""
          % ms("b.`dateTime`"),
    # people who registered and opened an auction in the same 10 s window
    "q8": """WITH people AS (
            SELECT id, name, window_start AS ws
            FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
            GROUP BY id, name, window_start, window_end),
        sellers AS (
            SELECT seller, window_start AS ws
            FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
            GROUP BY seller, window_start, window_end)
        SELECT p.id, p.name, %s
        FROM people AS p JOIN sellers AS s ON s.seller = p.id AND s.ws = p.ws"""
          % ms("p.ws", "stime"),
    # the winning bid of every auction (ties: earliest, then smallest bidder, then extra)
    "q9": """SELECT id, itemName, description, initialBid, reserve, %s, %s, seller, category,
               extra, auction, bidder, price, %s, bid_extra
        FROM (SELECT a.id, a.itemName, a.description, a.initialBid, a.reserve, a.`dateTime`,
                     a.expires, a.seller, a.category, a.extra, b.auction, b.bidder, b.price,
                     b.`dateTime` AS bid_dateTime, b.extra AS bid_extra,
                     ROW_NUMBER() OVER (PARTITION BY a.id ORDER BY b.price DESC,
                         b.`dateTime` ASC, b.bidder ASC, b.extra ASC) AS pos
              FROM auction AS a JOIN bid AS b ON b.auction = a.id
              WHERE b.`dateTime` >= a.`dateTime` AND b.`dateTime` <= a.expires)
        WHERE pos = 1""" % (ms("`dateTime`"), ms("expires"), ms("bid_dateTime")),
    # bids per bidder session (10 s gap)
    "q11": """SELECT bidder, COUNT(*) AS bid_count, %s, %s
        FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(`dateTime`),
                           INTERVAL '10' SECOND))
        GROUP BY bidder, window_start, window_end"""
           % (ms("window_start", "starttime"), ms("window_end", "endtime")),
    # bids per bidder per 10 s of processing time
    "q12": """SELECT bidder, COUNT(*) AS bid_count, %s, %s
        FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(p_time), INTERVAL '10' SECOND))
        GROUP BY bidder, window_start, window_end"""
           % (ms("window_start", "starttime"), ms("window_end", "endtime")),
    # bids enriched from the side table on auction mod 10000
    "q13": """SELECT b.auction, b.bidder, b.price, %s, s.`value`
        FROM bid AS b JOIN side_input AS s ON s.key = MOD(b.auction, 10000)"""
           % ms("b.`dateTime`"),
    # computed columns on a price band
    "q14": """SELECT auction, bidder, CAST(price * 0.908 AS DECIMAL(23, 3)) AS price,
               CASE WHEN HOUR(`dateTime`) BETWEEN 8 AND 18 THEN 'dayTime'
                    WHEN HOUR(`dateTime`) <= 6 OR HOUR(`dateTime`) >= 20 THEN 'nightTime'
                    ELSE 'otherTime' END AS bidTimeType,
               %s, extra,
               CHAR_LENGTH(extra) - CHAR_LENGTH(REPLACE(extra, 'c', '')) AS c_counts
        FROM bid WHERE price * 0.908 > 1000000 AND price * 0.908 < 50000000"""
           % ms("`dateTime`"),
}
BATCH = {"q6"}
FINAL_BY_ID = {"q4", "q9"}  # changelogs compared as their final table (last row per id)
# insert-only results, collected as Arrow batches (to_pandas): row by row, collect() crosses
# the Python-Java gateway for every row and field (about 200 rows/s; q0 and q1 took minutes)
INSERT_ONLY = {"q0", "q1", "q2", "q13", "q14"}


def table_env(parallelism, batch, job_name=None, profile="default", extra=()):
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment
    conf = Configuration()
    conf.set_string("parallelism.default", str(parallelism))
    conf.set_string("table.local-time-zone", "UTC")
    if job_name:
        conf.set_string("pipeline.name", job_name)
    for k, v in list(bench.PROFILES[profile].items()) + list(extra):
        conf.set_string(k, v)
    b = EnvironmentSettings.new_instance()
    b = b.in_batch_mode() if batch else b.in_streaming_mode()
    return TableEnvironment.create(b.with_configuration(conf).build())


def define(t_env, events, side):
    for stmt in DDL:
        t_env.execute_sql(stmt.format(events=os.path.abspath(events),
                                      side=os.path.abspath(side)))


def plain(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return int(round(v.timestamp() * 1000))
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v


def scalar(v):
    """A pandas/numpy cell as the Python value collect() gives (None for a missing value)."""
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "to_pydatetime"):
        return v.to_pydatetime()
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return v


def collect_insert_only(t_env, q):
    """An insert-only query's result as a Counter of canonical JSON rows, in Arrow batches."""
    df = t_env.sql_query(QUERIES[q]).to_pandas()
    names = list(df.columns)
    bag = collections.Counter()
    for row in df.itertuples(index=False, name=None):
        d = {n: plain(scalar(v)) for n, v in zip(names, row)}
        bag[json.dumps(d, sort_keys=True)] += 1
    return bag


def collect_rows(t_env, q):
    """The query's result as a Counter of canonical JSON rows (changelog applied)."""
    from pyflink.common import RowKind
    if q in INSERT_ONLY:
        return collect_insert_only(t_env, q)
    res = t_env.execute_sql(QUERIES[q])
    names = res.get_table_schema().get_field_names()
    bag, last = collections.Counter(), {}
    with res.collect() as rows:
        for r in rows:
            d = {n: plain(r[i]) for i, n in enumerate(names)}
            key = json.dumps(d, sort_keys=True)
            kind = r.get_row_kind()
            if q in FINAL_BY_ID:
                if kind == RowKind.DELETE:
                    last.pop(d["id"], None)
                elif kind != RowKind.UPDATE_BEFORE:
                    last[d["id"]] = key
            else:
                bag[key] += -1 if kind in (RowKind.UPDATE_BEFORE, RowKind.DELETE) else 1
    for key in last.values():
        bag[key] += 1
    bad = [k for k, n in bag.items() if n < 0]
    if bad:
        raise RuntimeError("%s: retraction of a row never inserted: %s" % (q, bad[0]))
    return bag


def check(events, side, outdir, qs):
    envs = {}
    for q in qs:
        batch = q in BATCH
        if batch not in envs:
            envs[batch] = table_env(1, batch)
            define(envs[batch], events, side)
        bag = collect_rows(envs[batch], q)
        with open(os.path.join(outdir, q + ".flink.jsonl"), "w") as f:
            for key, n in sorted(bag.items()):
                f.write((key + "\n") * n)
        print("%s %d" % (q, sum(bag.values())), flush=True)


def run(q, events, n, p, side, profile):
    from pyflink.java_gateway import get_gateway
    from pyflink.table import TableDescriptor
    batch = q in BATCH
    job_name = "bench-nexmark-%s-p%d" % (q, p)
    t_env = table_env(p, batch, job_name, profile)
    jvm_pid = int(get_gateway().jvm.java.lang.ProcessHandle.current().pid())
    print('# {"jvm_pid": %d}' % jvm_pid, file=sys.stderr, flush=True)  # for ./run's exit wait
    define(t_env, events, side)
    t_submit = time.time()
    # a blackhole sink with the query's schema (an anonymous table: no DDL to keep in sync)
    res = t_env.sql_query(QUERIES[q]).execute_insert(TableDescriptor.for_connector("blackhole")
                                                      .build())
    res.wait()
    t_done = time.time()
    hwm = bench.vm_hwm_kib(jvm_pid)
    log_dir = os.environ.get("FLINK_LOG_DIR", "")
    time.sleep(0.3)
    first_run, last_run, finished, _ = bench.parse_log(log_dir, job_name)
    if first_run is None or finished is None:
        raise RuntimeError("no task RUNNING / job FINISHED lines in the Flink log in %s" % log_dir)
    # streaming: every task runs from the start (the harness's rule, last task RUNNING);
    # batch: stages start one after another, so the job starts with its first task
    start = first_run if batch else last_run
    secs = finished - start
    if secs <= 0:
        raise RuntimeError("non-positive job time %.3f" % secs)
    print("nexmark-%s %d %d 0 %.3f %.0f" % (q, p, n, secs, n / secs), flush=True)
    detail = dict(workload="nexmark-" + q, parallelism=p, n=n, k=0, profile=profile,
                  batch=batch, job_seconds=round(secs, 3), events_per_sec=round(n / secs),
                  startup_s=round(start - T0, 3), client_wait_s=round(t_done - t_submit, 3),
                  jvm_pid=jvm_pid, jvm_peak_rss_mib=round(hwm / 1024) if hwm else None,
                  jvm_args=os.environ.get("JVM_ARGS", ""), log_dir=log_dir, events=events)
    print("# " + json.dumps(detail), file=sys.stderr, flush=True)
    out = os.environ.get("BENCH_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(detail) + "\n")


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("query", choices=sorted(QUERIES))
    r.add_argument("events")
    r.add_argument("n", type=int)
    r.add_argument("parallelism", type=int)
    r.add_argument("--side", default="/dev/null")
    r.add_argument("--profile", choices=sorted(bench.PROFILES), default="default")
    c = sub.add_parser("check")
    c.add_argument("events")
    c.add_argument("side")
    c.add_argument("outdir")
    c.add_argument("queries", nargs="+", choices=sorted(QUERIES))
    a = ap.parse_args(argv)
    if a.cmd == "run":
        run(a.query, a.events, a.n, a.parallelism, a.side, a.profile)
    else:
        check(a.events, a.side, a.outdir, a.queries)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - any failure must give a non-zero exit
        print("NEXMARK FAILED: %s: %s" % (type(e).__name__, str(e)[:4000]), file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # don't wait for the py4j gateway / minicluster to shut down
