-- Every validated request with the split of its normalized text (see split_assignments).
select
    r.request_id,
    r.text,
    r.intent,
    r.source,
    r.received_at,
    r.text_key,
    a.split
from {{ ref('stg_requests') }} as r
inner join {{ ref('split_assignments') }} as a on r.text_key = a.text_key
