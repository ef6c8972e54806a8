"""The benchmark's vocabulary, free of torch so the driver process can stay small."""

MODELS = ("vit", "llama")
METHODS = ("full", "gps", "lora", "grft_row", "grft_column", "linear", "floor")
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
