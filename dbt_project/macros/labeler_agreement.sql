{#- The body of `labeler_agreement` (per day) and `labeler_agreement_total` (all days), so the two cannot
    drift: the definitions of `bsky-warehouse eval labels` (bsky_warehouse/evaluation.py). Posts a labeler
    was asked about are its `ok` and `failed` rows (a failed row is the answer 'none'); `skipped` posts were
    never asked.
    - sociopolitical: posts with a hand sociopolitical label.
    - ideology: every post hand-labelled sociopolitical with a hand ideology; a labeler that called it not
      sociopolitical, gave no ideology or failed answered 'none', which is wrong. Leaving those posts out
      would drop exactly the posts it got wrong on the first question.
    - ideology_given_sociopolitical: the conditional figure, those ideology posts it called sociopolitical.
    - ideology_both_labelled: those ideology posts for which the labeler recorded an ideology, read as recorded:
      its answer's, or the one its label file gave a post it called not sociopolitical (`dropped_ideology`,
      the 2024 pilot's Llama-3 `unclear` placeholder). The first labels issue's definition, never the figure
      of record.
    Accuracy carries its Wilson 95% interval (z = 1.959963984540054). Macro F1 averages F1 over every class
    that occurs in either the hand labels or the predictions, 'none' excepted (an abstention is a miss of
    the true class, not a class of its own); its bootstrap interval is in `eval labels` only. -#}
{% macro labeler_agreement_rows(per_day) -%}
{%- set key = "day, labeler, model, prompt_version, task" if per_day else "labeler, model, prompt_version, task" -%}
with hand as (
    select uri, is_sociopolitical as hand_sociopolitical, political_ideology as hand_ideology
    from {{ ref('reference_hand_labels') }}
),

labels as (
    select
        partition_date as day, labeler, model, prompt_version, uri,
        case when status = 'ok' then is_sociopolitical end as is_sociopolitical,
        case when status = 'ok' then political_ideology end as political_ideology,
        case when status = 'ok' then coalesce(political_ideology, dropped_ideology) end as recorded_ideology
    from {{ ref('stg_llm_labels') }}
    where status in ('ok', 'failed'){% if per_day %} and {{ in_window('partition_date') }}{% endif %}
),

pairs as (
    select
        l.day, l.labeler, l.model, l.prompt_version, 'sociopolitical' as task,
        case when h.hand_sociopolitical then 'sociopolitical' else 'not_sociopolitical' end as truth,
        case
            when l.is_sociopolitical is null then 'none'
            when l.is_sociopolitical then 'sociopolitical'
            else 'not_sociopolitical'
        end as predicted
    from labels as l
    inner join hand as h using (uri)
    where h.hand_sociopolitical is not null
    union all
    select
        l.day, l.labeler, l.model, l.prompt_version, 'ideology' as task,
        h.hand_ideology as truth,
        case when l.is_sociopolitical and l.political_ideology is not null then l.political_ideology else 'none' end
            as predicted
    from labels as l
    inner join hand as h using (uri)
    where h.hand_sociopolitical and h.hand_ideology is not null
    union all
    select
        l.day, l.labeler, l.model, l.prompt_version, 'ideology_given_sociopolitical' as task,
        h.hand_ideology as truth,
        l.political_ideology as predicted
    from labels as l
    inner join hand as h using (uri)
    where h.hand_sociopolitical and h.hand_ideology is not null
        and l.is_sociopolitical and l.political_ideology is not null
    union all
    select
        l.day, l.labeler, l.model, l.prompt_version, 'ideology_both_labelled' as task,
        h.hand_ideology as truth,
        l.recorded_ideology as predicted
    from labels as l
    inner join hand as h using (uri)
    where h.hand_sociopolitical and h.hand_ideology is not null and l.recorded_ideology is not null
),

classes as (
    select distinct {{ key }}, truth as class from pairs
    union
    select distinct {{ key }}, predicted as class from pairs where predicted <> 'none'
),

per_class as (
    select
        {% for column in key.split(", ") %}c.{{ column }}, {% endfor %}c.class,
        count(*) filter (where p.truth = c.class and p.predicted = c.class) as tp,
        count(*) filter (where p.truth <> c.class and p.predicted = c.class) as fp,
        count(*) filter (where p.truth = c.class and p.predicted <> c.class) as fn
    from classes as c
    inner join pairs as p using ({{ key }})
    group by all
),

f1 as (
    select {{ key }}, avg(2.0 * tp / (2 * tp + fp + fn)) as macro_f1
    from per_class
    group by all
),

cells as (
    select {{ key }}, truth, predicted, count(*) as n
    from pairs group by all
),

rows_ as (
    select {{ key }}, truth, json_group_object(predicted, n) as predicted_counts
    from cells group by all
),

confusion as (
    select {{ key }}, json_group_object(truth, predicted_counts) as confusion
    from rows_ group by all
),

summary as (
    select {{ key }}, count(*) as n, count(*) filter (where truth = predicted) as correct
    from pairs group by all
),

wilson as (
    select
        *,
        correct / n as accuracy,
        (correct / n + 1.959963984540054 ^ 2 / (2 * n)
            - 1.959963984540054 * sqrt(correct / n * (1 - correct / n) / n + 1.959963984540054 ^ 2 / (4 * n * n)))
            / (1 + 1.959963984540054 ^ 2 / n) as accuracy_ci_low,
        (correct / n + 1.959963984540054 ^ 2 / (2 * n)
            + 1.959963984540054 * sqrt(correct / n * (1 - correct / n) / n + 1.959963984540054 ^ 2 / (4 * n * n)))
            / (1 + 1.959963984540054 ^ 2 / n) as accuracy_ci_high
    from summary
)

select
    {% for column in key.split(", ") %}s.{{ column }}, {% endfor %}s.n, s.correct, s.accuracy,
    greatest(s.accuracy_ci_low, 0.0) as accuracy_ci_low, least(s.accuracy_ci_high, 1.0) as accuracy_ci_high,
    f1.macro_f1, c.confusion
from wilson as s
inner join f1 using ({{ key }})
inner join confusion as c using ({{ key }})
{%- endmacro %}
