"""Write a finished run's merged model in its own library's format: ``python -m grft_app.export RUN_DIR OUT_DIR``.

The run is rebuilt from its directory alone and its method merged into the base layers
(``grft_app.trained``), so what is written is a plain model of the base's library, loadable where
grft is not installed:

- a timm model as timm's Hugging Face layout (``config.json`` + ``model.safetensors``, timm's own
  ``save_for_hf``): ``timm.create_model("local-dir:OUT_DIR", pretrained=True)`` builds the same
  architecture with the run's model arguments and class count and loads the weights; the class
  names are the config's ``label_names``, and its preprocessing (input size, mean, std,
  interpolation, crop) is the run's evaluation transform;
- a transformers model as a ``save_pretrained`` directory with ``id2label``/``label2id`` set, and the
  tokenizer or image processor the base came with:
  ``AutoModelFor{Sequence,Image}Classification.from_pretrained(OUT_DIR)``.

Before the folder is put in place, the written model is read back by its library and must give
the merged model's logits on a sample input. A method whose additions do not fold into the base
layers (adapter, VPT), or a model of neither library, is one line saying why, and nothing is written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .trained import TrainedRun

ATOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


class CannotExport(ValueError):
    """A run whose model cannot be written in its library's own format; the message says why."""


def library_of(model: nn.Module) -> str:
    """``timm`` or ``transformers``: the library whose format the model is written in."""
    transformers = sys.modules.get("transformers")  # imported already if the model is one of its
    if transformers is not None and isinstance(model, transformers.PreTrainedModel):
        return "transformers"
    if type(model).__module__.startswith("timm.") and getattr(model, "pretrained_cfg", None) is not None:
        return "timm"
    raise CannotExport(
        f"the run's model is a {type(model).__module__}.{type(model).__name__}, a model of neither timm nor "
        "transformers, so there is no library format to write it in"
    )


# --- timm -----------------------------------------------------------------------------------------
def timm_data_config(run: TrainedRun) -> dict:
    """The run's evaluation transform in timm's data-config terms."""
    from .data import eval_crop

    inputs = run.bundle.inputs
    return {
        "input_size": (inputs.in_chans, inputs.img_size, inputs.img_size),
        "mean": tuple(inputs.mean),
        "std": tuple(inputs.std),
        "interpolation": inputs.interpolation,
        **eval_crop(run.cfg.dataset, inputs),
    }


def write_timm(run: TrainedRun, folder: Path) -> None:
    from timm.models import save_for_hf

    save_for_hf(
        run.model,
        str(folder),
        # The tag and licence timm's default config names are of other weights than these.
        model_config={"label_names": list(run.class_names), "pretrained_cfg": {"tag": None, "license": None}},
        safe_serialization=True,
        data_config=timm_data_config(run),
    )


def read_timm(folder: Path) -> nn.Module:
    import timm

    return timm.create_model(f"local-dir:{folder}", pretrained=True)


# --- transformers ---------------------------------------------------------------------------------
def write_transformers(run: TrainedRun, folder: Path) -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()  # one line of output per export, not a bar per file
    model, inputs = run.model, run.bundle.inputs
    model.config.id2label = dict(enumerate(run.class_names))
    model.config.label2id = {name: i for i, name in enumerate(run.class_names)}
    model.save_pretrained(str(folder))
    for companion in (inputs.tokenizer, inputs.processor):
        if companion is not None:
            companion.save_pretrained(str(folder))


def read_transformers(folder: Path, model: nn.Module) -> nn.Module:
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    from .models.hf import is_vision

    auto = AutoModelForImageClassification if is_vision(model.config.model_type) else AutoModelForSequenceClassification
    return auto.from_pretrained(str(folder), dtype=model.dtype)


WRITERS = {"timm": write_timm, "transformers": write_transformers}


def read_back(library: str, folder: Path, model: nn.Module) -> nn.Module:
    """The written model as its library loads it (eval mode)."""
    loaded = read_timm(folder) if library == "timm" else read_transformers(folder, model)
    return loaded.eval()


# --- the check ------------------------------------------------------------------------------------
def sample_input(run: TrainedRun) -> object:
    """A small batch the model takes: random images, or two tokenized sentences."""
    inputs = run.bundle.inputs
    device = next(run.model.parameters()).device
    if run.kind == "image":
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(2, inputs.in_chans, inputs.img_size, inputs.img_size, generator=generator)
        return images.to(device, next(run.model.parameters()).dtype)
    encoded = inputs.tokenizer(
        ["the written model is read back.", "and gives the same logits"],
        padding=True,
        truncation=True,
        max_length=int(inputs.max_length),
        return_tensors="pt",
    )
    return {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}


def check_round_trip(run: TrainedRun, loaded: nn.Module, folder: Path) -> None:
    from .trained import logits_of

    x = sample_input(run)
    with torch.no_grad():
        expected = logits_of(run.model, x).float()
        got = logits_of(loaded.to(next(run.model.parameters()).device), x).float()
    atol = ATOL.get(next(run.model.parameters()).dtype, 1e-4)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=atol):
        raise CannotExport(
            f"the model written to {folder}, read back by its library, does not give the run's logits (largest "
            f"difference {(got - expected).abs().max().item() if got.shape == expected.shape else 'shape'}); "
            "nothing was exported (please report it)"
        )


# --- the command ----------------------------------------------------------------------------------
def export(run: TrainedRun, out_dir: str | Path) -> Path:
    """Write ``run``'s merged model to ``out_dir`` (a new folder); returns it. Checked before it is put in place."""
    out_dir = Path(out_dir)
    if not run.merged:
        raise CannotExport(
            f"the run's model cannot be written as a plain model: {run.not_merged_because}; predict with the run "
            f"itself instead (python -m grft_app.predict {run.run_dir} INPUT...)"
        )
    library = library_of(run.model)
    check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        WRITERS[library](run, staging)
        check_round_trip(run, read_back(library, staging, run.model), out_dir)
        share(staging)
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (check_out_dir): the finished export takes its place
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def share(folder: Path) -> None:
    """The modes of a plain new folder and new files: ``mkdtemp`` and safetensors make them private, and an
    export is meant to be handed on."""
    from grft.io import as_new_file, umask

    os.chmod(folder, 0o777 & ~umask())
    for path in folder.rglob("*"):
        as_new_file(path) if path.is_file() else os.chmod(path, 0o777 & ~umask())


def check_out_dir(out_dir: Path) -> None:
    """A new folder, or an empty one: an export never writes over anything."""
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        raise CannotExport(f"{out_dir} already exists; give a new folder (nothing is written over)")


def loading_hint(library: str, out_dir: Path, run: TrainedRun) -> str:
    if library == "timm":
        return f'timm.create_model("local-dir:{out_dir}", pretrained=True)'
    auto = "AutoModelForImageClassification" if run.kind == "image" else "AutoModelForSequenceClassification"
    return f'transformers.{auto}.from_pretrained("{out_dir}")'


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m grft_app.export",
        description="Write a finished run's merged model in its library's format (timm or transformers).",
    )
    parser.add_argument("run_dir", help="the run's directory (the folder of its record.json)")
    parser.add_argument("out_dir", help="a new folder to write the model to")
    parser.add_argument("--device", default="cpu", help="where to rebuild and check the model (default: cpu)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from .trained import finished_record, load_run

    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    try:
        finished_record(args.run_dir)
        check_out_dir(out_dir)  # before the model is built
        run = load_run(args.run_dir, device=args.device)
        export(run, out_dir)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    library = library_of(run.model)
    accuracy = run.record.metrics.get(run.final_test_key) if run.record.metrics else None
    tested = f"; its test accuracy at the end of training: {100 * accuracy:.1f}%" if accuracy is not None else ""
    print(f"wrote {run.record.method} run {run.run_dir} as a {library} model to {out_dir}{tested}")
    print(f"load it with: {loading_hint(library, out_dir, run)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
