select
    source,
    reason,
    file,
    line_no,
    partition_date
from {{ source('warehouse', 'rejected_records') }}
