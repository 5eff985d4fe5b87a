select
    uri,
    deleted_at,
    source,
    partition_date
from {{ source('warehouse', 'post_deletions') }}
