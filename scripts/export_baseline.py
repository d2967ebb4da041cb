"""Baselines for `make bench-exports`: the series rows of the benchmark's
analysis (metric, aggregation, bucket_start, count, value), N of them,
written by Python's csv module, openpyxl (write-only mode) and XlsxWriter
(constant-memory mode), each to a temporary file. Prints one line each."""

import csv
import datetime
import os
import resource
import sys
import tempfile
import time

import openpyxl
import xlsxwriter

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
METRICS = 50
START = datetime.datetime(2026, 11, 20, tzinfo=datetime.timezone.utc)
HEADER = ["metric", "aggregation", "bucket_start", "count", "value"]


def rows():
    per_series = max(N // (2 * METRICS), 1)
    for i in range(N):
        series, bucket = divmod(i, per_series)
        yield (
            f"svc.m{series // 2 % METRICS:02}",
            ("avg", "p95")[series % 2],
            START + datetime.timedelta(minutes=bucket),
            1,
            20.0 + (i * 7919 % 6000) / 100.0,
        )


def timed(label, write):
    fd, path = tempfile.mkstemp()
    os.close(fd)
    started = time.perf_counter()
    write(path)
    elapsed = time.perf_counter() - started
    size = os.path.getsize(path)
    os.unlink(path)
    print(f"  baseline {label}: {N:,} rows, {size / 1e6:.1f} MB in {elapsed * 1000:.0f} ms")


def with_csv(path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for m, a, t, c, v in rows():
            w.writerow((m, a, t.strftime("%Y-%m-%dT%H:%M:%SZ"), c, v))


def with_openpyxl(path):
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("series")
    sheet.append(HEADER)
    for m, a, t, c, v in rows():
        sheet.append((m, a, t.replace(tzinfo=None), c, v))
    book.save(path)


def with_xlsxwriter(path):
    book = xlsxwriter.Workbook(path, {"constant_memory": True})
    sheet = book.add_worksheet("series")
    date = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    sheet.write_row(0, 0, HEADER)
    for r, (m, a, t, c, v) in enumerate(rows(), start=1):
        sheet.write_string(r, 0, m)
        sheet.write_string(r, 1, a)
        sheet.write_datetime(r, 2, t.replace(tzinfo=None), date)
        sheet.write_number(r, 3, c)
        sheet.write_number(r, 4, v)
    book.close()


timed("Python csv module", with_csv)
timed("openpyxl (write-only)", with_openpyxl)
timed("XlsxWriter (constant memory)", with_xlsxwriter)
print(f"  baseline peak RSS (all three, one process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
