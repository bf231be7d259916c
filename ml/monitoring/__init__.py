"""What watches served models: the prediction log and drift scores."""
