{#- Where a system disagrees with a rater, topic by topic (indie-label's audit). Topics with fewer than
    `audit_min_judged` judged posts are kept but ranked after the others: their error is mostly noise. -#}
{{ config(alias=audit_alias('audit_by_topic')) }}

with by_topic as (
    select
        system,
        rater,
        task,
        topic_model_version,
        topic_id,
        topic_label,
        threshold,
        count(*) as n_judged,
        avg(system_score) as system_mean,
        avg(human_score) as human_mean,
        avg(abs_error) as mae,
        count(*) filter (where system_flags and not human_flags) as n_over_sensitive,
        count(*) filter (where human_flags and not system_flags) as n_under_sensitive,
        count(*) filter (where system_flags) as n_system_flags,
        count(*) filter (where human_flags) as n_human_flags
    from {{ ref('audit_judged_posts') }}
    group by all
)

select
    system,
    rater,
    task,
    topic_model_version,
    topic_id,
    topic_label,
    threshold,
    n_judged,
    system_mean,
    human_mean,
    system_mean - human_mean as mean_difference,
    mae,
    n_over_sensitive,
    n_under_sensitive,
    n_over_sensitive / n_judged as over_sensitive_share,
    n_under_sensitive / n_judged as under_sensitive_share,
    n_system_flags,
    n_human_flags,
    n_judged >= {{ var('audit_min_judged') }} as enough_judged,
    row_number() over (
        partition by system, rater, task, topic_model_version
        order by n_judged >= {{ var('audit_min_judged') }} desc, mae desc, n_judged desc, topic_id
    ) as error_rank
from by_topic
