"""Which models GRFT runs on: the whole cycle on every timm family and every transformers classifier.

    python -m experiments.models_coverage            # the sweep, its table, and the README section

See ``__main__`` for the options and ``cycle`` for what one model goes through.
"""
