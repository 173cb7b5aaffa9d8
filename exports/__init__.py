"""SavedModel export and the TF Serving sampling client (issue #5; not built yet: see README, Status)."""
