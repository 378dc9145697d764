"""Reports read saved run directories only; they never load or call a model."""
