{#- Every judged post a system has an answer for and a topic model has a topic for, with both answers on
    the common [0, 1] scale: a scorer's prob_toxicity against toxicity judgements, a labeler's
    is_sociopolitical (its latest prompt version per post) against sociopolitical judgements. -#}
{{ config(alias=audit_alias('audit_judged_posts')) }}

with scorer_outputs as (
    select 'scorer:' || scorer as system, 'toxicity' as task, uri, prob_toxicity as system_score
    from {{ ref('stg_toxicity_scores') }}
    where status = 'ok' and prob_toxicity is not null
),

labeler_outputs as (
    select
        'labeler:' || labeler || '/' || model as system,
        'sociopolitical' as task,
        uri,
        cast(is_sociopolitical as double) as system_score
    from {{ ref('stg_llm_labels') }}
    where status = 'ok' and is_sociopolitical is not null
    qualify row_number() over (
        partition by labeler, model, uri order by labeled_at desc, prompt_version desc
    ) = 1
),

outputs as (
    select * from scorer_outputs
    union all
    select * from labeler_outputs
),

judged as (
    select uri, rater, task, value as human_value, human_score
    from {{ ref('stg_human_judgements') }}
    where human_score is not null
),

paired as (
    select
        o.system,
        j.rater,
        o.task,
        t.topic_model_version,
        t.topic_id,
        t.topic_label,
        o.uri,
        o.system_score,
        j.human_value,
        j.human_score,
        cast({{ audit_threshold('o.system') }} as double) as threshold,
        case o.task
            when 'toxicity' then j.human_value >= {{ var('audit_human_threshold') }}
            else j.human_score >= 0.5
        end as human_flags
    from outputs as o
    inner join judged as j on j.uri = o.uri and j.task = o.task
    inner join {{ ref('stg_post_topics') }} as t on t.uri = o.uri
)

select
    p.*,
    p.system_score >= p.threshold as system_flags,
    abs(p.system_score - p.human_score) as abs_error,
    {{ bsky_link('p.uri') }} as link,
    c.text,
    c.partition_date
from paired as p
left join {{ ref('stg_cleaned_posts') }} as c on c.uri = p.uri
