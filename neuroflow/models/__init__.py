"""Model families: bare nn.Modules built from the config dataclasses in configs.py."""
