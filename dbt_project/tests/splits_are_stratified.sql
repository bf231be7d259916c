-- Every intent with enough distinct texts holds close to the configured share of them in each
-- split. Distinct normalized texts are what gets assigned, so they are what is measured.
with keys as (
    select distinct intent, text_key, split
    from {{ ref('request_splits') }}
    where intent is not null
),
shares as (
    select
        intent,
        count(*) as distinct_texts,
        avg(case when split = 'train' then 1.0 else 0.0 end) as train_share,
        avg(case when split = 'test' then 1.0 else 0.0 end) as test_share
    from keys
    group by intent
)
select *
from shares
where distinct_texts >= 50
  and (
      abs(train_share - {{ var('train_percent') }} / 100.0) > 0.05
      or abs(test_share - (100 - {{ var('train_percent') }} - {{ var('validation_percent') }}) / 100.0) > 0.04
  )
