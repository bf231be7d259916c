-- Exact and near-duplicate texts (same normalized key) must never sit in two splits.
select text_key, count(distinct split) as splits
from {{ ref('request_splits') }}
group by text_key
having count(distinct split) > 1
