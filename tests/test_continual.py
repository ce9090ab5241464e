"""The evaluation protocol (docs/model-and-protocol.md#evaluation): hand-computed R matrices,
Student-t CIs, summaries, tables."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tinydan import continual
from tinydan.continual import (ci_overlap, final_loss, format_ci, forgetting, mean_ci, memory_loss,
                               results_table, summarize, to_jsonable, total_loss, transfer_loss)

pytestmark = pytest.mark.regression

# R[i, j] = loss on sub-task j after finishing sub-task i
R3 = np.array([[1.0, 4.0, 7.0],
               [2.0, 3.0, 8.0],
               [3.0, 5.0, 2.0]])


def test_metrics_of_a_hand_computed_3x3_matrix():
    assert final_loss(R3) == pytest.approx((3 + 5 + 2) / 3)
    np.testing.assert_allclose(memory_loss(R3), [1.0, (2 + 3) / 2, (3 + 5 + 2) / 3])
    np.testing.assert_allclose(transfer_loss(R3), [(4 + 7) / 2, 8.0, np.nan])
    np.testing.assert_allclose(total_loss(R3), [12 / 3, 13 / 3, 10 / 3])
    # (R[2,0] - R[0,0] + R[2,1] - R[1,1]) / 2 = ((3 - 1) + (5 - 3)) / 2
    assert forgetting(R3) == pytest.approx(2.0)


def test_no_forgetting_when_old_losses_do_not_change_and_negative_when_they_improve():
    R = np.array([[1.0, 9.0], [1.0, 0.5]])
    assert forgetting(R) == pytest.approx(0.0)
    R_better = np.array([[1.0, 9.0], [0.25, 0.5]])
    assert forgetting(R_better) == pytest.approx(-0.75)


def test_metrics_are_vectorized_over_sequences():
    rng = np.random.default_rng(0)
    stack = rng.uniform(0, 2, size=(4, 5, 5))
    for fn in (final_loss, memory_loss, transfer_loss, total_loss, forgetting):
        batched = fn(stack)
        one_by_one = np.stack([fn(R) for R in stack])
        np.testing.assert_allclose(batched, one_by_one)
    assert memory_loss(stack).shape == (4, 5)
    assert final_loss(stack).shape == (4,)


def test_single_subtask_sequence():
    R = np.array([[0.7]])
    assert final_loss(R) == pytest.approx(0.7)
    np.testing.assert_allclose(memory_loss(R), [0.7])
    assert np.isnan(transfer_loss(R)).all()
    assert np.isnan(forgetting(R))


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 6)).map(lambda s: (s[0], s[1], s[1])),
              elements=st.floats(0, 10)))
def test_total_is_the_weighted_mean_of_memory_and_transfer(R):
    T = R.shape[-1]
    i = np.arange(T)
    transfer = np.nan_to_num(transfer_loss(R))  # weight 0 where it is NaN
    recombined = ((i + 1) * memory_loss(R) + (T - 1 - i) * transfer) / T
    np.testing.assert_allclose(recombined, total_loss(R), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(memory_loss(R)[..., -1], final_loss(R))


@pytest.mark.parametrize("bad, words", [
    (np.ones((3, 4)), "square"),
    (np.ones(3), "(T, T)"),
    (np.ones((2, 2, 3, 3)), "(S, T, T)"),
    (np.ones((0, 0)), "T >= 1"),
    (np.array([[1.0, np.nan], [1.0, 1.0]]), "non-finite"),
    ([["a", "b"], ["c", "d"]], "floats"),
])
def test_bad_loss_matrices_are_refused_with_the_shape(bad, words):
    with pytest.raises(ValueError) as err:
        memory_loss(bad)
    assert words in str(err.value)
    if hasattr(bad, "shape"):
        assert str(np.shape(bad)) in str(err.value)


def test_mean_ci_matches_a_hand_computed_t_interval():
    # values 1..4: mean 2.5, sample std sqrt(5/3), t_{0.975, 3} = 3.182446 (t table)
    mean, hw = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert hw == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-6)
    # two values: t_{0.975, 1} = 12.7062; s = sqrt(2), sqrt(n) = sqrt(2)
    _, hw2 = mean_ci([0.0, 2.0])
    assert hw2 == pytest.approx(12.7062, rel=1e-5)
    # 90% with 5 values: t_{0.95, 4} = 2.131847
    _, hw90 = mean_ci([1.0, 1.0, 2.0, 4.0, 7.0], level=0.90)
    sd = np.std([1.0, 1.0, 2.0, 4.0, 7.0], ddof=1)
    assert hw90 == pytest.approx(2.131847 * sd / math.sqrt(5), rel=1e-6)


def test_mean_ci_along_an_axis_and_with_one_value():
    values = np.array([[1.0, 10.0], [3.0, 10.0]])
    mean, hw = mean_ci(values, axis=0)
    np.testing.assert_allclose(mean, [2.0, 10.0])
    np.testing.assert_allclose(hw, [12.7062 * math.sqrt(2) / math.sqrt(2), 0.0], rtol=1e-5)
    mean1, hw1 = mean_ci([0.3])
    assert mean1 == pytest.approx(0.3) and np.isnan(hw1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        mean_ci([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci(np.zeros((0, 3)))


def test_format_ci_and_overlap():
    assert format_ci(0.0184, 0.0081) == "0.018 ± 0.008"
    assert format_ci(1.16, 0.1, digits=2) == "1.16 ± 0.10"
    assert format_ci(0.3, float("nan")) == "0.300 ± n/a"
    assert format_ci(None, None) == "n/a"
    assert format_ci(0.00042, 0.0001) == "4.20e-04 ± 1.00e-04"
    assert ci_overlap((1.0, 0.5), (1.8, 0.4)) is True
    assert ci_overlap((1.0, 0.3), (1.8, 0.4)) is False
    assert ci_overlap((1.0, float("nan")), (5.0, 0.1)) is True  # unknown width: cannot claim a difference
    np.testing.assert_array_equal(ci_overlap((np.array([0.0, 0.0]), 0.1), (np.array([0.15, 1.0]), 0.1)),
                                  [True, False])


def test_summarize_is_json_ready_and_right():
    R = np.stack([R3, R3 + 1.0, R3 + 2.0])  # finals: 10/3, 13/3, 16/3
    s = summarize(R)
    text = json.dumps(s, allow_nan=False)  # no NaN, no numpy types
    back = json.loads(text)
    assert back["n_sequences"] == 3 and back["n_subtasks"] == 3
    assert back["final"]["mean"] == pytest.approx(13 / 3)
    assert back["final"]["median"] == pytest.approx(13 / 3)
    # sample std of (10/3, 13/3, 16/3) is 1; t_{0.975, 2} = 4.302653
    assert back["final"]["ci"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert back["forgetting"]["mean"] == pytest.approx(2.0)  # a constant shift does not change forgetting
    assert back["forgetting"]["ci"] == pytest.approx(0.0)
    np.testing.assert_allclose(back["memory"]["mean"], memory_loss(R3) + 1.0)
    assert back["transfer"]["mean"][-1] is None and back["transfer"]["ci"][-1] is None
    np.testing.assert_allclose(back["R_mean"], R3 + 1.0)
    assert len(back["final"]["values"]) == 3


def test_summarize_one_matrix_has_unknown_ci():
    s = summarize(R3)
    assert s["n_sequences"] == 1
    assert s["final"]["ci"] is None
    assert s["final"]["mean"] == pytest.approx(10 / 3)


def test_to_jsonable_converts_numpy_and_nan():
    out = to_jsonable({"a": np.float32(1.5), "b": np.array([1.0, np.inf]), "c": (np.int64(2), None), 3: True})
    assert out == {"a": 1.5, "b": [1.0, None], "c": [2, None], "3": True}


def test_results_table_is_markdown_with_mean_and_ci():
    rng = np.random.default_rng(1)
    rows = {"net0": summarize(rng.uniform(0, 0.1, (50, 5, 5))), "net3": summarize(rng.uniform(1, 2, (50, 5, 5)))}
    table = results_table(rows)
    lines = table.strip().splitlines()
    assert lines[0] == "| model | final (mean ± 95% CI) | forgetting (mean ± 95% CI) | n |"
    assert lines[1] == "| --- | --- | --- | --- |"
    assert lines[2].startswith("| net0 | ") and lines[2].endswith(" | 50 |")
    f = rows["net3"]["final"]
    assert format_ci(f["mean"], f["ci"]) in lines[3]
    # round trip through JSON (what results.json holds) gives the same table
    assert results_table(json.loads(json.dumps(rows))) == table
    with pytest.raises(ValueError, match="curve"):
        results_table(rows, metrics=("memory",))
    with pytest.raises(ValueError, match="no metric 'accuracy'"):
        results_table(rows, metrics=("accuracy",))


def test_choose_on_validation_uses_the_mean_and_skips_diverged_runs():
    # value 1: lower median (0.1) but a heavy tail; value 2: lower mean; value 3: diverged
    finals = {1.0: np.array([0.1, 0.1, 5.0]), 2.0: np.array([0.5, 0.5, 0.5]),
              3.0: np.array([np.nan, 0.0, 0.0])}
    best, scores = continual.choose_on_validation(lambda v: finals[v], [1.0, 2.0, 3.0])
    assert best == 2.0
    assert scores[1.0] == pytest.approx(5.2 / 3) and scores[3.0] == float("inf")
    best, _ = continual.choose_on_validation(lambda v: np.array([np.inf]), [0.1, 0.2])
    assert best == 0.1                               # all diverged: the first, reported as inf
