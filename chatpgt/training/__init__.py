"""Training: SFT on the essays and DPO on preference pairs, run by GPU workers.

Importing this package (schemas, models, repository, service) never imports torch: the API process
uses those. ``recipes``, ``callbacks`` and ``sampling`` pull in torch/transformers/TRL and are
imported lazily by the worker only.
"""
