"""Training: Hydra-composed contrastive binding of any set of modalities to the image anchor.

* :mod:`anybind.train.recipe`: ``main()`` (``anybind-train``), ``run(cfg) -> RunResult``, ``compose_train_config``.
* :mod:`anybind.train.trainer`: the loop; :mod:`anybind.train.config`: the structured configs;
  :mod:`anybind.train.optim`, :mod:`anybind.train.checkpointing`, :mod:`anybind.dist`.

See docs/training.md.
"""
