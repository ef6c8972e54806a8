"""The benchmark's vocabulary, free of torch so the driver process can stay small.

An arm is named by the app's config, so the benchmark keeps no list of methods: ``<method>`` is the app's
``method=<method>`` (any file of ``conf/method``), ``<method>_<selection>`` adds ``selection=<selection>`` (a
file of ``conf/selection``, for a method that reads it: ``grft_row``), and ``floor`` is the benchmark's own.
A new method of the app is an arm with no edit here.
"""

from grft_app.paths import CONF_DIR

MODELS = ("vit", "llama")
FLOOR = "floor"
# What a plain run compares (the arms the targets judge): the methods that apply to both models, GRFT by
# rows and by columns, and the floor. A choice of the benchmark, not the list of what it can run.
DEFAULT_ARMS = ("full", "gps", "lora", "grft_row", "grft_column", "linear", FLOOR)
# Layers of the Llama-3.2-1B-wide model: 16 is the real depth; the CPU default keeps a run short.
LLAMA_LAYERS = {"cpu": 2, "1b": 16}


def add_llama_arguments(parser) -> None:
    """The Llama workload's options (depth, sequence length), the same in the driver and its workers."""
    parser.add_argument(
        "--llama-shape",
        default="cpu",
        choices=sorted(LLAMA_LAYERS),
        help=f"layers of the Llama-3.2-1B-wide model: cpu={LLAMA_LAYERS['cpu']}, 1b={LLAMA_LAYERS['1b']}",
    )
    parser.add_argument("--seq-len", type=int, default=32, help="tokens per Llama sequence")


def group_options(group: str) -> tuple[str, ...]:
    """The options of one of the app's config groups (``conf/<group>/*.yaml``), as ``group=<option>`` takes them."""
    return tuple(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))


def arm_parts(arm: str) -> tuple[str, str | None]:
    """``arm`` as (the app's method, its selection or ``None``); an unknown name is an error listing the choices."""
    methods = group_options("method")
    if arm in methods:
        return arm, None
    method, _, selection = arm.rpartition("_")
    if method in methods and selection in group_options("selection"):
        return method, selection
    raise ValueError(
        f"unknown method {arm!r}; choose from {', '.join(DEFAULT_ARMS)} (the default), any method of conf/method "
        f"({', '.join(methods)}), or <method>_<selection> with a selection of conf/selection "
        f"({', '.join(group_options('selection'))})"
    )


def check_arm(arm: str) -> None:
    if arm != FLOOR:
        arm_parts(arm)


def arm_list(text: str) -> list[str]:
    """``lora,grft_row,floor`` as a list of arms, each checked."""
    arms = [a.strip() for a in text.split(",") if a.strip()]
    if not arms:
        raise ValueError(f"no method in {text!r}; choose from {', '.join(DEFAULT_ARMS)}")
    for arm in arms:
        check_arm(arm)
    return arms


def add_probe_arguments(parser) -> None:
    """How GRFT's probe may spend memory (the app's ``probe.memory`` / ``probe.passes``)."""
    parser.add_argument(
        "--probe-memory",
        default="train",
        help="GRFT's probe budget: train (no more than the run's estimated training peak) or GB",
    )
    parser.add_argument(
        "--probe-passes", type=int, default=None, help="force GRFT's probe passes (default: from --probe-memory)"
    )
