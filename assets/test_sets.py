"""The frozen, versioned test set of a classification domain, the same for every domain: the
labeled test split as it was when a version was cut. Every model of the domain is compared on
the same test version; new labels never change it; a new version is a recorded act (a reason)."""

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from dagster import AssetExecutionContext, Config, MetadataValue

from assets.metadata import counts_table
from assets.resources import Warehouse


class TestSetConfig(Config):
    cut_new_version: bool = False
    """Freeze the labeled test split as it is now into a new test version (a recorded act)."""
    reason: str = ""
    """Why a new test version is cut; required with cut_new_version."""


@dataclass(frozen=True)
class FrozenTestSets:
    table: str
    """The warehouse table holding every version's rows."""
    key: str
    """The id of a row (`request_id`, `image_id`)."""
    label: str
    """The label column (`intent`, `defective`)."""
    asset: str
    """The asset that cuts versions, named in errors."""

    def versions(self, warehouse: Warehouse) -> pl.DataFrame:
        return warehouse.query_if_exists(
            self.table,
            f"select test_version, count(*) as rows, min(frozen_at) as frozen_at, "
            f"min(reason) as reason from {self.table} group by 1 order by 1",
            None,
            {
                "test_version": pl.Int64,
                "rows": pl.Int64,
                "frozen_at": pl.Datetime,
                "reason": pl.Utf8,
            },
        )

    def latest(self, warehouse: Warehouse, columns: str) -> tuple[int, pl.DataFrame]:
        """The latest frozen test version and its rows (`columns`, ordered by key): the one
        every model of the domain is compared on."""
        versions = self.versions(warehouse)
        if versions.is_empty():
            raise ValueError(
                f"no frozen test version yet ({self.table} is empty): materialize "
                f"{self.asset} first"
            )
        version = int(versions["test_version"].max())
        rows = warehouse.query(
            f"select {columns} from {self.table} where test_version = ? order by {self.key}",
            [version],
        )
        if rows.filter(pl.col(self.label).is_not_null()).is_empty():
            raise ValueError(
                f"{self.table}: test_version {version} holds no labeled row; models cannot be "
                "compared on an empty frozen test (cut a new test version with labels)"
            )
        return version, rows

    def freeze(
        self,
        context: AssetExecutionContext,
        config: TestSetConfig,
        warehouse: Warehouse,
        labeled: pl.DataFrame,
    ) -> dict[str, object]:
        """Cut the first version (or a new one on request) from `labeled` (the labeled test
        split now, with `key` and `label`); the asset's metadata."""
        versions = self.versions(warehouse)
        if versions.is_empty() or config.cut_new_version:
            if config.cut_new_version and not config.reason.strip():
                raise ValueError("cutting a new test version is a recorded act: give a reason")
            if labeled.is_empty():
                raise ValueError("no labeled row in the test split: nothing to freeze")
            version = 1 if versions.is_empty() else int(versions["test_version"].max()) + 1
            frozen = labeled.with_columns(
                pl.lit(version, pl.Int64).alias("test_version"),
                pl.lit(datetime.now(UTC)).alias("frozen_at"),
                pl.lit(config.reason.strip() or "first test version").alias("reason"),
            )
            warehouse.replace_rows(self.table, frozen, "test_version = ?", [version])
            context.log.info(f"froze test version {version} with {frozen.height} rows")
            versions = self.versions(warehouse)
        version = int(versions["test_version"].max())
        frozen_ids = warehouse.query(
            f"select {self.key}, {self.label} from {self.table} where test_version = ?",
            [version],
        )
        not_frozen = labeled.join(frozen_ids, on=self.key, how="anti").height
        per_label = frozen_ids.group_by(self.label).len().sort("len", descending=True)
        return {
            "test_version": version,
            "dagster/row_count": frozen_ids.height,
            "labeled_test_rows_not_in_this_version": not_frozen,
            "versions": MetadataValue.md(
                "| version | rows | frozen at | reason |\n|---|---|---|---|\n"
                + "\n".join(
                    f"| {row['test_version']} | {row['rows']} | {row['frozen_at']} | "
                    f"{row['reason']} |"
                    for row in versions.iter_rows(named=True)
                )
            ),
            f"per_{self.label}": counts_table(
                {str(k): v for k, v in zip(per_label[self.label], per_label["len"], strict=True)},
                self.label,
            ),
        }
