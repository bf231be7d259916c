-- The split of every normalized text, assigned once and never rewritten (full refresh is off):
-- a request that arrives later with a known text inherits its split, so exact and near-duplicate
-- texts never straddle two splits, and no model is ever scored on text it was trained on.
--
-- Stratified: within each stratum (the text's majority intent; unlabeled texts form their own),
-- new texts are ordered by a hash and take the next positions; position p maps to a split by the
-- golden-ratio sequence frac(p * 0.618… + offset), which spreads any prefix evenly, so every
-- intent holds close to the configured shares at every size.
{{ config(materialized='incremental', incremental_strategy='append', full_refresh=false) }}

with votes as (
    select
        text_key,
        intent,
        count(*) + case when intent is not null then 1000000 else 0 end as votes
    from {{ ref('stg_requests') }}
    group by text_key, intent
),

texts as (
    select text_key, intent as stratum
    from (
        select
            text_key,
            intent,
            row_number() over (partition by text_key order by votes desc, intent) as rank
        from votes
    ) as ranked
    where rank = 1
),

{% if is_incremental() %}
new_texts as (
    select * from texts where text_key not in (select text_key from {{ this }})
),

taken as (
    select stratum, count(*) as positions_taken from {{ this }} group by stratum
),
{% else %}
new_texts as (
    select * from texts
),

taken as (
    select cast(null as varchar) as stratum, 0 as positions_taken where false
),
{% endif %}

positioned as (
    select
        n.text_key,
        n.stratum,
        coalesce(t.positions_taken, 0)
        + row_number() over (partition by n.stratum order by md5(n.text_key)) - 1 as position
    from new_texts as n
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
    text_key,
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
