"""BitFit (Ben Zaken et al. 2022): every bias of the backbone (linear, conv and norm layers) and the head train."""

from __future__ import annotations

from torch import nn

from ..models import ModelBundle
from .base import Method, NoOptions, freeze_all, unfreeze


class BiasMethod(Method):
    """BitFit: every bias outside the head, and the head; every weight stays frozen."""

    name = "bias"
    requires = "if the model has biases"

    def configure(self, bundle: ModelBundle) -> nn.Module:
        self.options_as(NoOptions)
        model, head = bundle.model, bundle.arch.head
        freeze_all(model)
        biases = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] == "bias" and not _in(n, head)]
        if not biases:
            raise ValueError(
                f"method bias: the model has no bias outside its head {head!r} (Llama layers have none), so it "
                "would train the head alone; use linear for that, or lora, grft, gps"
            )
        for p in biases:
            p.requires_grad_(True)
        unfreeze(model.get_submodule(head))
        return model


def _in(name: str, module: str) -> bool:
    return name.startswith(module + ".")
