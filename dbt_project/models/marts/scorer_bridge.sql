{#- Both instruments' daily series side by side, and the local one put on the reference scale, so a reader can
    tell a trend from the change of instrument. Per local scorer, the current mapping in scorer_mappings (most
    recently fitted, ties: the greater version) says which attributes are bridged and which scorers are the
    reference; a post with several reference scores counts the first listed. The mapped value interpolates
    linearly between the knots and holds the end knot's value beyond them (bsky_warehouse/bridge.py, apply_map).
    A distilled scorer's score of a post its model version was trained on is replaced by that post's
    out-of-fold prediction, as in scorer_agreement and in the fit of the mapping: the local series is what the
    scorer says of posts it never saw, which every post after the switch is. A reference day scored as a planned
    sample is weighted back to the day (macros/sample_weights.sql). Whole history: tag `global`. -#}
{{ config(tags=['global']) }}

with mapping as (
    select * from {{ source('warehouse', 'scorer_mappings') }}
    qualify dense_rank() over (partition by local_scorer order by fitted_at desc, mapping_version desc) = 1
),

knots as (
    select local_scorer, attribute, unnest(knots_local) as x, unnest(knots_reference) as y
    from mapping
),

segments as (
    select
        local_scorer,
        attribute,
        x,
        y,
        lead(x) over (partition by local_scorer, attribute order by x) as x_next,
        lead(y) over (partition by local_scorer, attribute order by x) as y_next
    from knots
),

long as (
    unpivot (
        select uri, scorer, scorer_version, partition_date as day, {{ sample_weight() }} as weight, columns('^prob_')
        from {{ ref('stg_toxicity_scores') }}
        where status = 'ok'
    )
    on columns('^prob_')
    into name attribute value prob
),

local_scores as (
    select
        m.local_scorer,
        m.attribute,
        l.day,
        l.uri,
        coalesce(o.prediction, l.prob) as prob,
        o.prediction is not null as out_of_fold
    from long as l
    inner join mapping as m on m.local_scorer = l.scorer and m.attribute = l.attribute
    left join {{ source('warehouse', 'distilled_oof_predictions') }} as o
        on o.model_version = l.scorer_version and o.uri = l.uri and o.attribute = l.attribute
),

mapped as (
    select
        l.*,
        case
            when s.x is null then m.knots_reference[1]
            when s.x_next is null then s.y
            else s.y + (l.prob - s.x) * (s.y_next - s.y) / (s.x_next - s.x)
        end as mapped_prob
    from local_scores as l
    inner join mapping as m on m.local_scorer = l.local_scorer and m.attribute = l.attribute
    asof left join segments as s
        on s.local_scorer = l.local_scorer and s.attribute = l.attribute and l.prob >= s.x
),

reference_scores as (
    select m.local_scorer, m.attribute, l.day, l.uri, l.prob, l.weight
    from long as l
    inner join mapping as m on m.attribute = l.attribute and list_contains(m.reference_scorers, l.scorer)
    qualify row_number() over (
        partition by m.local_scorer, m.attribute, l.uri order by list_position(m.reference_scorers, l.scorer)
    ) = 1
),

local_daily as (
    select
        local_scorer,
        attribute,
        day,
        count(*) as n_local,
        count(*) filter (where out_of_fold) as n_local_out_of_fold,
        avg(prob) as local_mean,
        quantile_cont(prob, 0.5) as local_median,
        avg(case when prob >= 0.5 then 1.0 else 0.0 end) as local_share_ge_0_5,
        avg(mapped_prob) as mapped_mean,
        quantile_cont(mapped_prob, 0.5) as mapped_median,
        avg(case when mapped_prob >= 0.5 then 1.0 else 0.0 end) as mapped_share_ge_0_5
    from mapped
    group by 1, 2, 3
),

reference_weighted as (
    select *, {{ sample_cdf('prob', 'local_scorer, attribute, day') }} as cumulative_share
    from reference_scores
),

reference_daily as (
    select
        local_scorer,
        attribute,
        day,
        count(*) as n_reference,
        {{ sample_design() }} as reference_sample,
        {{ weighted_mean('prob') }} as reference_mean,
        {{ weighted_quantile('prob', 0.5) }} as reference_median,
        {{ weighted_mean('case when prob >= 0.5 then 1.0 else 0.0 end') }} as reference_share_ge_0_5
    from reference_weighted
    group by 1, 2, 3
),

both_daily as (
    select l.local_scorer, l.attribute, l.day, count(*) as n_both
    from local_scores as l
    inner join reference_scores as r
        on r.local_scorer = l.local_scorer and r.attribute = l.attribute and r.uri = l.uri
    group by 1, 2, 3
)

select
    d.day,
    d.local_scorer,
    array_to_string(m.reference_scorers, ',') as reference_scorers,
    m.mapping_version,
    replace(d.attribute, 'prob_', '') as attribute,
    coalesce(r.n_reference, 0) as n_reference,
    coalesce(l.n_local, 0) as n_local,
    coalesce(l.n_local_out_of_fold, 0) as n_local_out_of_fold,
    coalesce(b.n_both, 0) as n_both,
    coalesce(r.n_reference, 0) > 0 and coalesce(l.n_local, 0) > 0 as overlap_day,
    r.reference_sample,
    r.reference_mean,
    r.reference_median,
    r.reference_share_ge_0_5,
    l.local_mean,
    l.local_median,
    l.local_share_ge_0_5,
    l.mapped_mean,
    l.mapped_median,
    l.mapped_share_ge_0_5
from (
    select local_scorer, attribute, day from local_daily
    union
    select local_scorer, attribute, day from reference_daily
) as d
inner join mapping as m on m.local_scorer = d.local_scorer and m.attribute = d.attribute
left join local_daily as l on l.local_scorer = d.local_scorer and l.attribute = d.attribute and l.day = d.day
left join reference_daily as r on r.local_scorer = d.local_scorer and r.attribute = d.attribute and r.day = d.day
left join both_daily as b on b.local_scorer = d.local_scorer and b.attribute = d.attribute and b.day = d.day
