"""Layers: gated blocks, likelihood heads, log-densities and prior layers."""
