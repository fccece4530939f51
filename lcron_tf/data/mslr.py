"""MSLR-WEB10K (LETOR format) as cascade requests: queries = requests, graded labels 0..4.

Reads ``<data_dir>/mslr_web10k_sample/msn1.fold1.{train,test}.5k.txt`` (never downloaded,
never committed). MSLR has dense float features and no ids, so it is mapped into the
canonical schema like this (all bucket edges are quantiles of the **train** file):

* ``user_id`` = the query id (``qid``), vocab = the largest qid of both files + 1;
* ``user_features`` = [IDF of the whole document stream (feature 20, constant within a
  query) in 16 buckets, query length proxy = max over the query's documents of feature 5
  (covered query terms, whole document) clipped to 1..10, number of documents (log2
  bucket)]; all +1 (0 = pad);
* ``history`` = empty (H = 1, all 0): MSLR has no behaviour;
* ``item_id`` = a coarse content signature, not a document identity (MSLR has none):
  ``1 + 8 * bucket8(BM25 whole document, f110) + bucket8(PageRank, f130)``;
* ``item_features`` = 16 quantile buckets (+1) of 8 features: BM25 body (106), title
  (108), whole document (110), covered query term ratio (10), PageRank (130),
  QualityScore2 (133), inlinks (128), query-url clicks (134);
* ``label`` = the relevance grade 0..4 (float);
* ``stage_group`` = the grade group, best first: ``("grade_4", ..., "grade_0")``, i.e.
  ``4 - label`` (MSLR has no cascade log; the grades are the ordinal levels that
  stage-group losses such as FS-LTR use);
* N = ``list_size`` (default 40): a query with more documents keeps its top ``gt_num`` by
  grade (ties by file order) and a seeded random sample of the others, in file order; a
  query with fewer is padded (mask 0). ``gt_num`` = 10, quotas (30, 20).

The last query of each 5k file is truncated by the sampling (see the data README); it is
dropped by default (``drop_last_query=True``) and counted in the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from lcron_tf.data.paths import require_file, resolve_data_dir
from lcron_tf.schema import BuildReport, CascadeSchema, validate_arrays

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
SUBDIR = "mslr_web10k_sample"
FILES = {"train": "msn1.fold1.train.5k.txt", "test": "msn1.fold1.test.5k.txt"}
NUM_FEATURES = 136
ITEM_FEATURES = (106, 108, 110, 10, 130, 133, 128, 134)  # 1-based MSLR feature numbers
GRADE_GROUPS = ("grade_4", "grade_3", "grade_2", "grade_1", "grade_0")
BUCKETS = 16


@dataclasses.dataclass(frozen=True)
class MslrConfig:
    """Options of :func:`build_mslr` (see the module docstring)."""

    list_size: int = 40
    gt_num: int = 10
    quotas: tuple[int, ...] = (30, 20)
    drop_last_query: bool = True
    seed: int = 0


@dataclasses.dataclass
class LetorFile:
    """A parsed LETOR file: one row per (query, document), in file order."""

    path: Path
    label: np.ndarray  # int [rows]
    qid: np.ndarray  # int [rows]
    features: np.ndarray  # float32 [rows, 136]


def read_letor(path: PathLike, num_features: int = NUM_FEATURES) -> LetorFile:
    """Parse ``<label> qid:<q> 1:<f1> ... 136:<f136>`` lines; errors name file and line."""
    path = Path(path)
    labels, qids, rows = [], [], []
    with open(path, encoding="ascii", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            tokens = line.split("#", 1)[0].split()
            if not tokens:
                continue
            try:
                if not tokens[1].startswith("qid:"):
                    raise ValueError(f"second field {tokens[1]!r} is not qid:<id>")
                label, qid = int(tokens[0]), int(tokens[1][4:])
                feats = np.zeros(num_features, np.float32)
                for tok in tokens[2:]:
                    k, v = tok.split(":", 1)
                    idx = int(k)
                    if not 1 <= idx <= num_features:
                        raise ValueError(f"feature index {idx} out of range [1, {num_features}]")
                    feats[idx - 1] = float(v)
            except (ValueError, IndexError) as err:
                raise ValueError(f"{str(path)!r} line {n}: malformed LETOR line ({err})") from err
            if not 0 <= label <= 4:
                raise ValueError(f"{str(path)!r} line {n}: label {label} out of range [0, 4]")
            labels.append(label)
            qids.append(qid)
            rows.append(feats)
    if not rows:
        raise ValueError(f"{str(path)!r} holds no LETOR lines")
    return LetorFile(
        path, np.array(labels, np.int64), np.array(qids, np.int64), np.stack(rows)
    )


def _edges(x: np.ndarray, buckets: int) -> np.ndarray:
    return np.unique(np.quantile(x, np.linspace(0, 1, buckets + 1)[1:-1]))


def _bucket(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, x, side="right").astype(np.int64)


def mslr_schema(max_qid: int, config: MslrConfig) -> CascadeSchema:
    """The :class:`CascadeSchema` of :func:`build_mslr` output."""
    return CascadeSchema(
        list_size=config.list_size,
        history_length=1,
        user_vocab=max_qid + 1,
        item_vocab=8 * 8 + 1,
        user_feature_vocabs=(BUCKETS + 1, 11, 11),
        item_feature_vocabs=(BUCKETS + 1,) * len(ITEM_FEATURES),
        stage_groups=GRADE_GROUPS,
        gt_num=config.gt_num,
        quotas=config.quotas,
        name="mslr_web10k_sample",
    )


def build_mslr(
    data_dir: PathLike | None = None,
    split: str = "train",
    config: MslrConfig | None = None,
    *,
    report: BuildReport | None = None,
) -> tuple[CascadeSchema, dict[str, np.ndarray]]:
    """Build MSLR-WEB10K sample requests of one split (one request per query).

    Args:
      data_dir: data folder holding ``mslr_web10k_sample/`` (None: ``$LCRON_DATA_DIR``,
        then ``../shared/data``).
      split: ``"train"`` or ``"test"`` (the files' own split).
      config: a :class:`MslrConfig`.
      report: receives the number of dropped (truncated) queries.

    Returns:
      ``(schema, arrays)`` with canonical request arrays, one row per query in file order.

    Raises:
      FileNotFoundError: naming the missing folder or file (and ``LCRON_DATA_DIR``).
      ValueError: a malformed line (file and line number), or a bad ``split``.
    """
    if split not in FILES:
        raise ValueError(f"`split` must be one of {sorted(FILES)}. Received: split={split!r}")
    c = config or MslrConfig()
    if c.gt_num > c.list_size:
        raise ValueError(f"`gt_num` must be <= list_size. Received: {c.gt_num} > {c.list_size}")
    folder = resolve_data_dir(data_dir, SUBDIR)
    files = {s: read_letor(require_file(folder, name)) for s, name in FILES.items()}
    train, data = files["train"], files[split]
    schema = mslr_schema(int(max(f.qid.max() for f in files.values())), c)
    item_cols = [f - 1 for f in ITEM_FEATURES]
    item_edges = [_edges(train.features[:, j], BUCKETS) for j in item_cols]
    sig_edges = [_edges(train.features[:, j], 8) for j in (109, 129)]
    idf_edges = _edges(train.features[:, 19], BUCKETS)

    starts = np.flatnonzero(np.r_[True, data.qid[1:] != data.qid[:-1]])
    ends = np.r_[starts[1:], len(data.qid)]
    if len(np.unique(data.qid[starts])) != len(starts):
        seen: set[int] = set()
        for s in starts:
            q = int(data.qid[s])
            if q in seen:
                raise ValueError(
                    f"{str(data.path)!r}: rows of qid {q} are not contiguous (again at row {s})"
                )
            seen.add(q)
    if c.drop_last_query and len(starts) > 1:
        starts, ends = starts[:-1], ends[:-1]
        if report is not None:
            report.dropped += 1
        logger.info("MSLR %s: dropped the last (truncated) query of %s", split, data.path.name)
    rng = np.random.default_rng([c.seed, 0 if split == "train" else 1])
    q_count, n = len(starts), c.list_size
    rows = np.full((q_count, n), -1, np.int64)
    for i, (s, e) in enumerate(zip(starts, ends)):
        idx = np.arange(s, e)
        if len(idx) > n:
            by_grade = idx[np.argsort(-data.label[idx], kind="stable")]
            top, rest = by_grade[: c.gt_num], by_grade[c.gt_num :]
            fill = rng.choice(rest, n - len(top), replace=False)
            idx = np.sort(np.concatenate([top, fill]))
        rows[i, : len(idx)] = idx
    valid = rows >= 0
    safe = np.maximum(rows, 0)
    x = data.features[safe]  # [Q, N, 136]
    mask = valid.astype(np.float32)
    item_features = np.stack(
        [_bucket(x[..., j], e) + 1 for j, e in zip(item_cols, item_edges)], axis=-1
    ) * valid[..., None]
    signature = _bucket(x[..., 109], sig_edges[0]) * 8 + _bucket(x[..., 129], sig_edges[1])
    label = np.where(valid, data.label[safe], 0).astype(np.float32)
    n_docs = ends - starts
    qlen = np.array([data.features[s:e, 4].max() for s, e in zip(starts, ends)])
    arrays = {
        "user_id": data.qid[starts].astype(np.int64),
        "user_features": np.stack(
            [
                _bucket(data.features[starts, 19], idf_edges) + 1,
                np.clip(qlen, 1, 10).astype(np.int64),
                np.clip(np.floor(np.log2(np.maximum(n_docs, 1))), 0, 9).astype(np.int64) + 1,
            ],
            axis=1,
        ),
        "history": np.zeros((q_count, 1), np.int64),
        "item_id": np.where(valid, signature + 1, 0).astype(np.int64),
        "item_features": item_features.astype(np.int64),
        "label": label,
        "mask": mask,
        "stage_group": np.where(valid, 4 - label, -1).astype(np.int32),
    }
    validate_arrays(arrays, schema, source=f"MSLR {split} ({str(data.path)!r})")
    return schema, arrays


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m lcron_tf.data.mslr --out-dir OUT [--data-dir DIR]``."""
    from lcron_tf.data.tfrecord import write_tfrecords

    p = argparse.ArgumentParser(description="Build the MSLR-WEB10K sample TFRecords.")
    p.add_argument("--data-dir", default=None, help="folder holding mslr_web10k_sample/")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--list-size", type=int, default=40)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    config = MslrConfig(list_size=args.list_size)
    for split in ("train", "test"):
        schema, arrays = build_mslr(args.data_dir, split, config)
        write_tfrecords(arrays, schema, Path(args.out_dir) / split, overwrite=args.overwrite)
        print(f"{split}: {len(arrays['user_id'])} requests -> {Path(args.out_dir) / split}")


if __name__ == "__main__":
    main()
