"""The model components, one module each (the protocol: ``models/component.py``; the list
the suite uses: ``models/registry.py``)."""
