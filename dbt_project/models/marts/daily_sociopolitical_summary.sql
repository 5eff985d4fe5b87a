{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_window('day') }}") }}

with labels as (
    select * from {{ ref('stg_llm_labels') }}
    where {{ in_window('partition_date') }}
),

failures as (
    select day, labeler, model, prompt_version,
           to_json(map(list(reason order by reason), list(n order by reason))) as failed_by_reason
    from (
        select partition_date as day, labeler, model, prompt_version, reason, count(*) as n
        from labels where status = 'failed' group by all
    )
    group by all
)

select
    labels.partition_date as day,
    labels.labeler,
    labels.model,
    labels.prompt_version,
    count(*) filter (where status = 'ok') as posts_labeled,
    count(*) filter (where status = 'failed') as posts_failed,
    coalesce(any_value(f.failed_by_reason), '{}'::json) as failed_by_reason,
    count(*) filter (where status = 'ok' and is_sociopolitical) as sociopolitical,
    count(*) filter (where status = 'ok') as n,
    avg(case when is_sociopolitical then 1.0 else 0.0 end) filter (where status = 'ok') as share_sociopolitical,
    count(*) filter (where status = 'ok' and political_ideology = 'left') as ideology_left,
    count(*) filter (where status = 'ok' and political_ideology = 'right') as ideology_right,
    count(*) filter (where status = 'ok' and political_ideology = 'moderate') as ideology_moderate,
    count(*) filter (where status = 'ok' and political_ideology = 'unclear') as ideology_unclear
from labels
left join failures as f on f.day = labels.partition_date and f.labeler = labels.labeler
    and f.model = labels.model and f.prompt_version = labels.prompt_version
group by 1, 2, 3, 4
