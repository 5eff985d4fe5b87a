{#- Daily figures from a sample that is not the whole day. A day Perspective scored only in part (a planned
    sample, `bsky-warehouse perspective plan`) holds the posts the plan drew with probability proportional to
    how unsure the distilled model was: a plain mean of them over-represents borderline posts. Each row carries
    `inclusion_probability` (1 for a post scored in a full run); these macros weight a row by its inverse
    (Hájek: the weighted sum over the summed weights). When every weight is 1 (a census) they are the plain
    avg and quantile_cont, so a fully scored day reads exactly as before. The weighted quantile is the inverse
    of the weighted distribution function: the smallest value whose cumulative weight share reaches q. Call
    them in a grouped select whose rows have `weight` and, for quantiles, `cumulative_share` (sample_cdf). -#}

{% macro weighted_mean(value, weight='weight') -%}
    case
        when bool_and({{ weight }} = 1) then avg({{ value }})
        else sum({{ weight }} * ({{ value }})) / sum({{ weight }})
    end
{%- endmacro %}

{% macro weighted_quantile(value, q, weight='weight', cumulative_share='cumulative_share') -%}
    case
        when bool_and({{ weight }} = 1) then quantile_cont({{ value }}, {{ q }})
        else min({{ value }}) filter (where {{ cumulative_share }} >= {{ q }} - 1e-12)
    end
{%- endmacro %}

{#- A row's share of its group's weight at or below its value (ties ordered arbitrarily: the quantile takes
    the smallest value that reaches q, which a tie's rows share). -#}
{% macro sample_cdf(value, partition_by, weight='weight') -%}
    sum({{ weight }}) over (
        partition by {{ partition_by }} order by {{ value }} rows between unbounded preceding and current row
    ) / sum({{ weight }}) over (partition by {{ partition_by }})
{%- endmacro %}

{#- 'census' when every row of the group weighs 1, else 'weighted'. -#}
{% macro sample_design(weight='weight') -%}
    case when bool_and({{ weight }} = 1) then 'census' else 'weighted' end
{%- endmacro %}

{#- A row's weight: the inverse of the probability its post entered the sample (1 when scored in full). -#}
{% macro sample_weight(inclusion_probability='inclusion_probability') -%}
    1.0 / coalesce({{ inclusion_probability }}, 1.0)
{%- endmacro %}
