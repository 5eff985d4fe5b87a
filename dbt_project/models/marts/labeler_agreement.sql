{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_window('day') }}") }}

{#- Each labeler against the reference hand labels, per day; the definitions are in the macro
    labeler_agreement_rows (macros/labeler_agreement.sql), shared with labeler_agreement_total. -#}

{{ labeler_agreement_rows(per_day=true) }}
