{#- Each labeler against the reference hand labels over every day: the figures to quote (a day holds few
    posts). Rebuilt in full on every run; same definitions as labeler_agreement (macro labeler_agreement_rows). -#}
{{ config(materialized='table', tags=['global']) }}

{{ labeler_agreement_rows(per_day=false) }}
