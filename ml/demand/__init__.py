"""The retail demand domain: calendar, panel, forecasting models, backtests, and the fitted
forecaster."""
