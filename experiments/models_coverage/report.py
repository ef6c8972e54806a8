"""The sweep's table and the README section "Which models" made from it."""

from __future__ import annotations

import re
from pathlib import Path

from .sweep import Row

BEGIN = "<!-- models-coverage:begin (python -m experiments.models_coverage --readme writes this) -->"
END = "<!-- models-coverage:end -->"
LIBRARIES = ("timm", "transformers")


def table(rows: list[Row]) -> str:
    lines = ["| library | family | model | verdict | reason |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        reason = r.reason.replace("|", "\\|")
        lines.append(f"| {r.library} | {r.family} | {r.model} | {r.status} | {reason} |")
    return "\n".join(lines)


def totals(rows: list[Row]) -> dict[str, dict[str, int]]:
    out = {}
    for library in LIBRARIES:
        mine = [r for r in rows if r.library == library]
        counts = {s: sum(r.status == s for r in mine) for s in ("pass", "refused", "failed", "unbuildable")}
        if mine:
            out[library] = counts
    return out


def rate(counts: dict[str, int]) -> float:
    built = counts["pass"] + counts["refused"] + counts["failed"]
    return 100.0 * counts["pass"] / built if built else 0.0


def summary(rows: list[Row], seconds: float, timed: str = "Wall time of the sweep") -> str:
    lines = [
        "| library | built | pass | refused | failed | pass rate | not buildable here |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for library, c in totals(rows).items():
        built = c["pass"] + c["refused"] + c["failed"]
        cells = [library, built, c["pass"], c["refused"], c["failed"], f"{rate(c):.1f}%", c["unbuildable"]]
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    lines.append("")
    lines.append(passes_line(rows))
    lines.append("")
    lines.append(f"{timed}: {seconds / 60:.1f} min.")
    return "\n".join(lines)


def passes_line(rows: list[Row]) -> str:
    """How the probe's passes started on the models that pass (the cycle's ``check_passes`` reason)."""
    passed = [r for r in rows if r.status == "pass"]
    kept = [r for r in passed if re.search(r"from a kept gradient: [1-9]", r.reason)]
    skipped = [r for r in passed if re.search(r"from a kept input: [1-9]", r.reason)]
    deep = [r for r in passed if re.search(r"probe passes: \d+ and \d+", r.reason)]
    several = [r for r in passed if re.search(r"probe passes: ([2-9]|\d\d)", r.reason)]
    deferred = [r for r in passed if re.search(r"deferred sums: [1-9]", r.reason)]
    checked = [r for r in passed if "autograd's sums:" in r.reason]
    differ = [r.model for r in checked if "autograd's sums: equal" not in r.reason]
    autograd = (
        f" The low-memory probe's sums (checkpointed blocks, Linear weights' gradients added in blocks of rows) "
        f"were plain autograd's bit for bit on {len(checked) - len(differ)} of the {len(checked)} models checked"
        + (f"; they differed on {', '.join(differ)}." if differ else ".")
        if checked
        else ""
    )
    return (
        f"The probe in up to three passes summed the one-pass probe's gradients bit for bit on every model that "
        f"passes ({len(several)} with more than one eligible weight); on {len(kept)} of them the passes below the "
        f"top started from a gradient kept at a block boundary (the blocks form a chain), on the others from the loss."
        + (
            f" In up to eight passes ({len(deep)} models with more than three eligible weights) the sums were the same "
            f"bits, and on {len(skipped)} of them passes skipped the blocks below their group, starting from the "
            f"hidden state the first pass kept."
            if deep
            else ""
        )
        + (
            f" With the sums of the largest Linear and Conv2d weights (about eight per model) made after their pass "
            f"from gradient factors kept on disk ({len(deferred)} models), the sums were the same bits again."
            if deferred
            else ""
        )
        + autograd
    )


def missing_line(rows: list[Row], expected: dict[str, int]) -> str:
    """Say how many families or classes the log(s) lack (a sweep stopped before its end)."""
    parts = []
    for library, count in expected.items():
        seen = sum(r.library == library for r in rows)
        if seen < count:
            parts.append(f"{count - seen} of the {count} {library} {'families' if library == 'timm' else 'classes'}")
    return f"Not in the log(s), not yet run: {', '.join(parts)}." if parts else ""


def readme_section(
    rows: list[Row], seconds: float, versions: str, timed: str = "Wall time of the sweep", missing: str = ""
) -> str:
    refused = [r for r in rows if r.status == "refused"]
    failed = [r for r in rows if r.status == "failed"]
    unbuildable = [r for r in rows if r.status == "unbuildable"]
    parts = [
        BEGIN,
        "",
        f"The whole GRFT cycle (the probe in one, in up to three and in up to eight passes, and with the largest "
        f"weights' sums deferred to after their pass, attach, one Adam step, adapter save and load, merge; rows "
        f"and columns) on "
        f"the smallest model of every timm family and a tiny model of every transformers sequence and image "
        f"classifier, built at random ({versions}):",
        "",
        summary(rows, seconds, timed),
    ]
    if missing:
        parts += ["", missing]
    for title, group in (("Refused", refused), ("Failed", failed), ("Not buildable here (not counted)", unbuildable)):
        if group:
            parts += ["", f"{title}:", ""]
            parts += [f"- {r.library} {r.family} ({r.model}): {r.reason}" for r in group]
    parts += ["", END]
    return "\n".join(parts)


def write_readme(readme: Path, section: str) -> None:
    text = readme.read_text()
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        raise ValueError(f"{readme} has no '{BEGIN}' ... '{END}' markers; add them where the section goes")
    readme.write_text(text)
