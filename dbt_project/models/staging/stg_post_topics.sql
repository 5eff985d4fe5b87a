select
    uri,
    topic_model_version,
    topic_id,
    topic_label,
    distance,
    partition_date
from {{ source('warehouse', 'post_topics') }}
