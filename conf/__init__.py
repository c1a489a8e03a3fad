"""Hydra configs shipped with anybind (compose with ``pkg://conf``)."""
