-- Only published rows: a demand partition whose blocking checks failed stays in
-- validated_demand, unpublished (queryable there), and reaches nothing downstream.
select
    store,
    item,
    cast(period_start as date) as period_start,
    freq,
    units,
    price,
    deal,
    feature,
    extra_covariates,
    raw_row_id
from {{ source('warehouse', 'validated_demand') }}
where published
