{#- Every scanned author's posts ranked by toxicity, per scorer. Rebuilt in full: scans are whole histories. -#}

with scored as (
    select
        p.author_did,
        p.author_handle,
        s.scorer,
        s.scorer_version,
        p.uri,
        p.created_at,
        p.text,
        p.reply_parent_uri is not null as is_reply,
        p.like_count,
        p.repost_count,
        p.reply_count,
        s.prob_toxicity,
        s.prob_severe_toxicity,
        s.prob_insult,
        s.prob_identity_attack,
        s.prob_threat,
        s.prob_profanity,
        p.scanned_at
    from {{ ref('stg_author_posts') }} as p
    inner join {{ ref('stg_author_toxicity_scores') }} as s using (uri)
    where s.status = 'ok' and s.prob_toxicity is not null
)

select
    author_did,
    author_handle,
    scorer,
    scorer_version,
    row_number() over (partition by author_did, scorer order by prob_toxicity desc, uri) as toxicity_rank,
    uri,
    {{ bsky_link('uri') }} as link,
    created_at,
    text,
    is_reply,
    like_count,
    repost_count,
    reply_count,
    prob_toxicity,
    prob_severe_toxicity,
    prob_insult,
    prob_identity_attack,
    prob_threat,
    prob_profanity,
    count(*) over (partition by author_did, scorer) as author_posts_scored,
    avg(prob_toxicity) over (partition by author_did, scorer) as author_mean_toxicity,
    avg(case when prob_toxicity >= 0.5 then 1.0 else 0.0 end) over (partition by author_did, scorer)
        as author_share_toxic,
    scanned_at
from scored
