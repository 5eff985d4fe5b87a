{#- Agreement between every ordered pair of scorers on the posts and attributes both scored. The second of
    the pair is the reference: AUC treats its probability >= 0.5 as the positive label. Ranks are average
    ranks, so Spearman and AUC handle ties exactly as the Python metrics in bsky_warehouse/metrics.py.
    A distilled scorer's score of a post its model version was trained on is replaced by that post's
    out-of-fold prediction (stored at fit time), so no post is judged by a model fitted on it; `evaluated_on`
    says which values a row compares (as bsky_warehouse/evaluation.py does). The figures without their
    intervals: `scorer_agreement` (a Python model) adds those, so this is a view nobody needs to read. -#}
{{ config(materialized='view', tags=['global']) }}

with long as (
    unpivot (
        select uri, scorer, scorer_version, columns('^prob_')
        from {{ ref('stg_toxicity_scores') }}
        where status = 'ok'
    )
    on columns('^prob_')
    into name attribute value prob
),

distilled as (
    select distinct model_version from {{ source('warehouse', 'distilled_models') }}
),

evaluated as (
    select
        l.uri,
        l.scorer,
        l.attribute,
        coalesce(o.prediction, l.prob) as prob,
        o.prediction is not null as out_of_fold,
        d.model_version is not null as distilled
    from long as l
    left join {{ source('warehouse', 'distilled_oof_predictions') }} as o
        on o.model_version = l.scorer_version and o.uri = l.uri and o.attribute = l.attribute
    left join distilled as d on d.model_version = l.scorer_version
    where l.prob is not null
),

pairs as (
    select
        a.scorer,
        b.scorer as reference,
        replace(a.attribute, 'prob_', '') as attribute,
        a.prob as x,
        b.prob as y,
        a.out_of_fold or b.out_of_fold as out_of_fold,
        a.distilled or b.distilled as distilled
    from evaluated as a
    inner join evaluated as b
        on a.uri = b.uri and a.attribute = b.attribute and a.scorer <> b.scorer
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
        sum(rank_x) filter (where positive) as positive_rank_sum,
        count(*) filter (where out_of_fold) as n_out_of_fold,
        bool_or(distilled) as distilled
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
    end as auc,
    n_out_of_fold,
    case
        when not distilled then 'as_scored'
        when n_out_of_fold = n then 'out_of_fold'
        when n_out_of_fold = 0 then 'held_out'
        else 'out_of_fold+held_out'
    end as evaluated_on
from summary
