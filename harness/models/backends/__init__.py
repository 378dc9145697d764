"""One module per backend, each declaring it once as ``BACKEND``: its spec prefix (or none:
an engine), the entry settings that belong to it (a model the config nests into every model
entry), its config-time checks and where its loader is. ``models/specs.py`` registers every
module here, in name order; a new backend is its module here, its implementation beside
``models/`` and its tests. These modules stay light (pydantic, no torch, no vLLM): the config
and reports read them, and the loader is imported only when a model of its kind loads.
"""
