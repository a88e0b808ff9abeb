"""Consensus from votes weighted by annotator quality.

`decide()` answers one of three things about a task's counted votes:
- more votes are needed (fewer than k, or a split with room for another vote, or a unanimous answer
  whose voters together weigh less than `min_support_weight`);
- consensus on an answer (unanimous, or the weighted winner holds at least `min_share` of the weight
  once `max_votes` are in);
- adjudication by a lead (still split at `max_votes`, or a tie).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WeightedVote:
    annotator: str
    event_type: int
    weight: float


@dataclass(frozen=True)
class ConsensusPolicy:
    # k: votes every task gets before consensus can be reached.
    votes_required: int = 2
    # Votes a split task gets at most; still split then, it goes to a lead.
    max_votes: int = 3
    # Share of the total weight the winning answer needs once max_votes are in.
    min_share: float = 0.6
    # A unanimous answer whose voters weigh less than this together asks for one more vote.
    min_support_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.votes_required < 1 or self.max_votes < self.votes_required:
            raise ValueError("need 1 <= votes_required <= max_votes")
        if not 0.5 <= self.min_share <= 1.0:
            raise ValueError("min_share must be within 0.5..1")
        if self.min_support_weight < 0:
            raise ValueError("min_support_weight cannot be negative")


class Outcome(enum.StrEnum):
    NEED_MORE = "need-more-votes"
    CONSENSUS = "consensus"
    ADJUDICATE = "adjudication"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    event_type: int | None = None
    # Weighted share of the winning answer (0..1); for NEED_MORE the current leader's share.
    agreement: float = 0.0


def weighted_share(votes: Sequence[WeightedVote], event_type: int) -> float:
    """The share of the total weight that voted `event_type` (unweighted when every weight is 0)."""
    total = sum(vote.weight for vote in votes)
    if total <= 0:
        return sum(1 for vote in votes if vote.event_type == event_type) / len(votes) if votes else 0.0
    return sum(vote.weight for vote in votes if vote.event_type == event_type) / total


def decide(votes: Sequence[WeightedVote], policy: ConsensusPolicy) -> Decision:
    if not votes:
        return Decision(Outcome.NEED_MORE)
    totals: defaultdict[int, float] = defaultdict(float)
    for vote in votes:
        totals[vote.event_type] += max(vote.weight, 0.0)
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    leader, leader_weight = ranked[0]
    tied = len(ranked) > 1 and abs(ranked[1][1] - leader_weight) < 1e-9
    share = weighted_share(votes, leader)
    count = len(votes)
    room = count < policy.max_votes
    if count < policy.votes_required:
        return Decision(Outcome.NEED_MORE, None, share)
    if len(ranked) == 1:
        if leader_weight < policy.min_support_weight and room:
            return Decision(Outcome.NEED_MORE, None, share)
        return Decision(Outcome.CONSENSUS, leader, 1.0)
    if room:
        return Decision(Outcome.NEED_MORE, None, share)
    if not tied and share >= policy.min_share:
        return Decision(Outcome.CONSENSUS, leader, share)
    return Decision(Outcome.ADJUDICATE, None, share)
