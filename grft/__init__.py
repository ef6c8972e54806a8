"""GRFT: train the k rows or columns of each weight matrix with the largest summed squared
probe gradient, pulled towards the pre-trained weights (torch only).

    cfg = grft.GRFTConfig(k=2, selection="row", norm="l2", lam=1e-3, regular_layers=2)
    sel = grft.select(model, batches, cfg)      # SCL gradient probe + ranking (Eq. 4-5)
    grft.attach(model, sel, cfg)                # only slices + biases + head train
    loss = task_loss + grft.penalty(model)      # Eq. 8
    grft.save_adapter(model, "adapter.safetensors"); grft.merge(model)
"""

from .adapter import load_adapter, save_adapter
from .config import NORMS, SELECTIONS, GRFTConfig
from .layers import SlicedConv2d, SlicedLayer, SlicedLinear
from .penalty import penalty
from .probe import accumulate_gradients, rank_gradients, select, supervised_contrastive_loss
from .report import Budget, ParamReport, largest_k, param_report
from .selection import LayerSelection, Selection
from .targets import Architecture, detect_architecture, eligible_layers, pool_last_token
from .tuner import apply_selection, attach, current_selection, has_selection, merge, sliced_layers

__all__ = [
    "Architecture",
    "GRFTConfig",
    "LayerSelection",
    "NORMS",
    "ParamReport",
    "SELECTIONS",
    "Selection",
    "SlicedConv2d",
    "SlicedLayer",
    "SlicedLinear",
    "accumulate_gradients",
    "apply_selection",
    "attach",
    "current_selection",
    "detect_architecture",
    "eligible_layers",
    "has_selection",
    "load_adapter",
    "merge",
    "param_report",
    "largest_k",
    "Budget",
    "penalty",
    "pool_last_token",
    "rank_gradients",
    "save_adapter",
    "select",
    "sliced_layers",
    "supervised_contrastive_loss",
]
__version__ = "0.1.0"
