"""Inter-annotator agreement: Cohen's kappa, Fleiss' kappa and Krippendorff's alpha (nominal data).

Each function returns None when the statistic is undefined (e.g. every rating falls in one
category, so chance agreement is already perfect), never a division by zero.

- Cohen's kappa: two raters, the same items. kappa = (p_o - p_e) / (1 - p_e).
- Fleiss' kappa: any number of raters, but the same number n of ratings per item.
- Krippendorff's alpha: any number of raters, missing ratings allowed (units with fewer than two
  ratings are not pairable and are left out). alpha = 1 - D_o / D_e over the coincidence matrix.

References (the unit tests reproduce their worked examples): Cohen (1960); Fleiss (1971), the
10 items x 14 raters example (kappa = 0.210); Krippendorff (2011) "Computing Krippendorff's
Alpha-Reliability", the 4 observers x 12 units example (nominal alpha = 0.743).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

# Below this, (1 - p_e) or D_e is treated as zero: the statistic is undefined.
EPSILON = 1e-12


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters who rated the same items in the same order."""
    if len(first) != len(second):
        raise ValueError("both raters must rate the same items")
    total = len(first)
    if total == 0:
        return None
    observed = sum(1 for a, b in zip(first, second, strict=True) if a == b) / total
    first_counts, second_counts = Counter(first), Counter(second)
    expected = sum(first_counts[category] * second_counts[category] for category in first_counts) / (total * total)
    if 1.0 - expected < EPSILON:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from an items x categories matrix of rating counts (every row sums to the same n >= 2)."""
    if not counts:
        return None
    raters = sum(counts[0])
    if raters < 2:
        raise ValueError("Fleiss' kappa needs at least two ratings per item")
    width = len(counts[0])
    for row in counts:
        if len(row) != width or sum(row) != raters or any(value < 0 for value in row):
            raise ValueError("every item needs the same number of ratings over the same categories")
    items = len(counts)
    per_item = [(sum(value * value for value in row) - raters) / (raters * (raters - 1)) for row in counts]
    mean_agreement = sum(per_item) / items
    shares = [sum(row[column] for row in counts) / (items * raters) for column in range(width)]
    expected = sum(share * share for share in shares)
    if 1.0 - expected < EPSILON:
        return None
    return (mean_agreement - expected) / (1.0 - expected)


def fleiss_kappa_of_ratings(ratings: Iterable[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa of items given as their lists of ratings (each list of the same length)."""
    items = [list(item) for item in ratings]
    categories = sorted({value for item in items for value in item}, key=repr)
    return fleiss_kappa([[item.count(category) for category in categories] for item in items])


def krippendorff_alpha(units: Iterable[Sequence[Hashable | None]]) -> float | None:
    """Krippendorff's alpha for nominal values; each unit is the list of its ratings (None: missing)."""
    coincidences: defaultdict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for unit in units:
        values = [value for value in unit if value is not None]
        pairable = len(values)
        if pairable < 2:
            continue
        for i, j in combinations(range(pairable), 2):
            # Both ordered pairs, each weighted 1 / (m_u - 1).
            coincidences[(values[i], values[j])] += 1.0 / (pairable - 1)
            coincidences[(values[j], values[i])] += 1.0 / (pairable - 1)
    marginals: defaultdict[Hashable, float] = defaultdict(float)
    for (category, _), weight in coincidences.items():
        marginals[category] += weight
    total = sum(marginals.values())
    if total <= 1:
        return None
    observed_disagreement = sum(weight for (c, k), weight in coincidences.items() if c != k)
    expected_disagreement = (total * total - sum(value * value for value in marginals.values())) / (total - 1)
    if expected_disagreement < EPSILON:
        return None
    return 1.0 - observed_disagreement / expected_disagreement


@dataclass(frozen=True)
class PairAgreement:
    """Cohen's kappa of two annotators over the items both rated."""

    first: str
    second: str
    items: int
    kappa: float | None


@dataclass(frozen=True)
class AgreementReport:
    """Agreement over a set of items, each mapping annotator -> answer."""

    items: int
    ratings: int
    krippendorff_alpha: float | None
    fleiss_kappa: float | None
    # Items with at least `fleiss_raters` ratings, their first `fleiss_raters` ratings.
    fleiss_items: int
    fleiss_raters: int
    pairs: tuple[PairAgreement, ...]
    mean_cohen_kappa: float | None


def agreement_report(
    items: Sequence[Sequence[tuple[str, Hashable]]], *, fleiss_raters: int = 2, min_pair_items: int = 5
) -> AgreementReport:
    """Every statistic over `items`, each a list of (annotator, answer) in the order they answered.

    Fleiss' kappa needs a fixed number of ratings per item: it uses items with at least
    `fleiss_raters` ratings, each cut to its first `fleiss_raters`. Cohen's kappa is computed for
    every pair of annotators who share at least `min_pair_items` items.
    """
    units = [[answer for _, answer in item] for item in items]
    fleiss_units = [unit[:fleiss_raters] for unit in units if len(unit) >= fleiss_raters]
    shared: dict[tuple[str, str], list[tuple[Hashable, Hashable]]] = {}
    for item in items:
        answers: Mapping[str, Hashable] = dict(item)
        for first, second in combinations(sorted(answers), 2):
            shared.setdefault((first, second), []).append((answers[first], answers[second]))
    pairs = tuple(
        PairAgreement(
            first,
            second,
            len(answers),
            cohen_kappa([a for a, _ in answers], [b for _, b in answers]),
        )
        for (first, second), answers in sorted(shared.items())
        if len(answers) >= min_pair_items
    )
    defined = [pair.kappa for pair in pairs if pair.kappa is not None]
    return AgreementReport(
        items=sum(1 for unit in units if len(unit) >= 2),
        ratings=sum(len(unit) for unit in units if len(unit) >= 2),
        krippendorff_alpha=krippendorff_alpha(units),
        fleiss_kappa=fleiss_kappa_of_ratings(fleiss_units) if fleiss_units and fleiss_raters >= 2 else None,
        fleiss_items=len(fleiss_units),
        fleiss_raters=fleiss_raters,
        pairs=pairs,
        mean_cohen_kappa=sum(defined) / len(defined) if defined else None,
    )
