"""On-policy DPO rounds: generate with the current model, judge, DPO from it, repeat.

- :mod:`.models`: a rounds run (a leased row, lifecycle ``ROUNDS_RUN``) and its rounds.
- :mod:`.repository`: their SQL.
- :mod:`.schemas`: the request and the views.
- :mod:`.service`: submit, read, cancel (the API), and :func:`.service.step`, one step of the
  state machine (the ``chatpgt.datagen.rounds_step`` task on the datagen queue).
"""
