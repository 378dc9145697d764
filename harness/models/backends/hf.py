"""transformers: the engine for the weights a plain spec names, on any device."""

from __future__ import annotations

from medharness.models.specs import Backend

BACKEND = Backend("hf", "medharness.models.hf:load")
