"""SavedModel export for TF Serving (`python -m exports.saved_model`), its warmup records, and the sampling
client (`python -m exports.client`); the served computations are in `exports.signatures`."""
