"""The contract: what producers, consumers and every layer above agree on, importing
nothing of leadstream above it (``tests/test_layout.py`` checks the direction).

- :mod:`~leadstream.contract.events`: the interaction and listing schemas, parsing and
  validation of one record;
- :mod:`~leadstream.contract.outputs`: the records leadstream publishes (lists, scores,
  agent insights, dead letters);
- :mod:`~leadstream.contract.settings`: every setting, from the environment or a file;
- :mod:`~leadstream.contract.resources`: the files shipped beside the code
  (``topics.yaml``, ``schemas/``).
"""
