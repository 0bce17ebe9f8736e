"""The front doors: one module per MLproject entry point, each a thin click command.

Run one as `python -m steps.<entry point> --help`. Each parses and checks its options, opens the
MLflow run and calls the library in neuroflow/.
"""
