"""Issue 30: COCO polygons are checked at C speed (types gathered, values summed) instead of
value by value; the verdicts and messages are those of the value-by-value rule."""

import math
import random

import pytest

from detection.data.segmentations import _finite_numbers, _is_number, _polygon_problem

BAD = "polygon 0 is not a list of finite numbers"


@pytest.mark.parametrize("polygon, problem", [
    ([1, 2.5, 3, 4, 5, 6], None),
    ([1, 2, 3, 4, True, 6], BAD),  # a bool is no coordinate, though it sums as one
    ([1, 2, "3", 4, 5, 6], BAD),
    ([1, 2, None, 4, 5, 6], BAD),
    ([1, 2, math.nan, 4, 5, 6], BAD),
    ([1, 2, -math.inf, 4, 5, 6], BAD),
    ([1e308, 1e308, 1e308, 1, 1, 1], None),  # the sum overflows; every value is finite
    ([10**400, 1, 2, 3, 4, 5], None),  # an int beyond float range: finite (was a crash)
    ([1, 2, 3, 4, 5], "polygon 0 has 5 coordinates (needs an even number, at least 6: "
                      "three x, y points)"),
])
def test_polygon_verdicts_and_messages(polygon, problem):
    assert _polygon_problem([polygon]) == problem


def test_fast_check_agrees_with_the_value_by_value_rule():
    """10,000 random polygons mixing good values with each kind of bad one."""
    rng = random.Random(0)
    odd = [True, False, "1", None, math.nan, math.inf, -math.inf, [1], 1e308, 10**400]
    verdicts = set()
    for _ in range(10_000):
        polygon = [rng.uniform(-1e3, 1e3) if rng.random() < 0.5 else rng.randint(-9, 999)
                   for _ in range(rng.randint(0, 12))]
        if polygon and rng.random() < 0.4:
            polygon[rng.randrange(len(polygon))] = rng.choice(odd)
        want = all(_is_number(v) for v in polygon)
        assert _finite_numbers(polygon) == want, polygon
        verdicts.add(want)
    assert verdicts == {True, False}
