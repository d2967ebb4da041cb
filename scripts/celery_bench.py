"""The same no-op load as `bench_jobs`, through Celery: RabbitMQ broker, a
PostgreSQL result backend, late acks (so a killed worker's task is not lost).

Run by `scripts/bench.sh` in a virtualenv with celery, sqlalchemy and
psycopg2-binary. Prints lines in the same shape as `bench_jobs`.

Environment: CELERY_BENCH_JOBS (default 3000), BENCH_RATE (default 500),
CELERY_BENCH_CONCURRENCY (default 2: this machine's cores),
SEXTANT_TEST_DATABASE_URL, SEXTANT_TEST_AMQP_URL.
"""

import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from celery import Celery

ADMIN_URL = os.environ.get("SEXTANT_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("SEXTANT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
DATABASE = "sextant_celery_bench"
QUEUE = "sextant-celery-bench"
SECONDS = 10


def database_url(scheme):
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((scheme, parts.netloc, "/" + DATABASE, "", ""))


app = Celery(
    "celery_bench",
    broker=AMQP_URL.replace("%2f", "").replace("%2F", ""),
    backend="db+" + database_url("postgresql+psycopg2"),
)
app.conf.update(
    task_acks_late=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop():
    return {}


def admin(sql):
    conn = psycopg2.connect(ADMIN_URL.replace("postgres://", "postgresql://", 1))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def results():
    return psycopg2.connect(database_url("postgresql"))


def count_done(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('celery_taskmeta') IS NOT NULL")
        if not cur.fetchone()[0]:
            return 0
        cur.execute("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
        return cur.fetchone()[0]


def wait_done(conn, n, limit):
    deadline = time.monotonic() + limit
    while count_done(conn) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"celery: {count_done(conn)} of {n} tasks done after {limit} s")
        time.sleep(0.05)
    return time.monotonic()


def throughput(conn, jobs):
    started = time.monotonic()
    shares = [jobs // 4 + (1 if i < jobs % 4 else 0) for i in range(4)]

    def submit(n):
        for _ in range(n):
            noop.apply_async()

    threads = [threading.Thread(target=submit, args=(n,)) for n in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submitted = time.monotonic() - started
    total = wait_done(conn, jobs, 1800) - started
    print(
        f"celery throughput: {jobs} no-op jobs in {total:.2f} s = {jobs / total:.0f} jobs/s "
        f"(all submitted after {submitted:.2f} s = {jobs / submitted:.0f} submits/s)",
        flush=True,
    )


def latency(conn, rate, already):
    expected = rate * SECONDS
    submitted = {}
    interval = 1.0 / rate
    start = time.time()
    for i in range(expected):
        due = start + i * interval
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        at = time.time()
        submitted[noop.apply_async().id] = at
    wait_done(conn, already + expected, 1800)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT task_id, extract(epoch FROM date_done) FROM celery_taskmeta WHERE task_id = ANY(%s)",
            (list(submitted),),
        )
        # date_done is stored in UTC without a zone; epoch of it is UTC seconds.
        latencies = sorted((float(done) - submitted[tid]) * 1000 for tid, done in cur.fetchall())
    at = lambda q: latencies[round((len(latencies) - 1) * q)]
    print(
        f"celery latency at {rate} jobs/s for {SECONDS} s: submit→stored result p50 {at(0.5):.1f} ms, "
        f"p95 {at(0.95):.1f} ms, p99 {at(0.99):.1f} ms ({len(latencies)} of {expected})",
        flush=True,
    )


def main():
    jobs = int(os.environ.get("CELERY_BENCH_JOBS", "3000"))
    rate = int(os.environ.get("BENCH_RATE", "500"))
    concurrency = os.environ.get("CELERY_BENCH_CONCURRENCY", "2")
    admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    admin(f"CREATE DATABASE {DATABASE}")
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_bench", "worker", "--loglevel=WARNING",
         "--concurrency", concurrency, "-Q", QUEUE],
        cwd=here,
    )
    try:
        app.control.purge()
        conn = results()
        conn.autocommit = True
        throughput(conn, jobs)
        latency(conn, rate, jobs)
        conn.close()
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        # Leave the shared broker as we found it: our queue, and the exchanges
        # Celery declared for it and for its control and event channels.
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            channel.queue_delete(QUEUE)
            for exchange in (QUEUE, "celeryev", "celery.pidbox", "reply.celery.pidbox"):
                channel.exchange_delete(exchange)
        admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
