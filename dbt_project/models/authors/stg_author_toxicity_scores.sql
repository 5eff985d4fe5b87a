{{ config(materialized='view', schema='staging') }}

select *
from {{ source('warehouse', 'author_toxicity_scores') }}
