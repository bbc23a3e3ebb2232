"""How a changed group is rolled out (issue 14): the `update` block as the spec writes it, and the
policy in force with its defaults — Nomad's, which a group without the block gets too, so that no
change replaces a whole group at once:

    max_parallel 1            old instances replaced at a time
    min_healthy_time 10s      a new instance is healthy once running (its check passing) this long
    healthy_deadline 5m       ... or unhealthy if it is not healthy by then
    progress_deadline 10m     a deployment with no instance turning healthy for this long fails
    auto_revert false         a failed deployment rolls back to the last stable version
    canary 0                  new instances started beside the old ones, awaiting promotion
    auto_promote false        promote once every canary is healthy

The block is not part of what an instance runs: changing only it replaces nothing.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from packyard.durations import format_duration
from packyard.lifecycle import MAX_ATTEMPTS, Block, Duration, PositiveDuration, filled
from packyard.policies import UpdatePolicy

DEFAULTS = UpdatePolicy()


class Update(Block):
    max_parallel: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] = 1
    min_healthy_time: Duration = 0.0        # 0: healthy as soon as it runs (its check passing)
    healthy_deadline: PositiveDuration = 0.0
    progress_deadline: PositiveDuration = 0.0
    auto_revert: bool = False
    canary: Annotated[int, Field(ge=0, le=MAX_ATTEMPTS)] = 0
    auto_promote: bool = False


def update_policy(block: Update | None) -> UpdatePolicy:
    return UpdatePolicy(**filled(DEFAULTS, block))


def update_problems(block: Update) -> list[tuple[str, str]]:
    """(field, reason) for deadlines that contradict each other, defaults filled in."""
    p = update_policy(block)
    out = []
    if p.healthy_deadline > p.progress_deadline:
        out.append(("healthy_deadline", f"{format_duration(p.healthy_deadline)} is longer than progress_deadline "
                                        f"({format_duration(p.progress_deadline)})"))
    if p.min_healthy_time >= p.healthy_deadline:
        out.append(("min_healthy_time", f"{format_duration(p.min_healthy_time)} is not shorter than "
                                        f"healthy_deadline ({format_duration(p.healthy_deadline)})"))
    if p.auto_promote and not p.canary:
        out.append(("auto_promote", "promotes canaries, and canary is 0"))
    return out
