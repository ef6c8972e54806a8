"""What testing during training costs, task by task: ``python -m experiments.paper.evalcost``.

Under ``protocol=reference`` the test split is evaluated after every epoch (the reference code's
practice), with the raw and, where EMA is on, the EMA weights. Per epoch that is ``passes x test``
images evaluated against the images trained (full batches). A test image costs one forward, a
training image a forward and a backward, so the time ratio is smaller than the image ratio; each
record measures it (``timings.eval_in_training_s``, included in ``timings.train_s``). Figures from
the split sizes of ``grft_app.data.catalog`` and each task's experiment config.
"""

from __future__ import annotations

import os

from hydra import compose, initialize_config_dir


def cost_rows() -> list[tuple[str, int, int, int, float]]:
    """(task, images trained per epoch, test images, test passes per epoch, evaluated / trained images)."""
    from grft_app.data.catalog import TASKS
    from grft_app.paths import CONF_DIR
    from grft_app.run.settings import register_resolvers

    register_resolvers()
    rows = []
    with initialize_config_dir(config_dir=os.fspath(CONF_DIR), version_base="1.3"):
        for name, task in TASKS.items():
            cfg = compose("config", overrides=[f"experiment={task.family}/{name}"])
            sizes = task.sizes
            train = sizes.get("train800val200") or (sizes["train"] + sizes.get("val", 0) * (task.family == "fgvc"))
            test = sizes.get("test") or sizes["dev"]
            batch = int(cfg.batch_size)
            trained = (train // batch) * batch
            passes = 2 if cfg.augment.ema is not None else 1
            rows.append((name, trained, test, passes, passes * test / trained))
    return sorted(rows, key=lambda r: -r[4])


def main() -> None:
    print("| task | trained images / epoch | test images | test passes / epoch | evaluated / trained |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, trained, test, passes, ratio in cost_rows():
        print(f"| {name} | {trained} | {test} | {passes} | {ratio:.1f} |")


if __name__ == "__main__":
    main()
