{#- The split of every new key of `keyed` (a CTE with `key` and `stratum`), assigned once and
    never rewritten by an incremental model: within each stratum new keys are ordered by a hash
    and take the next positions; position p maps to a split by the golden-ratio sequence
    frac(p * 0.618… + offset), which spreads any prefix evenly, so every stratum holds close to
    the configured shares at every size. Ends the model's `with` list and selects. -#}
{% macro stratified_split_assignments(keyed, key) -%}
{% if is_incremental() %}
new_rows as (
    select * from {{ keyed }} where {{ key }} not in (select {{ key }} from {{ this }})
),

taken as (
    select stratum, count(*) as positions_taken from {{ this }} group by stratum
),
{% else %}
new_rows as (
    select * from {{ keyed }}
),

taken as (
    select cast(null as varchar) as stratum, 0 as positions_taken where false
),
{% endif %}

positioned as (
    select
        n.{{ key }},
        n.stratum,
        coalesce(t.positions_taken, 0)
        + row_number() over (partition by n.stratum order by md5(n.{{ key }})) - 1 as position
    from new_rows as n
    left join taken as t on n.stratum is not distinct from t.stratum
),

spread as (
    select
        *,
        (position * 0.6180339887498949 + {{ hash_bucket("coalesce(stratum, '')") }} / 100.0) % 1.0
            as spread
    from positioned
)

select
    {{ key }},
    stratum,
    position,
    case
        when spread < {{ var('train_percent') }} / 100.0 then 'train'
        when spread < ({{ var('train_percent') }} + {{ var('validation_percent') }}) / 100.0
            then 'validation'
        else 'test'
    end as split,
    current_timestamp as assigned_at
from spread
{%- endmacro %}
