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
