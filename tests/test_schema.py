"""CascadeSchema's optional field names and history fields: validation and compatibility."""

from __future__ import annotations

import json

import pytest

from lcron_tf.schema import FEATURE_KEYS, CascadeSchema


def base(**kw) -> CascadeSchema:
    args = dict(list_size=4, history_length=3, user_vocab=9, item_vocab=9,
                user_feature_vocabs=(5,), item_feature_vocabs=(4, 6), stage_groups=("a", "b"),
                gt_num=2, quotas=(3, 2))
    return CascadeSchema(**{**args, **kw})


def test_names_are_optional_and_old_json_loads():
    s = base()
    assert s.feature_keys == FEATURE_KEYS and s.num_history_features == 0
    d = json.loads(s.to_json())
    for key in ("user_feature_names", "item_feature_names", "history_feature_names"):
        del d[key]
    assert CascadeSchema.from_json(json.dumps(d)) == s


def test_history_fields_take_their_item_field_vocabulary():
    s = base(item_feature_names=("x", "y"), history_feature_names=("y",))
    assert s.history_feature_columns == (1,) and s.history_feature_vocabs == (6,)
    assert s.feature_keys[-1] == "history_features"
    assert s.feature_specs(2)["history_features"].shape == (2, 3, 1)
    assert CascadeSchema.from_json(s.to_json()) == s


@pytest.mark.parametrize("kw, match", [
    ({"user_feature_names": ("a", "b")}, "name every column"),
    ({"item_feature_names": ("x", "x")}, "unique"),
    ({"history_feature_names": ("x",)}, "not in item_feature_names"),
    ({"item_feature_names": "xy"}, "sequence of names"),
])
def test_bad_names_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        base(**kw)
