"""Speed of ``lcron_tf.data.build_candidates`` (numpy, vectorised).

* ``movielens``: the TFRS tutorial data, MovieLens-100K (100,000 ratings, string
  ``user_id`` / ``movie_title``, read from the raw files), the example's configuration
  (10 positives + 20 popular + 20 uniform negatives, time split). Target: <= 2 s.
* ``synthetic``: 1,000,000 interactions shaped like MovieLens-1M (6,040 users, 3,706 items,
  string ids, Zipf popularity, ratings and timestamps), same configuration. Target: <= 30 s.

Each case is built ``--repeats`` times (the first build includes the one-time numpy
warm-up); the median and the best time are reported, with the machine load.

    python benchmarks/bench_candidates.py [--repeats 3] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from lcron_tf.data import build_candidates, movielens_interactions

CONFIG = dict(
    query_key="user_id", item_key="movie_title", relevance_key="user_rating",
    timestamp_key="timestamp", split="time", test_fraction=0.2, positives_per_request=10,
    min_positives=10, popular_negatives=20, uniform_negatives=20, seed=0,
)


def synthetic(num: int = 1_000_000, users: int = 6040, items: int = 3706, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, items + 1) ** 0.9
    user = rng.integers(0, users, num)
    item = rng.choice(items, num, p=pop / pop.sum())
    return {
        "user_id": np.array([f"{u}" for u in range(users)], dtype=object)[user],
        "movie_title": np.array([f"Movie {i} ({1920 + i % 80})" for i in range(items)],
                                dtype=object)[item],
        "user_rating": rng.integers(1, 6, num).astype(np.float32),
        "timestamp": rng.integers(956_703_932, 1_046_454_590, num),
    }


def bench(name: str, data: dict, repeats: int) -> None:
    times, lists = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        lists = build_candidates(data, **CONFIG)
        times.append(time.perf_counter() - t0)
    r = lists.report
    print(f"{name}: {len(data['user_id']):,} interactions -> {r['train']['requests']:,} train + "
          f"{r['test']['requests']:,} test requests x N={lists.list_size}: median "
          f"{statistics.median(times):.2f} s, best {min(times):.2f} s over {repeats} "
          f"(load {os.getloadavg()[0]:.2f})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy "
          f"{np.__version__}", flush=True)
    bench("MovieLens-100K", movielens_interactions(args.data_dir), args.repeats)
    bench("synthetic 1M", synthetic(), args.repeats)


if __name__ == "__main__":
    main()
