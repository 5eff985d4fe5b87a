select
    uri,
    author_did,
    source,
    created_at,
    partition_date
from {{ source('warehouse', 'raw_posts') }}
