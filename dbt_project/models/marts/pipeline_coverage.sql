{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='day',
    )
}}

{#- Where every post of a day went. `unaccounted_posts` is zero exactly when each distinct raw uri of the day
    is in cleaned_posts, or was deleted, or is a duplicate owned by another day. `rejected_records` counts rows;
    `before_first_partition` are the posts seen that day but created before the first partition, which no
    table of posts can hold. -#}

with raw as (
    select partition_date as day, uri from {{ ref('stg_raw_posts') }}
    where {{ in_window('partition_date') }}
    group by 1, 2
),

cleaned_all as (
    select uri, partition_date, passes_filters, filter_reason from {{ ref('stg_cleaned_posts') }}
),

deleted_uris as (
    select distinct uri from {{ ref('stg_post_deletions') }}
),

raw_fate as (
    select
        r.day,
        r.uri,
        c.partition_date = r.day as cleaned_here,
        d.uri is not null as deleted,
        c.partition_date is not null and c.partition_date <> r.day as duplicate
    from raw as r
    left join cleaned_all as c using (uri)
    left join deleted_uris as d using (uri)
),

raw_counts as (
    select
        day,
        count(*) as raw_posts,
        count(*) filter (where deleted and not coalesce(cleaned_here, false)) as deleted,
        count(*) filter (where duplicate and not deleted) as duplicates,
        count(*) filter (where coalesce(cleaned_here, false)) as cleaned,
        count(*) filter (where not deleted and not coalesce(cleaned_here, false) and not coalesce(duplicate, false))
            as unaccounted_posts
    from raw_fate group by 1
),

rejected as (
    select partition_date as day, sum(n)::bigint as rejected_records,
           coalesce(sum(n) filter (where reason = 'before_first_partition'), 0)::bigint as before_first_partition,
           to_json(map(list(reason order by reason), list(n order by reason))) as rejected_by_reason
    from (select partition_date, reason, count(*) as n from {{ ref('stg_rejected_records') }}
          where {{ in_window('partition_date') }} group by 1, 2)
    group by 1
),

filtered as (
    select partition_date as day,
           coalesce(sum(n) filter (where passes_filters), 0) as passing_filters,
           coalesce(sum(n) filter (where not passes_filters), 0) as filtered_out,
           to_json(map(list(filter_reason order by filter_reason) filter (where filter_reason is not null),
                       list(n order by filter_reason) filter (where filter_reason is not null))) as filtered_by_reason
    from (select partition_date, passes_filters, filter_reason, count(*) as n from cleaned_all
          where {{ in_window('partition_date') }} group by 1, 2, 3)
    group by 1
),

scored as (
    select partition_date as day,
           count(*) filter (where status = 'ok') as scores_ok,
           count(*) filter (where status = 'failed') as scores_failed,
           count(*) filter (where status = 'skipped') as scores_skipped
    from {{ ref('stg_toxicity_scores') }} where {{ in_window('partition_date') }} group by 1
),

labeled as (
    select partition_date as day,
           count(*) filter (where status = 'ok') as labels_ok,
           count(*) filter (where status = 'failed') as labels_failed
    from {{ ref('stg_llm_labels') }} where {{ in_window('partition_date') }} group by 1
),

any_day as (
    select day from raw_counts union select day from rejected union select day from filtered
),

spine as (
    {{ day_spine('any_day') }}
)

select
    spine.day,
    coalesce(rc.raw_posts, 0) as raw_posts,
    coalesce(rj.rejected_records, 0) as rejected_records,
    coalesce(rj.rejected_by_reason, '{}'::json) as rejected_by_reason,
    coalesce(rj.before_first_partition, 0) as before_first_partition,
    coalesce(rc.deleted, 0) as deleted,
    coalesce(rc.duplicates, 0) as duplicates,
    coalesce(rc.cleaned, 0) as cleaned,
    coalesce(f.passing_filters, 0) as passing_filters,
    coalesce(f.filtered_out, 0) as filtered_out,
    coalesce(f.filtered_by_reason, '{}'::json) as filtered_by_reason,
    coalesce(s.scores_ok, 0) as scores_ok,
    coalesce(s.scores_failed, 0) as scores_failed,
    coalesce(s.scores_skipped, 0) as scores_skipped,
    coalesce(l.labels_ok, 0) as labels_ok,
    coalesce(l.labels_failed, 0) as labels_failed,
    coalesce(rc.unaccounted_posts, 0) as unaccounted_posts
from spine
left join raw_counts as rc using (day)
left join rejected as rj using (day)
left join filtered as f using (day)
left join scored as s using (day)
left join labeled as l using (day)
