"""The benchmark's vocabulary, free of torch so the driver process can stay small."""

MODELS = ("vit", "llama")
METHODS = ("full", "gps", "lora", "grft_row", "grft_column", "linear", "floor")
# Layers of the Llama-3.2-1B-wide model: 16 is the real depth; the CPU default keeps a run short.
LLAMA_LAYERS = {"cpu": 2, "1b": 16}
