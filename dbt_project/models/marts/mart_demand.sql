-- One row per store, item and period from each series' first to last period: a period without
-- a valid row is explicit (units null, is_missing true), never silently zero.
with demand as (
    select * from {{ ref('stg_demand') }}
),

series as (
    select store, item, freq, min(period_start) as first_period, max(period_start) as last_period
    from demand
    group by store, item, freq
),

grid as (
    select
        store,
        item,
        freq,
        {{ period_series(
            "first_period",
            "last_period",
            "case when freq = 'W' then interval '7 day' else interval '1 day' end",
        ) }} as period_start
    from series
),

periods as (
    select distinct period_start, freq from grid
),

period_calendar as (
    select
        p.period_start,
        p.freq,
        max(c.day_of_week) filter (where c.date = p.period_start) as day_of_week,
        max(c.iso_week) filter (where c.date = p.period_start) as iso_week,
        max(c.month) filter (where c.date = p.period_start) as month,
        max(c.year) filter (where c.date = p.period_start) as year,
        max(c.day_of_year) filter (where c.date = p.period_start) as day_of_year,
        bool_or(c.is_weekend) filter (where c.date = p.period_start) as is_weekend,
        bool_or(c.is_holiday) as has_holiday,
        string_agg(distinct c.holiday_name, ', ') as holidays
    from periods as p
    inner join {{ source('warehouse', 'calendar_days') }} as c
        on c.date >= p.period_start
        and c.date < p.period_start + (case when p.freq = 'W' then 7 else 1 end)
    group by p.period_start, p.freq
)

select
    g.store,
    g.item,
    g.period_start,
    g.freq,
    d.units,
    d.price,
    d.deal,
    d.feature,
    d.extra_covariates,
    d.units is null as is_missing,
    c.day_of_week,
    c.iso_week,
    c.month,
    c.year,
    c.day_of_year,
    c.is_weekend,
    c.has_holiday,
    c.holidays
from grid as g
left join demand as d
    on g.store = d.store and g.item = d.item and g.period_start = d.period_start
left join period_calendar as c
    on g.period_start = c.period_start and g.freq = c.freq
