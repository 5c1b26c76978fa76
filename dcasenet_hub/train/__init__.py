"""Retraining DcaseNet: dataset readers, miniature datasets, downloads, feature preparation and the joint trainer.

An optional part of the package: ``import dcasenet_hub`` never imports it, and importing ``dcasenet_hub.train``
itself is cheap (no torch); the sub-modules load what they need.

* :mod:`dcasenet_hub.train.datasets` - readers of the official layouts with the authors' splits
  (``asc_items``, ``tag_items``, ``sed_items``).
* :mod:`dcasenet_hub.train.minidata` - ``make_mini_datasets``: tiny synthetic datasets in the same layouts.
* :mod:`dcasenet_hub.train.data_download` - ``download_dataset``: Zenodo downloads with md5 checks and resume.
* :mod:`dcasenet_hub.train.prepare` - ``prepare``: 24 kHz 16-bit audio and cached log-mel features.
* :mod:`dcasenet_hub.train.trainer` - ``train``, ``evaluate``, ``list_recipes``: the paper's joint trainer and the
  Table 2 recipes (``dcasenet_hub/train/recipes/*.json``).
* Metrics live in :mod:`dcasenet_hub.metrics`.

Example:
    >>> from dcasenet_hub.train import datasets, minidata
    >>> roots = minidata.make_mini_datasets("mini")                 # doctest: +SKIP
    >>> len(datasets.asc_items(roots.asc, "train"))                 # doctest: +SKIP
    30
"""
