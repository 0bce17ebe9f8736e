"""Model families: bare nn.Modules built from their configs in neuroflow.settings, and
build.py, which builds a family's network by name."""
