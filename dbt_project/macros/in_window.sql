{% macro in_window(column) -%}
    {{ column }} >= cast('{{ var("min_date") }}' as date) and {{ column }} < cast('{{ var("max_date") }}' as date)
{%- endmacro %}

{% macro generate_schema_name(custom_schema_name, node) -%}
    {#- Plain schema names (staging, marts) rather than dbt's default <target>_<custom> prefixes. -#}
    {{ custom_schema_name if custom_schema_name is not none else target.schema }}
{%- endmacro %}

{% macro day_spine(relation_days) -%}
    {#- A partition run gets a row for every day of its window (zeros included), so re-running a day that
        lost its data replaces the old row; a full build spans the days that have data. -#}
    {%- if var("max_date") == "9999-12-31" or var("min_date") == "1900-01-01" %}
    select cast(d as date) as day
    from generate_series(
        (select min(day) from {{ relation_days }}),
        (select max(day) from {{ relation_days }}),
        interval 1 day
    ) as t(d)
    {%- else %}
    select cast(d as date) as day
    from generate_series(
        cast('{{ var("min_date") }}' as date),
        cast('{{ var("max_date") }}' as date) - interval 1 day,
        interval 1 day
    ) as t(d)
    {%- endif %}
{%- endmacro %}
