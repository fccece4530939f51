"""The label permutation matrix, built exactly from labels (pure TF, no exp tricks).

The official LCRON code builds its target matrix as ``NeuralSort(labels, tau=1e-4)``.
On integer labels that equals, exactly (lcron_method.md §2):

* a one-hot row for each item with a unique label value;
* for a tie group of size ``t`` occupying sorted positions ``a .. a+t-1``, each of
  those ``t`` rows holds ``1/t`` on every member of the group ("soft" matrix);
* the three-stage code binarises it (``> 0.001``): 1 on every member ("binary").

Here it is computed from the sorted label values, with no temperature: the matrix
(``label_permutation_matrix``) for analysis and for losses that need all rows, and
the per-item mass of a block of rows (``label_row_mass``) in O(N log N) time and
O(N) memory for the LCRON terms, which never need the matrix.

Labels: higher = better. Positions are 0-based in descending label order.
"""

from __future__ import annotations

import tensorflow as tf

from lcron_tf.ops import masking, sorting, validation


def _key_and_valid(labels: tf.Tensor, mask: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
    """``(key, valid)``: ``key = -labels`` (ascending key = descending label), 0 on padded slots.

    Padded slots are told apart by ``valid``, never by a sentinel key, so no label value
    (up to the float32 range) can tie with padding; their labels may hold anything.
    """
    labels = tf.stop_gradient(tf.convert_to_tensor(labels))
    validation.check_rank2("labels", labels)
    if not labels.dtype.is_floating:
        labels = tf.cast(labels, tf.float32)
    if mask is None:
        return -labels, tf.ones_like(labels, dtype=tf.bool)
    mask = tf.convert_to_tensor(mask)
    validation.check_same_shape("labels", labels, "mask", mask)
    valid = masking.valid_mask(mask)
    return masking.where_valid(-labels, valid), valid


def _valid_first_order(key: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Ascending stable order of ``key`` with every padded slot after every valid one."""
    by_key = tf.argsort(key, axis=-1, stable=True)
    invalid_in_order = tf.gather(tf.cast(~valid, tf.int32), by_key, batch_dims=1)
    by_valid = tf.argsort(invalid_in_order, axis=-1, stable=True)
    return tf.gather(by_key, by_valid, batch_dims=1)


# Up to this static list size, tie groups are counted pairwise (one fused O(B N^2) pass)
# instead of by a sort: XLA's CPU sort costs ~75-100 ns per element, and the pairwise count
# was ~2.5x faster at N = 40 (benchmarks/RESULTS.md §4).
PAIRWISE_MAX_LIST_SIZE = 64


def tie_groups(labels: tf.Tensor, mask: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """First sorted position and size of each item's tie group.

    Args:
      labels: ``[batch_size, list_size]`` numbers, higher = better (finite where valid).
      mask: optional 0/1 ``[batch_size, list_size]``; padded items are ranked after
        every valid item and do not count in valid items' groups.

    Returns:
      ``(start, size)``: int32 ``[batch_size, list_size]``; ``start[b, i]`` is the number of
      (valid) items with a strictly greater label, ``size[b, i]`` the number with an equal one.
      (Padded items form one group after the valid ones.)
    """
    key, valid = _key_and_valid(labels, mask)
    n_static = key.shape[1]
    if n_static is not None and n_static <= PAIRWISE_MAX_LIST_SIZE:
        return _tie_groups_pairwise(key, valid)
    return _tie_groups_sorted(key, valid)


def _tie_groups_pairwise(key: tf.Tensor, valid: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Counts of smaller and equal valid keys per item in one reduction (static ``N`` <= 64)."""
    n = key.shape[1]
    vj = valid[:, None, :]
    lower = (key[:, None, :] < key[:, :, None]) & vj  # [B, i, j]: key_j < key_i, j valid
    equal = (key[:, None, :] == key[:, :, None]) & vj
    # lt + (n + 1) * eq in one int32 sum; both counts are <= n, so the code is invertible.
    code = tf.where(lower, 1, tf.where(equal, n + 1, 0))
    total = tf.reduce_sum(code, axis=-1)
    n_valid = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1, keepdims=True)
    start = tf.where(valid, total % (n + 1), n_valid)
    size = tf.where(valid, total // (n + 1), n - n_valid)
    return start, size


def _tie_groups_sorted(key: tf.Tensor, valid: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One stable sort, then tie groups as runs of equal keys: O(N log N) time, O(N) memory.

    Also under XLA (``tf.searchsorted`` lowers to an O(N^2) comparison there).
    """
    order = _valid_first_order(key, valid)
    sorted_key = tf.gather(key, order, batch_dims=1)
    sorted_valid = tf.gather(valid, order, batch_dims=1)
    batch, n = tf.shape(key)[0], tf.shape(key)[1]
    boundary = (sorted_key[:, 1:] != sorted_key[:, :-1]) | (
        sorted_valid[:, 1:] != sorted_valid[:, :-1]
    )
    new_group = tf.cast(boundary, tf.int32)
    group = tf.cumsum(tf.concat([tf.zeros([batch, 1], tf.int32), new_group], axis=1), axis=1)
    flat = tf.reshape(group + n * tf.range(batch)[:, None], [-1])  # group id per row
    group_size = tf.reshape(
        tf.math.unsorted_segment_sum(tf.ones_like(flat), flat, batch * n), [batch, n]
    )  # [B, G<=N], zero past the last group
    group_start = tf.cumsum(group_size, axis=1, exclusive=True)
    inverse = sorting._inverse_permutation(order)
    per_item_group = tf.gather(group, inverse, batch_dims=1)
    start = tf.gather(group_start, per_item_group, batch_dims=1)
    size = tf.gather(group_size, per_item_group, batch_dims=1)
    return start, size


def label_row_mass(
    labels: tf.Tensor,
    row_start: int | tf.Tensor,
    row_end: int | tf.Tensor,
    mask: tf.Tensor | None = None,
    binarize: bool = False,
    *,
    groups: tuple[tf.Tensor, tf.Tensor] | None = None,
) -> tf.Tensor:
    """``sum_{row_start <= r < row_end} Lab[b, r, i]`` for each item, without building ``Lab``.

    Args:
      labels: ``[batch_size, list_size]``, higher = better.
      row_start: int or int/float ``[batch_size]`` first row (inclusive).
      row_end: int or int/float ``[batch_size]`` last row (exclusive); clipped to the
        number of (valid) items.
      mask: optional 0/1 ``[batch_size, list_size]`` (see :func:`tie_groups`); padded items get 0.
      binarize: ``False`` = soft matrix (1/t inside a tie group of size t), ``True`` =
        the official three-stage 0/1 matrix.
      groups: optional ``tie_groups(labels, mask)``, to share one computation between
        several blocks of rows.

    Returns:
      float ``[batch_size, list_size]`` (float32 unless ``labels`` is float64).
    """
    labels = tf.convert_to_tensor(labels)
    start, size = tie_groups(labels, mask) if groups is None else groups
    dtype = labels.dtype if labels.dtype.is_floating else tf.float32
    start = tf.cast(start, dtype)
    size = tf.cast(size, dtype)
    rs = tf.reshape(tf.cast(row_start, dtype), [-1, 1])
    re = tf.reshape(tf.cast(row_end, dtype), [-1, 1])
    overlap = tf.maximum(tf.minimum(start + size, re) - tf.maximum(start, rs), 0.0)
    mass = overlap if binarize else tf.math.divide_no_nan(overlap, size)
    if mask is not None:
        mass = masking.where_valid(mass, masking.valid_mask(mask))
    return mass


def label_permutation_matrix(
    labels: tf.Tensor, mask: tf.Tensor | None = None, binarize: bool = False
) -> tf.Tensor:
    """The exact label permutation matrix (what ``NeuralSort(labels, 1e-4)`` gives on integers).

    Args:
      labels: ``[batch_size, list_size]``, higher = better.
      mask: optional 0/1 ``[batch_size, list_size]``; padded items get zero columns and the
        rows ``r >= n_valid`` are zero.
      binarize: ``True`` gives the official three-stage 0/1 version.

    Returns:
      float ``[batch_size, list_size, list_size]``, index ``[b, row, item]``.
    """
    labels = tf.convert_to_tensor(labels)
    key, valid = _key_and_valid(labels, mask)
    dtype = labels.dtype if labels.dtype.is_floating else tf.float32
    sorted_key = tf.gather(key, _valid_first_order(key, valid), batch_dims=1)  # [B, N]
    member = tf.equal(sorted_key[:, :, None], key[:, None, :]) & valid[:, None, :]  # [B, R, N]
    n_valid = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1, keepdims=True)  # [B, 1]
    row_ok = tf.range(tf.shape(key)[1])[None, :] < n_valid  # [B, R]
    member = tf.cast(member & row_ok[:, :, None], dtype)
    if binarize:
        return member
    return tf.math.divide_no_nan(member, tf.reduce_sum(member, axis=-1, keepdims=True))
