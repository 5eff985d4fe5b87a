{#- Agreement between every ordered pair of scorers on the posts and attributes both scored. The second of
    the pair is the reference: AUC treats its probability >= 0.5 as the positive label. Ranks are average
    ranks, so Spearman and AUC handle ties exactly as the Python metrics in bsky_warehouse/metrics.py. -#}

with long as (
    unpivot (
        select uri, scorer, columns('^prob_')
        from {{ ref('stg_toxicity_scores') }}
        where status = 'ok'
    )
    on columns('^prob_')
    into name attribute value prob
),

pairs as (
    select
        a.scorer,
        b.scorer as reference,
        replace(a.attribute, 'prob_', '') as attribute,
        a.prob as x,
        b.prob as y
    from long as a
    inner join long as b
        on a.uri = b.uri and a.attribute = b.attribute and a.scorer <> b.scorer
    where a.prob is not null and b.prob is not null
),

ranked as (
    select
        *,
        rank() over (partition by scorer, reference, attribute order by x)
            + (count(*) over (partition by scorer, reference, attribute, x) - 1) / 2.0 as rank_x,
        rank() over (partition by scorer, reference, attribute order by y)
            + (count(*) over (partition by scorer, reference, attribute, y) - 1) / 2.0 as rank_y,
        y >= 0.5 as positive
    from pairs
),

summary as (
    select
        scorer,
        reference,
        attribute,
        count(*) as n,
        corr(x, y) as pearson,
        corr(rank_x, rank_y) as spearman,
        count(*) filter (where positive) as n_positive,
        sum(rank_x) filter (where positive) as positive_rank_sum
    from ranked
    group by 1, 2, 3
)

select
    scorer,
    reference,
    attribute,
    n,
    case when isfinite(pearson) then pearson end as pearson,
    case when isfinite(spearman) then spearman end as spearman,
    n_positive,
    case
        when n_positive > 0 and n_positive < n
            then (positive_rank_sum - n_positive * (n_positive + 1) / 2.0) / (n_positive * (n - n_positive))
    end as auc
from summary
