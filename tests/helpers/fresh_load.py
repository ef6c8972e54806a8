"""Load exported models the way someone without grft would: plain timm or transformers, in a fresh interpreter.

``load_in_fresh_interpreter(jobs)`` runs this file as a script in a new Python process where any
import of ``grft`` or ``grft_app`` fails (as on a machine where grft is not installed), and checks
at the end that neither was imported. Each job names the library, the exported folder, a
safetensors file of inputs (``x`` for images; ``input_ids`` and ``attention_mask`` for text) and
the file to write the logits to; the process prints each model's class names as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def load_in_fresh_interpreter(jobs: list[dict], cwd: Path) -> list[list[str]]:
    """Run ``jobs`` (dicts: library, folder, inputs, out) in a fresh interpreter; the class names of each model."""
    proc = subprocess.run(
        [sys.executable, __file__, json.dumps(jobs)],
        cwd=cwd,  # not the checkout: nothing of grft on the path by accident
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _main(jobs: list[dict]) -> None:
    import importlib.abc

    class NoGrft(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("grft", "grft_app"):
                raise ImportError(f"{name} is not installed here")

    sys.meta_path.insert(0, NoGrft())
    import torch
    from safetensors.torch import load_file, save_file

    names = []
    for job in jobs:
        batch = load_file(job["inputs"])
        with torch.no_grad():
            if job["library"] == "timm":
                import timm

                model = timm.create_model(f"local-dir:{job['folder']}", pretrained=True).eval()
                logits = model(batch["x"])
                names.append(list(model.pretrained_cfg["label_names"]))
            else:
                import transformers

                config = transformers.AutoConfig.from_pretrained(job["folder"])
                auto = (
                    transformers.AutoModelForSequenceClassification
                    if "input_ids" in batch
                    else transformers.AutoModelForImageClassification
                )
                model = auto.from_pretrained(job["folder"]).eval()
                logits = model(**batch).logits
                names.append([config.id2label[i] for i in range(config.num_labels)])
        save_file({"logits": logits.contiguous()}, job["out"])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("grft", "grft_app"))
    assert not leaked, leaked
    print(json.dumps(names))


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
