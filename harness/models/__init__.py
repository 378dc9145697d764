"""Model backends, one module each (fake, hf for transformers, vllm, endpoint), each a
``Backend`` declared in backends/ (its spec prefix, its entry settings, its loader) and
registered by specs, with the prompt building they share (prompts), the choice of device,
dtype, backend and batch size (choice), specs as users write them (specs), the built-in
model (builtin), adapters, and ``loading.load_model``, which resolves a spec to a ready
model."""
