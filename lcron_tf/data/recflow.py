"""RecFlow reader: the released layout -> the official LCRON 2-/3-stage samples -> TFRecords.

RecFlow (Kuaishou, ICLR 2025; licence CC BY-NC-SA 4.0, so it is never bundled) must be
downloaded by a person. Its data folder has (per day ``<date>`` = ``YYYY-MM-DD``)::

    all_stage/<date>.feather            every stage sample of the day (one row per item)
    request_id_dict/<date>.pkl          request_id -> {stage: int ndarray [n, 8]}
    seq_effective_50_dict/<date>.pkl    request_id -> int ndarray [50, 10] (left-padded)
    others/id_cnt.pkl                   {field: number of ids}

This module builds exactly the samples of the official code (``kwai/LCRON``
``dataset2.py``/``dataset3.py``): requests are the unique rows of (request_id, user_id,
request_timestamp, device_id, age, gender, province) of the feather file, in file order;
each stage group takes the **first** 10 entries of ``request_id_dict[request_id][group]``;
labels are ``30 - rank_index`` for ``rank_pos`` (``rank_index`` from the feather rows with
``rank_pos == 1``, first value per (request_id, video_id)), 7 / 6 / 5 for rank_neg /
coarse_neg / prerank_neg; 3-stage: ``30 - rerank_index`` for ``rerank_pos`` and 8 for
``rerank_neg``. Padded slots of a short group keep the official labels (30 for the
positive group, the group's constant otherwise) with ``mask = 0`` (``official_padding_labels
=False`` sets them to 0 instead). See ``docs/data.md`` for the field mapping.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from lcron_tf.data.paths import candidate_data_dir
from lcron_tf.schema import (
    THREE_STAGE_GROUPS,
    TWO_STAGE_GROUPS,
    BuildReport,
    CascadeSchema,
    invalid_requests,
    select_requests,
    validate_arrays,
)

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

REQUEST_COLUMNS = (
    "request_id", "user_id", "request_timestamp", "device_id", "age", "gender", "province"
)
ID_CNT_FIELDS = (
    "user_id", "device_id", "age", "gender", "province", "video_id", "author_id",
    "category_level_one", "category_level_two", "upload_type",
)
PERIOD1_TRAIN_DATES = tuple(
    str(d) for d in np.arange(np.datetime64("2024-01-13"), np.datetime64("2024-02-04"))
)
"""The 22 training days of the paper (``file_1st.txt``: 2024-01-13 .. 2024-02-03)."""
PERIOD1_TEST_DATES = ("2024-02-04",)
"""The paper's test day (the last day of Period 1)."""

MAX_RANK_INDEX = 30
PER_GROUP = 10
HISTORY_LENGTH = 50
# Columns of request_id_dict arrays (as the official code reads them).
_VID, _AID, _CATE2, _UPLOAD_TYPE, _UPLOAD_TS, _CATE1 = 0, 1, 3, 4, 5, 6
# Columns of seq_effective_50_dict arrays.
_SEQ_VID, _SEQ_TS = 0, 7

USER_FEATURES = ("request_wday", "request_hour", "request_minute", "device_id", "gender",
                 "age", "province")
ITEM_FEATURES = ("author_id", "category_level_two", "category_level_one", "upload_type",
                 "upload_wday", "upload_hour", "upload_minute")


def _groups(num_stages: int) -> tuple[str, ...]:
    if num_stages == 2:
        return TWO_STAGE_GROUPS
    if num_stages == 3:
        return THREE_STAGE_GROUPS
    raise ValueError(f"`num_stages` must be 2 or 3. Received: num_stages={num_stages}")


def _group_labels(num_stages: int) -> dict[str, float | None]:
    """Constant label per group (None = ``30 - rank_index`` of the positive group)."""
    if num_stages == 2:
        return {"rank_pos": None, "rank_neg": 7.0, "coarse_neg": 6.0, "prerank_neg": 5.0}
    return {"rerank_pos": None, "rerank_neg": 8.0, "rank_neg": 7.0, "coarse_neg": 6.0,
            "prerank_neg": 5.0}


def recflow_dir(data_dir: PathLike | None = None) -> Path:
    """The RecFlow data folder: ``data_dir``, else ``$LCRON_DATA_DIR/recflow``.

    Raises:
      FileNotFoundError: naming the folder and how to point to it.
    """
    if data_dir is not None:
        path, origin = Path(data_dir).expanduser(), "argument"
    else:
        base, origin = candidate_data_dir(None)
        path = base / "recflow"
    if not path.is_dir():
        raise FileNotFoundError(
            f"RecFlow data directory {str(path)!r} (from {origin}) does not exist. Download "
            "RecFlow (see docs/data.md) and pass its data folder (the one holding all_stage/, "
            "request_id_dict/, seq_effective_50_dict/ and others/) as data_dir / --data-dir."
        )
    return path


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"missing RecFlow file {str(path)!r}")
    return path


def _load_pickle(path: Path) -> object:
    _require(path)
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as err:  # noqa: BLE001 - pickle raises many types
        raise ValueError(f"cannot unpickle RecFlow file {str(path)!r}: {err!r}") from err


def load_id_cnt(data_dir: PathLike | None = None) -> dict[str, int]:
    """``others/id_cnt.pkl``: number of ids per field (vocab sizes are these + 2)."""
    path = recflow_dir(data_dir) / "others" / "id_cnt.pkl"
    id_cnt = _load_pickle(path)
    if not isinstance(id_cnt, Mapping):
        raise ValueError(f"{str(path)!r} must hold a dict of id counts; got {type(id_cnt)}")
    missing = [f for f in ID_CNT_FIELDS if f not in id_cnt]
    if missing:
        raise ValueError(f"{str(path)!r} has no counts for {missing}")
    return {str(k): int(v) for k, v in id_cnt.items()}


def recflow_schema(
    id_cnt: Mapping[str, int], num_stages: int = 2, history_length: int = HISTORY_LENGTH
) -> CascadeSchema:
    """The :class:`CascadeSchema` of RecFlow samples (vocab = ``id_cnt[field] + 2``).

    ``user_features`` = [request wday, hour, minute, device_id, gender, age, province];
    ``item_features`` = [author_id, category_level_two, category_level_one, upload_type,
    upload wday, hour, minute]; every id is shifted by +1 (0 = padding).
    """
    groups = _groups(num_stages)
    v = {f: int(id_cnt[f]) + 2 for f in ID_CNT_FIELDS}
    return CascadeSchema(
        list_size=PER_GROUP * len(groups),
        history_length=history_length,
        user_vocab=v["user_id"],
        item_vocab=v["video_id"],
        user_feature_vocabs=(9, 26, 62, v["device_id"], v["gender"], v["age"], v["province"]),
        item_feature_vocabs=(
            v["author_id"], v["category_level_two"], v["category_level_one"], v["upload_type"],
            9, 26, 62,
        ),
        stage_groups=groups,
        gt_num=PER_GROUP,
        quotas=(30, 20) if num_stages == 2 else (40, 30, 20),
        name=f"recflow_{num_stages}stage",
    )


def time_features(
    timestamp_s: np.ndarray, utc_offset_hours: float | None = 8.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wday 0..6 with Monday = 0, hour 0..23, minute 0..59) of unix seconds.

    ``utc_offset_hours=8`` is Beijing time (Kuaishou's); ``None`` uses the machine's local
    timezone through ``time.localtime`` exactly as the official code (which makes the
    features depend on the machine).
    """
    ts = np.asarray(timestamp_s, np.int64)
    if utc_offset_hours is None:
        tm = [time.localtime(int(t)) for t in ts.reshape(-1)]
        shape = ts.shape
        return (
            np.array([x.tm_wday for x in tm], np.int64).reshape(shape),
            np.array([x.tm_hour for x in tm], np.int64).reshape(shape),
            np.array([x.tm_min for x in tm], np.int64).reshape(shape),
        )
    local = ts + int(round(utc_offset_hours * 3600))
    days = np.floor_divide(local, 86400)
    return (days + 3) % 7, np.floor_divide(local, 3600) % 24, np.floor_divide(local, 60) % 60


def _read_feather(path: Path, num_stages: int) -> object:
    """The needed columns of an ``all_stage`` feather file as a DataFrame."""
    from lcron_tf._extras import require

    pa = require("pyarrow", "the RecFlow reader (feather files)")
    require("pandas", "the RecFlow reader (feather files)")
    import pyarrow.feather as feather

    _require(path)
    pos, index = ("rank_pos", "rank_index") if num_stages == 2 else ("rerank_pos", "rerank_index")
    wanted = [*REQUEST_COLUMNS, "video_id", pos, index]
    try:
        try:  # Feather v2 = Arrow IPC: read the column names without loading the data.
            with pa.memory_map(str(path)) as source:
                names = pa.ipc.open_file(source).schema.names
        except pa.ArrowInvalid:  # Feather v1
            names = feather.read_table(str(path)).column_names
    except Exception as err:  # noqa: BLE001 - pyarrow raises many types
        raise ValueError(f"cannot read RecFlow feather file {str(path)!r}: {err!r}") from err
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(f"RecFlow file {str(path)!r} lacks the columns {missing} (has {names})")
    try:
        return feather.read_table(str(path), columns=wanted).to_pandas()
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read RecFlow feather file {str(path)!r}: {err!r}") from err


def build_recflow_day(
    data_dir: PathLike | None,
    date: str,
    *,
    num_stages: int = 2,
    id_cnt: Mapping[str, int] | None = None,
    history_length: int = HISTORY_LENGTH,
    utc_offset_hours: float | None = 8.0,
    official_padding_labels: bool = True,
    skip_bad_records: bool = False,
    report: BuildReport | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[CascadeSchema, dict[str, np.ndarray]]:
    """Build the official LCRON samples of one RecFlow day.

    Args:
      data_dir: the RecFlow data folder (``None``: ``$LCRON_DATA_DIR/recflow``).
      date: the day, ``YYYY-MM-DD`` (the file stem).
      num_stages: 2 (N = 40) or 3 (N = 50).
      id_cnt: ``others/id_cnt.pkl`` (read when None).
      history_length: H; the last H rows of ``seq_effective_50_dict`` (50 as the paper).
      utc_offset_hours: timezone of the wday/hour/minute features (see :func:`time_features`).
      official_padding_labels: keep the official labels on padded slots (30 for the
        positive group, the group constant otherwise); False = 0.
      skip_bad_records: skip (and count in ``report``) requests with missing or malformed
        entries instead of raising.
      report: a :class:`BuildReport` that receives skip counts and messages.
      progress: called as ``progress(done, total)`` every 10,000 requests.

    Returns:
      ``(schema, arrays)``: canonical request arrays, one row per request in file order.

    Raises:
      FileNotFoundError: a missing folder or file (named).
      ValueError: a malformed file, or a bad request naming the file, the request index
        (row of the unique requests) and the request_id (unless ``skip_bad_records``).
    """
    root = recflow_dir(data_dir)
    if id_cnt is None:
        id_cnt = load_id_cnt(root)
    schema = recflow_schema(id_cnt, num_stages, history_length)
    report = report if report is not None else BuildReport()
    groups = _groups(num_stages)
    const = _group_labels(num_stages)
    pos_group = groups[0]
    feather = root / "all_stage" / f"{date}.feather"
    req_path = root / "request_id_dict" / f"{date}.pkl"
    seq_path = root / "seq_effective_50_dict" / f"{date}.pkl"
    df = _read_feather(feather, num_stages)
    requests = df[list(REQUEST_COLUMNS)].drop_duplicates().to_numpy(np.int64)
    pos_col, idx_col = ("rank_pos", "rank_index") if num_stages == 2 else (
        "rerank_pos", "rerank_index")
    pos_rows = df[df[pos_col] == 1]
    rank_lookup = pos_rows.groupby(["request_id", "video_id"], sort=False)[idx_col].first()
    rank_lookup = rank_lookup.to_dict()
    del df, pos_rows
    request_dict = _load_pickle(req_path)
    seq_dict = _load_pickle(seq_path)
    for path, obj in ((req_path, request_dict), (seq_path, seq_dict)):
        if not isinstance(obj, Mapping):
            raise ValueError(f"{str(path)!r} must hold a dict keyed by request_id")

    r, n, h, g = len(requests), schema.list_size, history_length, PER_GROUP
    item_id = np.zeros((r, n), np.int64)
    item_raw = np.zeros((r, n, 6), np.int64)  # author, cate2, cate1, upload_type, upload_ts, ok
    label = np.zeros((r, n), np.float32)
    history = np.zeros((r, h), np.int64)
    keep = np.ones(r, bool)
    for i in range(r):
        rid = int(requests[i, 0])
        where = f"request {i} (request_id {rid}) of {str(feather)!r}"
        try:
            stages = request_dict.get(rid)
            if stages is None:
                raise ValueError(f"{str(req_path)!r} has no entry for {where}")
            seq = seq_dict.get(rid)
            if seq is None:
                raise ValueError(f"{str(seq_path)!r} has no entry for {where}")
            seq = np.asarray(seq)
            if seq.ndim != 2 or seq.shape[1] <= _SEQ_TS:
                raise ValueError(
                    f"{str(seq_path)!r}: entry of {where} has shape {seq.shape}; expected [50, 10]"
                )
            seq = seq[-h:]
            hist = np.where(seq[:, _SEQ_TS] > 0, seq[:, _SEQ_VID] + 1, 0)
            history[i, h - len(hist) :] = hist
            for gi, group in enumerate(groups):
                lo = gi * g
                c = const[group]
                label[i, lo : lo + g] = MAX_RANK_INDEX if c is None else c
                arr = stages.get(group)
                if arr is None or len(arr) == 0:
                    continue
                arr = np.asarray(arr)
                if arr.ndim != 2 or arr.shape[1] <= _CATE1:
                    raise ValueError(
                        f"{str(req_path)!r}: {group!r} of {where} has shape {arr.shape}; "
                        "expected [n, 8]"
                    )
                arr = arr[:g].astype(np.int64)
                m = len(arr)
                item_id[i, lo : lo + m] = arr[:, _VID] + 1
                item_raw[i, lo : lo + m] = np.stack(
                    [arr[:, _AID], arr[:, _CATE2], arr[:, _CATE1], arr[:, _UPLOAD_TYPE],
                     arr[:, _UPLOAD_TS], np.ones(m, np.int64)], axis=1,
                )
                if c is None:
                    for j, vid in enumerate(arr[:, _VID]):
                        idx = rank_lookup.get((rid, int(vid)))
                        if idx is None:
                            raise ValueError(
                                f"{str(feather)!r} has no {idx_col} for the {pos_group} video "
                                f"{int(vid)} of {where} (no row with {pos_col} == 1)"
                            )
                        label[i, lo + j] = MAX_RANK_INDEX - float(idx)
        except ValueError as err:
            if not skip_bad_records:
                raise
            keep[i] = False
            report.skip(str(err))
        if progress is not None and (i + 1) % 10_000 == 0:
            progress(i + 1, r)
    if progress is not None:
        progress(r, r)

    mask = item_raw[..., 5].astype(np.float32)
    real = mask > 0
    wday, hour, minute = time_features(requests[:, 2] // 1000, utc_offset_hours)
    up_wday, up_hour, up_min = time_features(item_raw[..., 4], utc_offset_hours)
    item_features = np.stack(
        [item_raw[..., 0] + 1, item_raw[..., 1] + 1, item_raw[..., 2] + 1, item_raw[..., 3] + 1,
         up_wday + 1, up_hour + 1, up_min + 1], axis=-1,
    ) * real[..., None]
    if not official_padding_labels:
        label = label * mask
    arrays = {
        "user_id": requests[:, 1] + 1,
        "user_features": np.stack(
            [wday + 1, hour + 1, minute + 1, requests[:, 3] + 1, requests[:, 5] + 1,
             requests[:, 4] + 1, requests[:, 6] + 1], axis=1,
        ),
        "history": history,
        "item_id": item_id,
        "item_features": item_features.astype(np.int64),
        "label": label,
        "mask": mask,
        "stage_group": np.where(
            real, np.repeat(np.arange(len(groups), dtype=np.int32), g)[None, :], -1
        ).astype(np.int32),
    }
    if skip_bad_records:
        bad = invalid_requests(arrays, schema) & keep
        for i in np.flatnonzero(bad):
            report.skip(
                f"request {i} (request_id {int(requests[i, 0])}) of {str(feather)!r}: ids out "
                f"of the ranges of {str(root / 'others' / 'id_cnt.pkl')!r}"
            )
        keep &= ~bad
        arrays = select_requests(arrays, keep)
    else:
        validate_arrays(arrays, schema, source=f"{str(feather)!r} (checked against id_cnt.pkl)")
    return schema, arrays


def list_recflow_dates(data_dir: PathLike | None = None) -> list[str]:
    """The dates (file stems) present in ``all_stage/``, sorted."""
    root = recflow_dir(data_dir)
    folder = root / "all_stage"
    if not folder.is_dir():
        raise FileNotFoundError(f"missing RecFlow folder {str(folder)!r}")
    return sorted(p.stem for p in folder.glob("*.feather"))


def convert_recflow(
    data_dir: PathLike | None,
    out_dir: PathLike,
    *,
    num_stages: int = 2,
    train_dates: Sequence[str] | None = None,
    test_dates: Sequence[str] = PERIOD1_TEST_DATES,
    history_length: int = HISTORY_LENGTH,
    utc_offset_hours: float | None = 8.0,
    official_padding_labels: bool = True,
    skip_bad_records: bool = False,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, object]:
    """Convert RecFlow days into ``<out_dir>/train`` and ``<out_dir>/test`` record directories.

    One TFRecord file per day (``<date>.tfrecord``) plus ``schema.json`` per split; read them
    with :func:`lcron_tf.data.read_tfrecords`.

    Args:
      data_dir: the RecFlow data folder.
      out_dir: output folder.
      num_stages: 2 or 3.
      train_dates: training days; default = every day in ``all_stage/`` before the first
        test day that is in Period 1 (the paper's 22 days when all are present).
      test_dates: test days (default: the paper's ``2024-02-04``).
      history_length, utc_offset_hours, official_padding_labels, skip_bad_records: as
        :func:`build_recflow_day`.
      overwrite: replace existing output directories.
      progress: called as ``progress(date, done, total)``.

    Returns:
      ``{"train": {date: requests}, "test": {...}, "skipped": int, "messages": [...]}``.
    """
    from lcron_tf.data.tfrecord import CascadeRecordWriter

    root = recflow_dir(data_dir)
    id_cnt = load_id_cnt(root)
    schema = recflow_schema(id_cnt, num_stages, history_length)
    test_dates = list(test_dates)
    if train_dates is None:
        first_test = min(test_dates) if test_dates else "9999"
        train_dates = [
            d for d in list_recflow_dates(root) if d < first_test and d in PERIOD1_TRAIN_DATES
        ]
    overlap = sorted(set(train_dates) & set(test_dates))
    if overlap:
        raise ValueError(f"dates {overlap} are in both train_dates and test_dates")
    report = BuildReport()
    result: dict[str, object] = {}
    for split, dates in (("train", list(train_dates)), ("test", test_dates)):
        counts: dict[str, int] = {}
        if dates:
            with CascadeRecordWriter(Path(out_dir) / split, schema, overwrite=overwrite) as w:
                for date in dates:
                    cb = None if progress is None else (
                        lambda done, total, d=date: progress(d, done, total))
                    _, arrays = build_recflow_day(
                        root, date, num_stages=num_stages, id_cnt=id_cnt,
                        history_length=history_length, utc_offset_hours=utc_offset_hours,
                        official_padding_labels=official_padding_labels,
                        skip_bad_records=skip_bad_records, report=report, progress=cb,
                    )
                    counts[date] = w.write(arrays, shard=date)
                    logger.info("RecFlow %s %s: %d requests", split, date, counts[date])
        result[split] = counts
    result["skipped"] = report.skipped
    result["messages"] = list(report.messages)
    if report.skipped:
        logger.warning("RecFlow conversion skipped %d bad requests", report.skipped)
    return result


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m lcron_tf.data.recflow --data-dir RECFLOW/data --out-dir OUT``."""
    p = argparse.ArgumentParser(description="Convert RecFlow into lcron_tf TFRecords.")
    p.add_argument("--data-dir", default=None,
                   help="RecFlow data folder (default: $LCRON_DATA_DIR/recflow)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--num-stages", type=int, default=2, choices=(2, 3))
    p.add_argument("--train-dates", nargs="*", default=None)
    p.add_argument("--test-dates", nargs="*", default=list(PERIOD1_TEST_DATES))
    p.add_argument("--utc-offset-hours", type=float, default=8.0)
    p.add_argument("--skip-bad-records", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    result = convert_recflow(
        args.data_dir, args.out_dir, num_stages=args.num_stages, train_dates=args.train_dates,
        test_dates=args.test_dates, utc_offset_hours=args.utc_offset_hours,
        skip_bad_records=args.skip_bad_records, overwrite=args.overwrite,
        progress=lambda d, done, total: print(f"{d}: {done}/{total}", flush=True),
    )
    print(result)


if __name__ == "__main__":
    main()
