"""Near-duplicate scan and Parquet export at scale, next to the JSONL export in the same run.

Dedup: ``--essays`` sizes (default 100k,1M) of synthetic essays made from the real corpus's
pieces (``../shared/data/paul_graham_essays.csv``: random paragraphs of random essays until
``--words`` words, ~1,200 by default, about a generated essay's length), 1% of them planted
near-copies of an earlier essay (3% of words changed). Each size runs the scan's own code
(``NearDuplicateIndex.check``: shingles, MinHash, LSH query and insert) in this process and
prints essays/s, the planted copies found (recall), other essays flagged, the index's memory
(RSS grown during the run: one 64-permutation signature and its 12 LSH band keys per essay) and
the process's peak RSS. Essays are made one at a time (their making is timed apart), so 1M
fit. The database read is not timed here: the export rows below show what a sequential read of
this size costs.

Export: for each ``--rows`` size, a fresh API process (``uvicorn api.main:app``) streams
``GET /pairs/export`` as JSONL and as Parquet from the bench database (``bench/seed_pairs.py``,
``--db``, default ``chatpgt_bench_datasets``); printed: MB/s, rows/s and the API process's peak
RSS (VmHWM) per format. Parquet's MB are of compressed output; to compare rates, its row also
gives the JSONL bytes of the same rows over its time ("as JSONL"). Sizes below the table's
select its first jobs.

    python bench/dedup_bench.py --essays 100000 --rows 100000 --pairs 100000
    python bench/dedup_bench.py --essays 100000,1000000 --rows 100000,1000000 --pairs 1000000
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from api_load import loadavg  # noqa: E402
from export_bench import api_export, job_filter  # noqa: E402
from seed_pairs import CORPUS, ensure_seeded  # noqa: E402

from chatpgt.datasets.dedup import DEFAULT_THRESHOLD, NearDuplicateIndex  # noqa: E402


def paragraphs(corpus: Path) -> list[str]:
    csv.field_size_limit(sys.maxsize)
    with corpus.open(newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    return [p.strip() for t in texts for p in t.split("\n\n") if len(p.split()) >= 20]


def synthetic(
    pool: list[str], n: int, words: int, seed: int = 7
) -> Iterator[tuple[int, str, bool]]:
    """``n`` essays of random paragraphs, made one at a time (the run's memory is the index's):
    ``(index, text, planted)``. 1% are near-copies (3% of words changed) of an earlier essay
    that is not itself a copy, rebuilt from the paragraph numbers kept for each essay."""
    rng = random.Random(seed)
    recipes: list[array[int]] = []  # paragraph numbers of each original essay
    lengths = [len(p.split()) for p in pool]
    for i in range(n):
        if recipes and i > 10 and rng.random() < 0.01:
            tokens = "\n\n".join(pool[k] for k in recipes[rng.randrange(len(recipes))]).split()
            for j in rng.sample(range(len(tokens)), len(tokens) * 3 // 100):
                tokens[j] = f"changed{j}"
            yield i, " ".join(tokens), True
            continue
        parts, count = array("I"), 0
        while count < words:
            k = rng.randrange(len(pool))
            parts.append(k)
            count += lengths[k]
        recipes.append(parts)
        yield i, "\n\n".join(pool[k] for k in parts), False


def dedup_run(pool: list[str], n: int, words: int, threshold: float) -> None:
    index = NearDuplicateIndex(threshold)
    rss_before = psutil.Process().memory_info().rss
    planted: set[int] = set()
    flagged: set[int] = set()
    making = 0.0
    t0 = time.perf_counter()
    essays = synthetic(pool, n, words)
    while True:
        t = time.perf_counter()
        item = next(essays, None)
        making += time.perf_counter() - t
        if item is None:
            break
        i, text, copy = item
        if copy:
            planted.add(i)
        if index.check(i, 0, text) is not None:
            flagged.add(i)
    wall = time.perf_counter() - t0 - making
    index_mb = (psutil.Process().memory_info().rss - rss_before) / 1e6
    found = len(flagged & planted)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  dedup {n:>9,} essays  {wall:7.1f} s  {n / wall:7.0f} essays/s  "
        f"planted copies found {found}/{len(planted)}, other essays flagged "
        f"{len(flagged - planted)}  index {index_mb:,.0f} MB ({index_mb * 1e6 / n:,.0f} B an "
        f"essay), peak RSS {rss:,.0f} MB (essays made in {making:.0f} s, not counted)  "
        f"load {loadavg()}",
        flush=True,
    )


def export_run(
    async_url: str, fmt: str, rows: int, job_ids: list[int], jsonl_bytes: int | None = None
) -> int:
    r = api_export(async_url, job_ids, fmt)
    same = (
        f" (as JSONL {jsonl_bytes / r['wall_s'] / 1e6:.1f} MB/s)" if jsonl_bytes is not None else ""
    )
    print(
        f"  API {fmt:<8} {rows:>9,} rows  {r['bytes'] / 1e6:8.0f} MB  {r['wall_s']:7.1f} s  "
        f"{r['bytes'] / r['wall_s'] / 1e6:6.1f} MB/s{same}  {rows / r['wall_s']:7.0f} rows/s  "
        f"RSS before "
        f"{r['rss_before_mb']:.0f} MB, peak {r['peak_rss_mb']:.0f} MB (sampled max "
        f"{r['rss_max_sampled_mb']:.0f} MB)  API CPU {r['api_cpu_s']:.1f} s  load {loadavg()}",
        flush=True,
    )
    return int(r["bytes"])


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--essays", default="100000,1000000", help="dedup sizes; '' for none")
    p.add_argument("--words", type=int, default=1200)
    p.add_argument("--corpus", default=str(CORPUS), help="the essays CSV (title, text)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    p.add_argument("--rows", default="100000,1000000", help="export sizes; '' for none")
    p.add_argument("--pairs", type=int, default=1_000_000, help="pairs in the bench database")
    p.add_argument("--db", default="chatpgt_bench_datasets")
    p.add_argument("--pairs-per-job", type=int, default=10_000)
    args = p.parse_args()

    sizes = [int(s) for s in args.essays.split(",") if s]
    if sizes:
        pool = paragraphs(Path(args.corpus))
        print(f"dedup bench: {len(pool)} paragraphs from the corpus; load {loadavg()}")
        for n in sizes:
            dedup_run(pool, n, args.words, args.threshold)
    rows_list = [int(r) for r in args.rows.split(",") if r]
    if rows_list:
        async_url = ensure_seeded(args.pairs, args.db, per_job=args.pairs_per_job)
        print(f"export bench: {args.pairs:,} pairs in {args.db}; load {loadavg()}", flush=True)
        for rows in rows_list:
            jobs = job_filter(rows, args.pairs, args.pairs_per_job)
            jsonl_bytes = export_run(async_url, "jsonl", rows, jobs)
            export_run(async_url, "parquet", rows, jobs, jsonl_bytes)


if __name__ == "__main__":
    main()
