"""A tiny RecFlow fixture in the released layout (written into a temporary folder).

Expected values in ``test_data_recflow.py`` are computed by hand from the official code
(kwai/LCRON dataset2/3.py).
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd

DAY1, DAY2 = "2024-01-13", "2024-02-04"
# 2024-01-13 05:07:00 UTC = 13:07 Beijing time, a Saturday (tm_wday 5).
TS1 = (1705104000 + 5 * 3600 + 7 * 60) * 1000
UPLOAD_TS = 1704067200  # 2024-01-01 00:00 UTC = 08:00 Beijing, a Monday
ID_CNT = {
    "request_id": 1000, "user_id": 10, "device_id": 10, "age": 8, "gender": 3, "province": 79,
    "video_id": 5000, "author_id": 500, "category_level_one": 140, "category_level_two": 784,
    "upload_type": 40,
}
# request_id -> (user_id, request_timestamp, device_id, age, gender, province)
REQUESTS = {101: (3, TS1, 4, 2, 1, 7), 102: (5, TS1 + 60_000, 6, 3, 0, 9),
            201: (3, TS1 + 22 * 86_400_000, 4, 2, 1, 7)}


def photo(vid: int) -> list[int]:
    """A request_id_dict row: video, author, duration, cate2, upload_type, upload_ts, cate1,
    effective_view."""
    return [vid, vid % 500, 12345, vid % 784, vid % 40, UPLOAD_TS, vid % 140, 1]


RANK_INDEX_101 = {1000 + j: j * 3 % 20 + 1 for j in range(12)}  # 1, 4, 7, ... distinct
RANK_INDEX_102 = {1100: 3, 1101: 1, 1102: 2, 1103: 4}
RERANK_INDEX_101 = {1000: 2, 1001: 1}


def stage_lists() -> dict[int, dict[str, np.ndarray]]:
    def rows(vids):
        return np.array([photo(v) for v in vids], np.int64)

    return {
        101: {"rank_pos": rows(range(1000, 1012)), "rank_neg": rows(range(2000, 2010)),
              "coarse_neg": rows(range(3000, 3003)),  # short: 7 padded slots
              # no "prerank_neg": all 10 slots padded
              "rerank_pos": rows([1000, 1001]), "rerank_neg": rows(range(1002, 1012))},
        102: {"rank_pos": rows(range(1100, 1104)), "rank_neg": rows(range(2100, 2110)),
              "coarse_neg": rows(range(3100, 3110)), "prerank_neg": rows(range(4100, 4112))},
        201: {"rank_pos": rows(range(1200, 1210)), "rank_neg": rows(range(2200, 2210)),
              "coarse_neg": rows(range(3200, 3210)), "prerank_neg": rows(range(4200, 4210)),
              "rerank_pos": rows(range(1200, 1210)), "rerank_neg": rows(range(2200, 2210))},
    }


def feather_rows(rid: int, lists: dict[str, np.ndarray]) -> list[dict]:
    user, ts, dev, age, gender, prov = REQUESTS[rid]
    base = {"request_id": rid, "user_id": user, "request_timestamp": ts, "device_id": dev,
            "age": age, "gender": gender, "province": prov}
    out = []
    for stage, arr in lists.items():
        for vid in arr[:, 0]:
            vid = int(vid)
            row = dict(base, video_id=vid, rank_pos=0, rank_index=0, rerank_pos=0,
                       rerank_index=0, author_id=vid % 500)
            if stage == "rank_pos":
                row.update(rank_pos=1, rank_index={**RANK_INDEX_101, **RANK_INDEX_102}.get(
                    vid, 1 + vid % 10))
            if stage == "rerank_pos":
                row.update(rerank_pos=1, rerank_index=RERANK_INDEX_101.get(vid, 1 + vid % 10))
            out.append(row)
    if rid == 101:  # a later duplicate (request, video) row: the first rank_index wins
        out.append(dict(out[0], rank_index=20))
    return out


def seq(rid: int) -> np.ndarray:
    s = np.zeros((50, 10), np.int64)
    if rid == 101:
        s[-3:, 0] = [500, 501, 502]
        s[-3:, 1:5] = [[7, 70, 3, 1], [8, 80, 0, 2], [9, 90, 139, 0]]  # aid, cate2, cate1, type
        s[-3:, 7] = TS1 - 1000
        s[:-3, 1:5] = 5  # fields of invalid rows (timestamp 0) are ignored
    elif rid == 201:
        s[:, 0] = np.arange(50)
        s[:, 7] = TS1
    return s


def write_fixture(root, drop_request_dict_entry=None):
    for sub in ("all_stage", "request_id_dict", "seq_effective_50_dict", "others"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lists = stage_lists()
    for day, rids in ((DAY1, (101, 102)), (DAY2, (201,))):
        rows = [r for rid in rids for r in feather_rows(rid, lists[rid])]
        pd.DataFrame(rows).to_feather(root / "all_stage" / f"{day}.feather")
        req = {rid: lists[rid] for rid in rids if rid != drop_request_dict_entry}
        with open(root / "request_id_dict" / f"{day}.pkl", "wb") as f:
            pickle.dump(req, f)
        with open(root / "seq_effective_50_dict" / f"{day}.pkl", "wb") as f:
            pickle.dump({rid: seq(rid) for rid in rids}, f)
    with open(root / "others" / "id_cnt.pkl", "wb") as f:
        pickle.dump(ID_CNT, f)
    return root
