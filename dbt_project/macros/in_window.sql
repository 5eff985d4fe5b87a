{#- The partition window an incremental build replaces. Dagster's dbt step sets it in the environment of the
    one dbt process it starts (BSKY_DBT_MIN_DATE, BSKY_DBT_MAX_DATE, BSKY_DBT_DAYS), not in `--vars`: dbt
    throws its whole partial-parse cache away when the vars change. And the environment is read only when dbt
    runs a model (`execute`), never while it parses: dbt records an env_var read at parse time and re-parses
    the reader when the value changes, but the window never changes what a model refs or configures, so a new
    window costs no parsing at all. `--vars` still wins when given, for a build run by hand, e.g.
    `dbt build --vars '{min_date: 2024-03-13, max_date: 2024-03-14}'`. Neither set means the full range. -#}

{% macro window_bound(name) -%}
    {%- set defaults = {"min_date": "1900-01-01", "max_date": "9999-12-31"} -%}
    {%- set value = var(name, none) -%}
    {%- if value is none -%}
        {%- set value = env_var("BSKY_DBT_" ~ (name | upper), defaults[name]) if execute else defaults[name] -%}
    {%- endif -%}
    {{ return(iso_date(value, name)) }}
{%- endmacro %}

{#- Every bound and day must be an ISO date, so neither a var nor an environment variable can inject SQL. -#}
{% macro iso_date(value, what) -%}
    {%- if not modules.re.fullmatch("[0-9]{4}-[0-9]{2}-[0-9]{2}", value | string) -%}
        {{ exceptions.raise_compiler_error(what ~ " must hold ISO dates, got " ~ value) }}
    {%- endif -%}
    {{ return(value | string) }}
{%- endmacro %}

{#- The window narrowed to a list of days (the dbt step adds the days a cross-day change left stale to its own
    window, and that set can have gaps): the `days` var, else BSKY_DBT_DAYS (comma-separated); empty means
    every day of the window. -#}
{% macro window_days() -%}
    {%- set days = var("days", none) -%}
    {%- if days is none -%}
        {%- set listed = env_var("BSKY_DBT_DAYS", "") if execute else "" -%}
        {%- set days = listed.split(",") if listed else [] -%}
    {%- endif -%}
    {%- set checked = [] -%}
    {%- for day in days or [] -%}
        {%- do checked.append(iso_date(day, "days")) -%}
    {%- endfor -%}
    {{ return(checked) }}
{%- endmacro %}

{% macro in_window(column) -%}
    {%- set days = window_days() -%}
    {{ column }} >= cast('{{ window_bound("min_date") }}' as date) and {{ column }} < cast('{{ window_bound("max_date") }}' as date)
    {%- if days %}
    and {{ column }} in ({% for day in days %}cast('{{ day }}' as date){{ ", " if not loop.last }}{% endfor %})
    {%- endif %}
{%- endmacro %}

{% macro generate_schema_name(custom_schema_name, node) -%}
    {#- Plain schema names (staging, marts) rather than dbt's default <target>_<custom> prefixes. -#}
    {{ custom_schema_name if custom_schema_name is not none else target.schema }}
{%- endmacro %}

{% macro day_spine(relation_days) -%}
    {#- A partition run gets a row for every day of its window (zeros included), so re-running a day that
        lost its data replaces the old row; a full build spans the days that have data. -#}
    {%- if window_bound("max_date") == "9999-12-31" or window_bound("min_date") == "1900-01-01" %}
    select cast(d as date) as day
    from generate_series(
        (select min(day) from {{ relation_days }}),
        (select max(day) from {{ relation_days }}),
        interval 1 day
    ) as t(d)
    {%- else %}
    select cast(d as date) as day
    from generate_series(
        cast('{{ window_bound("min_date") }}' as date),
        cast('{{ window_bound("max_date") }}' as date) - interval 1 day,
        interval 1 day
    ) as t(d)
    where {{ in_window('cast(d as date)') }}
    {%- endif %}
{%- endmacro %}
