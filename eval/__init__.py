"""The measuring side of kwsstream: corpora (real and synthetic), the offline benchmark and the
speed benchmarks. Nothing here runs at import time; see ``python -m eval --help``."""
