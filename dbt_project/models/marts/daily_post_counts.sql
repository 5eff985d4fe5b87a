{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='day',
    )
}}

with raw as (
    select partition_date as day, count(*) as raw_posts
    from {{ ref('stg_raw_posts') }}
    where {{ in_window('partition_date') }}
    group by 1
),

rejected as (
    select partition_date as day, count(*) as rejected_records
    from {{ ref('stg_rejected_records') }}
    where {{ in_window('partition_date') }}
    group by 1
),

deleted as (
    select partition_date as day, count(distinct uri) as deletions
    from {{ ref('stg_post_deletions') }}
    where {{ in_window('partition_date') }}
    group by 1
),

cleaned as (
    select
        partition_date as day,
        count(*) as cleaned_posts,
        count(*) filter (where passes_filters) as passing_filters
    from {{ ref('stg_cleaned_posts') }}
    where {{ in_window('partition_date') }}
    group by 1
),

any_day as (
    select day from raw
    union select day from rejected
    union select day from deleted
    union select day from cleaned
),

spine as (
    {{ day_spine('any_day') }}
)

select
    spine.day,
    coalesce(raw.raw_posts, 0) as raw_posts,
    coalesce(rejected.rejected_records, 0) as rejected_records,
    coalesce(deleted.deletions, 0) as deletions,
    coalesce(cleaned.cleaned_posts, 0) as cleaned_posts,
    coalesce(cleaned.passing_filters, 0) as passing_filters
from spine
left join raw using (day)
left join rejected using (day)
left join deleted using (day)
left join cleaned using (day)
