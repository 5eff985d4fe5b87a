{#- Each attribute's distribution per day and scorer. A day Perspective scored as a planned sample is weighted
    back to the day it samples (macros/sample_weights.sql); `sample` says which days are. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='append_new_columns',
    pre_hook="{{ delete_window('day') }}",
) }}

with scores as (
    select * from {{ ref('stg_toxicity_scores') }}
    where {{ in_window('partition_date') }}
),

per_scorer as (
    select
        partition_date as day,
        scorer,
        count(*) filter (where status = 'ok') as posts_scored,
        count(*) filter (where status = 'failed') as posts_failed,
        count(*) filter (where status = 'skipped') as posts_skipped
    from scores
    group by 1, 2
),

failures as (
    select day, scorer, to_json(map(list(reason order by reason), list(n order by reason))) as failed_by_reason
    from (
        select partition_date as day, scorer, reason, count(*) as n
        from scores where status = 'failed' group by 1, 2, 3
    )
    group by 1, 2
),

long as (
    unpivot (
        select partition_date as day, scorer, {{ sample_weight() }} as weight, columns('^prob_')
        from scores where status = 'ok'
    )
    on columns('^prob_')
    into name attribute value prob
),

weighted as (
    select *, {{ sample_cdf('prob', 'day, scorer, attribute') }} as cumulative_share
    from long
    where prob is not null
),

stats as (
    select
        day,
        scorer,
        replace(attribute, 'prob_', '') as attribute,
        count(prob) as n,
        {{ sample_design() }} as sample,
        sum(weight) as n_represented,
        {{ weighted_mean('prob') }} as mean,
        {{ weighted_quantile('prob', 0.5) }} as median,
        {{ weighted_quantile('prob', 0.9) }} as p90,
        {{ weighted_mean('case when prob >= 0.5 then 1.0 else 0.0 end') }} as share_ge_0_5,
        {{ weighted_mean('case when prob >= 0.8 then 1.0 else 0.0 end') }} as share_ge_0_8,
        {{ weighted_mean('case when prob >= 0.9 then 1.0 else 0.0 end') }} as share_ge_0_9
    from weighted
    group by 1, 2, 3
)

select
    p.day,
    p.scorer,
    s.attribute,
    p.posts_scored,
    p.posts_failed,
    p.posts_skipped,
    coalesce(f.failed_by_reason, '{}'::json) as failed_by_reason,
    coalesce(s.n, 0) as n,
    s.sample,
    s.n_represented,
    s.mean,
    s.median,
    s.p90,
    s.share_ge_0_5,
    s.share_ge_0_8,
    s.share_ge_0_9
from per_scorer as p
left join stats as s using (day, scorer)
left join failures as f using (day, scorer)
