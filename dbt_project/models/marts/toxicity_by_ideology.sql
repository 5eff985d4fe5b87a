{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_window('day') }}") }}

with scores as (
    select uri, scorer, prob_toxicity, partition_date
    from {{ ref('stg_toxicity_scores') }}
    where status = 'ok' and prob_toxicity is not null and {{ in_window('partition_date') }}
),

labels as (
    select
        uri,
        labeler,
        model,
        prompt_version,
        case when is_sociopolitical then coalesce(political_ideology, 'unclear') else 'not_sociopolitical' end
            as ideology
    from {{ ref('stg_llm_labels') }}
    where status = 'ok' and {{ in_window('partition_date') }}
)

select
    s.partition_date as day,
    s.scorer,
    l.labeler,
    l.model,
    l.prompt_version,
    l.ideology,
    count(*) as n,
    avg(s.prob_toxicity) as mean_toxicity,
    quantile_cont(s.prob_toxicity, 0.5) as median_toxicity,
    quantile_cont(s.prob_toxicity, 0.9) as p90_toxicity,
    avg(case when s.prob_toxicity >= 0.5 then 1.0 else 0.0 end) as share_toxic
from scores as s
inner join labels as l using (uri)
group by all
