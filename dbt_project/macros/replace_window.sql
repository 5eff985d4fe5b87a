{% macro delete_window(column='day') -%}
    {#- pre_hook of the incremental marts: a run replaces exactly its window's days, including days whose
        data disappeared since the last build. -#}
    {%- if is_incremental() -%}
    delete from {{ this }} where {{ in_window(column) }}
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}
