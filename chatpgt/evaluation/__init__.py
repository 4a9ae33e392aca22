"""Evaluation: does each stage (base, SFT, DPO) write more like the author?

Metrics (each per model, each with a seeded 95% bootstrap interval over essays): perplexity of
the held-out essays, a style-classifier score of generations on held-out titles, a judged win
rate against a reference (raw and length-controlled) and cheap descriptive statistics. The
modules that need torch (:mod:`.perplexity`, :mod:`.generation`, :mod:`.runner`) or scikit-learn
(:mod:`.style`, :mod:`.winrate`) are imported only by the worker; the API imports
:mod:`.schemas`, :mod:`.service` and :mod:`.repository`.
"""
