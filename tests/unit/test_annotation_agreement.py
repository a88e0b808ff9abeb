"""Agreement statistics against the textbook examples they were published with."""

from __future__ import annotations

import pytest

from services.annotation.domain.agreement import (
    agreement_report,
    cohen_kappa,
    fleiss_kappa,
    fleiss_kappa_of_ratings,
    krippendorff_alpha,
)

# Fleiss (1971) as reproduced on Wikipedia: 10 subjects, 14 raters, 5 categories; kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units
# with missing values; nominal alpha = 0.743.
_: int | None = None
KRIPPENDORFF_OBSERVERS: list[list[int | None]] = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, _, _, _],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _, 3],
    [_, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _],
]
# Same paper, section A: two observers, binary data, 10 units; alpha = 0.095.
KRIPPENDORFF_BINARY = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]


def test_fleiss_kappa_textbook_example() -> None:
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=5e-4)


def test_fleiss_kappa_from_ratings_matches_the_count_table() -> None:
    ratings = [[category for category, count in enumerate(row) for _ in range(count)] for row in FLEISS_TABLE]
    assert fleiss_kappa_of_ratings(ratings) == pytest.approx(fleiss_kappa(FLEISS_TABLE))


def test_fleiss_kappa_needs_the_same_number_of_ratings_per_item() -> None:
    with pytest.raises(ValueError):
        fleiss_kappa([[1, 1], [2, 1]])
    assert fleiss_kappa([[2, 0], [2, 0]]) is None  # one category only: chance agreement is already perfect


def test_cohen_kappa_textbook_example() -> None:
    # Wikipedia: 50 proposals, both yes 20, A yes/B no 5, A no/B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)


def test_cohen_kappa_edges() -> None:
    assert cohen_kappa(["a", "b", "a"], ["a", "b", "a"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def test_krippendorff_alpha_textbook_examples() -> None:
    units = list(zip(*KRIPPENDORFF_OBSERVERS, strict=True))
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    binary = list(zip(*KRIPPENDORFF_BINARY, strict=True))
    assert krippendorff_alpha(binary) == pytest.approx(0.095, abs=5e-4)


def test_krippendorff_alpha_edges() -> None:
    assert krippendorff_alpha([["a", "a"], ["b", "b"], ["c", "c"]]) == pytest.approx(1.0)
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) is None  # no variation: undefined
    assert krippendorff_alpha([["a"], [None, "b"]]) is None  # nothing pairable


def test_agreement_report_over_annotated_items() -> None:
    items = [[("ann-1", a), ("ann-2", b)] for a, b in zip(*KRIPPENDORFF_BINARY, strict=True)]
    items.append([("ann-1", 1), ("ann-2", 1), ("ann-3", 0)])
    report = agreement_report(items, fleiss_raters=2, min_pair_items=5)
    assert report.items == 11 and report.ratings == 23
    assert report.fleiss_items == 11
    [pair] = report.pairs  # ann-3 shares one item only
    assert (pair.first, pair.second, pair.items) == ("ann-1", "ann-2", 11)
    assert report.mean_cohen_kappa == pair.kappa
    assert report.krippendorff_alpha is not None and -1.0 <= report.krippendorff_alpha <= 1.0
