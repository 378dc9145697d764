"""Training recipes (LoRA, QLoRA, full SFT): self-contained setup -> train -> save."""
