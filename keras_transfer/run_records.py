"""What a run directory holds, read without TensorFlow: its records (config.json, result.json,
diverged.json), whether it has a backup, and whether a finished run still answers for a config.

main decides with these whether to skip, resume, refuse or retrain a net, and the grid whether a
finished net of its plan is stale, so the two agree.
"""
from __future__ import annotations

import json
from pathlib import Path

from keras_transfer import config as config_lib
from keras_transfer import naming
from keras_transfer.config import Config

DIVERGED = "diverged.json"  # written instead of result.json when a net's loss becomes NaN or inf
REPLACED_PREFIX = ".replaced-"  # --overwrite sets an earlier run aside in <run>/.replaced-<time>/


def read_record(path: Path) -> dict | None:
    """A JSON object an earlier run wrote, or None if it is missing or unreadable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def settings_changed(config: Config, recorded: dict) -> list[str]:
    """The flags that change a net's result whose value in `recorded` (a run's config.json)
    differs from `config`'s, as `--lr=0.05 (now 0.1)`; and the mean image, by the half it came
    from (what --mean_image means for this net)."""
    now = config.to_json()
    changed = [f"--{name}={recorded[name]} (now {now[name]})" for name in config_lib.RESULT_FLAGS
               if name in recorded and recorded[name] != now[name]]
    # Runs recorded before --mean_image existed subtracted their target half's mean.
    mean_then = recorded.get("mean_half", recorded.get("target", now["target"]))
    if mean_then != now["mean_half"]:
        changed.append(f"the mean image of half {mean_then} (now half {now['mean_half']}, "
                       f"--mean_image={config.mean_image})")
    return changed


def why_stale(config: Config, target_manifest: dict | None) -> list[str]:
    """Why a finished run no longer answers for `config`: it was trained with other settings,
    on other classes than `target_manifest` lists (None: not checked), or from a base net that
    has been retrained since. Empty if it still does, or if its records cannot tell."""
    run_dir = config.run_dir
    result = read_record(run_dir / "result.json")
    if result is None:
        return ["its result.json is unreadable"]
    reasons = []
    recorded = read_record(run_dir / "config.json")
    if recorded is None and (run_dir / "config.json").exists():
        reasons.append("its config.json is unreadable")
    elif recorded is not None and (changed := settings_changed(config, recorded)):
        reasons.append(f"it was trained with {', '.join(changed)}")
    if target_manifest is not None:
        classes = [c["original_index"] for c in target_manifest["classes"]]
        trained_on = (result.get("data") or {}).get("classes", classes)
        if trained_on != classes:
            reasons.append(f"half {config.target} has been prepared again with other classes "
                           f"({trained_on} then, {classes} now)")
    if config.source in naming.HALVES:
        base = read_record(config.base_run_dir(config.source) / "result.json") or {}
        base_end = {row.get("name"): row.get("sha256_end") for row in base.get("layers", [])}
        copied = [row for row in result.get("layers", [])
                  if row.get("origin") == f"base{config.source}"]
        if any(base_end.get(row.get("name")) != row.get("sha256_start") for row in copied):
            reasons.append(f"base{config.source} has been retrained since it copied its layers")
    return reasons


def has_backup(out_dir: Path) -> bool:
    return any((out_dir / "backup").glob("ckpt-*.index"))


def backup_step(out_dir: Path) -> int:
    """The step of the newest backup in a run directory (0: none)."""
    return max((int(p.stem.split("-")[1]) for p in (out_dir / "backup").glob("ckpt-*.index")),
               default=0)
