"""One orchestration layer for every leased unit of work (datagen jobs, training runs, and the
evaluation runs to come).

- :mod:`.status`: the statuses as ``StrEnum``s, each kind's transition table (a
  :class:`~.status.Lifecycle`), the terminal and active sets.
- :mod:`.leases`: the SQL of a leased row — the one ``transition``, claim, renew, release, and
  the rows the orphan sweep and start-up recovery look for; owner ids (:func:`worker_identity`).
- :mod:`.models`: :class:`~.models.LeasedRun`, the columns every leased row shares (a
  declarative mixin; a kind's model adds only its own).
- :mod:`.service`: what every kind does the same way through those rows: cancel, take the lease
  and start (async), claim (sync, gpu-queue rows), give the lease back after an error.
- :mod:`.heartbeat`: renewing a lease while the work runs (an asyncio task, or a thread for
  work that blocks its thread, like training).
- :mod:`.retry`: waiting out a database outage (tenacity), one warning when it goes, one line
  when it is back.
- :mod:`.tasks`: the Celery task names (the library never imports Celery; the workers register
  tasks under these names and the API enqueues them by name).
"""
