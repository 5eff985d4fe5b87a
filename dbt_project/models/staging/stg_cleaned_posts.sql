select
    uri,
    author_did,
    text,
    created_at,
    text_length,
    is_reply,
    has_link,
    lang_primary,
    passes_filters,
    filter_reason,
    partition_date
from {{ source('warehouse', 'cleaned_posts') }}
