"""The customer-request (intent) domain: taxonomy, classifiers and their training."""
