"""What a choice set is: one occasion on which a user chose one item among known candidates.

A dataset with choice sets (the re-buy shop) lets a report rank: each occasion is a Recommend over the
candidates, scored by where the chosen item landed.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ChoiceSet:
    """One purchase occasion.

    Attributes:
        user_id: who chose.
        timestamp_s: the occasion's first event (the moment a Recommend over the candidates is made).
        candidates: the items on offer, in the order the user viewed them.
        chosen: the candidate bought.
        view_ids: the event id of each candidate's view, in ``candidates``' order (each view is an example).
        event_ids: every event of the occasion in time order (the views, then the purchase); an occasion's
            events are contiguous in its dataset's stream.
    """

    user_id: str
    timestamp_s: float
    candidates: tuple[str, ...]
    chosen: str
    view_ids: tuple[str, ...]
    event_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.chosen not in self.candidates or len(self.view_ids) != len(self.candidates):
            raise ValueError("the chosen item must be a candidate, and every candidate needs its view")
