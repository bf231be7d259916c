-- Every validated request with the split of its normalized text (see split_assignments) and its
-- label: the source's own, else the latest version of the annotation loop's (label_source says
-- which; label_version which version).
{% set labeled = source('warehouse', 'labeled_requests') %}
{% set labeled_exists = relation_exists(labeled) %}

with annotated as (
    {% if labeled_exists %}
    select request_id, intent, version
    from {{ labeled }}
    where version = (select max(version) from {{ labeled }})
    {% else %}
    -- No batch merged yet: nothing annotated.
    select
        cast(null as varchar) as request_id,
        cast(null as varchar) as intent,
        cast(null as bigint) as version
    where false
    {% endif %}
)

select
    r.request_id,
    r.text,
    coalesce(r.intent, l.intent) as intent,
    case
        when r.intent is not null then 'source'
        when l.intent is not null then 'annotation'
    end as label_source,
    l.version as label_version,
    r.source,
    r.received_at,
    r.text_key,
    a.split
from {{ ref('stg_requests') }} as r
inner join {{ ref('split_assignments') }} as a on r.text_key = a.text_key
left join annotated as l on r.request_id = l.request_id
