"""The defect-inspection domain: cell images checked at intake, their splits, the features and
models that classify them defective or functional."""
