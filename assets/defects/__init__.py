"""The defect-inspection domain: image drops in, validated cell images, their splits, the defect
classifiers and their gate."""

GROUP = "defects"
OWNERS = ["team:defects"]
