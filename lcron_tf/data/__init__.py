"""Data layer: the canonical request format, tf.data pipelines and every data source.

* :mod:`~lcron_tf.schema` - the canonical batch dict and :class:`CascadeSchema`.
* :mod:`~lcron_tf.data.tfrecord` - TFRecord writer/reader (``schema.json`` manifest,
  bad-record detection) and the in-memory :func:`to_dataset` path.
* :mod:`~lcron_tf.data.pipeline` - training inputs with a fixed step -> batch mapping:
  :class:`InMemoryData` and :class:`RecordData` (streamed; exact resume; multi-worker).
* :mod:`~lcron_tf.data.simulator` - RecFlow-shaped synthetic data with a known truth.
* :mod:`~lcron_tf.data.recflow` - the RecFlow reader (official 2-/3-stage samples).
* :mod:`~lcron_tf.data.movielens`, :mod:`~lcron_tf.data.mslr` - real-data cascades.
* :mod:`~lcron_tf.data.candidates` - cascade requests from YOUR interaction log (your
  feature names and dtypes, strings included), for your own TFRS model.
* :mod:`~lcron_tf.data.paths` - where the data lives (``--data-dir`` / ``LCRON_DATA_DIR``).

Every builder returns ``(schema, arrays)`` (numpy, first axis = requests); feed them to
:func:`to_dataset` or write them with :func:`write_tfrecords` and read them back with
:func:`read_tfrecords`. See ``docs/data.md``.
"""

import warnings

from lcron_tf.data.candidates import (
    CANDIDATE_TYPES,
    CandidateConfig,
    CandidateLists,
    build_candidates,
    interactions_to_arrays,
)
from lcron_tf.data.movielens import (
    MovieLensConfig,
    build_movielens,
    load_movielens,
    movielens_interactions,
    movielens_movies,
)
from lcron_tf.data.mslr import MslrConfig, build_mslr, read_letor
from lcron_tf.data.paths import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    find_data_dir,
    require_file,
    resolve_data_dir,
)
from lcron_tf.data.pipeline import InMemoryData, RecordData, epoch_seed, step_indices
from lcron_tf.data.recflow import (
    PERIOD1_TEST_DATES,
    PERIOD1_TRAIN_DATES,
    build_recflow_day,
    convert_recflow,
    list_recflow_dates,
    load_id_cnt,
    recflow_schema,
)
from lcron_tf.data.simulator import SimulatorConfig, make_world, simulate, simulator_schema
from lcron_tf.data.tfrecord import (
    SCHEMA_FILE,
    CascadeRecordWriter,
    ReadStats,
    RecordProblem,
    check_tfrecords,
    dataset_to_arrays,
    read_manifest,
    read_schema,
    read_tfrecords,
    serialize_requests,
    shard_record_counts,
    shards_by_file,
    to_dataset,
    write_tfrecords,
)
from lcron_tf.schema import (
    DTYPES,
    FEATURE_KEYS,
    THREE_STAGE_GROUPS,
    TWO_STAGE_GROUPS,
    BuildReport,
    CascadeSchema,
    cast_arrays,
    concat_requests,
    invalid_requests,
    num_requests,
    select_requests,
    split_requests,
    stack_requests,
    validate_arrays,
    validate_batch,
)

__all__ = [
    "CANDIDATE_TYPES",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "DTYPES",
    "FEATURE_KEYS",
    "PERIOD1_TEST_DATES",
    "PERIOD1_TRAIN_DATES",
    "SCHEMA_FILE",
    "THREE_STAGE_GROUPS",
    "TWO_STAGE_GROUPS",
    "BuildReport",
    "CandidateConfig",
    "CandidateLists",
    "CascadeRecordWriter",
    "CascadeSchema",
    "InMemoryData",
    "MovieLensConfig",
    "MslrConfig",
    "ReadStats",
    "RecordData",
    "RecordProblem",
    "SimulatorConfig",
    "build_candidates",
    "build_movielens",
    "build_mslr",
    "build_recflow_day",
    "cast_arrays",
    "check_tfrecords",
    "concat_requests",
    "convert_recflow",
    "dataset_to_arrays",
    "epoch_seed",
    "find_data_dir",
    "interactions_to_arrays",
    "invalid_requests",
    "list_recflow_dates",
    "load_id_cnt",
    "load_movielens",
    "make_world",
    "movielens_interactions",
    "movielens_movies",
    "num_requests",
    "read_letor",
    "read_manifest",
    "read_schema",
    "read_tfrecords",
    "recflow_schema",
    "require_file",
    "resolve_data_dir",
    "select_requests",
    "serialize_requests",
    "shard_record_counts",
    "shards_by_file",
    "simulate",
    "simulator_schema",
    "split_requests",
    "stack_requests",
    "step_indices",
    "to_dataset",
    "validate_arrays",
    "validate_batch",
    "write_tfrecords",
]

# `python -m lcron_tf.data.<source>` runs a module this package has already imported;
# runpy then warns that the module was "found in sys.modules". The CLIs are safe (their
# `main` only runs under __main__), so that one warning is silenced here.
warnings.filterwarnings(
    "ignore", message=r"'lcron_tf\.data\.\w+' found in sys\.modules", category=RuntimeWarning
)
