{#- Judgements on the audit's common [0, 1] scale: toxicity 0-4 divided by 4 (-1 "unsure" has none),
    sociopolitical 1/0 as it is; ideology is categorical and has none. -#}
select
    uri,
    rater,
    task,
    value,
    label,
    case
        when task = 'toxicity' and value between 0 and 4 then value / 4.0
        when task = 'sociopolitical' then value
    end as human_score,
    coalesce(task = 'toxicity' and value = -1, false) as is_unsure,
    source_file,
    line_no,
    imported_at
from {{ source('warehouse', 'human_judgements') }}
