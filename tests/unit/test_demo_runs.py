"""What `make demo-real` trains, with and without QUICK=1, and what it says it trains."""

import pytest

from assets.requests.models import TransformerTrainingConfig
from ml.requests.training import TransformerConfig
from orchestration.demo import transformer_run


def test_demo_real_trains_the_tuned_transformer_on_every_row_with_a_progress_bar() -> None:
    config, said = transformer_run(real=True, quick=False)

    # The asset's own config accepts it (a misspelt key would fail the demo's run).
    checked = TransformerTrainingConfig(**config)
    assert checked.progress_bar
    assert checked.max_train_samples is None and checked.max_validation_samples is None
    assert checked.transformer_config() == TransformerConfig()  # the tuned defaults
    assert "in full" in said and "QUICK=1" in said


@pytest.mark.parametrize(("real", "why"), [(True, "--quick"), (False, "generated data")])
def test_the_quick_run_is_short_and_says_so(real: bool, why: str) -> None:
    config, said = transformer_run(real=real, quick=True)

    checked = TransformerTrainingConfig(**config)
    assert checked.epochs == 1 and checked.max_train_samples == 1024
    assert "quick run" in said and why in said
