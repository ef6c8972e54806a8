"""The command line's top-level keys, checked before Hydra composes anything.

Why: Hydra answers a misspelt key (``datset=cub``) with advice to add it (``+datset=cub``), which
then trains the default task and exits 0; and any ``+key=value`` at the top level adds a key that
nothing reads. Every top-level key a launch can set is a key of ``conf/config.yaml`` or a config
group (a folder of ``conf/``); anything else is one line naming the closest known key.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from omegaconf import OmegaConf

from ..paths import CONF_DIR

# Hydra's flags that take a value as the next argument (``--config-name NAME``).
VALUE_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c", "--package", "-p"}
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def known_keys(conf_dir: Path = CONF_DIR) -> set[str]:
    """Top-level keys of the primary config, and the config groups."""
    keys = {str(k) for k in OmegaConf.load(Path(conf_dir) / "config.yaml").keys()} - {"defaults"}
    return keys | {p.name for p in Path(conf_dir).iterdir() if p.is_dir()}


def overrides_of(argv: list[str]) -> list[str]:
    """The override arguments of a command line (Hydra's flags and their values left out)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in VALUE_FLAGS or (arg in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in INFO_TOPICS)
            continue
        out.append(arg)
    return out


def unknown_key_problem(argv: list[str], conf_dir: Path = CONF_DIR) -> str | None:
    """One line for the first override whose top-level key is unknown; ``None`` when all are known."""
    known = known_keys(conf_dir)
    for arg in overrides_of(argv):
        top = re.split(r"[.=@/]", arg.lstrip("+~"), maxsplit=1)[0]
        if not top or top in known:
            continue
        close = difflib.get_close_matches(top, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r} ({arg.lstrip('+~').replace(top, close[0], 1)})? " if close else ""
        return (
            f"{arg}: {top!r} is not a key of this config; {hint}"
            "`python run.py --help` lists the groups and keys (a new top-level key is never read)"
        )
    return None
