-- Only published rows: a drop whose blocking checks failed stays in validated_requests,
-- unpublished (queryable there), and reaches nothing downstream. Empty until the first request
-- drop is validated (a deployment may run other domains only).
{% set validated = source('warehouse', 'validated_requests') %}

{% if relation_exists(validated) %}
select
    request_id,
    text,
    intent,
    source,
    received_at,
    drop_id,
    raw_row_id,
    {{ text_key('text') }} as text_key
from {{ validated }}
where published
{% else %}
select
    cast(null as varchar) as request_id,
    cast(null as varchar) as text,
    cast(null as varchar) as intent,
    cast(null as varchar) as source,
    cast(null as timestamp with time zone) as received_at,
    cast(null as varchar) as drop_id,
    cast(null as varchar) as raw_row_id,
    cast(null as varchar) as text_key
where false
{% endif %}
