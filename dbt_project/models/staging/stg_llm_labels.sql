select *
from {{ source('warehouse', 'llm_labels') }}
