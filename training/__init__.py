"""Training: configs, data, the backend-neutral train step, callbacks, fit and evaluate CLIs."""
