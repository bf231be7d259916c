"""The customer-request (intent) domain: drops in, validated requests, annotation in Label
Studio, labeled versions, the request classifiers and their gate, lineage snapshots."""

GROUP = "requests"
OWNERS = ["team:requests"]
