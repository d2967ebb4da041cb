"""The dashboard queries of `make bench-analytics` in DuckDB, over the same
rows (a CSV the benchmark exports from its plain table).

Usage: duckdb_bench.py EVENTS.csv START_US END_US
"""

import sys
import time

import duckdb

RUNS = 20


def main() -> None:
    path, start_us, end_us = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    db = duckdb.connect()
    started = time.perf_counter()
    db.execute(f"CREATE TABLE events AS SELECT * FROM read_csv_auto('{path}')")
    rows = db.execute("SELECT count(*) FROM events").fetchone()[0]
    print(f"  DuckDB {duckdb.__version__}: loaded {rows} rows in {time.perf_counter() - started:.1f} s")
    window = "ts >= make_timestamptz($1::BIGINT) AND ts < make_timestamptz($2::BIGINT)"
    bucket = "time_bucket(INTERVAL '1 minute', ts, TIMESTAMPTZ '1970-01-01 00:00:00+00')"
    queries = {
        "(a)": f"SELECT {bucket} b, avg(value), quantile_cont(value, 0.95) FROM events WHERE {window} GROUP BY 1",
        "(b)": f"SELECT {bucket} b, host, avg(value), quantile_cont(value, 0.95) FROM events WHERE {window} GROUP BY 1, 2",
        "(c)": f"SELECT {bucket} b, host, avg(value), quantile_cont(value, 0.95) FROM events "
        f"WHERE {window} AND region = 'r1' GROUP BY 1, 2",
    }
    for name, sql in queries.items():
        samples = []
        for run in range(RUNS + 1):
            started = time.perf_counter()
            result = db.execute(sql, [start_us, end_us]).fetchall()
            if run:
                samples.append((time.perf_counter() - started) * 1000)
            assert result
        samples.sort()
        at = lambda q: samples[round((len(samples) - 1) * q)]
        print(f"  DuckDB {name}: p50 {at(0.5):.1f} ms, p95 {at(0.95):.1f} ms, p99 {at(0.99):.1f} ms (n = {RUNS})")


if __name__ == "__main__":
    main()
