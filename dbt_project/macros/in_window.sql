{#- The days an incremental build replaces: the half-open window [min_date, max_date), narrowed to the `days`
    list when one is given (the dbt step adds the days a cross-day change left stale to its own window, and
    that set can have gaps). Every day must be an ISO date, so a var cannot inject SQL. -#}
{% macro window_days() -%}
    {%- set days = var("days", []) or [] -%}
    {%- for day in days -%}
        {%- if not modules.re.fullmatch("[0-9]{4}-[0-9]{2}-[0-9]{2}", day | string) -%}
            {{ exceptions.raise_compiler_error("var days must hold ISO dates, got " ~ day) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(days) }}
{%- endmacro %}

{% macro in_window(column) -%}
    {{ column }} >= cast('{{ var("min_date") }}' as date) and {{ column }} < cast('{{ var("max_date") }}' as date)
    {%- if window_days() %}
    and {{ column }} in ({% for day in window_days() %}cast('{{ day }}' as date){{ ", " if not loop.last }}{% endfor %})
    {%- endif %}
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
    where {{ in_window('cast(d as date)') }}
    {%- endif %}
{%- endmacro %}
