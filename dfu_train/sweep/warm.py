"""Warm starts: a sweep's `search.points_to_evaluate` seeded with another sweep's best configs
(`dfu sweep run FILE --warm-start OTHER --top K`).

A point keeps only the parameters this sweep's space sweeps (and the other config uses), with
the values the other sweep's trials ran. The points join the sweep file's own and are recorded
in the manifest like them, so a resume continues the same sweep.
"""

from __future__ import annotations

from typing import Any

from dfu_train.config import TrialConfig
from dfu_train.errors import ConfigError
from dfu_train.location import Location
from dfu_train.results import store
from dfu_train.sweep.space import SweepSpec, in_domain, parse_sweep, search_domains


def warm_start_points(other_dir: Location, spec: SweepSpec, *, top: int) -> list[dict[str, Any]]:
    """The best `top` configs of the sweep in `other_dir`, ranked as its leaderboard ranks them
    (its own selection rule, complete configs first), as points of `spec`'s space. For a
    proposing search a value outside this space's distribution is left out (the search samples
    it); a point left with nothing is dropped."""
    from dfu_train.results.leaderboard import build_leaderboard, query

    if top < 1:
        raise ConfigError(f"--top must be at least 1 (got {top})")
    manifest = store.read_manifest(other_dir)
    records = store.read_fold_results(other_dir, manifest=manifest)
    board = query(build_leaderboard(other_dir, manifest=manifest, all_records=records),
                  rule=store.selection_rule(manifest), include_partial=True)
    board = board[board["qwk_mean"].notna()]
    if board.empty:
        raise ConfigError(f"--warm-start {other_dir.name}: no finished fold to start from yet")
    configs = {r["config_id"]: r["config"] for r in records}
    domains = search_domains(spec)
    points: list[dict[str, Any]] = []
    for config_id in board["config_id"]:
        config = TrialConfig.from_dict(configs[config_id])
        used = config.used_names()
        point = {k: _plain(config.get(k)) for k in spec.space if k in used}
        if spec.search.searcher.proposes:
            point = {k: v for k, v in point.items() if in_domain(domains[k], v)}
        if point and point not in points:
            points.append(point)
        if len(points) == top:
            break
    if not points:
        raise ConfigError(f"--warm-start {other_dir.name}: its best configs share no parameter "
                          "with this sweep's space")
    return points


def with_points(spec: SweepSpec, points: list[dict[str, Any]], *, source: str) -> SweepSpec:
    """`spec` with `points` after its own points to evaluate, validated again."""
    own = [dict(p) for p in spec.search.points_to_evaluate]
    data = spec.model_dump(mode="json")
    data["search"]["points_to_evaluate"] = own + [p for p in points if p not in own]
    return parse_sweep(data, source=source)


def _plain(value: Any) -> Any:
    """A config value as a sweep file writes it (lists, not tuples)."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value
