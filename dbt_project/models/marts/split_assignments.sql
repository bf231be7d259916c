-- The split of every normalized text, assigned once and never rewritten (full refresh is off):
-- a request that arrives later with a known text inherits its split, so exact and near-duplicate
-- texts never straddle two splits, and no model is ever scored on text it was trained on.
--
-- Stratified by the text's majority intent (unlabeled texts form their own stratum): see the
-- macro stratified_split_assignments.
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

{{ stratified_split_assignments('texts', 'text_key') }}
