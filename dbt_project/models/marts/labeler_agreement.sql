{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_window('day') }}") }}

{#- Each labeler against the reference hand labels, per day, with the definitions of `bsky-warehouse eval
    labels`: sociopolitical over posts where both labels are set; ideology over posts hand-labelled
    sociopolitical where both ideologies are set. Macro F1 averages F1 over every class that occurs in
    either the hand labels or the predictions. -#}

with hand as (
    select uri, is_sociopolitical as hand_sociopolitical, political_ideology as hand_ideology
    from {{ ref('reference_hand_labels') }}
),

labels as (
    select partition_date as day, labeler, model, prompt_version, uri, is_sociopolitical, political_ideology
    from {{ ref('stg_llm_labels') }}
    where status = 'ok' and {{ in_window('partition_date') }}
),

pairs as (
    select
        l.day, l.labeler, l.model, l.prompt_version, 'sociopolitical' as task,
        case when h.hand_sociopolitical then 'sociopolitical' else 'not_sociopolitical' end as truth,
        case when l.is_sociopolitical then 'sociopolitical' else 'not_sociopolitical' end as predicted
    from labels as l
    inner join hand as h using (uri)
    where h.hand_sociopolitical is not null and l.is_sociopolitical is not null
    union all
    select
        l.day, l.labeler, l.model, l.prompt_version, 'ideology' as task,
        h.hand_ideology as truth,
        l.political_ideology as predicted
    from labels as l
    inner join hand as h using (uri)
    where h.hand_sociopolitical and h.hand_ideology is not null and l.political_ideology is not null
),

classes as (
    select distinct day, labeler, model, prompt_version, task, truth as class from pairs
    union
    select distinct day, labeler, model, prompt_version, task, predicted as class from pairs
),

per_class as (
    select
        c.day, c.labeler, c.model, c.prompt_version, c.task, c.class,
        count(*) filter (where p.truth = c.class and p.predicted = c.class) as tp,
        count(*) filter (where p.truth <> c.class and p.predicted = c.class) as fp,
        count(*) filter (where p.truth = c.class and p.predicted <> c.class) as fn
    from classes as c
    inner join pairs as p using (day, labeler, model, prompt_version, task)
    group by all
),

f1 as (
    select day, labeler, model, prompt_version, task, avg(2.0 * tp / (2 * tp + fp + fn)) as macro_f1
    from per_class
    group by all
),

cells as (
    select day, labeler, model, prompt_version, task, truth, predicted, count(*) as n
    from pairs group by all
),

rows_ as (
    select day, labeler, model, prompt_version, task, truth,
           json_group_object(predicted, n) as predicted_counts
    from cells group by all
),

confusion as (
    select day, labeler, model, prompt_version, task, json_group_object(truth, predicted_counts) as confusion
    from rows_ group by all
),

summary as (
    select day, labeler, model, prompt_version, task, count(*) as n,
           avg(case when truth = predicted then 1.0 else 0.0 end) as accuracy
    from pairs group by all
)

select s.day, s.labeler, s.model, s.prompt_version, s.task, s.n, s.accuracy, f1.macro_f1, c.confusion
from summary as s
inner join f1 using (day, labeler, model, prompt_version, task)
inner join confusion as c using (day, labeler, model, prompt_version, task)
