"""The retail demand domain: the demand source by period, validated demand, backtests, the
registered forecasters and their gate, forecasts and their realized error."""

GROUP = "demand"
OWNERS = ["team:demand"]
