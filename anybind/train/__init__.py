"""Training: Hydra-composed contrastive binding of any set of modalities to the image anchor.

* :mod:`anybind.train.recipe`: ``main()`` (``anybind-train``), ``run(cfg) -> RunResult``, ``compose_train_config``,
  ``build_run``; the recipe's steps are :mod:`anybind.train.builders`, the process around a run (device, process
  group, run directory, signals) :mod:`anybind.train.runtime`.
* :mod:`anybind.train.trainer`: the loop over :mod:`anybind.train.module`'s ``TrainModule``, with
  :mod:`anybind.train.parallel` (DDP / FSDP) and :mod:`anybind.train.logs`; :mod:`anybind.train.config`: the
  structured configs; :mod:`anybind.train.optim`, :mod:`anybind.train.checkpointing`, :mod:`anybind.dist`.

See docs/training.md.
"""
