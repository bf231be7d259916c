-- Only published rows: a drop whose blocking checks failed stays in validated_requests,
-- unpublished (queryable there), and reaches nothing downstream.
select
    request_id,
    text,
    intent,
    source,
    received_at,
    drop_id,
    raw_row_id,
    {{ text_key('text') }} as text_key
from {{ source('warehouse', 'validated_requests') }}
where published
