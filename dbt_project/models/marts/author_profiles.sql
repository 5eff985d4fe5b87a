{#- Whole history per author: rebuilt in full on every run (cheap: one row per author and scorer). -#}
{{ config(materialized='table', tags=['global']) }}

with posts as (
    select uri, author_did, partition_date from {{ ref('stg_cleaned_posts') }}
),

activity as (
    select author_did, count(*) as posts, count(distinct partition_date) as days_active,
           min(partition_date) as first_day, max(partition_date) as last_day
    from posts group by 1
),

scored as (
    select p.author_did, s.scorer, s.uri, s.prob_toxicity
    from posts as p
    inner join {{ ref('stg_toxicity_scores') }} as s using (uri)
    where s.status = 'ok' and s.prob_toxicity is not null
),

toxicity as (
    select
        author_did,
        scorer,
        count(*) as posts_scored,
        avg(prob_toxicity) as mean_toxicity,
        max(prob_toxicity) as max_toxicity,
        arg_max(uri, prob_toxicity) as most_toxic_uri
    from scored group by 1, 2
),

sociopolitical as (
    select p.author_did, avg(case when l.is_sociopolitical then 1.0 else 0.0 end) as share_sociopolitical,
           count(*) as posts_labeled
    from posts as p
    inner join {{ ref('stg_llm_labels') }} as l using (uri)
    where l.status = 'ok'
    group by 1
)

select
    a.author_did,
    t.scorer,
    a.posts,
    a.days_active,
    a.first_day,
    a.last_day,
    coalesce(t.posts_scored, 0) as posts_scored,
    t.mean_toxicity,
    t.max_toxicity,
    t.most_toxic_uri,
    {{ bsky_link('t.most_toxic_uri') }} as most_toxic_link,
    coalesce(s.posts_labeled, 0) as posts_labeled,
    s.share_sociopolitical
from activity as a
left join toxicity as t using (author_did)
left join sociopolitical as s using (author_did)
