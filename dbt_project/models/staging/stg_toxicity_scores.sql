select *
from {{ source('warehouse', 'toxicity_scores') }}
