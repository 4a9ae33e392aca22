"""Length balancing: drop pairs so that the chosen essay is the longer one in half of them.

Judges favour longer essays; a preference set where the chosen essay is nearly always longer
teaches a model to write longer, not better. ``LengthBalancer`` keeps every pair of the
minority side (chosen shorter, or chosen longer, whichever is rarer) and every pair of equal
length, and keeps an evenly spread subset of the majority side of exactly the minority's size:
the ``k``-th majority pair in id order is kept when ``floor((k+1)·m/M) > floor(k·m/M)``
(``m``, ``M`` the two sides' counts). It is deterministic (the same selection gives the same
pairs), drops rather than reweights (TRL's DPO has no per-row weights), and when one side is
empty it drops the whole other side (only equal-length pairs remain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LengthBalancer:
    chosen_longer: int
    chosen_shorter: int
    kept: int = 0
    dropped: int = 0
    _seen_majority: int = field(default=0, repr=False)

    @property
    def _majority_is_longer(self) -> bool:
        return self.chosen_longer >= self.chosen_shorter

    def keep(self, rows: Sequence[Any]) -> list[Any]:
        """The rows (with ``chosen_chars`` and ``rejected_chars``) balancing keeps, in order."""
        minority = min(self.chosen_longer, self.chosen_shorter)
        majority = max(self.chosen_longer, self.chosen_shorter)
        out = []
        for row in rows:
            longer = row.chosen_chars > row.rejected_chars
            shorter = row.chosen_chars < row.rejected_chars
            in_majority = longer if self._majority_is_longer else shorter
            if in_majority:
                k = self._seen_majority
                self._seen_majority += 1
                if (k + 1) * minority // majority <= k * minority // majority:
                    self.dropped += 1
                    continue
            out.append(row)
        self.kept += len(out)
        return out

    def planned(self, total: int) -> dict[str, int]:
        """The :meth:`summary` that balancing ``total`` matching pairs will end with: it keeps
        exactly the minority's count of the majority side."""
        dropped = abs(self.chosen_longer - self.chosen_shorter)
        return {"pairs_before": total, "dropped": dropped, "pairs_after": total - dropped}

    def summary(self) -> dict[str, int]:
        return {
            "pairs_before": self.kept + self.dropped,
            "dropped": self.dropped,
            "pairs_after": self.kept,
        }
