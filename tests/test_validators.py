"""trade_md.validators: one check per kind, each naming the key and the value."""
import math

import numpy as np
import pytest
import torch

from trade_md import validators as v

BAD = [
    (v.positive_int, ("sample.n", 0), "sample.n must be a positive integer (>= 1), got 0"),
    (v.positive_int, ("sample.n", 2.5), "sample.n must be a positive integer (>= 1), got 2.5"),
    (v.positive_int, ("sample.n", True), "sample.n must be a positive integer (>= 1), got True"),
    (v.positive_int, ("sample.n", "3"), "sample.n must be a positive integer (>= 1), got '3'"),
    (v.positive_int, ("sample.n", math.inf), "sample.n must be a positive integer (>= 1), got inf"),
    (v.non_negative_int, ("seed", -1), "seed must be a non-negative integer (>= 0), got -1"),
    (v.positive_number, ("nanoseconds", 0.0), "nanoseconds must be finite and > 0, got 0.0"),
    (v.positive_number, ("nanoseconds", math.nan), "nanoseconds must be finite and > 0, got nan"),
    (v.positive_number, ("nanoseconds", "fast"), "nanoseconds must be a number, got 'fast'"),
    (v.non_negative_number, ("equilibration_ps", -1.0), "equilibration_ps must be finite and >= 0, got -1.0"),
    (v.positive_values, ("beta", np.array([1.0, -2.0, 0.0])), "beta must be finite and > 0, got [-2.0, 0.0]"),
    (v.temperature, ("temperature", -5.0), "temperature must be finite and > 0 K, got -5.0"),
    (v.temperature, ("temperatures", [300.0, math.inf]), "temperatures must be finite and > 0 K, got [inf]"),
    (v.temperature, ("T", torch.tensor([[300.0], [0.0]])), "T must be finite and > 0 K, got [0.0]"),
    (v.temperature, ("T", "300K"), "T must be a number, got '300K'"),
    (v.temperature, ("T", True), "T must be a number, got True"),
    (v.value_range, ("condition_range", (2.0, 1.0)), "condition_range must be (low, high), finite, with low < high"),
    (v.value_range, ("condition_range", "hot"), "condition_range must be a pair (low, high) of numbers"),
    (v.value_range, ("condition_range", (1.0, 2.0, 3.0)), "condition_range must be a pair (low, high)"),
    (v.fraction, ("data.validation_fraction", 1.0), "data.validation_fraction must be in (0, 1), got 1.0"),
    (v.choice, ("model.dtype", "float16", ("float32", "float64")),
     "model.dtype must be one of 'float32', 'float64', got 'float16'"),
]


@pytest.mark.parametrize("check, args, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_values_name_the_key_and_the_value(check, args, message):
    with pytest.raises(ValueError) as info:
        check(*args)
    assert message in str(info.value)


def test_good_values_come_back_in_their_canonical_type():
    assert v.positive_int("n", 3.0) == 3 and type(v.positive_int("n", np.int64(3))) is int
    assert v.non_negative_int("seed", 0) == 0
    assert v.positive_number("x", 2) == 2.0 and type(v.positive_number("x", 2)) is float
    assert v.non_negative_number("x", 0) == 0.0
    assert v.value_range("r", [1, 2]) == (1.0, 2.0)
    assert v.value_range("r", (-1.0, 0.5)) == (-1.0, 0.5)
    assert v.fraction("f", 0.25) == 0.25
    assert v.choice("c", "a", ["a", "b"]) == "a"


def test_zero_lower_bound_of_a_positive_range_is_refused():
    with pytest.raises(ValueError, match="0 < low < high"):
        v.value_range("transfer.condition_range", (0.0, 1.0), positive=True)
    assert v.value_range("transfer.condition_range", (0.5, 1.5), positive=True) == (0.5, 1.5)


def test_conditions_pass_through_unchanged_and_keep_their_graph():
    t = torch.tensor([300.0, 400.0], requires_grad=True)
    assert v.temperature("T", t) is t
    arr = np.array([1.0, 2.0])
    assert v.positive_values("beta", arr) is arr
    assert v.temperature("T", 300) == 300
